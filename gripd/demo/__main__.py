"""``python -m gripd.demo``: the same as ``gripd demo``."""

from __future__ import annotations

import sys

from gripd.demo.run import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
