"""Grip-Sig tokens: key parsing, signing with a reuse cache, and validation (F15, F4, F9).

Pushpin signs ``{"iss": sig_iss, "exp": now+3600}`` with the ``sig_key`` and trusts a client
whose ``Grip-Sig`` verifies with ``upstream_key``. The token bytes here match Pushpin 1.36's
exactly (verified on a running Pushpin): header ``{"typ":"JWT","alg":"HS256"}`` (ES256/RS256
for PEM keys) and claims with sorted keys, ``{"exp":N,"iss":"..."}``, both compact JSON.

JWS framing and HMAC are done here (PyJWT refuses empty HMAC keys and warns on short ones, and
its header key order differs); the EC/RSA math is ``cryptography``'s. ECDSA signatures use
deterministic nonces (RFC 6979) where the OpenSSL build has them, so core stays free of global
randomness.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os.path
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gripd.core.errors import ConfigError
from gripd.core.qtcompat import reject_json_constant

Alg = Literal["HS256", "ES256", "RS256"]

# Pushpin: exp = now + 3600; we re-sign once fewer than 600 s of validity remain.
TOKEN_TTL = 3600
TOKEN_REFRESH_MARGIN = 600
_CACHE_MAX = 64

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
# ASCII only: ``\d`` and ``int()`` also take other scripts' digits, which Qt's toInt refuses.
_QT_INT_RE = re.compile(r"\s*([+-]?)0*(\d+)\s*", re.ASCII)
_INT32 = 1 << 32


@dataclass(frozen=True, slots=True, eq=False)
class SigningKey:
    """A parsed key: an HS256 secret, or an EC (ES256) / RSA (RS256) key from a PEM file.

    ``private`` is set for private keys (which can sign and verify); a public key only
    verifies (``upstream_key``). Compared and hashed by identity: keys are config objects.
    """

    alg: Alg
    secret: bytes = b""
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None = None

    @property
    def can_sign(self) -> bool:
        """False for a public-only PEM key; a config loader should reject it as ``sig_key``."""
        return self.alg == "HS256" or self.private is not None

    def __repr__(self) -> str:  # never print secrets in logs
        kind = "secret" if self.alg == "HS256" else ("private" if self.private else "public")
        return f"SigningKey({self.alg}, {kind})"


def parse_key(spec: str, *, base_dir: str, read_file: Callable[[str], bytes]) -> SigningKey | None:
    """Parse a ``sig_key`` / ``upstream_key`` / route ``sig_key=`` value (F15).

    ``''`` -> None (no key); ``base64:<b64>`` -> those bytes as the secret; ``file:<path>`` ->
    a PEM EC (P-256) or RSA key, private or public, a relative path taken against
    ``base_dir``; anything else -> its UTF-8 bytes as the secret.

    Deliberate deviation: Pushpin 1.36 turns ``''`` into an *empty* HMAC secret, so with the
    shipped ``upstream_key=`` it trusts any token signed with the empty key, and with an empty
    ``sig_key`` it still sends a Grip-Sig (both verified on 1.36). We treat ``''`` as "off".
    Raises ConfigError for bad base64, an unreadable file or an unusable PEM (Pushpin would
    silently run without the key).
    """
    if spec == "":
        return None
    if spec.startswith("file:"):
        path = spec[5:]
        if not os.path.isabs(path):
            path = os.path.join(base_dir, path)
        try:
            data = read_file(path)
        except OSError as e:
            raise ConfigError(f"cannot read key file {path}: {e.strerror or e}") from e
        return _parse_pem(data, path)
    if spec.startswith("base64:"):
        return SigningKey("HS256", secret=_decode_base64_secret(spec[7:]))
    return SigningKey("HS256", secret=spec.encode())


def _decode_base64_secret(text: str) -> bytes:
    # Standard or URL-safe alphabet, padding optional, surrounding whitespace ignored.
    s = text.strip().rstrip("=")
    s = s.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(f"invalid base64 key: {e}") from e


def _parse_pem(data: bytes, path: str) -> SigningKey:
    try:
        priv = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        priv = None
    if priv is not None:
        if isinstance(priv, rsa.RSAPrivateKey):
            return SigningKey("RS256", private=priv, public=priv.public_key())
        if isinstance(priv, ec.EllipticCurvePrivateKey):
            _check_curve(priv.curve, path)
            return SigningKey("ES256", private=priv, public=priv.public_key())
        raise ConfigError(f"key file {path}: unsupported key type (need EC P-256 or RSA)")
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"key file {path}: not a PEM EC or RSA key") from e
    if isinstance(pub, rsa.RSAPublicKey):
        return SigningKey("RS256", public=pub)
    if isinstance(pub, ec.EllipticCurvePublicKey):
        _check_curve(pub.curve, path)
        return SigningKey("ES256", public=pub)
    raise ConfigError(f"key file {path}: unsupported key type (need EC P-256 or RSA)")


def _check_curve(curve: ec.EllipticCurve, path: str) -> None:
    # ES256 is P-256 only; Pushpin would fail every sign with another curve.
    if not isinstance(curve, ec.SECP256R1):
        raise ConfigError(f"key file {path}: EC key must use curve P-256 for ES256")


# -- JWS ------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(part: str) -> bytes | None:
    """Strict unpadded base64url, as the Rust ``base64`` crate Pushpin uses (no ``=``,
    no stray characters, no non-zero trailing bits)."""
    if len(part) % 4 == 1 or not _B64URL_RE.fullmatch(part):
        return None
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    return raw if _b64url(raw) == part else None


def _sign(msg: bytes, key: SigningKey) -> bytes:
    if key.alg == "HS256":
        return hmac.new(key.secret, msg, hashlib.sha256).digest()
    if isinstance(key.private, rsa.RSAPrivateKey):
        return key.private.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key.private, ec.EllipticCurvePrivateKey):
        try:
            der = key.private.sign(msg, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        except UnsupportedAlgorithm:  # OpenSSL < 3.2: random nonce from OpenSSL's own RNG
            der = key.private.sign(msg, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS raw r||s (RFC 7518 3.4)
    raise ValueError("public key cannot sign")


def verify_signature(msg: bytes, sig: bytes, key: SigningKey) -> bool:
    if key.alg == "HS256":
        return hmac.compare_digest(hmac.new(key.secret, msg, hashlib.sha256).digest(), sig)
    try:
        if isinstance(key.public, rsa.RSAPublicKey):
            key.public.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
            return True
        if isinstance(key.public, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                return False
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            key.public.verify(der, msg, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


@dataclass(frozen=True, slots=True)
class Jws:
    """A compact JWS taken apart (its signature not checked yet)."""

    header: dict[str, object]
    claims: dict[str, object]
    signing_input: bytes  # ``<header>.<claims>`` as sent: the bytes the signature covers
    signature: bytes


def decode_jws(token: str, *, strict: bool = True) -> Jws | None:
    """``token`` as a compact JWS (three strict base64url parts) whose header and claims are
    JSON objects, else None. ``strict``: ``NaN``/``Infinity`` make the JSON invalid (Python's
    ``json`` reads them otherwise). Grip-Sig and publish tokens share this framing."""
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():
        return None
    header_raw, claims_raw, sig = (b64url_decode(p) for p in parts)
    if header_raw is None or claims_raw is None or sig is None:
        return None
    header = _json_object(header_raw, strict)
    claims = _json_object(claims_raw, strict)
    if header is None or claims is None:
        return None
    return Jws(header, claims, (parts[0] + "." + parts[1]).encode("ascii"), sig)


def _json_object(raw: bytes, strict: bool) -> dict[str, object] | None:
    try:
        value = json.loads(raw, parse_constant=reject_json_constant if strict else None)
    except (ValueError, RecursionError):  # RecursionError: deep nesting
        return None
    return value if isinstance(value, dict) else None


def encode_token(claims_json: bytes, key: SigningKey) -> str:
    """A compact JWS of ``claims_json`` (already serialized) with Pushpin's header bytes."""
    header = b'{"typ":"JWT","alg":"%s"}' % key.alg.encode()
    signing_input = _b64url(header) + "." + _b64url(claims_json)
    return signing_input + "." + _b64url(_sign(signing_input.encode("ascii"), key))


def claims_json(iss: str, exp: int) -> bytes:
    """Pushpin's claim bytes: keys sorted (serde_json map), compact, UTF-8 unescaped."""
    return json.dumps({"exp": exp, "iss": iss}, separators=(",", ":"), ensure_ascii=False).encode()


class TokenCache:
    """Grip-Sig tokens, signed once per (iss, key) and reused until fewer than 10 minutes of
    their hour remain (F15). Pushpin signs per request; reuse saves ~30 µs (EC/RSA: more) per
    request and only makes the origin see an ``exp`` 50-60 minutes ahead instead of 60."""

    __slots__ = ("_tokens",)

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, SigningKey], tuple[str, int]] = {}

    def token(self, iss: str, key: SigningKey, now: float) -> str:
        """A token for ``iss`` signed with ``key``, valid for at least 10 more minutes."""
        cached = self._tokens.get((iss, key))
        if cached is not None and now < cached[1] - TOKEN_REFRESH_MARGIN:
            return cached[0]
        exp = int(now) + TOKEN_TTL  # toTime_t(): whole seconds, truncated
        tok = encode_token(claims_json(iss, exp), key)
        if len(self._tokens) >= _CACHE_MAX:  # keys replaced by reloads: drop the old ones
            self._tokens.clear()
        self._tokens[(iss, key)] = (tok, exp)
        return tok


def _qt_exp(value: object) -> int:
    """``claim.value("exp").toInt()`` as Qt 5 computes it (verified on Pushpin 1.36):
    numbers are rounded to 64 bits then truncated to 32 (2^32+t counts as t), numeric strings
    are parsed (surrounding blanks allowed, must fit in int32), anything else is 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not abs(value) < 2.0**63:
            return 0
        value = int(value + 0.5) if value >= 0 else int(value - 0.5)  # qRound64
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            return 0
        v = value % _INT32
        return v - _INT32 if v >= 2**31 else v
    m = _QT_INT_RE.fullmatch(value) if isinstance(value, str) else None
    if m is not None and len(m.group(2)) <= 10:  # longer is out of int32 (and int() may refuse)
        v = int(m.group(1) + m.group(2))
        return v if -(2**31) <= v < 2**31 else 0
    return 0


def validate_token(token: str, key: SigningKey, now: float) -> bool:
    """Whether ``token`` is a Grip-Sig from a trusted proxy (F15 ``upstream_key``).

    As Pushpin 1.36: the header's ``alg`` must be the key's algorithm, the signature must
    verify, the claims must be a JSON object, and ``exp`` is required: valid while
    ``0 < now < exp`` in whole seconds. ``iss``, ``aud``, ``nbf`` and ``iat`` are not checked
    (the Rust side runs with no required claims; its own exp check has 60 s leeway and is
    subsumed).
    """
    if key.public is None and key.alg != "HS256":
        return False
    jws = decode_jws(token, strict=False)  # NaN/Infinity read, as this check always has
    if jws is None or jws.header.get("alg") != key.alg:
        return False
    if not verify_signature(jws.signing_input, jws.signature, key):
        return False
    exp = _qt_exp(jws.claims.get("exp"))
    return exp > 0 and int(now) < exp
