"""``run_code`` against a live server with the code interpreter: globals live on between
calls, output, the last expression's value and exceptions come back, and a timeout
interrupts a cell. The sandbox's image is ``STOCKADE_TEST_PYTHON_IMAGE`` (one with
python3; ``tests/python_client.rs`` builds ``stockade/python``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import stockade


@pytest.fixture
def python_image() -> str:
    image = os.environ.get("STOCKADE_TEST_PYTHON_IMAGE")
    if not image:
        raise RuntimeError("STOCKADE_TEST_PYTHON_IMAGE is not set (an image with python3)")
    return image


@pytest.fixture
def py(url: str, token: str, python_image: str) -> Iterator[stockade.Sandbox]:
    with stockade.Sandbox.create(python_image, memory="128Mi") as sb:
        yield sb


def test_state_is_kept_between_calls(py: stockade.Sandbox) -> None:
    first = py.run_code("x = 41")
    assert (first.result, first.error, first.timed_out) == (None, None, False)
    second = py.run_code("x + 1")
    assert (second.result, second.text) == ("42", "42")
    assert second.execution_count == first.execution_count + 1


def test_output_and_the_last_expression(py: stockade.Sandbox) -> None:
    e = py.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)\n'done'")
    assert (e.stdout, e.stderr, e.result) == ("out\n", "err\n", "'done'")


def test_an_exception_comes_back_with_its_traceback(py: stockade.Sandbox) -> None:
    e = py.run_code("def f():\n    return 1 / 0\nf()")
    assert e.error is not None
    assert (e.error.name, e.error.value) == ("ZeroDivisionError", "division by zero")
    assert "ZeroDivisionError" in e.error.traceback and "f()" in e.error.traceback
    assert py.run_code("1 + 1").result == "2", "the interpreter goes on"


def test_a_timeout_interrupts_the_cell_and_the_interpreter_says_what_it_kept(py: stockade.Sandbox) -> None:
    py.run_code("kept = 'yes'")
    e = py.run_code("while True:\n    pass", timeout=1)
    assert e.timed_out
    after = py.run_code("globals().get('kept')")
    assert after.restarted or after.result == "'yes'"
    if not e.restarted and not after.restarted:
        assert after.result == "'yes'"


async def test_async_run_code(url: str, token: str, python_image: str) -> None:
    async with stockade.AsyncSandbox.create(python_image, memory="128Mi") as sb:
        await sb.run_code("items = [1, 2, 3]")
        e = await sb.run_code("sum(items)")
        assert e.result == "6"
