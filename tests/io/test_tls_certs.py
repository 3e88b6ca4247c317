"""The certificate store of the client TLS listeners (F3 ``https_ports``): file naming, SNI
choice, ALPN, start errors and reloading. Handshakes run in memory (``ssl.MemoryBIO``)."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import pytest
import trustme

from gripd.core.errors import ConfigError
from gripd.io.listener.tls import CERT_FILE_MAX, CertStore, scan_names

PORT = 8443


def write_pair(certs: Path, name: str, ca: trustme.CA, *hosts: str) -> None:
    """``<name>.crt``/``.key`` for ``hosts`` (written in place, as an editor would)."""
    certs.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_cert(*hosts)
    (certs / f"{name}.crt").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    (certs / f"{name}.key").write_bytes(cert.private_key_pem.bytes())


def bump(path: Path) -> None:
    """Make a rewrite visible to the (mtime, size, inode) stamp even within one mtime tick."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def handshake(
    server_ctx: ssl.SSLContext, ca: trustme.CA, sni: str | None, alpn: list[str] | None = None
) -> ssl.SSLObject:
    """A complete in-memory handshake; the client's end (peer certificate, ALPN)."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False  # the tests look at the SAN themselves
    ca.configure_trust(client_ctx)
    if alpn:
        client_ctx.set_alpn_protocols(alpn)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for key, obj in (("c", client), ("s", server)):
            if not done[key]:
                try:
                    obj.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done["c"] and done["s"]:
            return client
    raise AssertionError("handshake did not finish")


def sans(obj: ssl.SSLObject) -> set[str]:
    cert = obj.getpeercert()
    assert cert is not None
    return {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certs(tmp_path: Path, ca: trustme.CA) -> Path:
    d = tmp_path / "runner" / "certs"
    write_pair(d, f"default_{PORT}", ca, "default.test")
    write_pair(d, "api.example.com", ca, "api.example.com")
    write_pair(d, "_.example.com", ca, "*.example.com")
    return d


def store(certs: Path, *, http2: bool = True, ports: tuple[int, ...] = (PORT,)) -> CertStore:
    s = CertStore(str(certs), ports, http2=http2, reload_interval=0.05)
    s.load()
    return s


def test_default_cert_without_sni(certs: Path, ca: trustme.CA) -> None:
    s = store(certs)
    assert sans(handshake(s.context(PORT), ca, None)) == {"default.test"}


def test_sni_exact_wildcard_and_fallback(certs: Path, ca: trustme.CA) -> None:
    """condure's order: the name's own file (case-insensitive), ``_.<parent>``, the default."""
    ctx = store(certs).context(PORT)
    assert sans(handshake(ctx, ca, "api.example.com")) == {"api.example.com"}
    assert sans(handshake(ctx, ca, "API.Example.COM")) == {"api.example.com"}
    assert sans(handshake(ctx, ca, "www.example.com")) == {"*.example.com"}
    # One level only: a.b.example.com looks for _.b.example.com, then the default.
    assert sans(handshake(ctx, ca, "a.b.example.com")) == {"default.test"}
    assert sans(handshake(ctx, ca, "other.test")) == {"default.test"}


def test_each_port_has_its_own_default(certs: Path, ca: trustme.CA) -> None:
    write_pair(certs, "default_9443", ca, "nine.test")
    s = store(certs, ports=(PORT, 9443))
    assert sans(handshake(s.context(9443), ca, None)) == {"nine.test"}
    assert sans(handshake(s.context(PORT), ca, None)) == {"default.test"}
    assert sans(handshake(s.context(9443), ca, "api.example.com")) == {"api.example.com"}


@pytest.mark.parametrize(
    ("http2", "offer", "expect"),
    [
        (True, ["h2", "http/1.1"], "h2"),
        (False, ["h2", "http/1.1"], "http/1.1"),
        (True, ["http/1.1"], "http/1.1"),
    ],
)
def test_alpn(certs: Path, ca: trustme.CA, http2: bool, offer: list[str], expect: str) -> None:
    """ALPN is answered from the context the SNI callback switched to, too."""
    ctx = store(certs, http2=http2).context(PORT)
    for sni in (None, "api.example.com"):
        assert handshake(ctx, ca, sni, offer).selected_alpn_protocol() == expect


def test_missing_default_is_a_config_error(tmp_path: Path, ca: trustme.CA) -> None:
    d = tmp_path / "certs"
    write_pair(d, "default_1", ca, "x.test")  # another port's default does not stand in
    (d / "default.crt").write_bytes((d / "default_1.crt").read_bytes())
    (d / "default.key").write_bytes((d / "default_1.key").read_bytes())
    with pytest.raises(ConfigError) as e:
        store(d)
    assert e.value.filename == str(d / f"default_{PORT}.crt")
    assert f"https_ports {PORT}" in str(e.value)


def test_missing_key_named(certs: Path) -> None:
    (certs / f"default_{PORT}.key").unlink()
    with pytest.raises(ConfigError) as e:
        store(certs)
    assert e.value.filename == str(certs / f"default_{PORT}.key")


def test_garbage_files_named(certs: Path) -> None:
    (certs / "api.example.com.crt").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as e:
        store(certs)
    assert e.value.filename == str(certs / "api.example.com.crt")
    assert "no PEM certificate" in str(e.value)


def test_mismatched_key_named(certs: Path) -> None:
    (certs / "api.example.com.key").write_bytes((certs / "_.example.com.key").read_bytes())
    with pytest.raises(ConfigError) as e:
        store(certs)
    assert e.value.filename == str(certs / "api.example.com.key")
    assert "does not match" in str(e.value)


def test_oversized_file_refused(certs: Path) -> None:
    crt = certs / "api.example.com.crt"
    crt.write_bytes(crt.read_bytes() + b"\n" * CERT_FILE_MAX)
    with pytest.raises(ConfigError) as e:
        store(certs)
    assert e.value.filename == str(crt)
    assert "larger than" in str(e.value)


def test_unpaired_crt_is_ignored_with_a_warning(
    certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (certs / "ca.crt").write_text("whatever\n")
    with caplog.at_level(logging.WARNING, logger="gripd.tls"):
        s = store(certs)
    assert "ca" not in s.identities
    assert "ca.crt has no ca.key" in caplog.text


def test_scan_names_skips_invalid_and_unpaired(tmp_path: Path) -> None:
    for n in ("a.crt", "a.key", "b.crt", "c.key", "d\x01.crt", "d\x01.key"):
        (tmp_path / n).write_text("")
    assert scan_names(str(tmp_path)) == (["a"], ["b"])  # d\x01: not a usable name
    assert scan_names(str(tmp_path / "none")) == ([], [])


def test_reload_swaps_changed_pair(certs: Path, ca: trustme.CA) -> None:
    s = store(certs)
    ctx = s.context(PORT)
    assert s.reload() is None  # nothing changed
    write_pair(certs, f"default_{PORT}", ca, "rotated.test")
    bump(certs / f"default_{PORT}.crt")
    table = s.reload()
    assert table is not None
    s.apply(table)
    assert sans(handshake(ctx, ca, None)) == {"rotated.test"}
    # untouched pairs are the same objects (not reloaded)
    assert table["api.example.com"] is not None
    assert sans(handshake(ctx, ca, "api.example.com")) == {"api.example.com"}


def test_reload_picks_up_a_new_sni_pair(certs: Path, ca: trustme.CA) -> None:
    s = store(certs)
    write_pair(certs, "new.test", ca, "new.test")
    table = s.reload()
    assert table is not None
    s.apply(table)
    assert sans(handshake(s.context(PORT), ca, "new.test")) == {"new.test"}


def test_broken_replacement_keeps_old_and_logs_once(
    certs: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    s = store(certs)
    key = certs / "api.example.com.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
    bump(key)
    with caplog.at_level(logging.ERROR, logger="gripd.tls"):
        assert s.reload() is None
        assert s.reload() is None  # same stamps: not tried (or logged) again
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(key) in errors[0].getMessage()
    assert "keeping the certificate loaded before" in errors[0].getMessage()
    assert sans(handshake(s.context(PORT), ca, "api.example.com")) == {"api.example.com"}
    # fixed again: loaded
    write_pair(certs, "api.example.com", ca, "api.example.com", "fixed.example.com")
    bump(certs / "api.example.com.key")
    table = s.reload()
    assert table is not None
    s.apply(table)
    assert sans(handshake(s.context(PORT), ca, "api.example.com")) == {
        "api.example.com",
        "fixed.example.com",
    }


def test_removed_files_keep_the_loaded_cert(
    certs: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    s = store(certs)
    (certs / "api.example.com.crt").unlink()
    (certs / "api.example.com.key").unlink()
    with caplog.at_level(logging.WARNING, logger="gripd.tls"):
        assert s.reload() is None
    assert "removed" in caplog.text
    assert sans(handshake(s.context(PORT), ca, "api.example.com")) == {"api.example.com"}


async def test_watch_reloads_in_the_background(certs: Path, ca: trustme.CA) -> None:
    import asyncio

    s = store(certs)
    task = asyncio.create_task(s.watch())
    try:
        write_pair(certs, f"default_{PORT}", ca, "watched.test")
        bump(certs / f"default_{PORT}.crt")
        for _ in range(200):
            await asyncio.sleep(0.02)
            if sans(handshake(s.context(PORT), ca, None)) == {"watched.test"}:
                break
        assert sans(handshake(s.context(PORT), ca, None)) == {"watched.test"}
    finally:
        task.cancel()
