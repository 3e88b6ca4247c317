"""Run one fuzz target for N inputs: ``python -m tests.fuzz.run TARGET [--runs N]``.

Engine ``atheris`` (coverage-guided libFuzzer, the default when installed) or ``random``
(seeds mutated by ``mutate.py``, no guidance). Every exception out of ``fuzz_one`` is a find:
it is recorded and the run goes on, so one bug does not hide the others. Finds are grouped by
signature (exception type and the innermost frame in gripd or the target), and for each
signature the traceback and up to three inputs are written under ``--out/TARGET/``.
The last line printed is the summary ``scripts/fuzz.sh`` collects::

    SUMMARY target=client_head runs=1000000 seconds=812.4 rate=1231/s finds=0
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from tests.fuzz.jsonmut import mutate_json
from tests.fuzz.mutate import mutate
from tests.fuzz.targets import TARGETS


class Recorder:
    """Counts inputs, groups finds by signature and writes them out."""

    def __init__(self, target: str, out: Path, runs: int) -> None:
        self.target = target
        self.out = out / target
        self.runs = runs
        self.count = 0
        self.finds: dict[str, int] = {}
        self.start = time.monotonic()
        self.last_report = self.start

    def signature(self, exc: BaseException) -> str:
        frames = list(traceback.extract_tb(exc.__traceback__))
        # A logged or wrapped error (httptools wraps callback errors): the original is the place.
        ctx = exc.__cause__ or exc.__context__
        if ctx is not None and ctx.__traceback__ is not None:
            frames = list(traceback.extract_tb(ctx.__traceback__)) + frames
        ours = [f for f in frames if "/gripd/" in f.filename]
        ours = ours or [f for f in frames if "/tests/fuzz/" in f.filename]
        f = (ours or frames)[-1] if (ours or frames) else None
        where = f"{Path(f.filename).name}:{f.lineno}" if f is not None else "?"
        return f"{type(exc).__name__} at {where}"

    def find(self, exc: BaseException, data: bytes) -> None:
        sig = self.signature(exc)
        n = self.finds.get(sig, 0)
        self.finds[sig] = n + 1
        if n >= 3:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha1(sig.encode()).hexdigest()[:10]
        (self.out / f"find-{key}-{n}.bin").write_bytes(data)
        if n == 0:
            text = "".join(traceback.format_exception(exc))
            (self.out / f"find-{key}.txt").write_text(
                f"{sig}\ninput: {data[:400]!r}\n\n{text}",
                encoding="utf-8",
                errors="backslashreplace",  # messages may hold lone surrogates
            )
            print(f"FIND {self.target}: {sig} ({self.out}/find-{key}.txt)", flush=True)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last_report >= 60:
            self.last_report = now
            print(f"progress {self.target}: {self.count} runs, {len(self.finds)} finds", flush=True)

    def summary(self) -> str:
        secs = time.monotonic() - self.start
        rate = self.count / secs if secs > 0 else 0.0
        lines = [f"  {n:8d} x {sig}" for sig, n in sorted(self.finds.items())]
        head = (
            f"SUMMARY target={self.target} runs={self.count} seconds={secs:.1f} "
            f"rate={rate:.0f}/s finds={len(self.finds)}"
        )
        return "\n".join([*lines, head])


def _wrap(fuzz_one: Callable[[bytes], None], rec: Recorder) -> Callable[[bytes], None]:
    def one(data: bytes) -> None:
        rec.count += 1
        try:
            fuzz_one(data)
        except Exception as e:
            rec.find(e, data)
        if rec.count & 0xFFF == 0:
            rec.tick()
        if rec.count >= rec.runs:
            print(rec.summary(), flush=True)
            os._exit(0)  # libFuzzer would otherwise go on; nothing is left to clean up

    return one


def _dict_entry(token: bytes) -> str:
    body = "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\x{b:02X}" for b in token
    )
    return f'"{body}"'


def _run_atheris(mod: ModuleType, rec: Recorder, max_len: int) -> None:
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

    work = rec.out / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    for seed in mod.SEEDS:
        (work / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    dict_file = rec.out / "tokens.dict"
    dict_file.write_text("\n".join(_dict_entry(t) for t in mod.TOKENS) + "\n")
    argv = [
        sys.argv[0],
        str(work),
        f"-dict={dict_file}",
        f"-max_len={max_len}",
        "-timeout=20",
        "-rss_limit_mb=3072",
        "-print_final_stats=0",
        "-close_fd_mask=0",
    ]
    offset: int | None = getattr(mod, "JSON_OFFSET", None)
    if offset is None:
        atheris.Setup(argv, _wrap(mod.fuzz_one, rec))
    else:
        tokens = mod.TOKENS

        def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            # Half the time a structural JSON edit (when the input is JSON), else libFuzzer's.
            rng = random.Random(seed)
            if rng.random() < 0.5:
                out = mutate_json(data, rng, offset, tokens, max_size)
                if out is not None:
                    return out
            mutated: bytes = atheris.Mutate(data, max_size)
            return mutated

        atheris.Setup(argv, _wrap(mod.fuzz_one, rec), custom_mutator=custom_mutator)
    atheris.Fuzz()


def _run_random(mod: ModuleType, rec: Recorder, max_len: int, seed: int) -> None:
    rng = random.Random(seed)
    one = _wrap(mod.fuzz_one, rec)
    seeds: list[bytes] = list(mod.SEEDS)
    offset: int | None = getattr(mod, "JSON_OFFSET", None)
    for s in seeds:
        one(s)
    while True:
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            structured = None
            if offset is not None and rng.random() < 0.5:
                structured = mutate_json(data, rng, offset, mod.TOKENS, max_len)
            data = structured or mutate(data, rng, seeds, mod.TOKENS)
        one(data[:max_len])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--runs", type=int, default=1_000_000)
    p.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gripd-fuzz")
    p.add_argument("--max-len", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0, help="random engine seed")
    args = p.parse_args(argv)

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

            engine = "atheris"
        except ImportError:
            engine = "random"
    rec = Recorder(args.target, args.out, args.runs)
    print(f"fuzzing {args.target} with {engine} for {args.runs} inputs", flush=True)
    if engine == "atheris":
        import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

        # Coverage of gripd only: instrumenting the harness and the JSON mutator would slow
        # every input and reward the fuzzer for exercising them instead of the parsers.
        with atheris.instrument_imports(include=["gripd"]):
            mod = importlib.import_module(TARGETS[args.target])
        _run_atheris(mod, rec, args.max_len)
    else:
        mod = importlib.import_module(TARGETS[args.target])
        _run_random(mod, rec, args.max_len, args.seed)
    print(rec.summary(), flush=True)  # atheris returns only if libFuzzer stops early


if __name__ == "__main__":
    main()
