"""What the API answers, as typed values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass(frozen=True)
class CommandResult:
    """How a command ended, with its output.

    ``exit_code`` is 124 when the timeout killed it and 128+N for signal N; ``stdout`` and
    ``stderr`` are text (bytes that are not UTF-8 replaced), cut at the sandbox's output cap
    when ``truncated_stdout``/``truncated_stderr`` say so.
    """

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    oom_killed: bool = False
    signal: Optional[int] = None
    truncated_stdout: bool = False
    truncated_stderr: bool = False
    #: The exec's id (a one-shot run's id for :func:`stockade.run`).
    id: str = ""
    duration_ms: float = 0.0
    #: The server's whole answer.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """The command exited 0."""
        return self.exit_code == 0


@dataclass(frozen=True)
class Output:
    """A chunk of a streamed command's output."""

    stream: Literal["stdout", "stderr"]
    data: str


@dataclass(frozen=True)
class ExecutionError:
    """The exception a code cell raised: its class name, its value and the traceback."""

    name: str
    value: str
    traceback: str


@dataclass(frozen=True)
class Execution:
    """What a code cell did: its output, the value of its last expression (``result``, the
    ``repr``), the exception it raised, and whether the interpreter was interrupted by the
    timeout or restarted (its state lost)."""

    stdout: str
    stderr: str
    result: Optional[str]
    error: Optional[ExecutionError]
    execution_count: int
    timed_out: bool
    restarted: bool

    @property
    def text(self) -> Optional[str]:
        """The value of the last expression, as :attr:`result`."""
        return self.result


@dataclass(frozen=True)
class FileInfo:
    """A file in a sandbox."""

    name: str
    #: ``file``, ``dir``, ``symlink`` or ``other``.
    kind: str
    size: int
    mode: int
    #: Last modification, unix seconds.
    mtime: int
    link_target: Optional[str] = None

    @property
    def is_dir(self) -> bool:
        """It is a directory."""
        return self.kind == "dir"

    @property
    def is_file(self) -> bool:
        """It is a regular file."""
        return self.kind == "file"


@dataclass(frozen=True)
class SandboxInfo:
    """A sandbox as the server shows it."""

    id: str
    name: Optional[str]
    state: str
    image: str
    created: str
    #: When its lifetime ends, unix milliseconds; None without a lifetime.
    expires_unix_ms: Optional[int]
    labels: dict[str, str]
    #: The server's whole answer.
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
