"""Talking to origins: HTTP requests, WebSockets, WebSocket-over-HTTP and next links."""
