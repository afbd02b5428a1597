"""Load vendor files (TOML) into a validated :class:`~signatures.matcher.SignatureSet`.

Each ``<vendor-id>.toml`` in a directory describes one vendor; the file format is documented
in ``signatures/README.md``. Validation is strict and all-or-nothing: an unknown or missing
key, a value of the wrong type or outside its closed set, an invalid pattern, CIDR, ASN or
jurisdiction code, or a pattern claimed twice rejects the whole set with one
:class:`~signatures.errors.SignatureError` whose message names the file, the line (found
by scanning the text, since the TOML parser reports none for keys), the key and the problem.
Nothing is ever partly loaded.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Final

import msgspec
import tomli

from signatures.errors import SignatureError
from signatures.matcher import (
    CONFIDENCES,
    PURPOSES,
    AsnRecord,
    Ja4Signature,
    NameSignature,
    PrefixRecord,
    SignatureSet,
    Vendor,
)
from signatures.patterns import PatternError, compile_pattern, expand_pattern

__all__ = [
    "ISO_3166_ALPHA2",
    "MAX_FILE_BYTES",
    "MAX_NAMES_PER_VENDOR",
    "MAX_VENDOR_FILES",
    "bundled_directory",
    "load_signature_set",
    "load_vendor_file",
]

#: The largest real vendor file is ~25 KB; a file 40x that is a mistake (or not ours).
MAX_FILE_BYTES: Final = 1 << 20
#: Files read from one directory (37 vendors today).
MAX_VENDOR_FILES: Final = 1024
#: ``[[names]]`` entries per vendor: the longest real list has 25; community lists that
#: might be imported (v2fly) reach a few thousand per vendor.
MAX_NAMES_PER_VENDOR: Final = 10_000
#: Entries in any other list (product lines, sources, indicators, CIDRs, ASNs, JA4).
MAX_LIST_ITEMS: Final = 4096
#: Longest text value: source citations run to ~450 characters.
MAX_TEXT_LEN: Final = 4096
#: Broader prefixes would attribute a large share of the Internet to one vendor; they are
#: almost certainly typos. Real entries are /21 or longer (IPv4) and /32 or longer (IPv6).
MIN_PREFIXLEN_V4: Final = 8
MIN_PREFIXLEN_V6: Final = 16
#: Longest vendor id; ids are metric label values, so they stay short.
MAX_ID_LEN: Final = 40

#: ISO 3166-1 alpha-2 officially assigned codes (Debian iso-codes 4.15). "UK", "EU" and
#: user-assigned codes such as "XX" are not valid jurisdictions of control.
ISO_3166_ALPHA2: Final = frozenset(
    (
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ "
        "BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS "
        "BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN "
        "CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE "
        "EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF "
        "GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM "
        "HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM "
        "JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC "
        "LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK "
        "ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA "
        "NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG "
        "PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW "
        "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS "
        "ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO "
        "TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI "
        "VN VU WF WS YE YT ZA ZM ZW"
    ).split()
)
_COMMON_MISTAKES: Final = {"UK": "GB", "EL": "GR"}

_ID_RE: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*\Z")
# JA4 (FoxIO spec): a = proto, TLS version, SNI d/i, 2-digit cipher and extension
# counts, 2-char ALPN; b and c = 12 hex characters of truncated SHA-256.
_JA4_RE: Final = re.compile(r"[tqd][0-9a-z]{2}[di][0-9]{4}[0-9a-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}\Z")
_ELEMENT_RE: Final = re.compile(r"\[\d+\]\Z")
_TOML_LINE_RE: Final = re.compile(r"at line (\d+), column (\d+)")
_HEADER_RE: Final = re.compile(r"\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(?:#.*)?\Z")

_TOP_REQUIRED: Final = (
    "id",
    "name",
    "product_lines",
    "jurisdiction",
    "jurisdiction_confidence",
    "jurisdiction_sources",
    "rev",
)
_TOP_OPTIONAL: Final = (
    "headquarters",
    "parent",
    "notes",
    "indicators",
    "asns",
    "prefixes",
    "names",
    "ja4",
)
_NAME_REQUIRED: Final = ("pattern", "purpose", "confidence", "role", "source")
_NAME_OPTIONAL: Final = ("other_purposes",)
_ASN_REQUIRED: Final = ("asn", "confidence", "source")
_ASN_OPTIONAL: Final = ("org",)
_PREFIX_REQUIRED: Final = ("cidrs", "confidence", "source")
_PREFIX_OPTIONAL: Final = ("note",)
_JA4_REQUIRED: Final = ("fingerprint", "purpose", "source")
_JA4_OPTIONAL: Final = ("confidence", "role")
#: A JA4 fingerprint identifies a TLS stack, which many applications share, so an entry
#: that states no confidence is weak evidence.
_JA4_DEFAULT_CONFIDENCE: Final = "low"

_TYPE_NAMES: Final = {
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    list: "array",
    dict: "table",
}


def _type_name(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def bundled_directory() -> Path:
    """The directory of vendor files shipped inside this package."""
    return Path(__file__).resolve().parent / "vendors"


class _Locator:
    """Best-effort line numbers for keys and values, by scanning the TOML text."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        #: (0-based line index, header name) for every [table] / [[array]] header.
        self._headers: list[tuple[int, str]] = []
        for index, line in enumerate(self._lines):
            found = _HEADER_RE.match(line)
            if found is not None:
                self._headers.append((index, found.group(2).replace(" ", "")))

    def _span(self, table: str | None, index: int | None) -> tuple[int, int, int | None]:
        """Lines [start, end) of a table (``index``-th, 1-based, for arrays) + header line."""
        if table is None:
            end = self._headers[0][0] if self._headers else len(self._lines)
            return 0, end, None
        seen = 0
        for pos, (line_index, name) in enumerate(self._headers):
            if name != table:
                continue
            seen += 1
            if index is None or seen == index:
                nxt = pos + 1
                end = self._headers[nxt][0] if nxt < len(self._headers) else len(self._lines)
                return line_index + 1, end, line_index + 1
        return 0, 0, None

    def line(
        self,
        key: str | None,
        table: str | None = None,
        index: int | None = None,
        value: str | None = None,
    ) -> int | None:
        start, end, header = self._span(table, index)
        key_line: int | None = None
        if key is not None:
            key_re = re.compile(
                rf"\s*(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')\s*[=.]"
            )
            for i in range(start, end):
                if key_re.match(self._lines[i]):
                    key_line = i + 1
                    break
        if value is not None:
            first = key_line - 1 if key_line is not None else start
            quoted = (f'"{value}"', f"'{value}'")
            for i in range(first, end):
                if any(q in self._lines[i] for q in quoted):
                    return i + 1
        if key_line is None and key is not None:
            for line_index, name in self._headers:
                if name == key or name.startswith(key + "."):
                    return line_index + 1
        return key_line if key_line is not None else header


class _Parsed(msgspec.Struct, frozen=True):
    """A validated vendor plus where each of its plain patterns is written."""

    vendor: Vendor
    #: plain pattern -> (line or None, signature number)
    pattern_lines: dict[str, tuple[int | None, int]]


class _Checker:
    """Type and value checks for one file, raising SignatureError with file:line:key."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.where = _Locator(text)

    def fail(
        self,
        problem: str,
        key: str | None,
        *,
        table: str | None = None,
        index: int | None = None,
        value: str | None = None,
    ) -> SignatureError:
        # "names[2].pattern" is written as "pattern = ..." inside the 2nd [[names]] table;
        # "product_lines[3]" is the 3rd element of "product_lines = [...]".
        leaf = None if key is None else _ELEMENT_RE.sub("", key.rsplit(".", 1)[-1])
        line = self.where.line(leaf, table, index, value)
        return SignatureError(problem, path=self.path, line=line, key=key)

    def keys(
        self,
        table: dict[str, object],
        required: tuple[str, ...],
        optional: tuple[str, ...],
        *,
        prefix: str = "",
        name: str | None = None,
        index: int | None = None,
    ) -> None:
        for key in table:
            if key not in required and key not in optional:
                allowed = ", ".join(required + optional)
                raise self.fail(
                    f"unknown key (allowed: {allowed})", prefix + key, table=name, index=index
                )
        for key in required:
            if key not in table:
                where = prefix.rstrip(".") or "file"
                raise SignatureError(
                    f"missing required key in {where}",
                    path=self.path,
                    line=self.where.line(None, name, index) if name else None,
                    key=prefix + key,
                )

    def text(
        self,
        value: object,
        key: str,
        *,
        table: str | None = None,
        index: int | None = None,
        allow_empty: bool = False,
    ) -> str:
        if not isinstance(value, str):
            raise self.fail(
                f"expected a string, got {_type_name(value)}", key, table=table, index=index
            )
        if not allow_empty and not value.strip():
            raise self.fail("must not be empty", key, table=table, index=index)
        if len(value) > MAX_TEXT_LEN:
            raise self.fail(f"longer than {MAX_TEXT_LEN} characters", key, table=table, index=index)
        return value

    def texts(
        self,
        value: object,
        key: str,
        *,
        table: str | None = None,
        index: int | None = None,
        allow_empty_list: bool = False,
    ) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(
                f"expected an array of strings, got {_type_name(value)}",
                key,
                table=table,
                index=index,
            )
        if not value and not allow_empty_list:
            raise self.fail("must list at least one entry", key, table=table, index=index)
        if len(value) > MAX_LIST_ITEMS:
            raise self.fail(f"more than {MAX_LIST_ITEMS} entries", key, table=table, index=index)
        out = tuple(
            self.text(item, f"{key}[{n}]", table=table, index=index)
            for n, item in enumerate(value, start=1)
        )
        for n, item in enumerate(out, start=1):
            if item in out[: n - 1]:
                raise self.fail(
                    f"entry {n} repeats {item!r}", key, table=table, index=index, value=item
                )
        return out

    def choice(
        self,
        value: object,
        key: str,
        options: tuple[str, ...],
        *,
        table: str | None = None,
        index: int | None = None,
    ) -> str:
        text = self.text(value, key, table=table, index=index)
        if text not in options:
            raise self.fail(
                f"{text!r} is not one of {', '.join(options)}", key, table=table, index=index
            )
        return text

    def tables(self, value: object, key: str) -> list[dict[str, object]]:
        if not isinstance(value, list):
            raise self.fail(f"expected [[{key}]] tables, got {_type_name(value)}", key)
        out = [item for item in value if isinstance(item, dict)]
        if len(out) != len(value):
            odd = next(item for item in value if not isinstance(item, dict))
            raise self.fail(f"expected [[{key}]] tables, got an array of {_type_name(odd)}", key)
        limit = MAX_NAMES_PER_VENDOR if key == "names" else MAX_LIST_ITEMS
        if len(out) > limit:
            raise self.fail(f"more than {limit} entries", key)
        return out


def _check_top(check: _Checker, doc: dict[str, object], stem: str) -> tuple[str, str, int]:
    """Check the top-level keys and the identity fields; return (id, jurisdiction, rev)."""
    check.keys(doc, _TOP_REQUIRED, _TOP_OPTIONAL)
    vendor_id = check.text(doc["id"], "id")
    if not _ID_RE.match(vendor_id) or len(vendor_id) > MAX_ID_LEN:
        raise check.fail(
            f"{vendor_id!r} is not a slug (lower-case letters, digits, single '-'; "
            f"at most {MAX_ID_LEN} characters)",
            "id",
        )
    if vendor_id != stem:
        raise check.fail(f"{vendor_id!r} must equal the file name stem {stem!r}", "id")
    code = check.text(doc["jurisdiction"], "jurisdiction")
    if len(code) != 2 or not (code.isascii() and code.isalpha() and code.isupper()):
        raise check.fail(
            f"{code!r} is not two upper-case letters (ISO 3166-1 alpha-2)", "jurisdiction"
        )
    if code not in ISO_3166_ALPHA2:
        hint = _COMMON_MISTAKES.get(code)
        raise check.fail(
            f"{code!r} is not an assigned ISO 3166-1 alpha-2 code"
            + (f" (did you mean {hint!r}?)" if hint else ""),
            "jurisdiction",
        )
    rev = doc["rev"]
    if isinstance(rev, bool) or not isinstance(rev, int):
        raise check.fail(f"expected an integer, got {_type_name(rev)}", "rev")
    if rev < 1:
        raise check.fail(f"must be a positive integer, got {rev}", "rev")
    return vendor_id, code, rev


def _check_names(
    check: _Checker, entries: list[dict[str, object]]
) -> tuple[tuple[NameSignature, ...], dict[str, tuple[int | None, int]]]:
    out: list[NameSignature] = []
    where: dict[str, tuple[int | None, int]] = {}
    for sid, entry in enumerate(entries, start=1):
        prefix = f"names[{sid}]."
        check.keys(entry, _NAME_REQUIRED, _NAME_OPTIONAL, prefix=prefix, name="names", index=sid)
        written = check.text(entry["pattern"], prefix + "pattern", table="names", index=sid)
        line = check.where.line("pattern", "names", sid)
        try:
            expanded = tuple(compile_pattern(p).text for p in expand_pattern(written))
        except PatternError as exc:
            raise check.fail(
                f"invalid pattern {written!r}: {exc}", prefix + "pattern", table="names", index=sid
            ) from None
        for plain in expanded:
            if plain in where:
                first = where[plain][1]
                raise check.fail(
                    f"pattern {written!r} expands to {plain!r}, already given by names[{first}]",
                    prefix + "pattern",
                    table="names",
                    index=sid,
                )
            where[plain] = (line, sid)
        purpose = check.choice(
            entry["purpose"], prefix + "purpose", PURPOSES, table="names", index=sid
        )
        others = check.texts(
            entry.get("other_purposes", []),
            prefix + "other_purposes",
            table="names",
            index=sid,
            allow_empty_list=True,
        )
        for other in others:
            if other not in PURPOSES:
                raise check.fail(
                    f"{other!r} is not one of {', '.join(PURPOSES)}",
                    prefix + "other_purposes",
                    table="names",
                    index=sid,
                    value=other,
                )
            if other == purpose:
                raise check.fail(
                    f"{other!r} repeats the main purpose",
                    prefix + "other_purposes",
                    table="names",
                    index=sid,
                )
        out.append(
            NameSignature(
                sid=sid,
                pattern=written,
                expanded=expanded,
                purpose=purpose,
                other_purposes=others,
                confidence=check.choice(
                    entry["confidence"],
                    prefix + "confidence",
                    CONFIDENCES,
                    table="names",
                    index=sid,
                ),
                role=check.text(entry["role"], prefix + "role", table="names", index=sid),
                source=check.text(entry["source"], prefix + "source", table="names", index=sid),
            )
        )
    return tuple(out), where


def _check_asns(check: _Checker, entries: list[dict[str, object]]) -> tuple[AsnRecord, ...]:
    out: list[AsnRecord] = []
    for n, entry in enumerate(entries, start=1):
        prefix = f"asns[{n}]."
        check.keys(entry, _ASN_REQUIRED, _ASN_OPTIONAL, prefix=prefix, name="asns", index=n)
        asn = entry["asn"]
        if isinstance(asn, bool) or not isinstance(asn, int):
            raise check.fail(
                f"expected an integer, got {_type_name(asn)}", prefix + "asn", table="asns", index=n
            )
        problem = _asn_problem(asn)
        if problem:
            raise check.fail(problem, prefix + "asn", table="asns", index=n)
        if any(r.asn == asn for r in out):
            raise check.fail(f"AS{asn} is listed twice", prefix + "asn", table="asns", index=n)
        out.append(
            AsnRecord(
                asn=asn,
                org=check.text(
                    entry.get("org", ""), prefix + "org", table="asns", index=n, allow_empty=True
                ),
                confidence=check.choice(
                    entry["confidence"], prefix + "confidence", CONFIDENCES, table="asns", index=n
                ),
                source=check.text(entry["source"], prefix + "source", table="asns", index=n),
            )
        )
    return tuple(out)


def _asn_problem(asn: int) -> str | None:
    """Why an ASN cannot identify a vendor's network, or None (RFC 6996, 7300, 6793)."""
    if not 1 <= asn <= 4_294_967_294:
        return f"{asn} is outside 1..4294967294"
    if asn == 23456:
        return "AS23456 is AS_TRANS (RFC 6793), not a real network"
    if 64_512 <= asn <= 65_535 or 4_200_000_000 <= asn:
        return f"AS{asn} is private-use or reserved (RFC 6996, RFC 7300)"
    if 64_496 <= asn <= 64_511 or 65_536 <= asn <= 65_551:
        return f"AS{asn} is reserved for documentation (RFC 5398)"
    return None


def _check_prefixes(check: _Checker, entries: list[dict[str, object]]) -> tuple[PrefixRecord, ...]:
    out: list[PrefixRecord] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, start=1):
        prefix = f"prefixes[{n}]."
        check.keys(
            entry, _PREFIX_REQUIRED, _PREFIX_OPTIONAL, prefix=prefix, name="prefixes", index=n
        )
        cidrs = check.texts(entry["cidrs"], prefix + "cidrs", table="prefixes", index=n)
        normal: list[str] = []
        for cidr in cidrs:
            ctx_key = prefix + "cidrs"
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise check.fail(
                    f"{cidr!r} is not a CIDR prefix: {exc}",
                    ctx_key,
                    table="prefixes",
                    index=n,
                    value=cidr,
                ) from None
            minimum = MIN_PREFIXLEN_V4 if network.version == 4 else MIN_PREFIXLEN_V6
            if network.prefixlen < minimum:
                raise check.fail(
                    f"{cidr!r} is broader than /{minimum}",
                    ctx_key,
                    table="prefixes",
                    index=n,
                    value=cidr,
                )
            text = str(network)
            if text in seen:
                raise check.fail(
                    f"{cidr!r} is listed twice", ctx_key, table="prefixes", index=n, value=cidr
                )
            seen.add(text)
            normal.append(text)
        out.append(
            PrefixRecord(
                cidrs=tuple(normal),
                confidence=check.choice(
                    entry["confidence"],
                    prefix + "confidence",
                    CONFIDENCES,
                    table="prefixes",
                    index=n,
                ),
                source=check.text(entry["source"], prefix + "source", table="prefixes", index=n),
                note=check.text(
                    entry.get("note", ""),
                    prefix + "note",
                    table="prefixes",
                    index=n,
                    allow_empty=True,
                ),
            )
        )
    return tuple(out)


def _check_ja4(check: _Checker, entries: list[dict[str, object]]) -> tuple[Ja4Signature, ...]:
    out: list[Ja4Signature] = []
    for sid, entry in enumerate(entries, start=1):
        prefix = f"ja4[{sid}]."
        check.keys(entry, _JA4_REQUIRED, _JA4_OPTIONAL, prefix=prefix, name="ja4", index=sid)
        fingerprint = check.text(
            entry["fingerprint"], prefix + "fingerprint", table="ja4", index=sid
        ).lower()
        if not _JA4_RE.match(fingerprint):
            raise check.fail(
                f"{fingerprint!r} is not a JA4 fingerprint (e.g. t13d1516h2_8daaf6152771_"
                "02713d6af862)",
                prefix + "fingerprint",
                table="ja4",
                index=sid,
            )
        if any(sig.fingerprint == fingerprint for sig in out):
            raise check.fail(
                "fingerprint is listed twice", prefix + "fingerprint", table="ja4", index=sid
            )
        out.append(
            Ja4Signature(
                sid=sid,
                fingerprint=fingerprint,
                purpose=check.choice(
                    entry["purpose"], prefix + "purpose", PURPOSES, table="ja4", index=sid
                ),
                confidence=check.choice(
                    entry.get("confidence", _JA4_DEFAULT_CONFIDENCE),
                    prefix + "confidence",
                    CONFIDENCES,
                    table="ja4",
                    index=sid,
                ),
                role=check.text(
                    entry.get("role", ""), prefix + "role", table="ja4", index=sid, allow_empty=True
                ),
                source=check.text(entry["source"], prefix + "source", table="ja4", index=sid),
            )
        )
    return tuple(out)


def _parse(data: bytes, path: str, stem: str) -> _Parsed:
    """Validate one vendor file's bytes; ``path`` is only used in messages."""
    if len(data) > MAX_FILE_BYTES:
        raise SignatureError(f"file is larger than {MAX_FILE_BYTES} bytes", path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError(
            f"not UTF-8 text (bad byte at offset {exc.start})", path=path
        ) from None
    try:
        doc = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        found = _TOML_LINE_RE.search(str(exc))
        line = int(found.group(1)) if found else None
        raise SignatureError(f"invalid TOML: {exc}", path=path, line=line) from None
    check = _Checker(path, text)
    vendor_id, jurisdiction, rev = _check_top(check, doc, stem)
    names: tuple[NameSignature, ...] = ()
    where: dict[str, tuple[int | None, int]] = {}
    if "names" in doc:
        names, where = _check_names(check, check.tables(doc["names"], "names"))
    asns = _check_asns(check, check.tables(doc["asns"], "asns")) if "asns" in doc else ()
    prefixes = (
        _check_prefixes(check, check.tables(doc["prefixes"], "prefixes"))
        if "prefixes" in doc
        else ()
    )
    ja4 = _check_ja4(check, check.tables(doc["ja4"], "ja4")) if "ja4" in doc else ()
    if not (names or asns or prefixes or ja4):
        raise SignatureError(
            "vendor file has no [[names]], [[asns]], [[prefixes]] or [[ja4]] entries",
            path=path,
        )
    vendor = Vendor(
        id=vendor_id,
        name=check.text(doc["name"], "name"),
        product_lines=check.texts(doc["product_lines"], "product_lines"),
        jurisdiction=jurisdiction,
        jurisdiction_confidence=check.choice(
            doc["jurisdiction_confidence"], "jurisdiction_confidence", CONFIDENCES
        ),
        jurisdiction_sources=check.texts(doc["jurisdiction_sources"], "jurisdiction_sources"),
        rev=rev,
        headquarters=check.text(doc.get("headquarters", ""), "headquarters", allow_empty=True),
        parent=check.text(doc.get("parent", ""), "parent", allow_empty=True),
        notes=check.text(doc.get("notes", ""), "notes", allow_empty=True),
        indicators=check.texts(doc.get("indicators", []), "indicators", allow_empty_list=True),
        asns=asns,
        prefixes=prefixes,
        names=names,
        ja4=ja4,
    )
    return _Parsed(vendor=vendor, pattern_lines=where)


def load_vendor_file(path: Path | str) -> Vendor:
    """Load and validate one vendor file; its ``id`` must equal the file stem."""
    path = Path(path)
    return _read(path).vendor


def _read(path: Path) -> _Parsed:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    return _parse(data, str(path), path.stem)


def load_signature_set(directory: Path | str | None = None) -> SignatureSet:
    """Load every ``*.toml`` vendor file in ``directory`` (default: the bundled set).

    Files whose name starts with ``.`` are skipped (editor and atomic-rename temporaries).
    Raises SignatureError, naming file, line, key and problem, if any file is invalid,
    if two files claim the same pattern, or if the directory holds no vendor files.
    """
    folder = bundled_directory() if directory is None else Path(directory)
    if not folder.is_dir():
        raise SignatureError("not a directory of vendor files", path=str(folder))
    files = sorted(
        p for p in folder.iterdir() if p.suffix == ".toml" and not p.name.startswith(".")
    )
    if not files:
        raise SignatureError("no *.toml vendor files", path=str(folder))
    if len(files) > MAX_VENDOR_FILES:
        raise SignatureError(f"more than {MAX_VENDOR_FILES} vendor files", path=str(folder))
    vendors: list[Vendor] = []
    ids: dict[str, Path] = {}
    owners: dict[str, tuple[Path, int | None, str]] = {}
    for path in files:
        parsed = _read(path)
        vendor = parsed.vendor
        if vendor.id in ids:
            raise SignatureError(
                f"duplicate id {vendor.id!r} (also in {ids[vendor.id]})",
                path=str(path),
                key="id",
            )
        ids[vendor.id] = path
        for plain, (line, sid) in parsed.pattern_lines.items():
            owner = owners.get(plain)
            if owner is not None:
                first_path, first_line, first_sig = owner
                at = f"{first_path}:{first_line}" if first_line else str(first_path)
                raise SignatureError(
                    f"pattern {plain!r} is already claimed by {first_sig} ({at}); "
                    "a name can belong to one vendor only",
                    path=str(path),
                    line=line,
                    key=f"names[{sid}].pattern",
                )
            owners[plain] = (path, line, f"{vendor.id}:{sid}")
        vendors.append(vendor)
    return SignatureSet(vendors)
