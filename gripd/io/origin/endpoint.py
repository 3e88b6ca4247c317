"""Origin targets as the HTTP client sees them: :class:`Endpoint` (one ``host:port``, plain or
TLS, and the key of the keep-alive pool), a route's targets as endpoints in failover order
(F10, with TLS SNI per F11), and the origin-form request target.

Kept apart from the connection machinery in :mod:`gripd.io.origin.http` because the proxy, the
WebSocket client and the next-link fetcher resolve endpoints too.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Endpoint", "endpoints_for", "origin_form"]


@dataclass(slots=True, init=False, eq=False)
class Endpoint:
    """One origin target (F10/F11); also the key of the keep-alive pool. Not to be changed
    once made (it is a dict key): its hash is computed once."""

    host: str
    port: int
    ssl: bool
    insecure: bool
    server_hostname: str | None
    _hash: int = field(init=False, repr=False)  # derived: set in __init__

    # An explicit __init__, __eq__ and __hash__: a compiled build (mypyc) compiles them; the
    # ones the dataclass decorator generates stay interpreted, and a pool lookup per request
    # cost ~6x more with them.
    def __init__(
        self,
        host: str,
        port: int,
        ssl: bool = False,
        insecure: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.insecure = insecure
        self.server_hostname = server_hostname
        self._hash = hash((host, port, ssl, insecure, server_hostname))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return (
            self._hash == other._hash
            and self.host == other.host
            and self.port == other.port
            and self.ssl == other.ssl
            and self.insecure == other.insecure
            and self.server_hostname == other.server_hostname
        )

    def __hash__(self) -> int:
        return self._hash

    def label(self) -> str:
        """``host:port``, as Pushpin names targets in its errors."""
        return f"{self.host}:{self.port}"


class _TargetLike(typing.Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def ssl(self) -> bool: ...
    @property
    def insecure(self) -> bool: ...
    @property
    def host_header(self) -> str | None: ...


def endpoints_for(
    targets: Sequence[_TargetLike], as_host: str | None, request_host: str
) -> list[Endpoint]:
    """A route's ``host:port`` targets as endpoints, in failover order (F10). TLS targets get
    SNI from the target's ``host=``, the route's ``as_host``, or the request's host (F11)."""
    out = []
    for t in targets:
        if t.kind != "host":
            continue
        sni = t.host_header or as_host or request_host.split(":")[0] or t.host
        out.append(
            Endpoint(t.host, t.port, t.ssl, t.insecure, sni.split(":")[0] if t.ssl else None)
        )
    return out


def origin_form(url: str) -> str:
    """``http://host/p?q`` -> ``/p?q``; origin-form request targets pass unchanged."""
    if url.startswith(("http://", "https://", "ws://", "wss://")):
        rest = url.split("://", 1)[1]
        i = rest.find("/")
        return rest[i:] if i >= 0 else "/"
    return url or "/"
