"""Where the server is and how to reach it: ``url=``/``token=`` arguments, else the
``STOCKADE_URL``/``STOCKADE_TOKEN`` environment; the httpx clients made from them."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any, Optional, Union
from urllib.parse import urlsplit

import httpx

#: The URL used when neither ``url=`` nor ``STOCKADE_URL`` is given.
DEFAULT_URL = "http://127.0.0.1:8700"
#: Seconds a request that is not a command may take (creating a sandbox may start a
#: cold one). Commands and code cells wait as long as they run.
DEFAULT_TIMEOUT = 120.0

#: ``verify=``: True (the system's CAs), False (no check), a CA file's path, or a context.
Verify = Union[bool, str, "os.PathLike[str]", ssl.SSLContext]


@dataclass(frozen=True)
class Connection:
    """A resolved connection: the base URL httpx speaks to, the Unix socket if any, the
    token and the TLS verification."""

    base_url: str
    uds: Optional[str]
    token: Optional[str]
    verify: Union[bool, ssl.SSLContext]
    timeout: float

    @staticmethod
    def resolve(
        url: Optional[str] = None,
        token: Optional[str] = None,
        verify: Verify = True,
        timeout: Optional[float] = None,
    ) -> "Connection":
        """The connection from the arguments, each missing one from the environment
        (``STOCKADE_URL``, ``STOCKADE_TOKEN``), the URL last from :data:`DEFAULT_URL`.

        URL forms: ``http://HOST:PORT``, ``https://HOST:PORT`` and
        ``unix:///path/to.sock``.
        """
        url = url or os.environ.get("STOCKADE_URL") or DEFAULT_URL
        token = token or os.environ.get("STOCKADE_TOKEN") or None
        parts = urlsplit(url)
        if parts.scheme == "unix":
            path = parts.path if not parts.netloc else "/" + parts.netloc + parts.path
            if not path.startswith("/"):
                raise ValueError(f"url {url!r}: a Unix socket URL is unix:///absolute/path")
            base, uds = "http://stockade", path
        elif parts.scheme in ("http", "https"):
            if not parts.netloc:
                raise ValueError(f"url {url!r}: no host")
            base, uds = url.rstrip("/"), None
        else:
            raise ValueError(
                f"url {url!r}: expected http://HOST:PORT, https://HOST:PORT or unix:///PATH"
            )
        if isinstance(verify, (str, os.PathLike)):
            verify = ssl.create_default_context(cafile=os.fspath(verify))
        return Connection(
            base_url=base,
            uds=uds,
            token=token,
            verify=verify,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        )

    def _common(self) -> dict[str, Any]:
        headers = {"User-Agent": "stockade-python"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return {"base_url": self.base_url, "headers": headers, "timeout": self.timeout}

    def client(self) -> httpx.Client:
        """A synchronous httpx client for this connection."""
        transport = httpx.HTTPTransport(uds=self.uds, verify=self.verify)
        return httpx.Client(transport=transport, **self._common())

    def async_client(self) -> httpx.AsyncClient:
        """An asynchronous httpx client for this connection."""
        transport = httpx.AsyncHTTPTransport(uds=self.uds, verify=self.verify)
        return httpx.AsyncClient(transport=transport, **self._common())
