"""``gripd demo``: gripd and a small GRIP backend, with a page showing one message arrive over
SSE, HTTP streaming, long-polling and WebSocket. :mod:`gripd.demo.origin` is the backend, written
to be copied; :mod:`gripd.demo.run` starts everything."""

from __future__ import annotations

from gripd.demo.run import main

__all__ = ["main"]
