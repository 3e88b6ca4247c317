"""Grip-Sig keys, signing and validation (F15, F4 sig_key/upstream_key, F9)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from gripd.core.errors import ConfigError
from gripd.core.sig import SigningKey, TokenCache, encode_token, parse_key, validate_token

NOW = 1_795_880_369  # whole seconds; tokens below are relative to this
LONG = b"k" * 32  # PyJWT warns on shorter HMAC keys (and filterwarnings=error)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs_token(payload: bytes, key: bytes = LONG, header: bytes = b'{"alg":"HS256"}') -> str:
    si = b64(header) + "." + b64(payload)
    return si + "." + b64(hmac.new(key, si.encode(), hashlib.sha256).digest())


def pem_private(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, fmt: str = "pkcs8") -> bytes:
    f = serialization.PrivateFormat.PKCS8
    if fmt == "traditional":
        f = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, f, serialization.NoEncryption())


def pem_public(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, fmt: str = "spki") -> bytes:
    f = serialization.PublicFormat.SubjectPublicKeyInfo
    if fmt == "pkcs1":
        f = serialization.PublicFormat.PKCS1
    return key.public_bytes(serialization.Encoding.PEM, f)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def files(mapping: dict[str, bytes], seen: list[str] | None = None) -> Callable[[str], bytes]:
    def read(path: str) -> bytes:
        if seen is not None:
            seen.append(path)
        try:
            return mapping[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None

    return read


def secret(spec: str) -> bytes:
    key = parse_key(spec, base_dir="/etc/pushpin", read_file=files({}))
    assert key is not None and key.alg == "HS256"
    return key.secret


# -- parse_key --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("changeme", b"changeme"),
        ("base64:Y2hhbmdlbWU=", b"changeme"),
        ("base64:Y2hhbmdlbWU", b"changeme"),  # padding optional
        ("base64:-_8=", b"\xfb\xff"),  # URL-safe alphabet
        ("base64:+/8=", b"\xfb\xff"),
        ("base64: AAE= ", b"\x00\x01"),
        ("base64:", b""),
        ("sécret", "sécret".encode()),
        ("Base64:abc", b"Base64:abc"),  # prefixes are case-sensitive
        ("filex:abc", b"filex:abc"),
    ],
)
def test_parse_key_secrets(spec: str, expected: bytes) -> None:
    assert secret(spec) == expected


def test_parse_key_empty_is_no_key() -> None:
    # Deviation from Pushpin 1.36, which signs/verifies with an empty secret (see sig.py).
    assert parse_key("", base_dir="/x", read_file=files({})) is None


@pytest.mark.parametrize("spec", ["base64:!!!!", "base64:a", "base64:ab$c"])
def test_parse_key_bad_base64(spec: str) -> None:
    with pytest.raises(ConfigError, match="base64"):
        parse_key(spec, base_dir="/x", read_file=files({}))


def test_parse_key_file_relative_and_absolute(ec_key: ec.EllipticCurvePrivateKey) -> None:
    seen: list[str] = []
    data = pem_private(ec_key)
    read = files({"/etc/pushpin/keys/k.pem": data, "/abs/k.pem": data}, seen)
    k1 = parse_key("file:keys/k.pem", base_dir="/etc/pushpin", read_file=read)
    k2 = parse_key("file:/abs/k.pem", base_dir="/etc/pushpin", read_file=read)
    assert seen == ["/etc/pushpin/keys/k.pem", "/abs/k.pem"]
    assert k1 is not None and k1.alg == "ES256" and k1.can_sign
    assert k2 is not None and k2.alg == "ES256"


def test_parse_key_unreadable_file() -> None:
    with pytest.raises(ConfigError, match=r"/cfg/missing\.pem"):
        parse_key("file:missing.pem", base_dir="/cfg", read_file=files({}))


@pytest.mark.parametrize("data", [b"", b"not a pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_parse_key_bad_pem(data: bytes) -> None:
    with pytest.raises(ConfigError, match=r"k\.pem"):
        parse_key("file:k.pem", base_dir="/", read_file=files({"/k.pem": data}))


def test_parse_key_kinds(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
    cases: list[tuple[bytes, str, bool]] = [
        (pem_private(ec_key), "ES256", True),
        (pem_private(ec_key, "traditional"), "ES256", True),  # SEC1 "EC PRIVATE KEY"
        (pem_private(rsa_key), "RS256", True),
        (pem_private(rsa_key, "traditional"), "RS256", True),  # PKCS#1 "RSA PRIVATE KEY"
        (pem_public(ec_key.public_key()), "ES256", False),
        (pem_public(rsa_key.public_key()), "RS256", False),
        (pem_public(rsa_key.public_key(), "pkcs1"), "RS256", False),
    ]
    for data, alg, can_sign in cases:
        key = parse_key("file:k", base_dir="/", read_file=files({"/k": data}))
        assert key is not None
        assert (key.alg, key.can_sign, key.public is not None) == (alg, can_sign, True)


def test_parse_key_rejects_other_curves_and_types() -> None:
    p384 = pem_private(ec.generate_private_key(ec.SECP384R1()))
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_pem = ed.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ed_pub = ed.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    p384_pub = pem_public(ec.generate_private_key(ec.SECP384R1()).public_key())
    for data, msg in [
        (p384, "P-256"),
        (p384_pub, "P-256"),
        (ed_pem, "unsupported"),
        (ed_pub, "unsupported"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_key("file:k", base_dir="/", read_file=files({"/k": data}))


def test_key_repr_hides_secret() -> None:
    assert "hunter2" not in repr(SigningKey("HS256", secret=b"hunter2"))


# -- signing ----------------------------------------------------------------------------------


def test_token_matches_pushpin_bytes() -> None:
    # Captured from Pushpin 1.36 (sig_key=changeme, sig_iss=pushpin) on loopback.
    pushpin = (
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3OTU4ODM5NjksImlzcyI6InB1c2hwaW4ifQ"
        ".L1T9-Np3_kjG27IouHcDoqHkxKJJ1_5T7zgb8LZb9dI"
    )
    key = SigningKey("HS256", secret=b"changeme")
    assert TokenCache().token("pushpin", key, NOW + 0.9) == pushpin


def test_token_header_and_claims_bytes() -> None:
    tok = TokenCache().token('é"x', SigningKey("HS256", secret=LONG), NOW)
    h, p, _ = tok.split(".")
    assert base64.urlsafe_b64decode(h + "==") == b'{"typ":"JWT","alg":"HS256"}'
    exp = NOW + 3600
    assert base64.urlsafe_b64decode(p + "==") == f'{{"exp":{exp},"iss":"é\\"x"}}'.encode()
    claims = jwt.decode(tok, LONG, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"exp": exp, "iss": 'é"x'}


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_pem_tokens_verify_with_public_key(
    alg: str, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    priv = ec_key if alg == "ES256" else rsa_key
    key = parse_key("file:k", base_dir="/", read_file=files({"/k": pem_private(priv)}))
    assert key is not None
    tok = TokenCache().token("pushpin", key, NOW)
    header = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
    assert list(header.items()) == [("typ", "JWT"), ("alg", alg)]
    claims = jwt.decode(
        tok, pem_public(priv.public_key()), algorithms=[alg], options={"verify_exp": False}
    )
    assert claims == {"exp": NOW + 3600, "iss": "pushpin"}
    # and our own validation with a public-only key
    pub = parse_key("file:p", base_dir="/", read_file=files({"/p": pem_public(priv.public_key())}))
    assert pub is not None and not pub.can_sign
    assert validate_token(tok, pub, NOW)
    with pytest.raises(ValueError):
        encode_token(b"{}", pub)


def test_token_cache_reuse_and_refresh() -> None:
    cache = TokenCache()
    key = SigningKey("HS256", secret=LONG)
    first = cache.token("a", key, NOW)
    exp = NOW + 3600
    assert cache.token("a", key, NOW + 1) == first
    assert cache.token("a", key, exp - 601) == first
    refreshed = cache.token("a", key, exp - 600)  # within 10 minutes of exp: re-sign
    assert refreshed != first
    assert (
        jwt.decode(refreshed, LONG, algorithms=["HS256"], options={"verify_exp": False})["exp"]
        == exp - 600 + 3600
    )
    assert cache.token("b", key, NOW + 2) != first  # per issuer
    other = SigningKey("HS256", secret=LONG)  # equal bytes, distinct key object
    assert cache.token("a", other, NOW) == first  # same bytes signed: same token
    assert cache.token("a", SigningKey("HS256", secret=b"z" * 32), NOW) != first


def test_token_cache_is_bounded() -> None:
    cache = TokenCache()
    keys = [SigningKey("HS256", secret=bytes([i]) * 32) for i in range(100)]
    toks = [cache.token("i", k, NOW) for k in keys]
    assert len(set(toks)) == 100
    assert len(cache._tokens) <= 64
    assert cache.token("i", keys[99], NOW) == toks[99]


@given(iss=st.text(), now=st.integers(min_value=1, max_value=2**31 - 3601))
def test_sign_validate_roundtrip(iss: str, now: int) -> None:
    key = SigningKey("HS256", secret=LONG)
    tok = TokenCache().token(iss, key, now)
    assert validate_token(tok, key, now)
    assert validate_token(tok, key, now + 3599)
    assert not validate_token(tok, key, now + 3600)
    assert not validate_token(tok, SigningKey("HS256", secret=b"x" * 32), now)
    claims = jwt.decode(tok, LONG, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["iss"] == iss


# -- validation -------------------------------------------------------------------------------


def exp_token(exp: str) -> str:
    return hs_token(('{"exp":' + exp + "}").encode())


@pytest.mark.parametrize(
    ("token", "valid"),
    [
        (exp_token(str(NOW + 100)), True),
        (exp_token(str(NOW + 1)), True),
        (exp_token(str(NOW)), False),  # now >= exp is expired
        (exp_token(str(NOW - 1)), False),
        (hs_token(b'{"iss":"x"}'), False),  # exp required
        (exp_token("0"), False),
        (exp_token("-5"), False),
        (exp_token("null"), False),
        (exp_token("true"), False),
        (exp_token("[1]"), False),
        (exp_token(f"{NOW}.4"), False),  # rounded to NOW
        (exp_token(f"{NOW}.5"), True),  # rounded to NOW+1
        (exp_token(f'" {NOW + 100} "'), True),  # Qt toInt parses numeric strings
        (exp_token(f'"{NOW + 100}.5"'), False),
        (exp_token('"abc"'), False),
        (exp_token(str(2**32 + NOW + 100)), True),  # int32 truncation [verified]
        (exp_token(str(2**31 + 100)), False),  # negative as int32 [verified]
        (exp_token(str(2**33)), False),
        (exp_token("1e20"), False),
        (exp_token(str(2**64)), False),
        (
            hs_token(
                b'{"exp":%d,"aud":"z","nbf":%d,"iat":%d,"iss":1}' % ((NOW + 9,) + (NOW + 99,) * 2)
            ),
            True,
        ),  # aud/nbf/iat/iss are not checked [verified]
        (hs_token(b"[1]"), False),
        (hs_token(b"not json"), False),
        (hs_token(b'{"exp":%d}' % (NOW + 9), header=b'{"alg":"HS384"}'), False),
        (hs_token(b'{"exp":%d}' % (NOW + 9), header=b'{"alg":"none"}'), False),
        (hs_token(b'{"exp":%d}' % (NOW + 9), header=b'["HS256"]'), False),
        (hs_token(b'{"exp":%d}' % (NOW + 9), header=b"{}"), False),
        (hs_token(b'{"exp":%d}' % (NOW + 9), key=b"other" * 8), False),
        (exp_token(str(NOW + 9)).replace(".", "=.", 1), False),  # padding not allowed
        (exp_token(str(NOW + 9)) + ".x", False),
        (".".join(exp_token(str(NOW + 9)).split(".")[:2]), False),
        ("", False),
        ("a.b.c", False),
        ("é.é.é", False),
    ],
)
def test_validate_token_table(token: str, valid: bool) -> None:
    assert validate_token(token, SigningKey("HS256", secret=LONG), NOW + 0.99) is valid


def test_validate_rejects_noncanonical_base64() -> None:
    tok = exp_token(str(NOW + 9))
    h, p, s = tok.split(".")
    # The last char of a 43-char signature carries 2 spare bits; flipping them keeps the bytes.
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(s[-1])
    alt = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ 1]
    assert alt != s[-1]
    assert validate_token(tok, SigningKey("HS256", secret=LONG), NOW)
    assert not validate_token(f"{h}.{p}.{s[:-1]}{alt}", SigningKey("HS256", secret=LONG), NOW)


def test_validate_tampered_and_cross_alg(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    ec_sk = SigningKey("ES256", private=ec_key, public=ec_key.public_key())
    rsa_sk = SigningKey("RS256", private=rsa_key, public=rsa_key.public_key())
    claims = {"exp": NOW + 60}
    es = jwt.encode(claims, ec_key, algorithm="ES256")
    rs = jwt.encode(claims, rsa_key, algorithm="RS256")
    assert validate_token(es, ec_sk, NOW)  # PyJWT's tokens validate
    assert validate_token(rs, rsa_sk, NOW)
    assert not validate_token(es, rsa_sk, NOW)
    assert not validate_token(rs, ec_sk, NOW)
    h, _, s = es.split(".")
    forged = b64(b'{"exp":%d}' % (NOW + 9999))
    assert not validate_token(f"{h}.{forged}.{s}", ec_sk, NOW)
    assert not validate_token(f"{h}.{es.split('.')[1]}.{s[:-4]}", ec_sk, NOW)  # short sig
    other = ec.generate_private_key(ec.SECP256R1())
    assert not validate_token(es, SigningKey("ES256", public=other.public_key()), NOW)
    assert not validate_token(es, SigningKey("ES256"), NOW)  # no key material


def test_empty_secret_key_can_be_built_explicitly() -> None:
    # What Pushpin does with an empty key: possible, but never produced by parse_key("").
    empty = SigningKey("HS256", secret=b"")
    tok = TokenCache().token("pushpin", empty, NOW)
    assert validate_token(tok, empty, NOW)
