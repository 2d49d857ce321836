"""Error answers become the client's exceptions, with the server's message and field."""

from __future__ import annotations

import pytest

import stockade


def test_no_token_is_an_auth_error(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCKADE_TOKEN")
    with pytest.raises(stockade.AuthError) as e:
        stockade.Sandbox.create(memory="64Mi")
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    assert e.value.request_id and e.value.request_id.startswith("req-")


def test_a_wrong_token_is_an_auth_error(url: str) -> None:
    with pytest.raises(stockade.AuthError):
        stockade.Sandbox.list(token="wrong-token-0123456789abcdef")
    with pytest.raises(stockade.AuthError):
        stockade.run("true", token="wrong-token-0123456789abcdef")


def test_an_unknown_sandbox_is_not_found(url: str, token: str) -> None:
    with pytest.raises(stockade.NotFound) as e:
        stockade.Sandbox.connect("no-such-sandbox")
    assert e.value.status == 404


def test_another_tokens_sandbox_is_not_found(sandbox: stockade.Sandbox, other_token: str) -> None:
    with pytest.raises(stockade.NotFound):
        stockade.Sandbox.connect(sandbox.id, token=other_token)
    assert stockade.Sandbox.list(token=other_token) == []


def test_an_oversize_upload_is_payload_too_large(sandbox: stockade.Sandbox) -> None:
    # The test server takes uploads of at most 1 MiB (--http-max-body 1Mi).
    with pytest.raises(stockade.PayloadTooLarge) as e:
        sandbox.files.write("/tmp/big", b"x" * (2 << 20))
    assert e.value.status == 413
    assert not sandbox.files.exists("/tmp/big")


def test_more_than_the_server_grants_is_forbidden_naming_the_field(url: str, token: str) -> None:
    with pytest.raises(stockade.Forbidden) as e:
        stockade.Sandbox.create(memory="1Gi")
    assert e.value.field == "policy.limits.memory"
    assert "\n" not in e.value.message


def test_a_malformed_field_is_an_invalid_request_naming_it(url: str, token: str) -> None:
    with pytest.raises(stockade.InvalidRequest) as e:
        stockade.Sandbox.create(lifetime="soon")
    assert e.value.field == "lifetime"
    with pytest.raises(stockade.InvalidRequest) as p:
        stockade.Sandbox.create(policy={"colour": "red"})
    assert p.value.field is not None and "colour" in str(p.value)


def test_past_the_quota_is_quota_exceeded(url: str, token: str) -> None:
    # The test server lets a token have two sandboxes alive at once.
    with stockade.Sandbox.create(memory="32Mi"), stockade.Sandbox.create(memory="32Mi"):
        with pytest.raises(stockade.QuotaExceeded) as e:
            stockade.Sandbox.create(memory="32Mi")
        assert e.value.status == 429


def test_a_relative_path_is_an_invalid_request(sandbox: stockade.Sandbox) -> None:
    with pytest.raises(stockade.InvalidRequest) as e:
        sandbox.files.read("tmp/x")
    assert e.value.field == "path"


def test_no_server_is_a_connection_error() -> None:
    with pytest.raises(stockade.ConnectionFailed):
        stockade.Sandbox.list(url="unix:///nonexistent/stockade.sock", token="t" * 20)
