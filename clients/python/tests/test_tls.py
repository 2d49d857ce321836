"""The client over HTTPS (``stockade serve --http IP:PORT --tls-cert --tls-key``): it
connects trusting the server's CA given as ``verify=``, and refuses the server when it
does not trust it. ``STOCKADE_TEST_CA`` is the CA (here the self-signed certificate)."""

from __future__ import annotations

import os
import ssl

import pytest

import stockade


@pytest.fixture
def ca() -> str:
    path = os.environ.get("STOCKADE_TEST_CA")
    if not path:
        raise RuntimeError("STOCKADE_TEST_CA is not set (the server's CA certificate)")
    return path


def test_https_with_the_ca_as_verify(url: str, token: str, ca: str) -> None:
    assert url.startswith("https://")
    with stockade.Sandbox.create(memory="64Mi", verify=ca) as sb:
        assert sb.commands.run("echo over tls").stdout == "over tls\n"
        sb.files.write("/tmp/t", "x")
        assert sb.files.read("/tmp/t") == b"x"
    context = ssl.create_default_context(cafile=ca)
    assert stockade.Sandbox.list(verify=context) == []


def test_an_untrusted_server_is_refused(url: str, token: str) -> None:
    with pytest.raises(stockade.ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        stockade.Sandbox.list()


def test_plain_http_to_the_tls_port_gets_no_answer(url: str, token: str) -> None:
    plain = "http://" + url.removeprefix("https://")
    with pytest.raises(stockade.ConnectionFailed):
        stockade.Sandbox.list(url=plain)
