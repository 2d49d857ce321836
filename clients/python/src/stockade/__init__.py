"""Client for stockade's HTTP API (``stockade serve --http``).

>>> import stockade
>>> with stockade.Sandbox.create(memory="256Mi") as sb:
...     print(sb.commands.run("echo hello").stdout)
hello

The connection comes from ``url=``/``token=`` arguments or the ``STOCKADE_URL``/
``STOCKADE_TOKEN`` environment (``http://127.0.0.1:8700``, ``https://HOST:PORT``,
``unix:///run/stockade/api.sock``).
"""

from ._async import AsyncCommands, AsyncCommandStream, AsyncFiles, AsyncSandbox, async_run
from ._connection import DEFAULT_URL
from ._sync import Commands, CommandStream, Files, Sandbox, run
from .errors import (
    AuthError,
    CommandFailed,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    ServerError,
    StockadeError,
)
from .models import CommandResult, Execution, ExecutionError, FileInfo, Output, SandboxInfo

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "AsyncCommandStream",
    "AsyncCommands",
    "AsyncFiles",
    "AsyncSandbox",
    "AuthError",
    "CommandFailed",
    "CommandResult",
    "CommandStream",
    "Commands",
    "Conflict",
    "ConnectionFailed",
    "Execution",
    "ExecutionError",
    "FileInfo",
    "Files",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "Output",
    "PayloadTooLarge",
    "QuotaExceeded",
    "Sandbox",
    "SandboxInfo",
    "ServerError",
    "StockadeError",
    "async_run",
    "run",
]
