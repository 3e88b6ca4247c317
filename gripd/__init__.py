"""gripd: a GRIP proxy, drop-in compatible with Pushpin 1.36."""

from __future__ import annotations

__version__ = "0.1.0"
