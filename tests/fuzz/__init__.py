"""Fuzz targets for every parser that reads bytes from the network or from files.

Each target module has ``fuzz_one(data: bytes) -> None``: it runs one parser on ``data`` and
returns when the outcome is allowed (a parse result, or the parser's documented error type);
anything else escaping it is a *find*. ``SEEDS`` are valid examples to mutate and ``TOKENS``
a dictionary of interesting byte strings. ``test_fuzz.py`` drives them briefly with hypothesis
in the default suite; ``python -m tests.fuzz.run`` (``scripts/fuzz.sh``) drives them for
millions of inputs. See docs/fuzzing.md.
"""
