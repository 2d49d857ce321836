"""The asynchronous client: :class:`AsyncSandbox`, its :class:`AsyncCommands` and
:class:`AsyncFiles`, and the one-shot :func:`async_run`. Each call is the synchronous
one's (:mod:`stockade._sync`), awaited."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Generator, Mapping
from types import TracebackType
from typing import Any, Callable, Optional, Union

import httpx

from . import _wire
from ._connection import Connection, Verify
from ._sync import _WAIT
from ._wire import Command, Duration, Size
from .errors import ConnectionFailed, NotFound, error_from_body
from .models import CommandResult, Execution, FileInfo, Output, SandboxInfo

#: A chunk handler: a plain function or a coroutine function.
Handler = Callable[[str], Union[None, Awaitable[None]]]


class _AsyncApi:
    """One connection to the server and the error mapping of every answer."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.http = conn.async_client()

    async def request(
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
            r = await self.http.request(
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

    async def close(self) -> None:
        await self.http.aclose()


class AsyncCommandStream:
    """A command's output as it comes: ``async for`` the :class:`~stockade.models.Output`
    chunks; :attr:`result` once the iteration has ended. Use it in an ``async with``
    block, or iterate it to the end (which closes it)."""

    def __init__(self, api: _AsyncApi, path: str, body: dict[str, Any]) -> None:
        self._api = api
        self._path = path
        self._body = body
        self._state = _wire.StreamState(str(body.get("encoding", "utf8")))
        self._cm: Any = None
        self._response: Optional[httpx.Response] = None

    async def __aenter__(self) -> "AsyncCommandStream":
        self._cm = self._api.http.stream("POST", self._path, json=self._body, timeout=_WAIT)
        try:
            r: httpx.Response = await self._cm.__aenter__()
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{self._api.conn.base_url}: {e}") from e
        if r.status_code >= 400:
            body = await r.aread()
            await self._cm.__aexit__(None, None, None)
            raise error_from_body(r.status_code, body, r.headers.get("x-request-id"))
        self._response = r
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(exc_type, exc, tb)
            self._cm = None

    async def __aiter__(self) -> AsyncIterator[Output]:
        opened_here = self._response is None
        if opened_here:
            await self.__aenter__()
        assert self._response is not None
        try:
            async for line in self._response.aiter_lines():
                out = self._state.feed(line)
                if out is not None:
                    yield out
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{self._api.conn.base_url}: {e}") from e
        finally:
            if opened_here:
                await self.__aexit__(None, None, None)

    @property
    def result(self) -> CommandResult:
        """How the command ended (after the iteration)."""
        return self._state.finish()


class AsyncCommands:
    """Commands in one sandbox (``sb.commands``), as :class:`stockade.Commands`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    async def run(
        self,
        cmd: Command,
        *,
        timeout: Optional[Duration] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        stdin: Union[str, bytes, None] = None,
        max_output: Optional[Size] = None,
        on_stdout: Optional[Handler] = None,
        on_stderr: Optional[Handler] = None,
    ) -> CommandResult:
        """As :meth:`stockade.Commands.run`; the handlers may be coroutine functions."""
        body = _wire.exec_body(
            cmd, timeout=timeout, env=env, cwd=cwd, user=user, stdin=stdin, max_output=max_output
        )
        if on_stdout is None and on_stderr is None:
            r = await self._sb._api.request("POST", self._sb._path("exec"), json=body, wait=True)
            return _wire.exec_result(r.json())
        async with AsyncCommandStream(
            self._sb._api, self._sb._path("exec", "stream"), body
        ) as s:
            async for chunk in s:
                handler = on_stdout if chunk.stream == "stdout" else on_stderr
                if handler is not None:
                    done = handler(chunk.data)
                    if done is not None:
                        await done
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
    ) -> AsyncCommandStream:
        """As :meth:`stockade.Commands.stream`: ``async with sb.commands.stream(cmd) as
        s: async for chunk in s: ...``."""
        body = _wire.exec_body(
            cmd, timeout=timeout, env=env, cwd=cwd, user=user, stdin=stdin, max_output=max_output
        )
        return AsyncCommandStream(self._sb._api, self._sb._path("exec", "stream"), body)


class AsyncFiles:
    """Files in one sandbox (``sb.files``), as :class:`stockade.Files`."""

    def __init__(self, sandbox: "AsyncSandbox") -> None:
        self._sb = sandbox

    async def _call(
        self, method: str, route: str, path: str, content: Optional[bytes] = None
    ) -> httpx.Response:
        return await self._sb._api.request(
            method,
            self._sb._path(*route.split("/")),
            params={"path": path},
            content=content,
            wait=True,
        )

    async def write(self, path: str, data: Union[str, bytes]) -> None:
        """Writes a file (text as UTF-8), replacing one that is there."""
        await self._call("PUT", "files", path, data.encode() if isinstance(data, str) else bytes(data))

    async def read(self, path: str) -> bytes:
        """A file's bytes."""
        return (await self._call("GET", "files", path)).content

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        """A file's text."""
        return (await self.read(path)).decode(encoding)

    async def list(self, path: str) -> list[FileInfo]:
        """A directory's entries, by name."""
        doc = (await self._call("GET", "files/list", path)).json()
        return [_wire.file_info(e) for e in doc["entries"]]

    async def stat(self, path: str) -> FileInfo:
        """What is at ``path`` (a symbolic link itself, not its target)."""
        return _wire.file_info((await self._call("GET", "files/stat", path)).json())

    async def exists(self, path: str) -> bool:
        """Something is at ``path``."""
        try:
            await self.stat(path)
        except NotFound:
            return False
        return True

    async def remove(self, path: str) -> None:
        """Removes a file, or a directory with what it holds."""
        await self._call("DELETE", "files", path)

    async def mkdir(self, path: str) -> None:
        """Makes a directory (its parent must exist)."""
        await self._call("POST", "files/mkdir", path)

    async def upload(self, local: Union[str, "os.PathLike[str]"], remote_dir: str) -> None:
        """Copies a local file or directory into ``remote_dir``, under its own name."""
        data = await asyncio.to_thread(_wire.pack, local)
        await self._call("PUT", "archive", remote_dir, data)

    async def download(self, remote: str, local_dir: Union[str, "os.PathLike[str]"]) -> None:
        """Copies a file or directory of the sandbox into ``local_dir``, under its own
        name (entries leading out of ``local_dir`` are refused)."""
        data = (await self._call("GET", "archive", remote)).content
        await asyncio.to_thread(_wire.unpack, data, local_dir)


class _Creating:
    """What :meth:`AsyncSandbox.create` returns: await it for the sandbox, or use it in
    ``async with`` to have the sandbox removed on exit."""

    def __init__(self, made: Awaitable["AsyncSandbox"]) -> None:
        self._made = made
        self._sandbox: Optional[AsyncSandbox] = None

    def __await__(self) -> Generator[Any, None, "AsyncSandbox"]:
        return self._made.__await__()

    async def __aenter__(self) -> "AsyncSandbox":
        self._sandbox = await self._made
        return self._sandbox

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._sandbox is not None:
            await self._sandbox.__aexit__(exc_type, exc, tb)


class AsyncSandbox:
    """A long-lived sandbox, asynchronously: ``sb = await AsyncSandbox.create()``, or
    ``async with AsyncSandbox.create() as sb:`` to have it removed on exit."""

    def __init__(self, info: SandboxInfo, api: _AsyncApi) -> None:
        self._api = api
        self.info = info
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)

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
    ) -> _Creating:
        """As :meth:`stockade.Sandbox.create`."""
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
        conn = Connection.resolve(url, token, verify)

        async def made() -> AsyncSandbox:
            api = _AsyncApi(conn)
            try:
                r = await api.request("POST", "/v1/sandboxes", json=body, wait=True)
            except BaseException:
                await api.close()
                raise
            return cls(_wire.sandbox_info(r.json()), api)

        return _Creating(made())

    @classmethod
    async def connect(
        cls,
        id_or_name: str,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        verify: Verify = True,
    ) -> "AsyncSandbox":
        """The sandbox with this id or name (one the token made)."""
        api = _AsyncApi(Connection.resolve(url, token, verify))
        try:
            r = await api.request("GET", _wire.sandbox_path(id_or_name))
        except BaseException:
            await api.close()
            raise
        return cls(_wire.sandbox_info(r.json()), api)

    @staticmethod
    async def list(
        *, url: Optional[str] = None, token: Optional[str] = None, verify: Verify = True
    ) -> list[SandboxInfo]:
        """The token's sandboxes, oldest first."""
        api = _AsyncApi(Connection.resolve(url, token, verify))
        try:
            doc = (await api.request("GET", "/v1/sandboxes")).json()
        finally:
            await api.close()
        return [_wire.sandbox_info(s) for s in doc["sandboxes"]]

    async def refresh(self) -> SandboxInfo:
        """Reads the sandbox's state again (and keeps it in :attr:`info`)."""
        self.info = _wire.sandbox_info((await self._api.request("GET", self._path())).json())
        return self.info

    async def run_code(
        self, code: str, *, language: str = "python", timeout: Optional[Duration] = None
    ) -> Execution:
        """As :meth:`stockade.Sandbox.run_code`."""
        body = _wire.drop_none(
            {"code": code, "language": language, "timeout": _wire.duration(timeout)}
        )
        r = await self._api.request("POST", self._path("code"), json=body, wait=True)
        return _wire.execution(r.json())

    async def extend(self, by: Duration) -> SandboxInfo:
        """Moves the end of its lifetime to ``by`` from now."""
        r = await self._api.request("POST", self._path("extend"), json={"by": _wire.duration(by)})
        self.info = _wire.sandbox_info(r.json())
        return self.info

    async def kill(self) -> None:
        """Removes the sandbox (and closes the connection)."""
        try:
            await self._api.request("DELETE", self._path(), wait=True)
        finally:
            await self._api.close()

    async def close(self) -> None:
        """Closes the connection; the sandbox lives on."""
        await self._api.close()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        try:
            await self.kill()
        except NotFound:
            pass

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r}, name={self.name!r})"


async def async_run(
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
    """As :func:`stockade.run`."""
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
    api = _AsyncApi(Connection.resolve(url, token, verify))
    try:
        r = await api.request("POST", "/v1/run", json=body, wait=True)
        return _wire.run_result(r.json())
    finally:
        await api.close()
