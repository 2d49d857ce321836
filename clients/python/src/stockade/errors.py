"""One exception hierarchy for everything the client raises.

The server answers errors as ``{"error": {"code", "message", "field"}}`` with an HTTP
status; :func:`error_from_response` turns that into the subclass of
:class:`StockadeError` for the status, keeping the message, the field at fault, the
status, the code and the request id.
"""

from __future__ import annotations

import json
from typing import Optional


class StockadeError(Exception):
    """Base of every error the client raises.

    ``message`` is the server's one-line message, ``field`` the request field at fault
    (``policy.limits.memory``, ``path``...) when the server named one, ``status`` the HTTP
    status (0 when no answer came), ``code`` the server's stable code (``not_found``...)
    and ``request_id`` the ``X-Request-Id`` the server's log line carries.
    """

    def __init__(
        self,
        message: str,
        *,
        field: Optional[str] = None,
        status: int = 0,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        if self.field:
            return f"{self.message} (field: {self.field})"
        return self.message


class ConnectionFailed(StockadeError):
    """The server could not be reached, or the connection broke before an answer."""


class InvalidRequest(StockadeError):
    """400: a request field is malformed."""


class AuthError(StockadeError):
    """401: no token, or one the server does not know."""


class Forbidden(StockadeError):
    """403: the request asks for more than the server's policy grants."""


class NotFound(StockadeError):
    """404: no such sandbox (or not the token's), path or route."""


class Conflict(StockadeError):
    """409: the state forbids it (a stopped sandbox, a name taken, not a directory...)."""


class PayloadTooLarge(StockadeError):
    """413: the body is larger than the server takes."""


class QuotaExceeded(StockadeError):
    """429: the token's quota (sandboxes alive, memory) is used up."""


class ServerError(StockadeError):
    """5xx: the server failed."""


class CommandFailed(StockadeError):
    """A streamed command could not run (the stream's ``error`` record)."""


_BY_STATUS: dict[int, type[StockadeError]] = {
    400: InvalidRequest,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: QuotaExceeded,
}


def error_class(status: int) -> type[StockadeError]:
    """The exception class for an HTTP ``status``."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return StockadeError


def error_from_body(status: int, body: bytes, request_id: Optional[str] = None) -> StockadeError:
    """The exception for an error answer: its status and body (the error document, or
    anything else a proxy in between may have answered)."""
    cls = error_class(status)
    try:
        doc = json.loads(body)
        detail = doc["error"]
        message = str(detail["message"])
        code = detail.get("code")
        field = detail.get("field")
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip().splitlines()
        message = f"HTTP {status}" + (f": {text[0]}" if text else "")
        code = None
        field = None
    return cls(
        message,
        field=str(field) if field is not None else None,
        status=status,
        code=str(code) if code is not None else None,
        request_id=request_id,
    )


def error_from_record(detail: object) -> StockadeError:
    """The exception for a stream's ``error`` record's ``error`` member."""
    if not isinstance(detail, dict):
        return CommandFailed("the command failed")
    field = detail.get("field")
    code = detail.get("code")
    return CommandFailed(
        str(detail.get("message", "the command failed")),
        field=str(field) if field is not None else None,
        code=str(code) if code is not None else None,
    )
