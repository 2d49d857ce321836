# stockade's code interpreter, run inside a sandbox as the sandbox's user.
#
#   python3 -I -c SCRIPT cell   one cell: the request (JSON) on stdin, one JSON report on
#                               stdout; starts the interpreter first when none answers
#
# The interpreter ("serve", started by a cell and detached into a session of its own) keeps
# the globals of every cell in one dict and runs one cell per connection on its Unix socket
# in DIR. A cell that outlives its timeout gets SIGINT (KeyboardInterrupt); one that does
# not come back within the grace has its interpreter's process group killed, and a new
# interpreter is started. Standard library only; Python 3.7 or later.
import ast
import builtins
import json
import linecache
import os
import signal
import socket
import sys
import threading
import time
import traceback

DIR = "/tmp/.stockade-code"
SOCK = DIR + "/sock"
PIDFILE = DIR + "/pid"
# The largest request line (the code and its settings, JSON-encoded).
MAX_REQUEST = 8 << 20
# How long a cell waits for the interpreter after SIGINT before killing it.
GRACE = 2.0
# How long a cell waits for a killed interpreter to be gone.
KILL_WAIT = 5.0
# The longest error name kept.
MAX_NAME = 256


def dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def cap_text(data, cap):
    """`data` (bytes or str) as text of at most `cap` UTF-8 bytes."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8", "replace")
    b = data.encode("utf-8", "backslashreplace")
    if len(b) <= cap:
        return b.decode("utf-8", "replace")
    return b[:cap].decode("utf-8", "ignore")


class Lines:
    """Lines from a socket, what follows a line kept for the next."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def read(self, limit, deadline=None):
        """One line of at most `limit` bytes, by `deadline` (monotonic seconds). None when
        the peer closed first; raises TimeoutError past the deadline."""
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return line
            if len(self.buf) > limit:
                raise ValueError("line longer than %d bytes" % limit)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError()
                self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                raise TimeoutError()
            if not chunk:
                return None
            self.buf += chunk


# ---------------------------------------------------------------- the interpreter


class Capture:
    """File descriptor `fd` pointed at a pipe while a cell runs; at most `cap` bytes kept
    (the rest read and dropped, so writers never block)."""

    def __init__(self, fd, cap):
        self.fd = fd
        self.cap = cap
        self.buf = bytearray()
        r, w = os.pipe()
        self.saved = os.dup(fd)
        os.dup2(w, fd)
        os.close(w)
        self.r = r
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                b = os.read(self.r, 1 << 16)
                if not b:
                    break
                room = self.cap - len(self.buf)
                if room > 0:
                    self.buf += b[:room]
        finally:
            os.close(self.r)

    def stop(self):
        os.dup2(self.saved, self.fd)
        os.close(self.saved)
        # Processes the cell left running may hold the pipe open: let go after a moment.
        self.thread.join(0.5)
        return cap_text(bytes(self.buf), self.cap)


def describe(e, cap):
    if isinstance(e, SyntaxError):
        lines = traceback.format_exception_only(type(e), e)
    else:
        tb = e.__traceback__
        # The first frame is run_cell's own.
        if tb is not None and tb.tb_frame.f_code is run_cell.__code__:
            tb = tb.tb_next
        lines = traceback.format_exception(type(e), e, tb)
    try:
        value = str(e)
    except BaseException:
        value = "<unprintable %s>" % type(e).__name__
    return {
        "name": cap_text(type(e).__name__, MAX_NAME),
        "value": cap_text(value, cap),
        "traceback": cap_text("".join(lines), cap),
    }


def run_cell(g, n, code, cap):
    name = "<cell %d>" % n
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    result = None
    error = None
    saved = (sys.stdout, sys.stderr)
    for f in saved:
        try:
            f.flush()
        except BaseException:
            pass
    out = Capture(1, cap)
    err = Capture(2, cap)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    try:
        try:
            # Only a running cell is interrupted (KeyboardInterrupt, raised by Python's own
            # handler, so no frame of ours shows); between cells SIGINT is ignored.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            tree = ast.parse(code, name, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, name, "exec"), g)
            if last is not None:
                value = eval(compile(last, name, "eval"), g)
                if value is not None:
                    builtins._ = value
                    result = cap_text(repr(value), cap)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    except BaseException as e:
        error = describe(e, cap)
    finally:
        for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                f.flush()
            except BaseException:
                pass
        sys.stdout, sys.stderr = saved
        stdout = out.stop()
        stderr = err.stop()
    return {"stdout": stdout, "stderr": stderr, "result": result, "error": error}


def fit(reply, budget):
    """`reply` encoded in at most `budget` bytes: its longest text halved until it fits."""
    while True:
        data = dumps(reply)
        if len(data) <= budget:
            return data
        texts = [(reply, k) for k in ("stdout", "stderr", "result") if reply.get(k)]
        if reply.get("error"):
            texts += [(reply["error"], k) for k in ("value", "traceback")]
        d, k = max(texts, key=lambda t: len(t[0][t[1]]))
        d[k] = d[k][: len(d[k]) // 2]


def serve(lsock):
    with open(PIDFILE, "w") as f:
        f.write(str(os.getpid()))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path.insert(0, "")
    g = {"__name__": "__main__", "__builtins__": builtins}
    n = 0
    while True:
        conn, _ = lsock.accept()
        try:
            line = Lines(conn).read(MAX_REQUEST, time.monotonic() + 10)
            if line is None:
                continue
            req = json.loads(line)
            code, cap = req["code"], int(req["max_output"])
            n += 1
            conn.settimeout(None)
            conn.sendall(dumps({"execution_count": n, "pid": os.getpid()}) + b"\n")
            try:
                reply = run_cell(g, n, code, cap)
            except BaseException as e:
                # A failure of this program's own, not the cell's: say so, and carry on.
                reply = {"stdout": "", "stderr": "", "result": None,
                         "error": {"name": "InterpreterError", "value": type(e).__name__,
                                   "traceback": ""}}
            conn.sendall(fit(reply, int(req["budget"])) + b"\n")
        except BaseException:
            pass
        finally:
            conn.close()


# ---------------------------------------------------------------- one cell


def start_interpreter():
    """Starts an interpreter listening on SOCK, detached (its own session, stdio on
    /dev/null, reparented to the sandbox's init)."""
    os.makedirs(DIR, mode=0o700, exist_ok=True)
    for p in (SOCK, PIDFILE):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(SOCK)
    lsock.listen(8)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            keep = lsock.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, 1 << 16)
            serve(lsock)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    lsock.close()


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(SOCK)
        return s
    except OSError:
        s.close()
        return None


def interpreter_pid(ack):
    if ack is not None:
        return int(ack["pid"])
    try:
        with open(PIDFILE) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def kill_interpreter(pid):
    if pid is None or pid <= 1:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
    end = time.monotonic() + KILL_WAIT
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.02)


def cell():
    req = json.loads(sys.stdin.buffer.read(MAX_REQUEST + 1))
    timeout = int(req["timeout_ms"]) / 1000.0
    budget = int(req["budget"])
    report = {"started": False, "killed": False, "timed_out": False,
              "execution_count": None, "reply": None}
    s = connect()
    if s is None:
        start_interpreter()
        report["started"] = True
        s = connect()
    if s is None:
        raise SystemExit("cannot reach the interpreter at " + SOCK)
    s.sendall(dumps(req) + b"\n")
    lines = Lines(s)
    deadline = time.monotonic() + timeout
    ack = None
    line = None
    try:
        ack = json.loads(lines.read(4096, deadline) or b"null")
        if ack is not None:
            report["execution_count"] = int(ack["execution_count"])
            line = lines.read(budget + 1, deadline)
    except TimeoutError:
        report["timed_out"] = True
        pid = interpreter_pid(ack)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:
                pass
        try:
            if ack is None:
                ack = json.loads(lines.read(4096, time.monotonic() + GRACE) or b"null")
                if ack is not None:
                    report["execution_count"] = int(ack["execution_count"])
            if ack is not None:
                line = lines.read(budget + 1, time.monotonic() + GRACE)
        except TimeoutError:
            report["killed"] = True
    if report["killed"]:
        # Outside the handler: the new interpreter must not start inside its context.
        kill_interpreter(interpreter_pid(ack))
        start_interpreter()
    if line is not None:
        report["reply"] = json.loads(line)
    sys.stdout.buffer.write(dumps(report) + b"\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["cell"]:
        cell()
    else:
        raise SystemExit("usage: cell")
