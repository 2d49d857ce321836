"""The client's pure parts, no server: how arguments become request fields, which URL
forms are taken, how error answers and stream records are read."""

from __future__ import annotations

import datetime
import ssl
from typing import Any, Optional

import pytest

import stockade
from stockade import _wire
from stockade._connection import DEFAULT_URL, Connection
from stockade.errors import error_from_body


@pytest.mark.parametrize(
    "given, want",
    [
        (None, None),
        ("10m", "10m"),
        (30, "30s"),
        (2.0, "2s"),
        (1.5, "1500ms"),
        (datetime.timedelta(minutes=2), "120s"),
    ],
)
def test_durations_are_written_as_the_server_reads_them(given: Any, want: Optional[str]) -> None:
    assert _wire.duration(given) == want


@pytest.mark.parametrize("bad", [-1, True])
def test_a_negative_or_boolean_duration_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        _wire.duration(bad)


@pytest.mark.parametrize("given, want", [(None, None), ("256Mi", "256Mi"), (1048576, "1048576")])
def test_sizes_are_strings_or_bytes(given: Any, want: Optional[str]) -> None:
    assert _wire.size(given) == want


def test_keyword_arguments_lay_over_the_policy_given() -> None:
    base = {"limits": {"pids": 64}, "network": {"mode": "none"}, "process": {"env": ["A=1"]}}
    got = _wire.policy(base, image="stockade/python", memory=128 << 20, cpus=0.5, network="loopback", timeout=60)
    assert got == {
        "image": "stockade/python",
        "limits": {"pids": 64, "memory": "134217728", "cpus": 0.5, "timeout": "60s"},
        "network": {"mode": "loopback"},
        "process": {"env": ["A=1"]},
    }
    assert base["limits"] == {"pids": 64}, "the caller's dict is not changed"
    assert _wire.policy() is None


def test_a_command_string_is_a_shell_line_and_a_list_is_the_argv() -> None:
    assert _wire.argv("echo $HOME") == ["sh", "-c", "echo $HOME"]
    assert _wire.argv(("ls", "-l")) == ["ls", "-l"]
    with pytest.raises(ValueError):
        _wire.argv([])


def test_exec_bodies_leave_out_what_is_not_asked_and_send_bytes_as_base64() -> None:
    body = _wire.exec_body(
        ["cat"], timeout=5, env={"A": "1"}, cwd=None, user=None, stdin=b"\x00\xff", max_output=None
    )
    assert body == {"argv": ["cat"], "env": ["A=1"], "stdin": "AP8=", "encoding": "base64", "timeout": "5s"}
    plain = _wire.exec_body("true", timeout=None, env=None, cwd="/tmp", user=None, stdin=None, max_output="1Mi")
    assert plain == {"argv": ["sh", "-c", "true"], "cwd": "/tmp", "encoding": "utf8", "max_output": "1Mi"}


@pytest.mark.parametrize(
    "url, base, uds",
    [
        ("http://127.0.0.1:8700", "http://127.0.0.1:8700", None),
        ("https://sandbox.example:8443/", "https://sandbox.example:8443", None),
        ("unix:///run/stockade/api.sock", "http://stockade", "/run/stockade/api.sock"),
    ],
)
def test_url_forms(url: str, base: str, uds: Optional[str]) -> None:
    c = Connection.resolve(url, "t")
    assert (c.base_url, c.uds, c.token) == (base, uds, "t")


@pytest.mark.parametrize("url", ["ftp://x", "unix:relative.sock", "http://", "127.0.0.1:8700"])
def test_other_url_forms_are_refused_naming_the_url(url: str) -> None:
    with pytest.raises(ValueError, match="url"):
        Connection.resolve(url)


def test_the_environment_gives_what_the_arguments_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_URL", "unix:///env.sock")
    monkeypatch.setenv("STOCKADE_TOKEN", "env-token")
    c = Connection.resolve()
    assert (c.uds, c.token) == ("/env.sock", "env-token")
    c = Connection.resolve("http://127.0.0.1:1", "arg-token")
    assert (c.base_url, c.uds, c.token) == ("http://127.0.0.1:1", None, "arg-token")
    monkeypatch.delenv("STOCKADE_URL")
    monkeypatch.delenv("STOCKADE_TOKEN")
    c = Connection.resolve()
    assert (c.base_url, c.token) == (DEFAULT_URL, None)


def test_a_ca_file_becomes_a_verifying_context(tmp_path: Any) -> None:
    import pathlib

    cert = pathlib.Path(__file__).resolve().parents[3] / "tests/fixtures/tls/cert.pem"
    c = Connection.resolve("https://127.0.0.1:1", verify=str(cert))
    assert isinstance(c.verify, ssl.SSLContext)
    assert c.verify.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, stockade.InvalidRequest),
        (401, stockade.AuthError),
        (403, stockade.Forbidden),
        (404, stockade.NotFound),
        (409, stockade.Conflict),
        (413, stockade.PayloadTooLarge),
        (429, stockade.QuotaExceeded),
        (500, stockade.ServerError),
        (418, stockade.StockadeError),
    ],
)
def test_error_answers_map_to_one_class_each(status: int, cls: type[stockade.StockadeError]) -> None:
    body = b'{"error": {"code": "c", "message": "m is wrong", "field": "policy.limits.memory"}}'
    e = error_from_body(status, body, "req-1")
    assert type(e) is cls and isinstance(e, stockade.StockadeError)
    assert (e.message, e.field, e.code, e.status, e.request_id) == ("m is wrong", "policy.limits.memory", "c", status, "req-1")
    assert str(e) == "m is wrong (field: policy.limits.memory)"


def test_an_answer_that_is_not_the_error_document_keeps_its_first_line() -> None:
    e = error_from_body(502, b"Bad Gateway\n<html>", None)
    assert isinstance(e, stockade.ServerError)
    assert (e.message, e.field) == ("HTTP 502: Bad Gateway", None)


def test_stream_records_make_chunks_then_the_result() -> None:
    s = _wire.StreamState()
    lines = [
        '{"type":"stdout","data":"a"}',
        "",
        '{"type":"stderr","data":"e"}',
        '{"type":"stdout","data":"b"}',
        '{"type":"exit","exec_id":"x1","exit_code":3,"signal":null,"timed_out":false,'
        '"oom_killed":false,"encoding":"utf8","truncated":{"stdout":false,"stderr":true},'
        '"stdout_bytes":2,"stderr_bytes":1,"duration_ms":1.5}',
    ]
    chunks = [c for c in (s.feed(line) for line in lines) if c is not None]
    assert [(c.stream, c.data) for c in chunks] == [("stdout", "a"), ("stderr", "e"), ("stdout", "b")]
    r = s.finish()
    assert (r.exit_code, r.stdout, r.stderr, r.id, r.truncated_stderr, r.ok) == (3, "ab", "e", "x1", True, False)


def test_a_stream_error_record_is_raised_and_a_cut_stream_is_an_error() -> None:
    s = _wire.StreamState()
    with pytest.raises(stockade.CommandFailed, match="no such file"):
        s.feed('{"type":"error","error":{"code":"invalid","message":"no such file","field":"argv"}}')
    with pytest.raises(stockade.StockadeError, match="without an exit record"):
        _wire.StreamState().finish()


def test_base64_streams_are_decoded() -> None:
    s = _wire.StreamState("base64")
    out = s.feed('{"type":"stdout","data":"aGk="}')
    assert out is not None and out.data == "hi"


def test_an_execution_document_is_read_whole() -> None:
    e = _wire.execution(
        {"stdout": "", "stderr": "", "result": None, "execution_count": 2, "timed_out": False,
         "restarted": False, "error": {"name": "ZeroDivisionError", "value": "division by zero", "traceback": "T"}}
    )
    assert e.error == stockade.ExecutionError("ZeroDivisionError", "division by zero", "T")
    assert (e.execution_count, e.result) == (2, None)


def test_archives_leading_out_of_the_target_are_refused(tmp_path: Any) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(Exception):
        _wire.unpack(buf.getvalue(), tmp_path / "in")
    assert not (tmp_path / "escaped").exists()
