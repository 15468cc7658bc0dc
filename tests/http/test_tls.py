"""HTTPS: our server with a trustme certificate against our pool, curl and non-TLS peers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
import trustme
from conftest import StartServer, exchange, wait_for

from loadgen.errors import ConfigError, TLSError
from loadgen.http.client import ConnectionPool, Origin, open_pool
from loadgen.http.server import HTTPServer
from loadgen.http.tls import ServerTLS, client_context, server_context


@pytest.fixture(scope="module")
def tls() -> ServerTLS:
    return server_context()


@pytest.fixture
async def https_server(start_server: StartServer, tls: ServerTLS) -> tuple[HTTPServer, Origin]:
    return await start_server(ssl_context=tls.context)


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
async def test_pool_over_tls(
    https_server: tuple[HTTPServer, Origin], tls: ServerTLS, verify: bool
) -> None:
    srv, origin = https_server
    assert tls.ca_pem is not None
    context = client_context(ca_pem=tls.ca_pem) if verify else client_context(verify=False)
    async with open_pool(ssl_context=context) as pool:
        for i in range(3):
            response = await pool.request(origin, b"/echo", b"[%d]" % i)
            assert (response.status, response.body) == (200, b"[%d]" % i)
        assert (await pool.request(origin, b"/empty")).status == 204
        assert pool.stats.connections_opened == 1
        assert pool.stats.reused == 3
    assert srv.stats.requests_fast == 4
    assert srv.stats.tls_errors == 0


async def test_force_h11_over_tls(start_server: StartServer, tls: ServerTLS) -> None:
    srv, origin = await start_server(ssl_context=tls.context, force_h11=True)
    async with open_pool(ssl_context=client_context(verify=False), force_h11=True) as pool:
        assert (await pool.request(origin, b"/echo", b"h11")).body == b"h11"
    assert srv.stats.requests_h11 == 1


@pytest.mark.parametrize("which", ["other-ca", "system-store"])
async def test_wrong_ca_is_a_tls_error(
    https_server: tuple[HTTPServer, Origin], tls: ServerTLS, which: str
) -> None:
    srv, origin = https_server
    context = client_context(ca_pem=trustme.CA().cert_pem.bytes()) if which == "other-ca" else None
    async with open_pool(ssl_context=context) as pool:
        with pytest.raises(TLSError) as info:
            await pool.request(origin, b"/echo")
        assert info.value.kind == "tls"
        assert pool.stats.errors == {"tls": 1}
        assert pool.stats.connections_open == 0
    await wait_for(lambda: srv.stats.connections_open == 0, "the server drops the handshake")
    # TLS 1.3: the server's side of the handshake is done when the client rejects the certificate,
    # so the server may see only an end of stream, not an error
    assert srv.stats.tls_errors + srv.stats.peer_resets <= 1
    assert not srv.stats.errors
    assert tls.ca_pem is not None
    async with open_pool(ssl_context=client_context(ca_pem=tls.ca_pem)) as pool:
        assert (await pool.request(origin, b"/echo", b"ok")).body == b"ok"


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", id="http"),
        pytest.param(b"", id="connect-and-close"),
        pytest.param(b"\x16\x03\x01\x00\x05hello", id="broken-hello"),
    ],
)
async def test_non_tls_peer_on_the_tls_port(
    https_server: tuple[HTTPServer, Origin], tls: ServerTLS, wire: bytes
) -> None:
    srv, origin = https_server
    if wire:
        answer = await exchange(origin, wire)
        assert b"HTTP/1.1" not in answer  # no plain-text answer leaks out of the TLS port
    else:
        stream = await trio.open_tcp_stream(origin.host, origin.port)
        await stream.aclose()
    await wait_for(lambda: srv.stats.connections_accepted == 1, "the server accepts")
    await wait_for(lambda: srv.stats.connections_open == 0, "the server drops the peer")
    assert srv.stats.tls_errors + srv.stats.peer_resets == (1 if wire else 0)
    assert not srv.stats.errors
    assert tls.ca_pem is not None
    async with open_pool(ssl_context=client_context(ca_pem=tls.ca_pem)) as pool:
        assert (await pool.request(origin, b"/echo", b"ok")).body == b"ok"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_with_cacert(
    https_server: tuple[HTTPServer, Origin], tls: ServerTLS, tmp_path: Path
) -> None:
    srv, origin = https_server
    ca = tls.write_ca(tmp_path / "ca.pem")
    result = await trio.run_process(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            str(ca),
            "--data-binary",
            "tls",
            f"{origin}/echo",
        ],
        capture_stdout=True,
    )
    assert result.stdout == b"tls"
    assert srv.stats.requests_fast == 1


# --- configuration --------------------------------------------------------------------------------


def test_given_certificate_files(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    given = server_context(cert_file, key_file)
    assert given.ca_pem is None
    with pytest.raises(ConfigError):
        given.write_ca(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda p: server_context(key_file=p / "key.pem"), id="key-without-cert"),
        pytest.param(lambda p: server_context(p / "missing.pem"), id="missing-cert"),
        pytest.param(lambda p: client_context(ca_file=p / "missing.pem"), id="missing-ca"),
    ],
)
def test_bad_tls_configuration(tmp_path: Path, call: object) -> None:
    assert callable(call)
    with pytest.raises(ConfigError):
        call(tmp_path)


async def test_tls_pool_repr(tls: ServerTLS) -> None:
    pool = ConnectionPool(ssl_context=tls.context)
    assert "requests=0" in repr(pool)
