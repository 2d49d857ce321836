"""The synchronous client: :class:`Sandbox`, its :class:`Commands` and :class:`Files`,
and the one-shot :func:`run`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Callable, Optional, Union

import httpx

from . import _wire
from ._connection import Connection, Verify
from ._wire import Command, Duration, Size
from .errors import ConnectionFailed, NotFound, error_from_body
from .models import CommandResult, Execution, FileInfo, Output, SandboxInfo

#: httpx's timeout for requests that last as long as a command: no read deadline (the
#: server's own timeout ends the command), the connection's for connecting.
_WAIT = httpx.Timeout(None, connect=30.0)


class _Api:
    """One connection to the server and the error mapping of every answer."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.http = conn.client()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[Mapping[str, str]] = None,
        content: Optional[bytes] = None,
        wait: bool = False,
    ) -> httpx.Response:
        try:
            r = self.http.request(
                method,
                path,
                json=json,
                params=params,
                content=content,
                timeout=_WAIT if wait else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{self.conn.base_url}: {e}") from e
        if r.status_code >= 400:
            raise error_from_body(r.status_code, r.content, r.headers.get("x-request-id"))
        return r

    def close(self) -> None:
        self.http.close()


class CommandStream:
    """A command's output as it comes: iterate for :class:`~stockade.models.Output`
    chunks; :attr:`result` once the iteration has ended. Use it in a ``with`` block, or
    iterate it to the end (which closes it)."""

    def __init__(self, api: _Api, path: str, body: dict[str, Any]) -> None:
        self._api = api
        self._path = path
        self._body = body
        self._state = _wire.StreamState(str(body.get("encoding", "utf8")))
        self._cm: Any = None
        self._response: Optional[httpx.Response] = None

    def __enter__(self) -> "CommandStream":
        self._cm = self._api.http.stream("POST", self._path, json=self._body, timeout=_WAIT)
        try:
            r: httpx.Response = self._cm.__enter__()
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{self._api.conn.base_url}: {e}") from e
        if r.status_code >= 400:
            body = r.read()
            self._cm.__exit__(None, None, None)
            raise error_from_body(r.status_code, body, r.headers.get("x-request-id"))
        self._response = r
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._cm is not None:
            self._cm.__exit__(exc_type, exc, tb)
            self._cm = None

    def __iter__(self) -> Iterator[Output]:
        opened_here = self._response is None
        if opened_here:
            self.__enter__()
        assert self._response is not None
        try:
            for line in self._response.iter_lines():
                out = self._state.feed(line)
                if out is not None:
                    yield out
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{self._api.conn.base_url}: {e}") from e
        finally:
            if opened_here:
                self.__exit__(None, None, None)

    @property
    def result(self) -> CommandResult:
        """How the command ended (after the iteration)."""
        return self._state.finish()


class Commands:
    """Commands in one sandbox (``sb.commands``)."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def run(
        self,
        cmd: Command,
        *,
        timeout: Optional[Duration] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        max_output: Optional[Size] = None,
        on_stdout: Optional[Callable[[str], None]] = None,
        on_stderr: Optional[Callable[[str], None]] = None,
    ) -> CommandResult:
        """Runs ``cmd`` (a shell line, or the argument vector) and waits for it to end.

        ``timeout`` kills it (``exit_code`` 124, ``timed_out``); ``env`` adds variables;
        ``stdin`` is text or bytes. With ``on_stdout``/``on_stderr`` the output is
        streamed and each chunk handed to them as it comes.
        """
        body = _wire.exec_body(
            cmd, timeout=timeout, env=env, cwd=cwd, user=user, stdin=stdin, max_output=max_output
        )
        if on_stdout is None and on_stderr is None:
            r = self._sb._api.request("POST", self._sb._path("exec"), json=body, wait=True)
            return _wire.exec_result(r.json())
        with CommandStream(self._sb._api, self._sb._path("exec", "stream"), body) as s:
            for chunk in s:
                handler = on_stdout if chunk.stream == "stdout" else on_stderr
                if handler is not None:
                    handler(chunk.data)
        return s.result

    def stream(
        self,
        cmd: Command,
        *,
        timeout: Optional[Duration] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        max_output: Optional[Size] = None,
    ) -> CommandStream:
        """Runs ``cmd`` with its output streamed: ``with sb.commands.stream(cmd) as s:
        for chunk in s: ...``, then ``s.result``. Leaving the block early kills it."""
        body = _wire.exec_body(
            cmd, timeout=timeout, env=env, cwd=cwd, user=user, stdin=stdin, max_output=max_output
        )
        return CommandStream(self._sb._api, self._sb._path("exec", "stream"), body)


class Files:
    """Files in one sandbox (``sb.files``); every path is absolute inside the sandbox."""

    def __init__(self, sandbox: "Sandbox") -> None:
        self._sb = sandbox

    def _call(
        self, method: str, route: str, path: str, content: Optional[bytes] = None
    ) -> httpx.Response:
        return self._sb._api.request(
            method,
            self._sb._path(*route.split("/")),
            params={"path": path},
            content=content,
            wait=True,
        )

    def write(self, path: str, data: Union[str, bytes]) -> None:
        """Writes a file (text as UTF-8), replacing one that is there."""
        self._call("PUT", "files", path, data.encode() if isinstance(data, str) else bytes(data))

    def read(self, path: str) -> bytes:
        """A file's bytes."""
        return self._call("GET", "files", path).content

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """A file's text."""
        return self.read(path).decode(encoding)

    def list(self, path: str) -> list[FileInfo]:
        """A directory's entries, by name."""
        doc = self._call("GET", "files/list", path).json()
        return [_wire.file_info(e) for e in doc["entries"]]

    def stat(self, path: str) -> FileInfo:
        """What is at ``path`` (a symbolic link itself, not its target)."""
        return _wire.file_info(self._call("GET", "files/stat", path).json())

    def exists(self, path: str) -> bool:
        """Something is at ``path``."""
        try:
            self.stat(path)
        except NotFound:
            return False
        return True

    def remove(self, path: str) -> None:
        """Removes a file, or a directory with what it holds."""
        self._call("DELETE", "files", path)

    def mkdir(self, path: str) -> None:
        """Makes a directory (its parent must exist)."""
        self._call("POST", "files/mkdir", path)

    def upload(self, local: Union[str, "os.PathLike[str]"], remote_dir: str) -> None:
        """Copies a local file or directory into ``remote_dir``, under its own name."""
        self._call("PUT", "archive", remote_dir, _wire.pack(local))

    def download(self, remote: str, local_dir: Union[str, "os.PathLike[str]"]) -> None:
        """Copies a file or directory of the sandbox into ``local_dir``, under its own
        name (entries leading out of ``local_dir`` are refused)."""
        _wire.unpack(self._call("GET", "archive", remote).content, local_dir)


class Sandbox:
    """A long-lived sandbox on a stockade server. Make one with :meth:`create`, find one
    with :meth:`connect`; ``with Sandbox.create() as sb:`` removes it on exit."""

    def __init__(self, info: SandboxInfo, api: _Api) -> None:
        self._api = api
        self.info = info
        self.commands = Commands(self)
        self.files = Files(self)

    @property
    def id(self) -> str:
        """The sandbox's id (``stk-…``)."""
        return self.info.id

    @property
    def name(self) -> Optional[str]:
        """Its name, if it was given one."""
        return self.info.name

    def _path(self, *rest: str) -> str:
        return _wire.sandbox_path(self.id, *rest)

    @classmethod
    def create(
        cls,
        image: Optional[str] = None,
        *,
        memory: Optional[Size] = None,
        cpus: Optional[float] = None,
        network: Optional[str] = None,
        timeout: Optional[Duration] = None,
        lifetime: Optional[Duration] = None,
        idle_timeout: Optional[Duration] = None,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        policy: Optional[Mapping[str, Any]] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        verify: Verify = True,
    ) -> "Sandbox":
        """Creates a sandbox.

        ``image``, ``memory`` (``"256Mi"`` or bytes), ``cpus``, ``network`` (``none``,
        ``loopback``, ``egress``) and ``timeout`` (each command's default) lay over
        ``policy`` (the policy file's fields as a dict); whatever is left out is the
        server's. ``lifetime``/``idle_timeout`` remove it after that long (``"10m"`` or
        seconds). The connection comes from ``url``/``token`` or ``STOCKADE_URL``/
        ``STOCKADE_TOKEN``; ``verify`` is a CA file, False, or an ``ssl.SSLContext``.
        """
        body = _wire.drop_none(
            {
                "policy": _wire.policy(
                    policy, image=image, memory=memory, cpus=cpus, network=network, timeout=timeout
                ),
                "name": name,
                "lifetime": _wire.duration(lifetime),
                "idle_timeout": _wire.duration(idle_timeout),
                "labels": dict(labels) if labels else None,
            }
        )
        api = _Api(Connection.resolve(url, token, verify))
        try:
            r = api.request("POST", "/v1/sandboxes", json=body, wait=True)
        except BaseException:
            api.close()
            raise
        return cls(_wire.sandbox_info(r.json()), api)

    @classmethod
    def connect(
        cls,
        id_or_name: str,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        verify: Verify = True,
    ) -> "Sandbox":
        """The sandbox with this id or name (one the token made)."""
        api = _Api(Connection.resolve(url, token, verify))
        try:
            r = api.request("GET", _wire.sandbox_path(id_or_name))
        except BaseException:
            api.close()
            raise
        return cls(_wire.sandbox_info(r.json()), api)

    @staticmethod
    def list(
        *, url: Optional[str] = None, token: Optional[str] = None, verify: Verify = True
    ) -> list[SandboxInfo]:
        """The token's sandboxes, oldest first."""
        api = _Api(Connection.resolve(url, token, verify))
        try:
            doc = api.request("GET", "/v1/sandboxes").json()
        finally:
            api.close()
        return [_wire.sandbox_info(s) for s in doc["sandboxes"]]

    def refresh(self) -> SandboxInfo:
        """Reads the sandbox's state again (and keeps it in :attr:`info`)."""
        self.info = _wire.sandbox_info(self._api.request("GET", self._path()).json())
        return self.info

    def run_code(
        self, code: str, *, language: str = "python", timeout: Optional[Duration] = None
    ) -> Execution:
        """Runs a cell of ``code`` in the sandbox's interpreter, whose globals live on
        between calls: its output, the value of its last expression, the exception."""
        body = _wire.drop_none(
            {"code": code, "language": language, "timeout": _wire.duration(timeout)}
        )
        r = self._api.request("POST", self._path("code"), json=body, wait=True)
        return _wire.execution(r.json())

    def extend(self, by: Duration) -> SandboxInfo:
        """Moves the end of its lifetime to ``by`` from now."""
        doc = self._api.request("POST", self._path("extend"), json={"by": _wire.duration(by)})
        self.info = _wire.sandbox_info(doc.json())
        return self.info

    def kill(self) -> None:
        """Removes the sandbox (and closes the connection)."""
        try:
            self._api.request("DELETE", self._path(), wait=True)
        finally:
            self._api.close()

    def close(self) -> None:
        """Closes the connection; the sandbox lives on."""
        self._api.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            self.kill()
        except NotFound:
            pass

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, name={self.name!r})"


def run(
    cmd: Command,
    *,
    image: Optional[str] = None,
    memory: Optional[Size] = None,
    cpus: Optional[float] = None,
    network: Optional[str] = None,
    timeout: Optional[Duration] = None,
    stdin: Union[str, bytes, None] = None,
    policy: Optional[Mapping[str, Any]] = None,
    url: Optional[str] = None,
    token: Optional[str] = None,
    verify: Verify = True,
) -> CommandResult:
    """Runs one command in a fresh sandbox, removed afterwards."""
    data, encoding = _wire.stdin_field(stdin)
    body = _wire.drop_none(
        {
            "argv": _wire.argv(cmd),
            "policy": _wire.policy(
                policy, image=image, memory=memory, cpus=cpus, network=network, timeout=timeout
            ),
            "stdin": data,
            "encoding": encoding,
        }
    )
    api = _Api(Connection.resolve(url, token, verify))
    try:
        return _wire.run_result(api.request("POST", "/v1/run", json=body, wait=True).json())
    finally:
        api.close()
