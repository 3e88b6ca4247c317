"""Tnetstrings, the encoding of Pushpin's ZeroMQ messages (F31 publish items, F42 commands).

A typed, strict facade over the ``tnetstring3`` C extension (imported as ``tnetstring``) plus a
pure-Python codec in this module. The pure codec is the fallback when the extension is missing
(no aarch64 wheel) and the oracle the tests compare the extension against.

Strictness added over ``tnetstring3`` (its quirks, see research python-stack §3.9):

- ``loads`` rejects trailing bytes (``tnetstring3.loads`` ignores them). Pushpin's Qt decoder
  ignores them too; gripd drops such messages as malformed, a documented deviation.
- ``loads`` accepts ``bytes``, ``bytearray`` and ``memoryview`` (the extension only ``bytes``).
- ``loads`` rejects dict keys that are not strings (the extension takes any value as a key).
- Every decode failure, including the extension's stray ``OverflowError`` on non-ASCII digits
  and ``RecursionError`` on deep nesting, becomes :class:`TnetstringError`.
- ``dumps`` encodes ``str`` as UTF-8 (the extension only takes ``bytes``), accepts only ``str``
  or ``bytes`` dict keys, and writes dict entries in insertion order, the order Pushpin's Rust
  writers use (the extension writes them reversed; ``dumps`` compensates, so both codecs give
  the same bytes). Qt's ``QVariantHash`` has no defined order, so Pushpin's C++ replies can
  only be compared structurally.

Decoded values: ``None``, ``bool``, ``int``, ``float``, ``bytes``, ``list`` and ``dict`` with
``bytes`` keys. Strings stay bytes: in tnetstring publish items ``body``/``content`` are raw.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gripd.core.errors import PublishError

__all__ = [
    "HAVE_C",
    "TnetstringError",
    "dumps",
    "loads",
    "py_dumps",
    "py_loads",
]


class TnetstringError(PublishError, ValueError):
    """Bytes that are not one well-formed tnetstring, or a value that can't be encoded.

    A ``PublishError`` because malformed tnetstrings arrive as publish input (F31) or command
    requests (F42) and are dropped or answered as such; a ``ValueError`` for generic callers.
    """


_c_dumps: Callable[[Any], bytes] | None
_c_pop: Callable[[bytes], tuple[Any, bytes]] | None
try:
    import tnetstring as _c_module

    _c_dumps = _c_module.dumps
    _c_pop = _c_module.pop
except ImportError:  # pragma: no cover - the pure codec covers it (tested directly)
    _c_dumps = None
    _c_pop = None

#: Whether the C extension is in use.
HAVE_C: bool = _c_pop is not None

# -- pure-Python encoder -------------------------------------------------------------------------


def _key(k: object) -> bytes:
    if isinstance(k, bytes):
        return k
    if isinstance(k, str):
        return k.encode("utf-8")
    raise TnetstringError(f"tnetstring dict key must be bytes or str, not {type(k).__name__}")


def _frame(payload: bytes, tag: bytes) -> bytes:
    return b"%d:%s%s" % (len(payload), payload, tag)


def _py_enc(obj: object) -> bytes:
    if obj is None:
        return b"0:~"
    if obj is True:
        return b"4:true!"
    if obj is False:
        return b"5:false!"
    if isinstance(obj, bytes):
        return _frame(obj, b",")
    if isinstance(obj, str):
        return _frame(obj.encode("utf-8"), b",")
    if isinstance(obj, int):
        return _frame(b"%d" % obj, b"#")
    if isinstance(obj, float):
        return _frame(repr(obj).encode("ascii"), b"^")
    if isinstance(obj, bytearray | memoryview):
        return _frame(bytes(obj), b",")
    if isinstance(obj, list | tuple):
        return _frame(b"".join(_py_enc(v) for v in obj), b"]")
    if isinstance(obj, dict):
        parts: list[bytes] = []
        seen: set[bytes] = set()
        for k, v in obj.items():
            kb = _key(k)
            if kb in seen:
                raise TnetstringError(f"duplicate tnetstring dict key {kb!r}")
            seen.add(kb)
            parts.append(_frame(kb, b","))
            parts.append(_py_enc(v))
        return _frame(b"".join(parts), b"}")
    raise TnetstringError(f"type not serializable as tnetstring: {type(obj).__name__}")


def py_dumps(obj: object) -> bytes:
    """Encode with the pure-Python codec (dict entries in insertion order)."""
    try:
        return _py_enc(obj)
    except RecursionError:
        raise TnetstringError("value nested too deeply") from None


# -- pure-Python decoder -------------------------------------------------------------------------

_INT_RE = re.compile(rb"[+-]?[0-9]+")
# What Python's float() accepts, minus whitespace and digit underscores (as tnetstring3).
_FLOAT_RE = re.compile(
    rb"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.IGNORECASE,
)
_MAX_LEN_DIGITS = 10


def _bad(why: str) -> TnetstringError:
    return TnetstringError(f"invalid tnetstring: {why}")


def _py_parse(data: bytes, pos: int, end: int) -> tuple[object, int]:
    """Decode the tnetstring at ``data[pos:]`` that must finish by ``end``; return the value and
    the position after its type tag."""
    colon = data.find(b":", pos, min(end, pos + _MAX_LEN_DIGITS + 1))
    if colon < 0:
        raise _bad("missing length prefix")
    digits = data[pos:colon]
    if not digits.isdigit() or (len(digits) > 1 and digits[0] == 0x30):
        raise _bad("invalid length prefix")
    start = colon + 1
    stop = start + int(digits)
    if stop >= end:
        raise _bad("data shorter than its length prefix")
    tag = data[stop]
    payload = data[start:stop]
    if tag == 0x2C:  # ,
        return payload, stop + 1
    if tag == 0x7D:  # }
        out: dict[bytes, object] = {}
        at = start
        while at < stop:
            key, at = _py_parse(data, at, stop)
            if not isinstance(key, bytes):
                raise _bad("dict key is not a string")
            if at >= stop:
                raise _bad("dict key without a value")
            out[key], at = _py_parse(data, at, stop)
        return out, stop + 1
    if tag == 0x5D:  # ]
        items: list[object] = []
        at = start
        while at < stop:
            v, at = _py_parse(data, at, stop)
            items.append(v)
        return items, stop + 1
    if tag == 0x23:  # #
        if _INT_RE.fullmatch(payload) is None:
            raise _bad("invalid integer literal")
        try:
            return int(payload), stop + 1
        except ValueError:  # over Python's int() digit limit; the C extension rejects it too
            raise _bad("integer literal too long") from None
    if tag == 0x5E:  # ^
        if _FLOAT_RE.fullmatch(payload) is None:
            raise _bad("invalid float literal")
        return float(payload), stop + 1
    if tag == 0x21:  # !
        if payload == b"true":
            return True, stop + 1
        if payload == b"false":
            return False, stop + 1
        raise _bad("invalid boolean literal")
    if tag == 0x7E:  # ~
        if payload:
            raise _bad("invalid null literal")
        return None, stop + 1
    raise _bad("invalid type tag")


def py_loads(data: bytes | bytearray | memoryview) -> object:
    """Decode exactly one tnetstring with the pure-Python codec; trailing bytes are an error."""
    buf = bytes(data)
    try:
        value, end = _py_parse(buf, 0, len(buf))
    except RecursionError:
        raise _bad("nested too deeply") from None
    if end != len(buf):
        raise _bad("trailing bytes after the value")
    return value


# -- the facade ----------------------------------------------------------------------------------


def _prep(obj: object) -> object:
    """A copy the C encoder accepts and writes like ``py_dumps``: str→bytes, checked keys, and
    dicts rebuilt in reverse because the extension writes entries last to first."""
    if obj is None or isinstance(obj, bool | int | float | bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, list | tuple):
        return [_prep(v) for v in obj]
    if isinstance(obj, dict):
        out: dict[bytes, object] = {}
        for k, v in reversed(list(obj.items())):
            kb = _key(k)
            if kb in out:
                raise TnetstringError(f"duplicate tnetstring dict key {kb!r}")
            out[kb] = _prep(v)
        return out
    raise TnetstringError(f"type not serializable as tnetstring: {type(obj).__name__}")


def dumps(obj: object) -> bytes:
    """Encode ``obj``; ``str`` becomes UTF-8, dict entries keep insertion order.

    Raises :class:`TnetstringError` for unsupported types, non-string keys and keys that
    collide once encoded (``"a"`` and ``b"a"``).
    """
    if _c_dumps is None:  # pragma: no cover - exercised via py_dumps
        return py_dumps(obj)
    try:
        return _c_dumps(_prep(obj))
    except RecursionError:
        raise TnetstringError("value nested too deeply") from None


def _string_keys(value: object) -> bool:
    """Whether every dict in ``value`` has only ``bytes`` keys (what the pure codec yields)."""
    if isinstance(value, dict):
        return all(isinstance(k, bytes) and _string_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_string_keys(v) for v in value)
    return True


def loads(data: bytes | bytearray | memoryview) -> object:
    """Decode exactly one tnetstring; raises :class:`TnetstringError` on anything else."""
    if _c_pop is None:  # pragma: no cover - exercised via py_loads
        return py_loads(data)
    buf = data if isinstance(data, bytes) else bytes(data)
    try:
        value, rest = _c_pop(buf)
        keys_ok = _string_keys(value)
    except (ValueError, TypeError, OverflowError, IndexError, RecursionError) as e:
        raise _bad(str(e) or type(e).__name__) from None
    if rest:
        raise _bad("trailing bytes after the value")
    if not keys_ok:
        raise _bad("dict key is not a string")
    return value
