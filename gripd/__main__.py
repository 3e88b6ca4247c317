"""``python -m gripd``: same as the ``gripd`` command."""

from __future__ import annotations

import sys

from gripd.cli import main

sys.exit(main())
