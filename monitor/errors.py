"""The exception families of avmon.

Protocol parsers raise exactly one family, :class:`ParseError` (and its subclasses);
anything else escaping a parser is a bug. Capture sources raise :class:`CaptureError`
for fatal problems (unreadable file, not a capture at all); damage found part-way through
a capture ends that file with a warning instead. Configuration problems raise
:class:`ConfigError`, whose message is the one line the CLI prints before exiting 2. An
output that cannot be written (a full disk) raises :class:`OutputError`.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadValue",
    "CaptureError",
    "ConfigError",
    "LimitExceeded",
    "OutputError",
    "ParseError",
    "TrailingData",
    "Truncated",
]


class ParseError(Exception):
    """Input is not a well-formed protocol unit. Abstract: raise a subclass."""

    #: Bounded reason string; used as a metric label value.
    reason: ClassVar[str] = "malformed"

    def __init__(self, detail: str | None = None, *, offset: int | None = None) -> None:
        if type(self) is ParseError:
            raise TypeError("raise a ParseError subclass")
        super().__init__(detail or self.__doc__)
        self.offset = offset


class Truncated(ParseError):
    """Input ended before the structure it declares."""

    reason = "truncated"


class TrailingData(ParseError):
    """A length-prefixed block was not consumed exactly."""

    reason = "trailing_data"


class LimitExceeded(ParseError):
    """A configured safety cap was hit."""

    reason = "limit"


class BadValue(ParseError):
    """A field holds a value the spec forbids."""

    reason = "bad_value"


class CaptureError(Exception):
    """A capture source cannot be read at all (message names the file and the problem)."""


class ConfigError(Exception):
    """A configuration, signature or geo file is invalid (message: file, key, problem)."""


class OutputError(OSError):
    """Records cannot be written to an output (message: the output and the problem). An
    OSError, so it passes every handler that lets the output's errors through (a failed
    write is not the packet's fault)."""
