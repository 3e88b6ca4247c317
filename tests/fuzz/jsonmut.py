"""Structure-aware mutation for JSON inputs (publish bodies, grip-instruct, control messages).

Byte-level edits mostly break JSON syntax, so the parser behind it is rarely reached. Here the
input is decoded, one to three nodes are changed (a value swapped for another type, a boundary
number, a known key or string; a key added, renamed or removed; an element duplicated or
wrapped) and the document is encoded again. Targets opt in with ``JSON_OFFSET``: the number of
leading bytes (the flag byte) kept as they are.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from tests.fuzz.mutate import NUMBERS

_Slot = tuple[Any, Any]  # (container, key or index)


def _slots(doc: Any, out: list[_Slot], depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((doc, k))
            _slots(v, out, depth + 1)
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append((doc, i))
            _slots(v, out, depth + 1)


def _words(tokens: Sequence[bytes]) -> list[str]:
    """Dictionary tokens that are JSON strings, without their quotes."""
    out = []
    for t in tokens:
        if len(t) > 2 and t[:1] == b'"' and t[-1:] == b'"':
            out.append(t[1:-1].decode("latin-1"))
    return out or ["x"]


def _value(rng: random.Random, words: list[str], nodes: list[_Slot]) -> Any:
    r = rng.randrange(12)
    if r == 0:
        return None
    if r == 1:
        return rng.choice((True, False))
    if r == 2:
        n = rng.choice(NUMBERS).decode("utf-8", "replace")
        try:
            return json.loads(n) if len(n) < 30 else n
        except ValueError:
            return n
    if r == 3:
        return rng.choice(NUMBERS).decode("utf-8", "replace")[:40]
    if r == 4:
        return rng.choice((0, -1, 1, 200, 999, 1000, 2**31, -(2**31) - 1, 2**63, 0.5, -0.0, 1e300))
    if r == 5:
        return []
    if r == 6:
        return {}
    if r == 7:
        return {rng.choice(words): _value(rng, words, nodes)}
    if r == 8:
        return [_value(rng, words, nodes)]
    if r == 9:
        return "".join(chr(rng.choice((0, 0x7F, 0xE9, 0xFFFD, 0x1F600, 0x41))) for _ in range(3))
    if r == 10 and nodes:  # a copy of another node, if small (whole-document copies explode)
        parent, key = rng.choice(nodes)
        text = json.dumps(parent[key])
        return json.loads(text) if len(text) <= 200 else ""
    return rng.choice(words)


def mutate_json(
    data: bytes, rng: random.Random, offset: int, tokens: Sequence[bytes], max_size: int
) -> bytes | None:
    """A structurally mutated copy of ``data``, or None when it is not JSON after ``offset``."""
    head, body = data[:offset], data[offset:]
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    words = _words(tokens)
    shrink = len(body) > max_size // 4  # big documents only lose nodes
    for _ in range(rng.randint(1, 3)):
        slots: list[_Slot] = []
        _slots(doc, slots)
        if not slots:
            doc = {rng.choice(words): _value(rng, words, slots)}
            continue
        parent, key = rng.choice(slots)
        op = 2 if shrink else rng.randrange(6)
        if op <= 1:
            parent[key] = _value(rng, words, slots)
        elif op == 2:
            del parent[key]
        elif op == 3 and isinstance(parent, dict):
            parent[rng.choice(words)] = _value(rng, words, slots)
        elif op == 3:
            parent.insert(key, parent[key])
        elif op == 4 and isinstance(parent, dict):
            parent[rng.choice(words)] = parent.pop(key)
        else:
            parent[key] = [parent[key]]
    try:
        out = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError):
        return None
    return (head + out)[:max_size]
