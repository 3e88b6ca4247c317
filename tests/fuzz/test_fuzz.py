"""Every fuzz target, briefly, in the default suite: seeds, then mutated seeds via hypothesis.

The long run (a million inputs per target, coverage-guided) is ``scripts/fuzz.sh``; this keeps
each target working and catches the shallow regressions. Derandomized, so a failure here is
reproducible; see docs/fuzzing.md for the allowed outcomes of each target.
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.jsonmut import mutate_json
from tests.fuzz.mutate import NUMBERS
from tests.fuzz.targets import TARGETS

EXAMPLES = 300


def _load(name: str) -> ModuleType:
    return importlib.import_module(TARGETS[name])


def _edit(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    buf = bytearray(seed)
    for pos, delete, insert in edits:
        p = pos % (len(buf) + 1)
        buf[p : p + delete] = insert
    return bytes(buf)


def inputs(mod: ModuleType) -> st.SearchStrategy[bytes]:
    """Random bytes, or a seed with a few splices of random bytes, tokens and odd numbers, or
    (JSON targets) a seed with a few structural JSON edits."""
    pieces = st.one_of(
        st.binary(max_size=8),
        st.sampled_from([*mod.TOKENS, *NUMBERS]),
    )
    edits = st.lists(
        st.tuples(st.integers(0, 1 << 16), st.integers(0, 16), pieces), min_size=1, max_size=6
    )
    strategies = [
        st.binary(max_size=300),
        st.builds(_edit, st.sampled_from(mod.SEEDS), edits),
    ]
    offset: int | None = getattr(mod, "JSON_OFFSET", None)
    if offset is not None:

        def json_edit(seed: bytes, r: int) -> bytes:
            rng = random.Random(r)
            for _ in range(rng.randint(1, 4)):
                seed = mutate_json(seed, rng, offset, mod.TOKENS, 1 << 16) or seed
            return seed

        strategies.append(st.builds(json_edit, st.sampled_from(mod.SEEDS), st.integers(0, 1 << 32)))
    return st.one_of(strategies)


@pytest.mark.parametrize("name", list(TARGETS))
def test_seeds(name: str) -> None:
    """The seed corpus itself runs clean (each seed is a valid example of its input)."""
    mod = _load(name)
    assert mod.SEEDS and mod.TOKENS
    for seed in mod.SEEDS:
        mod.fuzz_one(seed)


# Open finds in modules other than the parsers' own, by target: (an input that reproduces it,
# the reason). The input is run first, so the xfail mark is deterministic; when the module is
# fixed, the unexpected pass fails the suite as a reminder to remove the entry. None now.
_KNOWN: dict[str, tuple[bytes, str]] = {}


def _param(name: str) -> Any:
    known = _KNOWN.get(name)
    if known is None:
        return pytest.param(name, id=name)
    mark = pytest.mark.xfail(strict=True, raises=AssertionError, reason=known[1])
    return pytest.param(name, marks=mark, id=name)


@pytest.mark.parametrize("name", [_param(n) for n in TARGETS])
def test_fuzz(name: str) -> None:
    mod = _load(name)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(inputs(mod))
    def run(data: bytes) -> None:
        mod.fuzz_one(data)

    known = _KNOWN.get(name)
    if known is not None:
        run = example(known[0])(run)
    run()
