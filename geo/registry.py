"""The jurisdiction registry: which jurisdiction controls an autonomous system.

Registration and geolocation say where addresses are registered and where they appear to
be; neither says who controls them. A Swiss-registered Kaspersky subsidiary announces
prefixes registered in CH that a Russia-controlled vendor runs. The registry
(`geo/data/jurisdictions.toml` by default) maps AS numbers and AS-organisation name
patterns to the controlling jurisdiction, each with a source and a note, and supplies the
"asn" jurisdiction basis.

Loading is strict, in the manner of signature files: unknown keys, malformed country
codes, duplicate AS numbers or patterns, and missing fields raise `GeoError` with a
"FILE:LINE: key 'x': problem" message (the line is found by scanning the text, so it is
best effort), and nothing is half-loaded.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

import msgspec
import tomli

from geo.errors import GeoError

__all__ = ["REGISTRY_SCHEMA", "JurisdictionRegistry", "RegistryEntry", "load_registry"]

#: The registry format version this loader reads.
REGISTRY_SCHEMA: Final = 1
MAX_ASN: Final = 2**32 - 1
#: Registry file size cap; the bundled file is a few kB.
MAX_REGISTRY_BYTES: Final = 4 * 1024 * 1024
#: Literal characters a pattern needs, so that "*" or "a*" cannot claim every AS.
MIN_PATTERN_LITERALS: Final = 3

_TOP_KEYS: Final = frozenset({"schema", "updated", "asn", "as_org"})
_ENTRY_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "asn": frozenset({"asn", "jurisdiction", "source", "note"}),
    "as_org": frozenset({"pattern", "jurisdiction", "source", "note"}),
}
_CODE_RE: Final = re.compile(r"[A-Z]{2}")
_TOML_LINE_RE: Final = re.compile(r"at line (\d+)")


class RegistryEntry(msgspec.Struct, frozen=True):
    """One registry entry: an AS number or an organisation pattern, and who controls it."""

    #: ISO 3166-1 alpha-2 code of the controlling jurisdiction.
    jurisdiction: str
    #: Where the fact comes from (URL or reference).
    source: str
    note: str
    #: Set for [[asn]] entries.
    asn: int | None = None
    #: Set for [[as_org]] entries: case-insensitive glob over the AS organisation.
    pattern: str | None = None
    #: Line of the entry's table header in the registry file.
    line: int = 0

    @property
    def key(self) -> str:
        """How the entry is named in output: "AS200107" or "as_org 'Kaspersky Lab*'"."""
        if self.asn is not None:
            return f"AS{self.asn}"
        return f"as_org '{self.pattern}'"


class JurisdictionRegistry(msgspec.Struct, frozen=True):
    """An immutable, validated registry."""

    path: Path
    schema: int
    #: Review date declared in the file.
    updated: dt.date
    by_asn: Mapping[int, RegistryEntry]
    patterns: tuple[tuple[re.Pattern[str], RegistryEntry], ...]

    def __len__(self) -> int:
        return len(self.by_asn) + len(self.patterns)

    def entries(self) -> tuple[RegistryEntry, ...]:
        """All entries, AS numbers first, in file order."""
        return (*self.by_asn.values(), *(entry for _, entry in self.patterns))

    def match(self, asn: int | None, org: str | None) -> RegistryEntry | None:
        """The entry for `asn`, else the first pattern matching `org`, else None."""
        if asn is not None:
            entry = self.by_asn.get(asn)
            if entry is not None:
                return entry
        if org:
            for regex, entry in self.patterns:
                if regex.fullmatch(org):
                    return entry
        return None


class _Lines:
    """Best-effort map from TOML structure to line numbers, by scanning the text."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._headers: dict[str, list[int]] = {}
        self._first_header = len(self._lines) + 1
        header_re = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_\-\"'.]+)\s*\]\]")
        table_re = re.compile(r"^\s*\[")
        for number, line in enumerate(self._lines, start=1):
            match = header_re.match(line)
            if match:
                self._headers.setdefault(match.group(1).strip("\"'"), []).append(number)
            if table_re.match(line):
                self._first_header = min(self._first_header, number)

    def header(self, table: str, index: int) -> int | None:
        found = self._headers.get(table, [])
        return found[index] if index < len(found) else None

    def key(self, name: str, table: str | None = None, index: int = 0) -> int | None:
        """Line of `name = ...` in entry `index` of `table` (or at top level)."""
        if table is None:
            start, end = 1, self._first_header
        else:
            header = self.header(table, index)
            if header is None:
                return None
            start = header
            later = [n for rows in self._headers.values() for n in rows if n > start]
            end = min(later, default=len(self._lines) + 1)
        key_re = re.compile(rf"^\s*[\"']?{re.escape(name)}[\"']?\s*=")
        for number in range(start, end):
            if key_re.match(self._lines[number - 1]):
                return number
        return start if table is not None else None

    def top_table(self, name: str) -> int | None:
        table_re = re.compile(rf"^\s*\[+\s*[\"']?{re.escape(name)}[\"']?\s*[\].]")
        for number, line in enumerate(self._lines, start=1):
            if table_re.match(line):
                return number
        return self.key(name)


def load_registry(path: Path) -> JurisdictionRegistry:
    """Read and validate a registry file; raise GeoError on the first problem found."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise GeoError("no such file", path=path) from exc
    except OSError as exc:
        raise GeoError(f"cannot read registry: {exc.strerror or exc}", path=path) from exc
    if len(raw) > MAX_REGISTRY_BYTES:
        raise GeoError(f"registry larger than {MAX_REGISTRY_BYTES} bytes", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GeoError(f"not UTF-8 text: {exc.reason}", path=path) from exc
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        found = _TOML_LINE_RE.search(str(exc))
        line = int(found.group(1)) if found else None
        raise GeoError(f"invalid TOML: {exc}", path=path, line=line) from exc
    return _Validator(path, _Lines(text)).registry(data)


class _Validator:
    def __init__(self, path: Path, lines: _Lines) -> None:
        self.path = path
        self.lines = lines

    def fail(
        self,
        problem: str,
        key: str,
        table: str | None = None,
        index: int = 0,
        *,
        at_header: bool = False,
    ) -> GeoError:
        if table is not None and at_header:
            line = self.lines.header(table, index)
        else:
            line = self.lines.key(key, table, index)
        if table is None and line is None:
            line = self.lines.top_table(key)
        return GeoError(problem, path=self.path, line=line, key=key)

    def registry(self, data: Mapping[str, object]) -> JurisdictionRegistry:
        for key in data:
            if key not in _TOP_KEYS:
                raise self.fail(
                    f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})", key
                )
        schema = data.get("schema")
        if schema is None:
            raise GeoError("missing 'schema'", path=self.path, line=1, key="schema")
        if type(schema) is not int or schema != REGISTRY_SCHEMA:
            raise self.fail(f"unsupported schema {schema!r} (expected {REGISTRY_SCHEMA})", "schema")
        updated = data.get("updated")
        if updated is None:
            raise GeoError("missing 'updated' (a date)", path=self.path, line=1, key="updated")
        if isinstance(updated, dt.datetime) or not isinstance(updated, dt.date):
            raise self.fail("must be a date such as 2026-06-20", "updated")

        by_asn: dict[int, RegistryEntry] = {}
        for index, table in enumerate(self._tables(data, "asn")):
            number, entry = self._asn_entry(table, index)
            if number in by_asn:
                raise self.fail(
                    f"duplicate AS number {number} (first at line {by_asn[number].line})",
                    "asn",
                    "asn",
                    index,
                )
            by_asn[number] = entry

        patterns: list[tuple[re.Pattern[str], RegistryEntry]] = []
        seen: dict[str, RegistryEntry] = {}
        for index, table in enumerate(self._tables(data, "as_org")):
            pattern, entry = self._org_entry(table, index)
            folded = pattern.casefold()
            if folded in seen:
                raise self.fail(
                    f"duplicate pattern {pattern!r} (first at line {seen[folded].line})",
                    "pattern",
                    "as_org",
                    index,
                )
            seen[folded] = entry
            regex = re.compile(fnmatch.translate(pattern), re.IGNORECASE)
            patterns.append((regex, entry))
        return JurisdictionRegistry(
            path=self.path,
            schema=schema,
            updated=updated,
            by_asn=MappingProxyType(by_asn),
            patterns=tuple(patterns),
        )

    def _tables(self, data: Mapping[str, object], name: str) -> list[Mapping[str, object]]:
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.fail(f"must be an array of tables: [[{name}]]", name)
        return value

    def _common(
        self, table: Mapping[str, object], kind: str, index: int
    ) -> tuple[str, str, str, int]:
        """Check keys, jurisdiction, source and note; return them and the header line."""
        allowed = _ENTRY_KEYS[kind]
        for key in table:
            if key not in allowed:
                raise self.fail(
                    f"unknown key in [[{kind}]] (expected one of {', '.join(sorted(allowed))})",
                    key,
                    kind,
                    index,
                )
        for key in sorted(allowed):
            if key not in table:
                raise self.fail(f"[[{kind}]] entry lacks '{key}'", key, kind, index, at_header=True)

        code = table["jurisdiction"]
        if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
            raise self.fail(
                f"{code!r} is not a country code (two uppercase letters, ISO 3166-1 alpha-2)",
                "jurisdiction",
                kind,
                index,
            )
        texts: dict[str, str] = {}
        for key in ("source", "note"):
            value = table[key]
            if not isinstance(value, str) or not value.strip():
                raise self.fail("must be a non-empty string", key, kind, index)
            texts[key] = " ".join(value.split())
        return code, texts["source"], texts["note"], self.lines.header(kind, index) or 0

    def _asn_entry(self, table: Mapping[str, object], index: int) -> tuple[int, RegistryEntry]:
        code, source, note, line = self._common(table, "asn", index)
        number = table["asn"]
        if type(number) is not int or not 0 < number <= MAX_ASN:
            raise self.fail(
                f"{number!r} is not an AS number (an integer 1..{MAX_ASN})", "asn", "asn", index
            )
        return number, RegistryEntry(code, source, note, asn=number, line=line)

    def _org_entry(self, table: Mapping[str, object], index: int) -> tuple[str, RegistryEntry]:
        code, source, note, line = self._common(table, "as_org", index)
        pattern = table["pattern"]
        if not isinstance(pattern, str) or not pattern.strip():
            raise self.fail("must be a non-empty string", "pattern", "as_org", index)
        pattern = pattern.strip()
        literals = len(re.sub(r"[*?\[\]]", "", pattern))
        if literals < MIN_PATTERN_LITERALS:
            raise self.fail(
                f"pattern {pattern!r} is too broad (needs {MIN_PATTERN_LITERALS}+ literal "
                "characters)",
                "pattern",
                "as_org",
                index,
            )
        return pattern, RegistryEntry(code, source, note, pattern=pattern, line=line)
