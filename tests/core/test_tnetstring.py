"""Tnetstring facade and pure codec (F31, F42), checked against Pushpin's own test vectors
(fastly/pushpin src/tnetstring.rs at v1.36.0 and src/connmgr/zhttppacket.rs) and by property
tests comparing the C extension with the pure-Python codec."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripd.core import tnetstring as tn
from gripd.core.errors import GripError, PublishError
from gripd.core.tnetstring import TnetstringError, dumps, loads, py_dumps, py_loads

Loads = Callable[[bytes], object]
Dumps = Callable[[object], bytes]
DECODERS = [pytest.param(loads, id="facade"), pytest.param(py_loads, id="pure")]
ENCODERS = [pytest.param(dumps, id="facade"), pytest.param(py_dumps, id="pure")]

# (value, bytes) pairs from src/tnetstring.rs tests (Writer output and parse_* successes).
RUST_VECTORS: list[tuple[object, bytes]] = [
    (None, b"0:~"),
    (True, b"4:true!"),
    (False, b"5:false!"),
    (0, b"1:0#"),
    (42, b"2:42#"),
    (-42, b"3:-42#"),
    (b"", b"0:,"),
    (b"hello", b"5:hello,"),
    ([b"foo", b"bar"], b"12:3:foo,3:bar,]"),
    ({b"foo": b"bar"}, b"12:3:foo,3:bar,}"),
    ({b"name": b"alice"}, b"15:4:name,5:alice,}"),
    ([b"hello"], b"8:5:hello,]"),
]

# Inputs src/tnetstring.rs rejects (parse_* errors; wrong-type cases are valid tnetstrings).
RUST_INVALID = [
    b"bogus",
    b"5:bogus!",
    b"5:bogus#",
    b"5:bogus^",
    b"5:inner]",
    b"5:inner}",
    b"4:1:0#}",  # InvalidKey: key is not a string
    b"7:4:name,}",  # UnexpectedEof: key without value
    b"8:4:name,X}",
]

# zhttppacket.rs: packets written by Pushpin's Rust serializer (insertion order) ...
ZHTTP_REQ = (
    b"T161:4:from,6:client,2:id,1:1,3:seq,1:0#6:method,4:POST,3:uri"
    b",23:http://example.com/path,7:headers,34:30:12:Content-Type,1"
    b"0:text/plain,]]4:body,5:hello,4:more,4:true!}"
)
ZHTTP_REQ_VALUE = {
    b"from": b"client",
    b"id": b"1",
    b"seq": 0,
    b"method": b"POST",
    b"uri": b"http://example.com/path",
    b"headers": [[b"Content-Type", b"text/plain"]],
    b"body": b"hello",
    b"more": True,
}
ZHTTP_ERR = b"T77:4:from,6:client,2:id,1:1,3:seq,1:0#4:type,5:error,9:condition,11:bad-request,}"
ZHTTP_RESP = (
    b"T139:4:from,6:server,2:id,1:1,3:seq,1:0#4:code,3:200#6:reason"
    b",2:OK,7:headers,34:30:12:Content-Type,10:text/plain,]]4:body,"
    b"5:hello,4:more,4:true!}"
)
# ... and packets its parser reads.
ZHTTP_RESP_PARSE = (
    b"T208:4:more,4:true!7:headers,34:30:12:Content-Type,10:text/pl"
    b"ain,]]12:content-type,6:binary,4:from,6:server,2:id,1:1,6:rea"
    b"son,2:OK,7:credits,3:100#9:user-data,12:3:foo,3:bar,}3:seq,1:"
    b"0#4:code,3:200#4:body,5:hello,}"
)


@pytest.mark.parametrize("dec", DECODERS)
@pytest.mark.parametrize(("value", "data"), RUST_VECTORS)
def test_rust_vectors_decode(dec: Loads, value: object, data: bytes) -> None:
    assert dec(data) == value


@pytest.mark.parametrize("enc", ENCODERS)
@pytest.mark.parametrize(("value", "data"), RUST_VECTORS)
def test_rust_vectors_encode(enc: Dumps, value: object, data: bytes) -> None:
    assert enc(value) == data


@pytest.mark.parametrize("dec", DECODERS)
@pytest.mark.parametrize(
    ("data", "value"), [(b"1:0^", 0.0), (b"4:-0.5^", -0.5), (b"4:-0.5^", -0.5)]
)
def test_rust_float_vectors(dec: Loads, data: bytes, value: float) -> None:
    assert dec(data) == value


@pytest.mark.parametrize("enc", ENCODERS)
def test_float_encoding_uses_repr(enc: Dumps) -> None:
    # Pushpin's Rust writer gives b"4:-0.5^" too; repr keeps full precision.
    assert enc(-0.5) == b"4:-0.5^"
    assert enc(0.1) == b"3:0.1^"


@pytest.mark.parametrize("dec", DECODERS)
@pytest.mark.parametrize("data", RUST_INVALID)
def test_rust_invalid_rejected(dec: Loads, data: bytes) -> None:
    with pytest.raises(TnetstringError):
        dec(data)


@pytest.mark.parametrize("enc", ENCODERS)
@pytest.mark.parametrize(
    ("packet", "value"),
    [
        (ZHTTP_REQ, ZHTTP_REQ_VALUE),
        (
            ZHTTP_ERR,
            {
                b"from": b"client",
                b"id": b"1",
                b"seq": 0,
                b"type": b"error",
                b"condition": b"bad-request",
            },
        ),
        (
            ZHTTP_RESP,
            {
                b"from": b"server",
                b"id": b"1",
                b"seq": 0,
                b"code": 200,
                b"reason": b"OK",
                b"headers": [[b"Content-Type", b"text/plain"]],
                b"body": b"hello",
                b"more": True,
            },
        ),
    ],
)
def test_zhttp_serialize_byte_exact(enc: Dumps, packet: bytes, value: object) -> None:
    """Insertion order reproduces the bytes Pushpin's Rust serializer writes."""
    assert b"T" + enc(value) == packet
    assert loads(packet[1:]) == value


@pytest.mark.parametrize("dec", DECODERS)
def test_zhttp_parse_vector(dec: Loads) -> None:
    v = dec(ZHTTP_RESP_PARSE[1:])
    assert isinstance(v, dict)
    assert v[b"from"] == b"server"
    assert v[b"credits"] == 100
    assert v[b"user-data"] == {b"foo": b"bar"}
    assert v[b"headers"] == [[b"Content-Type", b"text/plain"]]
    assert v[b"more"] is True


@pytest.mark.parametrize("dec", DECODERS)
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"1:a,x",  # trailing bytes: tnetstring3.loads would accept this
        b"0:~0:~",
        b"00:,",
        b"+1:a,",
        b" 1:a,",
        b"1:a",
        b"2:a,",
        b"1:a?",
        b"0:#",
        b"1:-#",
        b"3:1.0#",
        b"1:\xb2#",  # tnetstring3 raises OverflowError here
        b"2:1e^",
        b"3:1_0^",
        b"4:TRUE!",
        b"1:0~",
        b"4:1:a,}",
        b"6:1:a,1:}",
        b"9:" + b"1:a" * 3 + b"]",
        b"1234567890:",
    ],
)
def test_malformed_rejected(dec: Loads, data: bytes) -> None:
    with pytest.raises(TnetstringError) as ei:
        dec(data)
    assert isinstance(ei.value, PublishError)
    assert isinstance(ei.value, ValueError)
    assert isinstance(ei.value, GripError)


@pytest.mark.parametrize("dec", DECODERS)
def test_deep_nesting_is_an_error_not_a_crash(dec: Loads) -> None:
    data = b"0:]"
    for _ in range(20_000):
        data = b"%d:%s]" % (len(data), data)
    with pytest.raises(TnetstringError):
        dec(data)


@pytest.mark.parametrize("dec", DECODERS)
def test_accepts_bytearray_and_memoryview(dec: Loads) -> None:
    assert dec(bytearray(b"5:hello,")) == b"hello"  # type: ignore[arg-type]
    assert dec(memoryview(b"4:1:a,]")) == [b"a"]  # type: ignore[arg-type]


@pytest.mark.parametrize("enc", ENCODERS)
def test_str_encoded_as_utf8_and_keys(enc: Dumps) -> None:
    assert enc("héllo") == b"6:h\xc3\xa9llo,"
    assert enc({"a": "b", b"c": 1}) == b"16:1:a,1:b,1:c,1:1#}"
    assert enc((1, 2)) == b"8:1:1#1:2#]"
    assert enc(bytearray(b"x")) == b"1:x,"


@pytest.mark.parametrize("enc", ENCODERS)
@pytest.mark.parametrize(
    "bad", [{1: 2}, {None: 1}, {"a": 1, b"a": 2}, object(), {1.5}, [b"x", {}.keys()]]
)
def test_unencodable(enc: Dumps, bad: object) -> None:
    with pytest.raises(TnetstringError):
        enc(bad)


@pytest.mark.parametrize("enc", ENCODERS)
def test_dict_order_is_insertion_order(enc: Dumps) -> None:
    assert enc({b"a": 1, b"b": 2, b"c": 3}) == b"24:1:a,1:1#1:b,1:2#1:c,1:3#}"


def test_duplicate_keys_on_decode_last_wins() -> None:
    assert loads(b"16:1:a,1:x,1:a,1:y,}") == {b"a": b"y"}
    assert py_loads(b"16:1:a,1:x,1:a,1:y,}") == {b"a": b"y"}


def test_extension_in_use() -> None:
    assert tn.HAVE_C  # pyproject depends on tnetstring3; the pure codec is only a fallback


# -- properties ----------------------------------------------------------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.binary(max_size=40)
)
values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip_both_ways(v: object) -> None:
    c = dumps(v)
    p = py_dumps(v)
    assert c == p  # same bytes, dict order included
    assert py_loads(c) == v
    assert loads(p) == v


@given(st.floats())
def test_floats_round_trip_including_nan(x: float) -> None:
    for dec in (loads, py_loads):
        y = dec(dumps(x))
        assert isinstance(y, float)
        assert (math.isnan(x) and math.isnan(y)) or y == x


def _outcome(dec: Loads, data: bytes) -> tuple[str, object]:
    try:
        v = dec(data)
    except TnetstringError:
        return ("error", None)
    return ("ok", repr(v))  # repr: nan compares equal to itself this way


@settings(max_examples=300)
@given(values, st.data())
def test_decoders_agree_on_mutated_input(v: object, data: st.DataObject) -> None:
    """Flip, drop or insert one byte of a valid encoding: both decoders accept the same
    inputs and give the same value."""
    enc = bytearray(py_dumps(v))
    i = data.draw(st.integers(0, len(enc)))
    op = data.draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
    b = data.draw(st.sampled_from(list(b"0123456789:,#^!~]}-+.aeinft \x00\xff")))
    if op == "flip" and i < len(enc):
        enc[i] = b
    elif op == "drop" and i < len(enc):
        del enc[i]
    elif op == "insert":
        enc.insert(i, b)
    else:
        del enc[i:]
    assert _outcome(loads, bytes(enc)) == _outcome(py_loads, bytes(enc))


@given(st.binary(max_size=30))
def test_decoders_agree_on_random_bytes(raw: bytes) -> None:
    assert _outcome(loads, raw) == _outcome(py_loads, raw)
