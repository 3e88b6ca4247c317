"""The one exception tree of gripd, split by who is at fault.

::

    GripError
    ├── ConfigError          config or routes file is wrong (exit with file:line)
    ├── ClientError          the client sent something bad (answer 4xx)
    │   └── RequestTooLarge  header or body over a limit (400/431)
    ├── OriginError          the origin answered something bad or nothing (answer 502)
    │   ├── InstructError    invalid GRIP instructions (Pushpin's message text)
    │   └── OriginConnectError  no target could be reached
    └── PublishError         a publish request or item is malformed (400 / dropped)

Library exceptions are converted to these at the adapter boundary.
"""

from __future__ import annotations


class GripError(Exception):
    """Root of every error gripd raises on purpose."""


class ConfigError(GripError):
    """A configuration or routes file problem; ``str()`` names file:line and the reason."""

    def __init__(self, message: str, filename: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.filename = filename
        self.line = line
        where = ""
        if filename is not None:
            where = f"{filename}:{line}: " if line is not None else f"{filename}: "
        super().__init__(f"{where}{message}")


class ClientError(GripError):
    """The client sent a bad request. ``status`` and ``message`` are what it is answered."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


class RequestTooLarge(ClientError):
    """A request header block or body is over its configured limit."""


class OriginError(GripError):
    """The origin failed: unreachable, timed out, or answered with something unusable."""


class InstructError(OriginError):
    """The origin's GRIP instructions are invalid (Pushpin 502, message shown in debug mode)."""


class OriginConnectError(OriginError):
    """None of the route's targets could be connected to; ``tried`` lists ``host:port``."""

    def __init__(self, tried: list[str]) -> None:
        self.tried = tried
        super().__init__("Unable to connect to any targets. Tried: " + ", ".join(tried))


class PublishError(GripError):
    """A publish request or item is invalid; ``str()`` is Pushpin's message."""
