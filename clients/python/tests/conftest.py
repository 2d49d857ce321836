"""What the tests against a live server need: the server's URL and a token (the
``STOCKADE_URL``/``STOCKADE_TOKEN`` environment the client itself reads), and a second
token's (``STOCKADE_TEST_OTHER_TOKEN``). ``tests/python_client.rs`` starts a server with a
private containerd and sets them; without them the live tests fail, saying so."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import stockade


def _need(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: these tests run against a live `stockade serve --http` "
            "(cargo test --test python_client starts one)"
        )
    return value


@pytest.fixture
def url() -> str:
    """The server's URL."""
    return _need("STOCKADE_URL")


@pytest.fixture
def token() -> str:
    """The token the tests act with."""
    return _need("STOCKADE_TOKEN")


@pytest.fixture
def other_token() -> str:
    """Another token the server knows."""
    return _need("STOCKADE_TEST_OTHER_TOKEN")


@pytest.fixture
def sandbox(url: str, token: str) -> Iterator[stockade.Sandbox]:
    """A small sandbox, removed afterwards."""
    with stockade.Sandbox.create(memory="64Mi") as sb:
        yield sb
