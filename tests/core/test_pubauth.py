"""Authenticated publishing, the pure part: the Bearer JWT check and ``[gripd] publish_key``.

Tokens are made by independent implementations (PyJWT, and pubcontrol's own header builder,
which is what ``gripcontrol`` sends), never by gripd's signer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pubcontrol.utilities import _gen_auth_jwt_header

from gripd.core.config import Config, load_config
from gripd.core.errors import ConfigError
from gripd.core.pubauth import (
    MAX_TOKEN_LENGTH,
    NBF_LEEWAY,
    PublishAuth,
    PublishGate,
    Rejection,
    bearer_token,
    check_token,
    load_publish_auth,
)

NOW = 1_800_000_000.0
SECRET = "s3cret-for-tests-0123456789abcdef"


def _no_file(path: str) -> bytes:
    raise OSError(2, "No such file or directory")


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def hs_auth(secret: str = SECRET, iss: str = "") -> PublishAuth:
    auth = load_publish_auth(secret, iss, base_dir="/", read_file=_no_file)
    assert auth is not None
    return auth


def hs_token(
    claims: dict[str, object],
    secret: str | bytes = SECRET,
    headers: dict[str, object] | None = None,
) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, object], claims: dict[str, object], sig: bytes = b"") -> str:
    enc = [_b64url(json.dumps(x).encode()) for x in (header, claims)]
    return ".".join([*enc, _b64url(sig)])


def hs_raw(claims_json: bytes, secret: bytes = SECRET.encode()) -> str:
    """An HS256 token over exactly ``claims_json`` (for claims PyJWT refuses to write)."""
    signing = _b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64url(claims_json)
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64url(sig)


def pem_files(
    tmp_path: Path, kind: str
) -> tuple[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, Path, Path]:
    """(private key object, private PEM path, public PEM path) for ``ec`` or ``rsa``."""
    priv = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    priv_path = tmp_path / f"{kind}-priv.pem"
    pub_path = tmp_path / f"{kind}-pub.pem"
    priv_path.write_bytes(
        priv.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub_path.write_bytes(
        priv.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return priv, priv_path, pub_path


# -- valid tokens ---------------------------------------------------------------------------


def test_valid_hs256_token() -> None:
    token = hs_token({"iss": "me", "exp": int(NOW) + 3600})
    assert check_token(token, hs_auth(iss="me"), NOW) is None
    assert check_token(token, hs_auth(), NOW) is None  # no publish_iss: any issuer


def test_gripcontrol_header_is_accepted() -> None:
    """pubcontrol's own builder (``exp`` = now + 3600 from the real clock), as gripcontrol
    sends it for ``?iss=me&key=...``; plain and ``base64:`` keys."""
    header = _gen_auth_jwt_header({"iss": "me"}, SECRET)
    assert PublishGate(hs_auth(iss="me")).check([header], time.time()) is None
    raw = bytes(range(40))
    b64 = "base64:" + base64.b64encode(raw).decode()
    header = _gen_auth_jwt_header({"iss": "me"}, raw)
    assert PublishGate(hs_auth(b64, iss="me")).check([header], time.time()) is None


def test_jose_style_token_without_typ_is_accepted() -> None:
    """@fanoutio/grip (jose) writes only ``{"alg":"HS256"}`` as header."""
    token = hs_token({"iss": "me", "exp": NOW + 600}, headers={"typ": None})
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert "typ" not in header
    assert check_token(token, hs_auth(iss="me"), NOW) is None


@pytest.mark.parametrize("kind,alg", [("ec", "ES256"), ("rsa", "RS256")])
def test_valid_pem_tokens(tmp_path: Path, kind: str, alg: str) -> None:
    priv, priv_path, pub_path = pem_files(tmp_path, kind)
    token = jwt.encode({"iss": "me", "exp": int(NOW) + 60}, priv, algorithm=alg)
    for path in (pub_path, priv_path):  # a public key is enough; a private one also verifies
        auth = load_publish_auth(f"file:{path.name}", "me", base_dir=str(tmp_path), read_file=_read)
        assert auth is not None and auth.key.alg == alg
        assert check_token(token, auth, NOW) is None


def test_float_exp_and_nbf_within_leeway() -> None:
    token = hs_token({"exp": NOW + 0.5, "nbf": NOW + NBF_LEEWAY})
    assert check_token(token, hs_auth(), NOW) is None


# -- refused tokens --------------------------------------------------------------------------


def refused(token: str, auth: PublishAuth, now: float = NOW) -> Rejection:
    r = check_token(token, auth, now)
    assert r is not None
    # The message never carries the token or a piece of it.
    for piece in token.split("."):
        assert len(piece) < 4 or piece not in r.message
    assert "\n" not in r.message
    return r


def test_expired() -> None:
    token = hs_token({"iss": "me", "exp": int(NOW) - 1})
    assert refused(token, hs_auth()) == Rejection(403, "Invalid token: expired.")
    at_exp = hs_token({"exp": int(NOW)})
    assert refused(at_exp, hs_auth()).message == "Invalid token: expired."


@pytest.mark.parametrize(
    "claims,message",
    [
        ({"iss": "me"}, "Invalid token: no 'exp' claim."),
        ({"exp": str(int(NOW) + 60)}, "Invalid token: 'exp' claim is not a number."),
        ({"exp": True}, "Invalid token: 'exp' claim is not a number."),
        ({"exp": 10**400}, "Invalid token: 'exp' claim is not a number."),
        ({"exp": NOW + 60, "nbf": "x"}, "Invalid token: 'nbf' claim is not a number."),
        (
            {"exp": NOW + 600, "nbf": NOW + NBF_LEEWAY + 1},
            "Invalid token: not valid yet ('nbf' is in the future).",
        ),
    ],
)
def test_claims_refused(claims: dict[str, object], message: str) -> None:
    assert refused(hs_token(claims), hs_auth()) == Rejection(403, message)


def test_non_finite_exp_is_not_json() -> None:
    for raw in [b'{"exp":Infinity}', b'{"exp":NaN}']:
        assert refused(hs_raw(raw), hs_auth()) == Rejection(401, "Invalid token: not a JWT.")


@pytest.mark.parametrize("iss", [None, "you", ["me"]])
def test_wrong_iss(iss: object) -> None:
    claims: dict[str, object] = {"exp": NOW + 60}
    if iss is not None:
        claims["iss"] = iss
    assert refused(hs_raw(json.dumps(claims).encode()), hs_auth(iss="me")) == Rejection(
        403, "Invalid token: wrong 'iss'."
    )


def test_bad_signature() -> None:
    token = hs_token({"iss": "me", "exp": NOW + 60}, secret="another secret, long enough for PyJWT")
    assert refused(token, hs_auth(iss="me")) == Rejection(403, "Invalid token: bad signature.")
    head, _, sig = hs_token({"iss": "me", "exp": NOW + 60}).split(".")
    forged = _b64url(json.dumps({"iss": "me", "exp": NOW + 10**6}).encode())
    assert refused(f"{head}.{forged}.{sig}", hs_auth(iss="me")).message == (
        "Invalid token: bad signature."
    )


def test_none_alg() -> None:
    token = unsigned({"alg": "none", "typ": "JWT"}, {"iss": "me", "exp": NOW + 60})
    assert refused(token, hs_auth(iss="me")) == Rejection(
        403, "Invalid token: algorithm 'none' is not accepted."
    )
    # ... nor does an unknown alg value get echoed
    odd = unsigned({"alg": "<script>"}, {"exp": NOW + 60}, b"x")
    assert refused(odd, hs_auth()).message == "Invalid token: algorithm is not accepted."


def test_algorithm_confusion_with_public_key(tmp_path: Path) -> None:
    """HS256 signed with the PEM text of the public key must not pass for RS256/ES256."""
    _, _, pub_path = pem_files(tmp_path, "rsa")
    auth = load_publish_auth(f"file:{pub_path}", "", base_dir="/", read_file=_read)
    assert auth is not None
    token = hs_raw(json.dumps({"exp": NOW + 60}).encode(), pub_path.read_bytes())
    assert refused(token, auth).message == "Invalid token: algorithm 'HS256' is not accepted."


def test_crit_header_is_refused() -> None:
    token = hs_token({"exp": NOW + 60}, headers={"crit": ["b64"], "b64": True})
    assert refused(token, hs_auth()).message == "Invalid token: unsupported 'crit' header."


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "@@@.@@@.@@@",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",  # claims are not JSON
        unsigned({"alg": "HS256"}, {"exp": 1}).replace(".", ".=", 1),  # padding
        _b64url(b"[1]") + "." + _b64url(b"{}") + ".c2ln",  # header not an object
        _b64url(b'{"alg":"HS256"}') + "." + _b64url(b"[1]") + ".c2ln",  # claims not an object
        "é.é.é",
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert refused(token, hs_auth()) == Rejection(401, "Invalid token: not a JWT.")


# -- the Authorization header ------------------------------------------------------------------


def test_bearer_token_parsing() -> None:
    assert bearer_token(["Bearer abc"]) == "abc"
    assert bearer_token(["bearer  abc "]) == "abc"  # scheme is case-insensitive
    assert bearer_token([]) == Rejection(401, "Missing Authorization header.")
    bad = Rejection(401, "Invalid Authorization header: expected 'Bearer <token>'.")
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "abc", ""]:
        assert bearer_token([value]) == bad
    several = bearer_token(["Bearer a", "Bearer b"])
    assert several == Rejection(401, "Invalid Authorization header: more than one given.")
    too_long = bearer_token(["Bearer " + "a" * MAX_TOKEN_LENGTH])
    assert too_long == Rejection(401, "Invalid Authorization header: token too long.")


def test_rejection_names() -> None:
    assert (Rejection(401, "x").reason, Rejection(401, "x").condition) == (
        "Unauthorized",
        "unauthorized",
    )
    assert (Rejection(403, "x").reason, Rejection(403, "x").condition) == ("Forbidden", "forbidden")


def test_gate_without_key_accepts_everything() -> None:
    gate = PublishGate()
    assert gate.auth is None
    assert gate.check([], NOW) is None
    assert gate.check(["Bearer garbage"], NOW) is None


def test_gate_remembers_accepted_tokens_until_exp() -> None:
    gate = PublishGate(hs_auth(iss="me"))
    token = hs_token({"iss": "me", "exp": NOW + 10})
    assert gate.check([f"Bearer {token}"], NOW) is None
    assert gate.check([f"Bearer {token}"], NOW + 5) is None  # from the cache
    assert gate.check([f"Bearer {token}"], NOW + 10) == Rejection(403, "Invalid token: expired.")
    assert gate.check([f"Bearer {token}"], NOW) is None  # checked again from scratch
    gate.set(hs_auth("a new secret", iss="me"))  # a reload forgets what the old key accepted
    assert gate.check([f"Bearer {token}"], NOW) == Rejection(403, "Invalid token: bad signature.")
    gate.set(None)
    assert gate.check([], NOW) is None


def test_gate_cache_is_bounded() -> None:
    gate = PublishGate(hs_auth())
    for i in range(300):
        assert gate.check([f"Bearer {hs_token({'exp': NOW + 60, 'n': i})}"], NOW) is None
    assert len(gate._accepted) <= 128


# -- [gripd] publish_key / publish_iss in pushpin.conf ------------------------------------------


def conf(tmp_path: Path, lines: str) -> Path:
    path = tmp_path / "pushpin.conf"
    path.write_text("[gripd]\n" + lines)
    return path


def load(path: Path) -> Config:
    return load_config(path.read_text(), path=str(path), read_file=lambda p: Path(p).read_text())


def test_config_defaults_off(tmp_path: Path) -> None:
    cfg = load(conf(tmp_path, "workers=1\n"))
    assert (cfg.publish_key, cfg.publish_iss) == ("", "")


def test_config_reads_key_and_iss(tmp_path: Path) -> None:
    _, _, pub = pem_files(tmp_path, "ec")
    for value in [
        SECRET,
        "base64:" + base64.b64encode(b"\x00\x01secret").decode(),
        "file:ec-pub.pem",
    ]:
        cfg = load(conf(tmp_path, f"publish_key={value}\npublish_iss=me\n"))
        assert (cfg.publish_key, cfg.publish_iss) == (value, "me")
    assert pub.exists()


@pytest.mark.parametrize(
    "lines,line,needle",
    [
        ("x=1\npublish_key=base64:!!notbase64!!\n", 3, "invalid base64 key"),
        ("publish_key=file:missing.pem\n", 2, "cannot read key file"),
        ("publish_key=file:garbage.pem\n", 2, "not a PEM EC or RSA key"),
        ("publish_key=file:binary.pem\n", 2, "not a PEM file"),
        ("publish_key=file:p384.pem\n", 2, "P-256"),
        ("publish_iss=me\n", 2, "needs publish_key"),
    ],
)
def test_config_errors_name_file_and_line(
    tmp_path: Path, lines: str, line: int, needle: str
) -> None:
    (tmp_path / "garbage.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n")
    (tmp_path / "binary.pem").write_bytes(b"\xff\xfe\x00binary")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    (tmp_path / "p384.pem").write_bytes(
        p384.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = conf(tmp_path, lines)
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    assert text.startswith(f"{path}:{line}: [gripd] publish_")
    assert needle in text
    assert "!!notbase64!!" not in text  # the value (possibly a secret) is not echoed
