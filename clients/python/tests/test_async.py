"""The asynchronous client against a live server: the same calls, awaited."""

from __future__ import annotations

import asyncio
import pathlib

import pytest

import stockade


async def test_async_create_run_files_stream_and_remove(url: str, token: str, tmp_path: pathlib.Path) -> None:
    async with stockade.AsyncSandbox.create(memory="64Mi", name="py-async") as sb:
        assert sb.name == "py-async"
        r = await sb.commands.run("echo hi; exit 4")
        assert (r.exit_code, r.stdout) == (4, "hi\n")
        await sb.files.write("/tmp/a.txt", "async\n")
        assert await sb.files.read_text("/tmp/a.txt") == "async\n"
        assert [e.name for e in await sb.files.list("/tmp")] == ["a.txt"]
        assert (await sb.files.stat("/tmp/a.txt")).size == 6
        await sb.files.mkdir("/tmp/d")
        await sb.files.remove("/tmp/a.txt")
        assert not await sb.files.exists("/tmp/a.txt")

        seen: list[str] = []

        async def on_out(data: str) -> None:
            seen.append(data)

        s = await sb.commands.run("echo one; echo two", on_stdout=on_out, on_stderr=seen.append)
        assert ("".join(seen), s.stdout) == ("one\ntwo\n", "one\ntwo\n")
        async with sb.commands.stream(["sh", "-c", "echo x >&2"]) as st:
            chunks = [c async for c in st]
        assert [(c.stream, c.data) for c in chunks] == [("stderr", "x\n")]
        assert st.result.ok

        (tmp_path / "up").mkdir()
        (tmp_path / "up" / "f").write_text("f\n")
        await sb.files.upload(tmp_path / "up", "/tmp/d")
        await sb.files.download("/tmp/d/up", tmp_path / "down")
        assert (tmp_path / "down" / "up" / "f").read_text() == "f\n"

        again = await stockade.AsyncSandbox.connect("py-async")
        assert again.id == sb.id
        await again.close()
        assert sb.id in [i.id for i in await stockade.AsyncSandbox.list()]
        made = sb.id
    assert made not in [i.id for i in await stockade.AsyncSandbox.list()]


async def test_awaited_create_and_kill_and_concurrent_commands(url: str, token: str) -> None:
    sb = await stockade.AsyncSandbox.create(memory="64Mi")
    try:
        results = await asyncio.gather(*(sb.commands.run(f"echo {i}") for i in range(4)))
        assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    finally:
        await sb.kill()
    with pytest.raises(stockade.NotFound):
        await stockade.AsyncSandbox.connect(sb.id)


async def test_async_errors_and_one_shot_run(url: str, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r = await stockade.async_run("echo once", memory="64Mi")
    assert r.stdout == "once\n"
    with pytest.raises(stockade.NotFound):
        await stockade.AsyncSandbox.connect("no-such-sandbox")
    monkeypatch.delenv("STOCKADE_TOKEN")
    with pytest.raises(stockade.AuthError):
        await stockade.AsyncSandbox.list()
