"""A small structure-blind mutator: seeds, dictionary tokens and byte edits.

Used by the random engine of ``run.py`` (when atheris is not installed) and, as a hypothesis
strategy, by ``test_fuzz.py``. Edits favour what breaks parsers: token insertion, boundary
numbers, duplicated and truncated ranges, splices of two seeds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

NUMBERS = (
    b"0",
    b"-1",
    b"255",
    b"65535",
    b"65536",
    b"2147483647",
    b"2147483648",
    b"-2147483649",
    b"9223372036854775808",
    b"1e309",
    b"-0",
    b"0x10",
    b"\xd9\xa3",  # an Arabic-Indic digit: str.isdigit() accepts it, int() too
    b"9" * 5000,  # past Python's int() digit limit
)


def mutate(
    data: bytes, rng: random.Random, seeds: Sequence[bytes], tokens: Sequence[bytes]
) -> bytes:
    """One to four random edits of ``data`` (the first byte, the target's flags, included)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(buf)
        op = rng.randrange(9)
        pos = rng.randint(0, n)
        if op == 0 and n:
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif op == 2 and n:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 3 and tokens:
            buf[pos:pos] = rng.choice(tokens)
        elif op == 4:
            buf[pos:pos] = rng.choice(NUMBERS)
        elif op == 5 and n:
            a = rng.randrange(n)
            chunk = buf[a : a + rng.randint(1, 64)]
            buf[pos:pos] = chunk * rng.randint(1, 4)
        elif op == 6 and seeds:
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 7 and n:
            del buf[pos:]  # truncate
        elif n:
            buf[rng.randrange(n)] = rng.choice(b'\x00\r\n \t"\\:;,=#{}[]\xff\x80')
    return bytes(buf)
