"""TLS contexts for both ends. Self-signed certificates come from trustme, never hand-rolled."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from loadgen.errors import ConfigError

__all__ = ["ServerTLS", "client_context", "server_context"]

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A server's TLS context; ``ca_pem`` is set when the certificate is a generated self-signed one."""

    context: ssl.SSLContext
    ca_pem: bytes | None = None

    def write_ca(self, path: Path) -> Path:
        """Write the generated CA so an outside client (``curl --cacert``) can verify the server."""
        if self.ca_pem is None:
            raise ConfigError("the server uses a given certificate; its CA is the user's own")
        path.write_bytes(self.ca_pem)
        return path


def server_context(
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    *,
    hosts: tuple[str, ...] = LOOPBACK_NAMES,
) -> ServerTLS:
    """A server context from a cert/key pair, or a fresh self-signed one (trustme) when none is given."""
    if cert_file is None and key_file is None:
        ca = trustme.CA()
        generated = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*hosts).configure_cert(generated)
        return ServerTLS(generated, ca.cert_pem.bytes())
    if cert_file is None:
        raise ConfigError("a key file needs its certificate file", key="tls.cert")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load certificate {cert_file} / key {key_file}: {exc}", key="tls.cert"
        ) from exc
    return ServerTLS(ctx)


def client_context(
    *, verify: bool = True, ca_file: str | Path | None = None, ca_pem: bytes | None = None
) -> ssl.SSLContext:
    """A client context: verifying against the system store, a CA file or CA bytes, or not at all."""
    try:
        ctx = ssl.create_default_context(
            cafile=str(ca_file) if ca_file else None,
            cadata=ca_pem.decode("ascii") if ca_pem else None,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {ca_file}: {exc}", key="tls.ca_file") from exc
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
