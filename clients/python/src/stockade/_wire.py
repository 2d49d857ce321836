"""Request bodies and answers, with no I/O: the synchronous and asynchronous clients both
build their requests and read their answers here."""

from __future__ import annotations

import base64
import datetime
import json
import io
import os
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union
from urllib.parse import quote

from .errors import StockadeError, error_from_record
from .models import CommandResult, Execution, ExecutionError, FileInfo, Output, SandboxInfo

#: A duration: ``"30s"``/``"10m"``/``"2h"``/``"500ms"``, seconds as a number, or a timedelta.
Duration = Union[str, int, float, datetime.timedelta]
#: A size: ``"256Mi"``, or bytes as an integer.
Size = Union[str, int]
#: A command: a shell line (run by ``sh -c``) or the argument vector.
Command = Union[str, Sequence[str]]


def duration(value: Optional[Duration]) -> Optional[str]:
    """``value`` as the server writes durations; numbers are seconds."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"duration {value!r}: a non-negative number of seconds")
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value)}s"
    return f"{round(value * 1000)}ms"


def size(value: Optional[Size]) -> Optional[str]:
    """``value`` as the server writes sizes; integers are bytes."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"size {value!r}: a non-negative number of bytes")
    return str(value)


def policy(
    base: Optional[Mapping[str, Any]] = None,
    *,
    image: Optional[str] = None,
    memory: Optional[Size] = None,
    cpus: Optional[float] = None,
    network: Optional[str] = None,
    timeout: Optional[Duration] = None,
) -> Optional[dict[str, Any]]:
    """A request's ``policy``: ``base`` (the policy file's fields as a dict) with the
    keyword arguments laid over it; None when nothing is asked (the server's policy)."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in (base or {}).items()}
    limits: dict[str, Any] = out.get("limits", {})
    if image is not None:
        out["image"] = image
    if memory is not None:
        limits["memory"] = size(memory)
    if cpus is not None:
        limits["cpus"] = float(cpus)
    if timeout is not None:
        limits["timeout"] = duration(timeout)
    if limits:
        out["limits"] = limits
    if network is not None:
        out["network"] = {**out.get("network", {}), "mode": network}
    return out or None


def argv(cmd: Command) -> list[str]:
    """The argument vector: a string is a shell line (``sh -c``)."""
    if isinstance(cmd, str):
        return ["sh", "-c", cmd]
    args = [str(a) for a in cmd]
    if not args:
        raise ValueError("cmd: empty")
    return args


def drop_none(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` without its None members (the server's defaults apply)."""
    return {k: v for k, v in doc.items() if v is not None}


def stdin_field(stdin: Union[str, bytes, None]) -> tuple[Optional[str], str]:
    """The request's ``stdin`` and ``encoding``: bytes travel as base64."""
    if isinstance(stdin, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(stdin)).decode("ascii"), "base64"
    return stdin, "utf8"


def exec_body(
    cmd: Command,
    *,
    timeout: Optional[Duration],
    env: Optional[Mapping[str, str]],
    cwd: Optional[str],
    user: Optional[str],
    stdin: Union[str, bytes, None],
    max_output: Optional[Size],
) -> dict[str, Any]:
    """The body of ``/exec`` and ``/exec/stream``."""
    data, encoding = stdin_field(stdin)
    return drop_none(
        {
            "argv": argv(cmd),
            "env": [f"{k}={v}" for k, v in (env or {}).items()] or None,
            "cwd": cwd,
            "user": user,
            "stdin": data,
            "encoding": encoding,
            "timeout": duration(timeout),
            "max_output": size(max_output),
        }
    )


def text(data: str, encoding: str) -> str:
    """Output as text, whatever its encoding on the wire."""
    if encoding == "base64":
        return base64.b64decode(data).decode("utf-8", "replace")
    return data


def command_result(doc: Mapping[str, Any], stdout: str, stderr: str, id_key: str) -> CommandResult:
    """A :class:`CommandResult` from an exec's outcome or a run's document."""
    truncated = doc.get("truncated") or {}
    return CommandResult(
        exit_code=int(doc["exit_code"]),
        stdout=stdout,
        stderr=stderr,
        timed_out=bool(doc.get("timed_out", False)),
        oom_killed=bool(doc.get("oom_killed", False)),
        signal=doc.get("signal"),
        truncated_stdout=bool(truncated.get("stdout", False)),
        truncated_stderr=bool(truncated.get("stderr", False)),
        id=str(doc.get(id_key, "")),
        duration_ms=float(doc.get("duration_ms", 0.0)),
        raw=dict(doc),
    )


def exec_result(doc: Mapping[str, Any]) -> CommandResult:
    """The answer of ``/exec``."""
    enc = str(doc.get("encoding", "utf8"))
    return command_result(
        doc, text(doc.get("stdout") or "", enc), text(doc.get("stderr") or "", enc), "exec_id"
    )


def run_result(doc: Mapping[str, Any]) -> CommandResult:
    """The answer of ``/v1/run`` (the ``stockade run --json`` document)."""
    return command_result(doc, str(doc.get("stdout", "")), str(doc.get("stderr", "")), "id")


class StreamState:
    """Reads a streamed exec's NDJSON records, one line at a time: output chunks, then
    the ``exit`` record (the result) or an ``error`` record (raised)."""

    def __init__(self, encoding: str = "utf8") -> None:
        self.encoding = encoding
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.result: Optional[CommandResult] = None

    def feed(self, line: str) -> Optional[Output]:
        """One record; the chunk it carries, if any."""
        if not line.strip():
            return None
        rec = json.loads(line)
        if not isinstance(rec, dict):
            raise StockadeError(f"the command's stream: not a record: {line[:80]!r}")
        kind = rec.get("type")
        if kind in ("stdout", "stderr"):
            data = text(rec.get("data") or "", self.encoding)
            (self.stdout if kind == "stdout" else self.stderr).append(data)
            return Output(stream=kind, data=data)
        if kind == "exit":
            self.result = command_result(rec, "".join(self.stdout), "".join(self.stderr), "exec_id")
            return None
        if kind == "error":
            raise error_from_record(rec.get("error"))
        return None

    def finish(self) -> CommandResult:
        """The result, once the stream has ended."""
        if self.result is None:
            raise StockadeError("the command's stream ended without an exit record")
        return self.result


def execution(doc: Mapping[str, Any]) -> Execution:
    """The answer of ``/code``."""
    err = doc.get("error")
    return Execution(
        stdout=str(doc.get("stdout", "")),
        stderr=str(doc.get("stderr", "")),
        result=doc.get("result"),
        error=ExecutionError(
            name=str(err.get("name", "")),
            value=str(err.get("value", "")),
            traceback=str(err.get("traceback", "")),
        )
        if isinstance(err, Mapping)
        else None,
        execution_count=int(doc.get("execution_count", 0)),
        timed_out=bool(doc.get("timed_out", False)),
        restarted=bool(doc.get("restarted", False)),
    )


def file_info(doc: Mapping[str, Any]) -> FileInfo:
    """A ``FileEntry``."""
    return FileInfo(
        name=str(doc["name"]),
        kind=str(doc["kind"]),
        size=int(doc.get("size", 0)),
        mode=int(doc.get("mode", 0)),
        mtime=int(doc.get("mtime", 0)),
        link_target=doc.get("link_target"),
    )


def sandbox_info(doc: Mapping[str, Any]) -> SandboxInfo:
    """A sandbox as ``GET /v1/sandboxes/{id}`` shows it."""
    return SandboxInfo(
        id=str(doc["id"]),
        name=doc.get("name"),
        state=str(doc.get("state", "")),
        image=str(doc.get("image", "")),
        created=str(doc.get("created", "")),
        expires_unix_ms=doc.get("expires_unix_ms"),
        labels={str(k): str(v) for k, v in (doc.get("labels") or {}).items()},
        raw=dict(doc),
    )


def sandbox_path(id_or_name: str, *rest: str) -> str:
    """``/v1/sandboxes/{id}/...`` with the id quoted."""
    return "/".join(["/v1/sandboxes", quote(id_or_name, safe="")] + list(rest))


def pack(local: Union[str, "os.PathLike[str]"]) -> bytes:
    """A tar of ``local`` (a file or a directory), its entries under its own name."""
    path = os.fspath(local)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=os.path.basename(os.path.normpath(path)))
    return buf.getvalue()


def unpack(data: bytes, into: Union[str, "os.PathLike[str]"]) -> None:
    """Extracts a tar from a sandbox into ``into``, refusing entries that would land
    outside it, links out of it, and device files (tarfile's ``data`` filter)."""
    os.makedirs(into, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # pragma: no cover - Python before 3.9.17/3.10.12/3.11.4
            root = os.path.realpath(into)
            for m in tar.getmembers():
                dest = os.path.realpath(os.path.join(root, m.name))
                if not (dest == root or dest.startswith(root + os.sep)) or m.isdev():
                    raise StockadeError(f"archive entry {m.name!r} leads out of {into}")
                if (m.issym() or m.islnk()) and (
                    os.path.isabs(m.linkname) or ".." in m.linkname.split("/")
                ):
                    raise StockadeError(f"archive link {m.name!r} leads out of {into}")
            tar.extractall(into)
