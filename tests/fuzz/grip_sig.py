"""``Grip-Sig`` tokens (F15 ``upstream_key``): ``validate_token`` on what a client sends.

Input: one flag byte, then either (bit 0 set) the header value as the listener decodes it
(latin-1), or (bit 0 clear) a claims JSON document that is signed with the test key first, so
the claim checks behind the signature are reached too.

Allowed outcome: a bool, never an exception (an invalid token only means "not trusted").
"""

from __future__ import annotations

from gripd.core.sig import SigningKey, encode_token, validate_token

from ._common import flags_and_rest

_KEY = SigningKey("HS256", secret=b"fuzz")
_NOW = 1_700_000_000.0

# jsonmut: the claims after the flag byte.
JSON_OFFSET = 1

SEEDS = [
    b'\x00{"exp":1800000000,"iss":"pushpin"}',
    b'\x00{"exp":"1800000000"}',
    b'\x00{"exp":1.8e9,"aud":"x","nbf":0}',
    b"\x01" + encode_token(b'{"exp":1800000000,"iss":"pushpin"}', _KEY).encode(),
    b"\x01eyJhbGciOiJIUzI1NiJ9.e30.AAAA",
]

TOKENS = [
    b'"exp"',
    b'"iss"',
    b'"alg"',
    b'"HS256"',
    b'"ES256"',
    b".",
    b"eyJ",
    b"e30",
    b"1800000000",
    b"4294967296",
    b"9223372036854775807",
]


def fuzz_one(data: bytes) -> None:
    flags, rest = flags_and_rest(data)
    token = rest.decode("latin-1") if flags & 1 else encode_token(rest, _KEY)
    assert isinstance(validate_token(token, _KEY, _NOW), bool)
