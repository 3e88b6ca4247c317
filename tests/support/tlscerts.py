"""A certificate authority made by the tests (trustme), and server certificates laid out where
Pushpin's runner looks for them: ``<configdir>/runner/certs/default_<port>.crt``/``.key`` (F3)."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def make_ca() -> trustme.CA:
    return trustme.CA()


def install_default_cert(
    ca: trustme.CA, workdir: Path, port: int, names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> Path:
    """Write a certificate for ``names`` as the default one of https port ``port``."""
    certs = workdir / "runner" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*names)
    crt = certs / f"default_{port}.crt"
    key = certs / f"default_{port}.key"
    crt.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return certs


def client_context(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A verifying client context that trusts ``ca``, offering ``alpn``."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def ca_file(ca: trustme.CA, directory: Path) -> Path:
    path = directory / "ca.pem"
    path.write_bytes(ca.cert_pem.bytes())
    return path
