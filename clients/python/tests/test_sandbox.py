"""The synchronous client against a live server: a sandbox is created, runs commands
(with a timeout, environment, working directory, stdin, streamed output), moves files
and directories in and out, is found again, extended and killed; the context manager
removes it; one-shot runs."""

from __future__ import annotations

import pathlib

import pytest

import stockade


def test_create_run_files_and_kill(url: str, token: str) -> None:
    sb = stockade.Sandbox.create(memory="64Mi", name="py-basic", labels={"suite": "py"})
    try:
        assert sb.id.startswith("stk-") and sb.name == "py-basic"
        assert sb.info.labels["suite"] == "py"
        r = sb.commands.run("echo out; echo err >&2; exit 3")
        assert (r.exit_code, r.stdout, r.stderr, r.timed_out, r.ok) == (3, "out\n", "err\n", False, False)
        assert r.id
        # State is kept between commands.
        sb.commands.run(["sh", "-c", "echo 41 > /tmp/x"])
        assert sb.commands.run(["cat", "/tmp/x"]).stdout == "41\n"
        # Files written are read back, listed and seen by commands.
        sb.files.write("/tmp/hello.txt", "hi there\n")
        sb.files.write("/tmp/bin", b"\x00\x01\xff")
        assert sb.files.read_text("/tmp/hello.txt") == "hi there\n"
        assert sb.files.read("/tmp/bin") == b"\x00\x01\xff"
        assert sb.commands.run("cat /tmp/hello.txt").stdout == "hi there\n"
        st = sb.files.stat("/tmp/hello.txt")
        assert (st.name, st.kind, st.size, st.is_file) == ("hello.txt", "file", 9, True)
        sb.files.mkdir("/tmp/d")
        assert sb.files.stat("/tmp/d").is_dir
        assert [e.name for e in sb.files.list("/tmp")] == ["bin", "d", "hello.txt", "x"]
        sb.files.remove("/tmp/hello.txt")
        assert not sb.files.exists("/tmp/hello.txt")
        assert sb.files.exists("/tmp/d")
        with pytest.raises(stockade.NotFound):
            sb.files.read("/tmp/hello.txt")
    finally:
        sb.kill()
    with pytest.raises(stockade.NotFound):
        stockade.Sandbox.connect(sb.id)


def test_command_options(sandbox: stockade.Sandbox) -> None:
    r = sandbox.commands.run(
        'echo "$GREETING $(pwd)"; cat', env={"GREETING": "hello"}, cwd="/tmp", stdin="from stdin\n"
    )
    assert (r.exit_code, r.stdout) == (0, "hello /tmp\nfrom stdin\n")
    b = sandbox.commands.run(["od", "-An", "-tx1"], stdin=b"\x00\xfe")
    assert b.stdout.split() == ["00", "fe"]
    t = sandbox.commands.run("sleep 30", timeout=1)
    assert (t.timed_out, t.exit_code) == (True, 124)


def test_streaming_with_callbacks_and_as_an_iterator(sandbox: stockade.Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    r = sandbox.commands.run(
        "for i in 1 2 3; do echo line$i; done; echo oops >&2; exit 2",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert ("".join(out), "".join(err)) == ("line1\nline2\nline3\n", "oops\n")
    assert (r.exit_code, r.stdout, r.stderr) == (2, "line1\nline2\nline3\n", "oops\n")

    with sandbox.commands.stream(["sh", "-c", "echo a; echo b >&2"]) as s:
        chunks = list(s)
    assert "".join(c.data for c in chunks if c.stream == "stdout") == "a\n"
    assert "".join(c.data for c in chunks if c.stream == "stderr") == "b\n"
    assert (s.result.exit_code, s.result.stdout) == (0, "a\n")

    # Iterated without a `with`: opened and closed by the iteration.
    it = sandbox.commands.stream("echo plain")
    assert [c.data for c in it] == ["plain\n"]
    assert it.result.ok


def test_a_stream_of_a_command_that_cannot_run_raises(sandbox: stockade.Sandbox) -> None:
    with pytest.raises(stockade.StockadeError):
        with sandbox.commands.stream(["/no/such/program"]) as s:
            list(s)


def test_directories_are_uploaded_and_downloaded(sandbox: stockade.Sandbox, tmp_path: pathlib.Path) -> None:
    src = tmp_path / "proj"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)))
    sandbox.files.upload(src, "/tmp")
    assert sandbox.commands.run("cat /tmp/proj/a.txt").stdout == "alpha\n"
    assert sorted(e.name for e in sandbox.files.list("/tmp/proj")) == ["a.txt", "sub"]
    sandbox.commands.run("echo made > /tmp/proj/sub/c.txt")
    back = tmp_path / "back"
    sandbox.files.download("/tmp/proj", back)
    assert (back / "proj" / "a.txt").read_text() == "alpha\n"
    assert (back / "proj" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert (back / "proj" / "sub" / "c.txt").read_text() == "made\n"


def test_connect_list_and_extend(url: str, token: str) -> None:
    with stockade.Sandbox.create(memory="64Mi", name="py-found", lifetime="10m") as sb:
        found = stockade.Sandbox.connect("py-found")
        assert found.id == sb.id
        assert found.commands.run("echo again").stdout == "again\n"
        found.close()
        assert sb.id in [s.id for s in stockade.Sandbox.list()]
        before = sb.info.expires_unix_ms
        assert before is not None
        after = sb.extend("2h").expires_unix_ms
        assert after is not None and after > before


def test_the_context_manager_removes_the_sandbox(url: str, token: str) -> None:
    with stockade.Sandbox.create(memory="64Mi") as sb:
        sb.commands.run("true")
        made = sb.id
    assert made not in [s.id for s in stockade.Sandbox.list()]
    with pytest.raises(stockade.NotFound):
        stockade.Sandbox.connect(made)


def test_the_context_manager_removes_the_sandbox_when_the_block_raises(url: str, token: str) -> None:
    made = ""
    with pytest.raises(KeyError):
        with stockade.Sandbox.create(memory="64Mi") as sb:
            made = sb.id
            raise KeyError("boom")
    assert made and made not in [s.id for s in stockade.Sandbox.list()]


def test_url_and_token_arguments_win_over_the_environment(
    url: str, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOCKADE_URL", "unix:///nonexistent/stockade.sock")
    monkeypatch.setenv("STOCKADE_TOKEN", "not-a-token-of-the-server")
    with pytest.raises(stockade.ConnectionFailed):
        stockade.Sandbox.list()
    assert isinstance(stockade.Sandbox.list(url=url, token=token), list)
    monkeypatch.delenv("STOCKADE_URL")
    monkeypatch.delenv("STOCKADE_TOKEN")
    r = stockade.run("echo args", url=url, token=token, memory="64Mi")
    assert r.stdout == "args\n"


def test_one_shot_run(url: str, token: str) -> None:
    r = stockade.run(["sh", "-c", "cat; echo done"], stdin="in\n", memory="64Mi")
    assert (r.exit_code, r.stdout, r.timed_out) == (0, "in\ndone\n", False)
    assert r.id.startswith("stk-")
    t = stockade.run("sleep 30", timeout=1, memory="64Mi")
    assert (t.timed_out, t.exit_code) == (True, 124)


def test_the_readme_quick_start(url: str, token: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The example of the README's "Quick start for Python", and the output it shows.
    with stockade.Sandbox.create(memory="256Mi", lifetime="10m") as sb:
        sb.files.write("/tmp/data.csv", "3\n4\n")
        r = sb.commands.run("awk '{s += $1} END {print s}' /tmp/data.csv", timeout=30)
        print(r.exit_code, r.stdout, end="")
        sb.commands.run("for i in 1 2; do echo tick $i; sleep 1; done",
                        on_stdout=lambda chunk: print("live:", chunk, end=""))
        print([f.name for f in sb.files.list("/tmp")])
    print(stockade.run(["uname", "-s"]).stdout, end="")
    assert capsys.readouterr().out == "0 7\nlive: tick 1\nlive: tick 2\n['data.csv']\nLinux\n"
