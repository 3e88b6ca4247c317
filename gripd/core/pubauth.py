"""Authenticated publishing: the ``Authorization: Bearer <JWT>`` check on publish requests.

With ``[gripd] publish_key`` set, the HTTP control API and the command socket accept only
requests that carry a JWT signed with that key (HS256 secret, or an ES256/RS256 PEM key, parsed
as ``sig_key`` is), with an ``exp`` not yet passed and, when ``publish_iss`` is set, that
``iss``. It is what ``gripcontrol``/``pubcontrol`` (PyJWT, ``{"iss", "exp": now+3600}``) and
``@fanoutio/grip`` (jose, ``{"iss", "exp": now+600}``) send for a GRIP URL with ``iss`` and
``key``. Without ``publish_key`` nothing is checked (Pushpin has no publish authentication).

The answer to a refused request is a :class:`Rejection`: 401 when there is no usable token
(no header, not ``Bearer``, not a JWT), 403 when there is one and it is refused (algorithm,
signature, ``exp``, ``nbf``, ``iss``). Its message never quotes the token, so it can be logged.
Policy: ``exp`` is required (a token without one would be valid forever); ``nbf``, when
present, is honoured with :data:`NBF_LEEWAY` seconds of clock skew.

JWS decoding and signature checks are ``gripd.core.sig``'s (Grip-Sig uses the same framing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from gripd.core.sig import SigningKey, decode_jws, parse_key, verify_signature

__all__ = [
    "MAX_TOKEN_LENGTH",
    "NBF_LEEWAY",
    "PublishAuth",
    "PublishGate",
    "Rejection",
    "bearer_token",
    "check_token",
    "load_publish_auth",
]

#: Longer ``Authorization`` values are refused before any parsing (a real token is < 1 KiB).
MAX_TOKEN_LENGTH: Final = 8192
#: Seconds a token's ``nbf`` may be ahead of this clock (the publisher's clock may run fast).
NBF_LEEWAY: Final = 60
_CACHE_MAX: Final = 128
_CACHE_TOKEN_MAX: Final = 2048

# JWA names that may be quoted back in a message; any other ``alg`` value is not echoed.
_KNOWN_ALGS = frozenset(
    {"none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}
    | {"PS256", "PS384", "PS512", "EdDSA", "ES256K"}
)


@dataclass(frozen=True, slots=True)
class PublishAuth:
    """What a publish token must satisfy: signed with ``key``; ``iss`` equal to ``iss``
    unless it is empty."""

    key: SigningKey
    iss: str = ""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused request: ``code`` 401 (no usable token) or 403 (token refused), and a one-line
    ``message`` that names the reason and never contains the token."""

    code: int
    message: str

    @property
    def reason(self) -> str:
        """The HTTP reason phrase."""
        return "Unauthorized" if self.code == 401 else "Forbidden"

    @property
    def condition(self) -> str:
        """The command socket's error condition (``unauthorized`` / ``forbidden``)."""
        return "unauthorized" if self.code == 401 else "forbidden"


def load_publish_auth(
    key_spec: str, iss: str, *, base_dir: str, read_file: Callable[[str], bytes]
) -> PublishAuth | None:
    """``publish_key``/``publish_iss`` as a :class:`PublishAuth`; None when no key is set.

    ``key_spec`` takes ``sig_key``'s forms: a secret, ``base64:<secret>`` or ``file:<path>``
    (a PEM EC P-256 or RSA key, relative to ``base_dir``; a public key is enough). Raises
    ConfigError (without file:line: the caller adds it) for an unusable value."""
    key = parse_key(key_spec, base_dir=base_dir, read_file=read_file)
    return None if key is None else PublishAuth(key, iss)


_MISSING = Rejection(401, "Missing Authorization header.")
_NOT_BEARER = Rejection(401, "Invalid Authorization header: expected 'Bearer <token>'.")
_SEVERAL = Rejection(401, "Invalid Authorization header: more than one given.")
_TOO_LONG = Rejection(401, "Invalid Authorization header: token too long.")
_NOT_JWT = Rejection(401, "Invalid token: not a JWT.")
_BAD_SIGNATURE = Rejection(403, "Invalid token: bad signature.")
_CRIT = Rejection(403, "Invalid token: unsupported 'crit' header.")
_NO_EXP = Rejection(403, "Invalid token: no 'exp' claim.")
_BAD_EXP = Rejection(403, "Invalid token: 'exp' claim is not a number.")
_EXPIRED = Rejection(403, "Invalid token: expired.")
_BAD_NBF = Rejection(403, "Invalid token: 'nbf' claim is not a number.")
_NOT_YET = Rejection(403, "Invalid token: not valid yet ('nbf' is in the future).")
_WRONG_ISS = Rejection(403, "Invalid token: wrong 'iss'.")


def bearer_token(values: Sequence[str]) -> str | Rejection:
    """The token of the one ``Authorization: Bearer <token>`` value in ``values`` (all the
    request's Authorization header values); the scheme is case-insensitive (RFC 7235)."""
    if not values:
        return _MISSING
    if len(values) > 1:
        return _SEVERAL
    value = values[0].strip(" \t")
    if len(value) > MAX_TOKEN_LENGTH:
        return _TOO_LONG
    scheme, _, token = value.partition(" ")
    token = token.strip(" \t")
    if scheme.lower() != "bearer" or not token:
        return _NOT_BEARER
    return token


def _number(value: object) -> float | None:
    """A JSON number (``bool`` is not one), as NumericDate (RFC 7519) requires."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        f = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return f if math.isfinite(f) else None


def check_token(token: str, auth: PublishAuth, now: float) -> Rejection | None:
    """None when ``token`` is a compact JWS signed with ``auth.key`` whose ``alg`` is the key's,
    with a numeric ``exp`` after ``now`` (Unix seconds), ``nbf`` (if any) not after ``now``
    plus :data:`NBF_LEEWAY`, and ``iss`` equal to ``auth.iss`` when that is set."""
    result = _check(token, auth, now)
    return result if isinstance(result, Rejection) else None


def _check(token: str, auth: PublishAuth, now: float) -> Rejection | float:
    """:func:`check_token`, returning the accepted token's ``exp``."""
    if len(token) > MAX_TOKEN_LENGTH:
        return _TOO_LONG
    jws = decode_jws(token)
    if jws is None:
        return _NOT_JWT
    header, claims = jws.header, jws.claims
    key = auth.key
    alg = header.get("alg")
    if alg != key.alg:
        named = f" {alg!r}" if isinstance(alg, str) and alg in _KNOWN_ALGS else ""
        return Rejection(403, f"Invalid token: algorithm{named} is not accepted.")
    if "crit" in header:  # RFC 7515 4.1.11: no extension is understood here
        return _CRIT
    if key.public is None and key.alg != "HS256":
        return _BAD_SIGNATURE
    if not verify_signature(jws.signing_input, jws.signature, key):
        return _BAD_SIGNATURE
    if "exp" not in claims:
        return _NO_EXP
    exp = _number(claims["exp"])
    if exp is None:
        return _BAD_EXP
    if not now < exp:
        return _EXPIRED
    if "nbf" in claims:
        nbf = _number(claims["nbf"])
        if nbf is None:
            return _BAD_NBF
        if now + NBF_LEEWAY < nbf:
            return _NOT_YET
    if auth.iss and claims.get("iss") != auth.iss:
        return _WRONG_ISS
    return exp


class PublishGate:
    """The publish check in force for one input, replaced as a whole by :meth:`set` (a config
    reload). Tokens already accepted are remembered with their ``exp`` (up to 128, each under
    2 KiB), so a publisher that reuses its token, or sends several publishes within the same
    second (gripcontrol signs the same bytes then), costs one signature check."""

    __slots__ = ("_accepted", "_auth")

    def __init__(self, auth: PublishAuth | None = None) -> None:
        self._auth = auth
        self._accepted: dict[str, float] = {}

    @property
    def auth(self) -> PublishAuth | None:
        """The current check; None: every request is accepted."""
        return self._auth

    def set(self, auth: PublishAuth | None) -> None:
        """Use ``auth`` from now on (forgets the tokens accepted with the previous one)."""
        self._auth = auth
        self._accepted = {}

    def check(self, values: Sequence[str], now: float) -> Rejection | None:
        """None when a request whose Authorization header values are ``values`` may go on."""
        auth = self._auth
        if auth is None:
            return None
        token = bearer_token(values)
        if isinstance(token, Rejection):
            return token
        exp = self._accepted.get(token)
        if exp is not None:
            if now < exp:
                return None
            del self._accepted[token]
        result = _check(token, auth, now)
        if isinstance(result, Rejection):
            return result
        if len(token) <= _CACHE_TOKEN_MAX:
            if len(self._accepted) >= _CACHE_MAX:
                self._accepted.clear()
            self._accepted[token] = result
        return None
