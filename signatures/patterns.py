"""The name pattern language: normalising names, expanding and compiling patterns.

A pattern is a DNS name whose labels may be

* a literal label: ``upd``;
* a glob inside one label: ``ksn-*-geo`` (``*`` matches zero or more characters, never
  a dot), or a lone ``*`` in a non-leading position, which matches exactly one label;
* a leading ``*.`` label: the pattern then matches every name *strictly below* the rest
  (``*.kaspersky.com`` matches ``a.kaspersky.com`` and ``a.b.kaspersky.com`` but not
  ``kaspersky.com``).

Two shorthands are expanded at load time into plain patterns: a zero-padded numeric range
``s[00-19].upd.kaspersky.com`` and an alternation ``(us|eu)guardservice.fortinet.net`` (an
empty alternative makes a part optional: ``(u|)...``). There are no regular expressions.

Names and patterns are compared as lower-case ASCII: a trailing dot is ignored and
internationalised labels are converted to their A-label (``xn--``) form with the
standard library's IDNA codec (RFC 3490 ToASCII). Everything here is a pure function.
"""

from __future__ import annotations

import functools
import itertools
from typing import Final

import msgspec

__all__ = [
    "MAX_EXPANSION",
    "MAX_LABEL_LEN",
    "MAX_NAME_LABELS",
    "MAX_NAME_LEN",
    "MAX_PATTERN_LABELS",
    "MAX_STARS_PER_LABEL",
    "CompiledPattern",
    "PatternError",
    "compile_pattern",
    "expand_pattern",
    "glob_match",
    "name_labels",
]

#: RFC 1035 §2.3.4: 255 octets on the wire, i.e. 253 characters in dotted text form.
MAX_NAME_LEN: Final = 253
#: RFC 1035 §2.3.4.
MAX_LABEL_LEN: Final = 63
#: A 253-character name holds at most 127 one-character labels.
MAX_NAME_LABELS: Final = 127
#: Input longer than this is rejected before any work. Four times the longest valid name:
#: nameprep may delete characters (soft hyphens, joiners), so a U-label spelling can be a
#: little longer than its 253-character A-label form; real names never come close.
MAX_NAME_INPUT_LEN: Final = 1024
#: The deepest real vendor pattern has 6 labels; 16 leaves room without letting a
#: typo (a pasted URL, say) become a pattern.
MAX_PATTERN_LABELS: Final = 16
#: Real globs use at most two stars per label (``h*-ars0*-v``); each star costs one
#: substring search per candidate label.
MAX_STARS_PER_LABEL: Final = 4
#: One written pattern may expand to at most this many plain patterns. The largest real
#: expansion is 20 (``s[00-19]``); a typo like ``[0-99999]`` must fail, not load 100k names.
MAX_EXPANSION: Final = 256
#: Longest pattern text before expansion (ranges and alternations make it longer than a name).
MAX_PATTERN_TEXT_LEN: Final = 512

_LABEL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_FRAGMENT_CHARS: Final = _LABEL_CHARS
# Full stops that UTS 46 / IDNA 2003 treat as label separators (RFC 3490 §3.1).
_IDEOGRAPHIC_DOTS: Final = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


class PatternError(ValueError):
    """A pattern is not valid in the pattern language (message says why)."""


def _to_alabel(label: str) -> str | None:
    """Return the A-label of one non-ASCII label, or None if it has none."""
    try:
        encoded = label.encode("idna")
    except UnicodeError:
        return None
    return encoded.decode("ascii").lower()


def name_labels(name: str) -> tuple[str, ...] | None:
    """Normalise a DNS name to its labels, leftmost first, lower-case A-label form.

    One trailing dot is ignored; U-labels become A-labels; ideographic full stops are
    label separators. Returns None (never raises) when the text is not a usable name:
    empty, an empty label, a label over 63 or a name over 253 characters, more than
    127 labels, or a label with no IDNA encoding.
    """
    if not name or len(name) > MAX_NAME_INPUT_LEN:
        return None
    ascii_only = name.isascii()
    if not ascii_only:
        name = name.translate(_IDEOGRAPHIC_DOTS)
    if name[-1] == ".":
        name = name[:-1]
    if not name:
        return None
    if ascii_only:
        labels = name.lower().split(".")
    else:
        labels = name.split(".")
    if len(labels) > MAX_NAME_LABELS:
        return None
    total = len(labels) - 1
    for i, label in enumerate(labels):
        if not label:
            return None
        if not ascii_only:
            if label.isascii():
                label = label.lower()
            else:
                converted = _to_alabel(label)
                if converted is None:
                    return None
                label = converted
            labels[i] = label
        if len(label) > MAX_LABEL_LEN:
            return None
        total += len(label)
    if total > MAX_NAME_LEN:
        return None
    return tuple(labels)


def glob_match(pieces: tuple[str, ...], label: str) -> bool:
    """Match one label against a glob split on ``*`` (so ``len(pieces) >= 2``).

    ``*`` matches zero or more characters. Leftmost-first search is exact for globs whose
    only metacharacter is ``*``; the cost is bounded by the label length (<= 63) times the
    number of stars (<= MAX_STARS_PER_LABEL).
    """
    first = pieces[0]
    last = pieces[-1]
    end = len(label) - len(last)
    if end < len(first) or not label.startswith(first) or not label.endswith(last):
        return False
    pos = len(first)
    for middle in pieces[1:-1]:
        found = label.find(middle, pos, end)
        if found < 0:
            return False
        pos = found + len(middle)
    return True


def _parse_range(text: str, start: int) -> tuple[tuple[str, ...], int]:
    """Parse ``[lo-hi]`` at ``text[start] == '['``; return its values and the next index."""
    close = text.find("]", start)
    if close < 0:
        raise PatternError("unclosed '[' range")
    body = text[start + 1 : close]
    lo, sep, hi = body.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit() or not lo.isascii() or not hi.isascii():
        raise PatternError(f"range '[{body}]' must be '[N-M]' with decimal digits")
    if len(lo) != len(hi):
        raise PatternError(f"range '[{body}]' bounds must have the same number of digits")
    low, high = int(lo), int(hi)
    if low > high:
        raise PatternError(f"range '[{body}]' is empty (start > end)")
    if high - low + 1 > MAX_EXPANSION:
        raise PatternError(f"range '[{body}]' has more than {MAX_EXPANSION} values")
    width = len(lo)
    return tuple(str(n).zfill(width) for n in range(low, high + 1)), close + 1


def _parse_alternation(text: str, start: int) -> tuple[tuple[str, ...], int]:
    """Parse ``(a|b|)`` at ``text[start] == '('``; return its options and the next index."""
    close = text.find(")", start)
    if close < 0:
        raise PatternError("unclosed '(' alternation")
    body = text[start + 1 : close]
    options = tuple(body.split("|"))
    if len(options) < 2:
        raise PatternError(f"alternation '({body})' needs at least two options 'a|b'")
    for option in options:
        bad = set(option) - _FRAGMENT_CHARS
        if bad:
            raise PatternError(
                f"alternation '({body})' option '{option}' may hold only letters, "
                f"digits, '-' and '_' (found {''.join(sorted(bad))!r})"
            )
    if len(set(options)) != len(options):
        raise PatternError(f"alternation '({body})' repeats an option")
    return options, close + 1


def expand_pattern(text: str) -> tuple[str, ...]:
    """Expand ranges and alternations in a written pattern into plain patterns.

    The result keeps written order (first range value / first option first) and is
    normalised by :func:`compile_pattern` later. Raises PatternError for an unclosed or
    malformed range/alternation, a nested one, or more than MAX_EXPANSION results.
    """
    if len(text) > MAX_PATTERN_TEXT_LEN:
        raise PatternError(f"pattern is longer than {MAX_PATTERN_TEXT_LEN} characters")
    parts: list[tuple[str, ...]] = []
    literal: list[str] = []
    i = 0
    total = 1
    while i < len(text):
        ch = text[i]
        if ch in "[(":
            if literal:
                parts.append(("".join(literal),))
                literal = []
            options, i = (_parse_range if ch == "[" else _parse_alternation)(text, i)
            total *= len(options)
            if total > MAX_EXPANSION:
                raise PatternError(f"pattern expands to more than {MAX_EXPANSION} names")
            parts.append(options)
            continue
        if ch in "])|":
            raise PatternError(f"unexpected {ch!r} outside a range or alternation")
        literal.append(ch)
        i += 1
    if literal:
        parts.append(("".join(literal),))
    if not parts:
        return ("",)
    return tuple("".join(combo) for combo in itertools.product(*parts))


class CompiledPattern(msgspec.Struct, frozen=True):
    """A plain (expanded) pattern ready for the matcher's trie."""

    #: Normalised text: lower case, A-labels, no trailing dot.
    text: str
    #: True for a leading ``*.``: matches names strictly below ``labels``.
    below: bool
    #: Labels root first (``("com", "kaspersky", "upd", "s07")``); globs contain ``*``.
    labels: tuple[str, ...]


def _check_label(label: str, position: str) -> str:
    """Validate and normalise one pattern label; return it in A-label form."""
    if not label:
        raise PatternError(f"empty label {position}")
    if not label.isascii():
        if "*" in label:
            raise PatternError(f"glob label {label!r} must be written in ASCII (A-label form)")
        converted = _to_alabel(label)
        if converted is None:
            raise PatternError(f"label {label!r} has no IDNA (A-label) form")
        label = converted
    label = label.lower()
    if len(label) > MAX_LABEL_LEN:
        raise PatternError(f"label {label!r} is longer than {MAX_LABEL_LEN} characters")
    bad = set(label) - _LABEL_CHARS - {"*"}
    if bad:
        raise PatternError(
            f"label {label!r} has characters outside letters, digits, '-', '_' and '*' "
            f"({''.join(sorted(bad))!r})"
        )
    stars = label.count("*")
    if stars > MAX_STARS_PER_LABEL:
        raise PatternError(f"label {label!r} has more than {MAX_STARS_PER_LABEL} '*'")
    if "**" in label:
        raise PatternError(f"label {label!r} has '**'; one '*' already matches any run")
    return label


@functools.lru_cache(maxsize=8192)
def compile_pattern(text: str) -> CompiledPattern:
    """Validate and compile one plain pattern (ranges/alternations already expanded).

    Cached: the loader checks every pattern and the matcher then compiles the same text
    for its trie (a pattern that fails is not cached, and fails again the same way).

    Rules: at most MAX_PATTERN_LABELS labels and MAX_NAME_LEN characters; a lone ``*``
    as the first label means "strictly below" and needs at least two labels after it;
    the two rightmost labels must be literal, so no pattern can span unrelated owners
    (``*.com``, ``*.co*``); characters are letters, digits, ``-``, ``_`` and ``*``.
    """
    if text != text.strip():
        raise PatternError("pattern has leading or trailing white space")
    if not text:
        raise PatternError("pattern is empty")
    if not text.isascii():
        text = text.translate(_IDEOGRAPHIC_DOTS)
    if text.endswith("."):
        text = text[:-1]
    raw = text.split(".")
    below = raw[0] == "*" and len(raw) > 1
    body = raw[1:] if below else raw
    if len(raw) > MAX_PATTERN_LABELS:
        raise PatternError(f"pattern has more than {MAX_PATTERN_LABELS} labels")
    if len(body) < 2:
        raise PatternError("pattern needs at least two labels" + (" after '*.'" if below else ""))
    labels = [_check_label(label, f"at position {n + 1}") for n, label in enumerate(body)]
    for label in labels[-2:]:
        if "*" in label:
            raise PatternError(
                f"label {label!r}: the two rightmost labels must be literal (no '*')"
            )
    normal = ".".join(labels)
    if len(normal) > MAX_NAME_LEN:
        raise PatternError(f"pattern is longer than {MAX_NAME_LEN} characters")
    return CompiledPattern(
        text=("*." + normal) if below else normal,
        below=below,
        labels=tuple(reversed(labels)),
    )
