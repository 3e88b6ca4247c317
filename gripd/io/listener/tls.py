"""Certificates for the client TLS listeners (``[runner] https_ports``, F3).

The files live in ``<configdir>/runner/certs/``, named as Pushpin's connection manager
(condure) names them:

- ``default_<port>.crt`` + ``default_<port>.key``: the certificate of listener ``<port>``, used
  when the client sends no server name (SNI) or one no other file matches;
- ``<name>.crt`` + ``<name>.key``: chosen when the SNI name (lower-cased) is ``<name>``, or,
  failing that, ``_.<parent>`` for a name one level below ``<parent>`` (``_.example.com`` serves
  ``www.example.com``; wildcards at other levels are not supported).

``.crt`` holds the certificate chain (leaf first) and ``.key`` the private key, both PEM.

Unlike condure, which reads a file the first time a handshake asks for it, every pair is read at
start: a default certificate that is missing, or a pair that cannot be loaded, stops gripd with
one line naming the file, instead of failing handshakes later. Condure has no fallback to a
plain ``default.crt`` and neither has gripd.

Files are watched by polling their (mtime, size, inode) every ``reload_interval`` seconds.
Changed pairs are loaded again off the event loop and the new contexts are swapped in as one
assignment: a new handshake uses the new certificate, an open connection keeps the session it
has. A pair that fails to load after start is logged (file and reason) and the certificate
loaded before stays in use; so does a pair whose files are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gripd.core.config import Listen
from gripd.core.errors import ConfigError
from gripd.io.filestamp import Stamp, file_stamp, stamp_of
from gripd.io.listener.tcp import serve_tcp

log = logging.getLogger("gripd.tls")

CERT_FILE_MAX = 1 << 20  # bytes a .crt or .key file may have (a long chain is a few KiB)
CERTS_MAX = 1000  # certificate pairs read from the directory, the defaults included
NAME_LEN_MAX = 253  # a DNS name's length, as condure's limit for a file name
DIR_ENTRIES_MAX = 10 * CERTS_MAX  # directory entries looked at per scan

SniCallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]


class CertLoadError(Exception):
    """A certificate pair cannot be used; ``path`` is the file at fault, ``reason`` why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Identity:
    """One loaded certificate pair and the stamps of the files it was loaded from."""

    context: ssl.SSLContext
    stamp: tuple[Stamp, Stamp]


def default_name(port: int) -> str:
    """The file name (without ``.crt``/``.key``) of listener ``port``'s certificate."""
    return f"default_{port}"


def _valid_name(name: str) -> bool:
    """condure's rule for a name used as a file name: not too long, no control characters, no
    path separator."""
    if not name or len(name) > NAME_LEN_MAX:
        return False
    return not any(ord(c) < 0x20 or c in ("/", "\0") for c in name)


def _no_password() -> bytes:
    # A key with a passphrase is refused, never prompted for on the terminal.
    return b""


def _stamp(path: str) -> Stamp:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise CertLoadError(path, "not a regular file")
    if st.st_size > CERT_FILE_MAX:
        raise CertLoadError(path, f"larger than {CERT_FILE_MAX} bytes")
    return stamp_of(st)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(CERT_FILE_MAX + 1)
    except OSError as e:
        raise CertLoadError(path, f"cannot read: {e.strerror or e}") from None
    if len(data) > CERT_FILE_MAX:
        raise CertLoadError(path, f"larger than {CERT_FILE_MAX} bytes")
    return data


def _ssl_reason(e: ssl.SSLError) -> str:
    """OpenSSL's short reason (``KEY_VALUES_MISMATCH``...) rather than the C source location."""
    return str(e.reason or e.strerror or e).replace("_", " ").lower()


def server_context(alpn: list[str]) -> ssl.SSLContext:
    """A server context with gripd's protocol settings: TLS 1.2 or later (as condure's
    Mozilla "intermediate" profile), no compression, ``alpn`` offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(alpn)
    return ctx


def load_identity(certs_dir: str, name: str, alpn: list[str]) -> Identity:
    """Load ``<name>.crt``/``<name>.key``; raises :class:`CertLoadError` naming the file."""
    crt = os.path.join(certs_dir, name + ".crt")
    key = os.path.join(certs_dir, name + ".key")
    stamps: list[Stamp] = []
    for path in (crt, key):
        try:
            stamps.append(_stamp(path))
        except FileNotFoundError:
            raise CertLoadError(path, "no such file") from None
        except OSError as e:
            raise CertLoadError(path, f"cannot read: {e.strerror or e}") from None
    # Read first so that a missing marker names the file at fault; OpenSSL's own error for a
    # bad chain or key does not say which of the two it was reading.
    if b"-----BEGIN CERTIFICATE-----" not in _read(crt):
        raise CertLoadError(crt, "no PEM certificate in it")
    if b"PRIVATE KEY-----" not in _read(key):
        raise CertLoadError(key, "no PEM private key in it")
    ctx = server_context(alpn)
    try:
        ctx.load_cert_chain(crt, key, password=_no_password)
    except ssl.SSLError as e:
        reason = _ssl_reason(e)
        path = crt if "cert" in reason and "key" not in reason else key
        if "mismatch" in reason:
            reason = f"private key does not match the certificate {crt}"
        raise CertLoadError(path, reason) from None
    except OSError as e:
        raise CertLoadError(crt, f"cannot read: {e.strerror or e}") from None
    # The files may have changed while being read: the stamp taken before the read makes the
    # next scan load them again in that case.
    return Identity(ctx, (stamps[0], stamps[1]))


def scan_names(certs_dir: str) -> tuple[list[str], list[str]]:
    """The names with a ``.crt`` and a ``.key`` file in ``certs_dir`` (sorted, at most
    :data:`CERTS_MAX`), and the ``.crt`` files without a key (not identities)."""
    crts: set[str] = set()
    keys: set[str] = set()
    try:
        with os.scandir(certs_dir) as it:
            for n, entry in enumerate(it):
                if n >= DIR_ENTRIES_MAX:
                    break
                stem, ext = os.path.splitext(entry.name)
                if ext == ".crt":
                    crts.add(stem)
                elif ext == ".key":
                    keys.add(stem)
    except FileNotFoundError:
        return [], []
    pairs = sorted(n for n in crts & keys if _valid_name(n))
    if len(pairs) > CERTS_MAX:
        log.warning(
            "tls: more than %d certificates in %s; the rest are ignored", CERTS_MAX, certs_dir
        )
    return pairs[:CERTS_MAX], sorted(crts - keys)


class CertStore:
    """The certificates of every ``https_ports`` listener, and their listening contexts.

    :meth:`load` reads everything (start; raises :class:`ConfigError`), :meth:`context` gives
    the context a listener is created with, :meth:`watch` reloads changed files until
    cancelled. Handshakes pick their certificate in one SNI callback that reads the current
    table once, so a reload never shows half a table."""

    def __init__(
        self,
        certs_dir: str,
        ports: Iterable[int],
        *,
        http2: bool = True,
        reload_interval: float = 5.0,
        quiet: bool = False,
    ) -> None:
        """``quiet``: log reloads at debug level only (with workers, the first one speaks for
        all: they all watch the same files)."""
        self.certs_dir = certs_dir
        self.ports = sorted(set(ports))
        self.alpn = ["h2", "http/1.1"] if http2 else ["http/1.1"]
        self.reload_interval = reload_interval
        self.identities: dict[str, Identity] = {}  # replaced whole on a reload, never mutated
        self._listen: dict[int, ssl.SSLContext] = {}
        self._failed: dict[str, tuple[Stamp, ...]] = {}  # stamps whose load failed, logged
        self._gone: set[str] = set()  # names whose files vanished (logged once)
        self._unpaired: set[str] = set()
        self._info = logging.DEBUG if quiet else logging.INFO
        self._warning = logging.DEBUG if quiet else logging.WARNING
        self._error = logging.DEBUG if quiet else logging.ERROR

    # -- start ---------------------------------------------------------------------------------

    def load(self) -> None:
        """Read every pair; a missing default or a pair that cannot be loaded is a
        :class:`ConfigError` naming the file."""
        names, unpaired = scan_names(self.certs_dir)
        table: dict[str, Identity] = {}
        for port in self.ports:
            name = default_name(port)
            try:
                table[name] = load_identity(self.certs_dir, name, self.alpn)
            except CertLoadError as e:
                raise ConfigError(
                    f"cannot load the certificate of https_ports {port}: {e.reason}", e.path
                ) from None
        for name in names:
            if name in table:
                continue
            try:
                table[name] = load_identity(self.certs_dir, name, self.alpn)
            except CertLoadError as e:
                raise ConfigError(
                    f"cannot load the certificate {name}: {e.reason}", e.path
                ) from None
        self._note_unpaired(unpaired)
        self.identities = table
        for port in self.ports:
            # The listener's own context is the one its default pair was loaded into above, so
            # a handshake that somehow skips the callback still gets the right certificate. (A
            # reload replaces the table's entry, never this context.)
            ctx = table[default_name(port)].context
            ctx.sni_callback = self._sni_callback(port)
            self._listen[port] = ctx
        log.debug("tls: %d certificate(s) loaded from %s", len(table), self.certs_dir)

    def context(self, port: int) -> ssl.SSLContext:
        """The context the listener on ``port`` is created with (after :meth:`load`)."""
        return self._listen[port]

    def _note_unpaired(self, unpaired: list[str]) -> None:
        for name in unpaired:
            if name not in self._unpaired:
                path = os.path.join(self.certs_dir, name + ".crt")
                log.log(self._warning, "tls: %s has no %s.key next to it; not used", path, name)
        self._unpaired = set(unpaired)

    # -- handshakes ------------------------------------------------------------------------------

    def lookup(self, server_name: str | None, port: int) -> Identity:
        """The certificate for a handshake (condure's order): the SNI name's own file, then the
        ``_.`` wildcard one level up, then the listener's default."""
        table = self.identities  # one read: a reload swaps the whole table
        if server_name:
            name = server_name.lower()
            ident = table.get(name)
            if ident is None:
                dot = name.find(".")
                if dot >= 0:
                    ident = table.get("_" + name[dot:])
            if ident is not None:
                return ident
        return table[default_name(port)]

    def _sni_callback(self, port: int) -> SniCallback:
        def callback(
            sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
        ) -> int | None:
            # Called once per handshake, with None when the client sent no server name.
            sslobj.context = self.lookup(server_name, port).context
            return None

        return callback

    # -- reload ----------------------------------------------------------------------------------

    def reload(self) -> dict[str, Identity] | None:
        """Look at the files; the new table when a pair changed and loaded, else None. Safe to
        run in a thread: it reads ``identities`` once and changes nothing shared but the
        bookkeeping of what was logged."""
        table = self.identities
        names, unpaired = scan_names(self.certs_dir)
        wanted = set(names) | {default_name(p) for p in self.ports}
        new: dict[str, Identity] = {}
        changed = False
        for name in sorted(wanted | set(table)):
            old = table.get(name)
            if name not in wanted:
                if name not in self._gone:
                    log.log(
                        self._warning,
                        "tls: certificate files for %s were removed; still using the one loaded",
                        name,
                    )
                    self._gone.add(name)
                if old is not None:
                    new[name] = old
                continue
            self._gone.discard(name)
            stamps = self._stamps(name)
            if stamps is None:
                if old is not None:
                    new[name] = old
                continue
            if old is not None and old.stamp == stamps:
                new[name] = old
                continue
            if self._failed.get(name) == stamps:
                if old is not None:
                    new[name] = old
                continue
            try:
                ident = load_identity(self.certs_dir, name, self.alpn)
            except CertLoadError as e:
                self._failed[name] = stamps
                what = "keeping the certificate loaded before" if old else "not used"
                log.log(
                    self._error, "tls: cannot load certificate %s: %s; %s", e.path, e.reason, what
                )
                if old is not None:
                    new[name] = old
                continue
            self._failed.pop(name, None)
            new[name] = ident
            changed = True
            log.log(self._info, "tls: certificate %s %s", name, "reloaded" if old else "loaded")
        self._note_unpaired(unpaired)
        return new if changed else None

    def _stamps(self, name: str) -> tuple[Stamp, Stamp] | None:
        """The pair's current stamps, None when a file is missing or not a regular file (a
        rename in progress; the next scan looks again)."""
        out: list[Stamp] = []
        for ext in (".crt", ".key"):
            s = file_stamp(os.path.join(self.certs_dir, name + ext))
            if s is None:
                return None
            out.append(s)
        return (out[0], out[1])

    def apply(self, table: dict[str, Identity]) -> None:
        """Swap in a table from :meth:`reload` (one assignment: handshakes see old or new)."""
        self.identities = table

    async def watch(self) -> None:
        """Reload changed files every ``reload_interval`` seconds until cancelled. The files are
        read in a thread, so a slow disk does not stall the connections."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                table = await loop.run_in_executor(None, self.reload)
            except Exception:  # never let the watcher die on a surprise; log and go on
                log.exception("tls: certificate reload failed")
                continue
            if table is not None:
                self.apply(table)


HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS handshake may take (less if client_header_timeout)


async def serve_tls(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], asyncio.Protocol],
    listens: Iterable[Listen],
    certs: CertStore,
    *,
    reuse_port: bool,
    header_timeout: float,
    announce: bool,
) -> list[asyncio.Server]:
    """One TLS server per ``https_ports`` entry, each with its port's context from ``certs``.
    A handshake must finish within :data:`HANDSHAKE_TIMEOUT` or ``header_timeout`` (the
    ``client_header_timeout``) if that is shorter and not 0. Raises :class:`BindError`."""
    timeout = HANDSHAKE_TIMEOUT
    if 0 < header_timeout < timeout:
        timeout = header_timeout
    servers: list[asyncio.Server] = []
    try:
        for listen in listens:
            server = await serve_tcp(
                loop,
                factory,
                listen,
                "https_ports",
                reuse_port=reuse_port,
                announce=announce,
                tls=certs.context(listen.port),
                handshake_timeout=timeout,
            )
            servers.append(server)
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers


async def stop_watch(task: asyncio.Task[None] | None) -> None:
    """Cancel a :meth:`CertStore.watch` task and wait for it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
