"""The one exception type the signatures package raises.

:class:`SignatureError` means a vendor file, or the set built from several files, is
invalid. Its message is a single line naming the file, the line (when it can be found),
the key and the problem, e.g. ``kaspersky.toml:12: key 'names[3].purpose': ...``; the
command line prints it as-is and exits 2. Matching never raises it: an unknown or
malformed name is simply not matched.
"""

from __future__ import annotations

__all__ = ["SignatureError"]


class SignatureError(Exception):
    """A signature file or signature set is invalid."""

    def __init__(
        self,
        problem: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        #: What is wrong, without location; a single line.
        self.problem = " ".join(problem.split())
        #: The file the problem is in, as given to the loader; None for set-level problems.
        self.path = path
        #: 1-based line of the offending key or value, when it could be located.
        self.line = line
        #: Dotted key path, e.g. ``names[3].pattern``; None for file-level problems.
        self.key = key
        super().__init__(self._message())

    def _message(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        what = f"key '{self.key}': " if self.key is not None else ""
        return f"{where}{what}{self.problem}"
