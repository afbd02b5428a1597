"""The one exception type the geo package raises.

A missing, unreadable or invalid geo data file (a MaxMind-format database, the ASN CSV the
builder reads, or the jurisdiction registry) raises `GeoError` with a one-line message
that names the file and the problem, so the command line can print it and exit 2.
A lookup miss is never an error: it is an "unknown" result.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["GeoError"]


class GeoError(Exception):
    """A geo data file is missing, unreadable or invalid."""

    def __init__(
        self,
        problem: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.key = key
        self.problem = _one_line(problem)
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        what = f"key '{self.key}': " if self.key is not None else ""
        return f"{where}{what}{self.problem}"


def _one_line(text: str) -> str:
    return " ".join(text.split())
