"""HTTP/1.x request heads: the Host a request is for and the target of a proxy CONNECT.

This module owns the plain-HTTP dissector. It reads only the request head (request line
and header fields, RFC 9112 §2-§5) from the first client bytes of a TCP stream and never
touches the body. It is incremental in the h11 manner: it returns ``None`` until the blank
line that ends the head has arrived, and rejects input that cannot be HTTP as soon as the
first bytes show it (a TLS record, say), so a caller can stop buffering.

Tolerance decisions:

- A bare LF is accepted as a line terminator (a CR before it is dropped), as RFC 9112
  §2.2 permits and h11 does; a CR anywhere else in a line is rejected.
- Empty lines before the request line are skipped (RFC 9112 §2.2).
- obs-fold continuation lines are joined to the previous field value with one space
  (RFC 9112 §5.2).
- Whitespace between a field name and its colon, control characters in a value, a
  second Host field, and an invalid Host or CONNECT authority are rejected with
  :class:`~monitor.errors.BadValue`, as RFC 9112 §3.2 and §5.1 tell a server to; a
  server would refuse such a request, so it carries no traffic worth attributing.
- Several spaces between the parts of the request line are accepted (RFC 9112 §3).

The grammar is applied with regular expressions whose repetitions are all bounded and
never nested, over lines already cut at LF, so matching time is linear in the input.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

import msgspec

from monitor.errors import BadValue, LimitExceeded
from monitor.parsers.idn import a_label

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_HOST_LEN",
    "MAX_METHOD_LEN",
    "HttpRequestHead",
    "maybe_read_request_head",
]

#: Request line plus header fields, leading empty lines included. h11's
#: DEFAULT_MAX_INCOMPLETE_EVENT_SIZE is 16 KiB; nginx's default large_client_header_buffers
#: line size is 8 KiB.
MAX_HEAD_BYTES: Final = 16 * 1024
#: Header fields per request (Apache's LimitRequestFields default is 100).
MAX_HEADERS: Final = 100
#: Longest method token; registered methods are at most 17 characters (UPDATEREDIRECTREF).
MAX_METHOD_LEN: Final = 32
#: RFC 1035 §2.3.4 bounds DNS names at 253 characters of text; reg-names in practice follow.
MAX_HOST_LEN: Final = 255

# RFC 9110 §5.6.2: tchar.
_TCHAR: Final = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_METHOD_PREFIX: Final = re.compile(rb"[%s]{0,%d}" % (_TCHAR, MAX_METHOD_LEN))
# RFC 9112 §3: method SP request-target SP HTTP-version. The target is any run of visible
# octets (obs-text included: some clients send raw UTF-8); its form is checked afterwards.
_REQUEST_LINE: Final = re.compile(
    rb"([%s]{1,%d}) +([\x21-\x7e\x80-\xff]{1,%d}) +(HTTP/[0-9]\.[0-9])"
    % (_TCHAR, MAX_METHOD_LEN, MAX_HEAD_BYTES)
)
# RFC 9112 §5: field-name ":" OWS field-value OWS; the value is split off in Python so no
# regex has to find where trailing whitespace starts.
_FIELD_NAME: Final = re.compile(rb"([%s]{1,%d}):" % (_TCHAR, MAX_HEAD_BYTES))
# RFC 9110 §5.5: field-vchar / SP / HTAB (obs-text included).
_FIELD_VALUE: Final = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# RFC 9112 §2.2: the head ends at an empty line; a bare LF is accepted for CRLF.
_HEAD_END: Final = re.compile(rb"\n\r?\n")
# RFC 3986 §3.1 scheme, then "//" authority (RFC 9112 §3.2.2 absolute-form).
_ABSOLUTE_FORM: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://([^/?#]*)")
# RFC 3986 §3.2.2 reg-name (unreserved / pct-encoded / sub-delims) or IPv4address.
_REG_NAME: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%%]{1,%d}" % MAX_HOST_LEN)
_PORT: Final = re.compile(r"[0-9]{0,5}")


class HttpRequestHead(msgspec.Struct, frozen=True):
    #: Request method, case preserved (methods are case-sensitive, RFC 9110 §9.1).
    method: str
    #: Request target as sent (origin-, absolute-, authority- or asterisk-form).
    target: str
    #: Protocol version as sent, e.g. "HTTP/1.1".
    version: str
    #: Host the request is addressed to, lower-cased, without port, trailing dot or IPv6
    #: brackets: the target's authority for absolute-form (a forward-proxy request; RFC
    #: 9112 §3.2.2 says to ignore Host then) and authority-form (CONNECT), otherwise the
    #: Host field. None when there is neither.
    host: str | None
    #: Port from the same authority; None when it gives none.
    port: int | None
    #: First User-Agent field value, if any.
    user_agent: str | None
    #: All header fields in order: (name lower-cased, value with OWS stripped), decoded as
    #: ISO-8859-1 so every octet survives.
    headers: tuple[tuple[str, str], ...]
    #: CONNECT target host (authority-form, RFC 9110 §9.3.6), same form as ``host``.
    connect_host: str | None
    #: CONNECT target port.
    connect_port: int | None
    #: Bytes of ``buffer`` the head used (leading empty lines included); a body or the
    #: tunnelled bytes start at this offset.
    head_length: int


def _parse_authority(text: str, what: str) -> tuple[str | None, int | None]:
    """Split ``host[:port]`` (RFC 3986 §3.2.2-3.2.3) into a normalised host and a port."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise BadValue(f"{what}: unclosed IP literal")
        literal, rest = text[1:close], text[close + 1 :]
        if literal[:1] in ("v", "V"):
            host = literal.lower()  # IPvFuture: nothing more to normalise
        else:
            try:
                host = ipaddress.IPv6Address(literal).compressed
            except ValueError as exc:
                raise BadValue(f"{what}: bad IPv6 literal") from exc
        if rest and not rest.startswith(":"):
            raise BadValue(f"{what}: junk after IP literal")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        if host and not _REG_NAME.fullmatch(host):
            converted = None if host.isascii() else a_label(host.encode("latin-1"))
            if converted is None or not _REG_NAME.fullmatch(converted):
                raise BadValue(f"{what}: invalid host")
            host = converted
        host = host.lower().removesuffix(".")
    if not _PORT.fullmatch(port_text):
        raise BadValue(f"{what}: invalid port")
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise BadValue(f"{what}: port out of range")
    return host or None, port


def _check_start(window: bytes, start: int) -> None:
    """Reject, from as few bytes as possible, input whose first line cannot be HTTP."""
    m = _METHOD_PREFIX.match(window, start)
    end = m.end() if m else start
    # The method is at most MAX_METHOD_LEN tchars and must be followed by SP.
    if end < len(window) and window[end] != 0x20:
        raise BadValue("not an HTTP request line", offset=end)


def _split_fields(block: bytes) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for raw in block.split(b"\n") if block else ():
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise BadValue("continuation line before any field")
            value = line.strip(b" \t")
            if not _FIELD_VALUE.fullmatch(value):
                raise BadValue("control character in field value")
            name, previous = fields[-1]
            fields[-1] = (name, f"{previous} {value.decode('latin-1')}".strip())
            continue
        m = _FIELD_NAME.match(line)
        if not m:
            raise BadValue("malformed header field line")
        value = line[m.end() :].strip(b" \t")
        if not _FIELD_VALUE.fullmatch(value):
            raise BadValue("control character in field value")
        if len(fields) >= MAX_HEADERS:
            raise LimitExceeded(f"more than {MAX_HEADERS} header fields")
        fields.append((m.group(1).decode("ascii").lower(), value.decode("latin-1")))
    return fields


def maybe_read_request_head(buffer: bytes | bytearray | memoryview) -> HttpRequestHead | None:
    """Read an HTTP/1.x request head from the start of a client byte stream.

    Returns ``None`` while the head is incomplete (call again with more bytes), else the
    parsed head; ``head_length`` says where it ended. Raises :class:`BadValue` as soon as
    the bytes cannot be an HTTP request (first byte not a method character, malformed
    request line or field line, invalid Host/CONNECT authority, duplicate Host) and
    :class:`LimitExceeded` when the head would exceed :data:`MAX_HEAD_BYTES` or carries
    more than :data:`MAX_HEADERS` fields. Nothing else escapes. Pure; the buffer is
    copied, so the result stays valid after it is reused.
    """
    window = bytes(memoryview(buffer).cast("B")[:MAX_HEAD_BYTES])
    complete_window = len(window) >= MAX_HEAD_BYTES
    del buffer  # a raised error's frames must not keep the caller's buffer exported
    start = len(window) - len(window.lstrip(b"\r\n"))
    if start < len(window):
        _check_start(window, start)
    first_lf = window.find(b"\n", start)
    if first_lf < 0:
        if complete_window:
            raise LimitExceeded(f"no request line within {MAX_HEAD_BYTES} bytes")
        return None
    line = window[start:first_lf]
    line = line[:-1] if line.endswith(b"\r") else line
    request = _REQUEST_LINE.fullmatch(line)
    if not request:
        raise BadValue("malformed request line", offset=start)
    end = _HEAD_END.search(window, first_lf)
    if not end:
        if complete_window:
            raise LimitExceeded(f"request head longer than {MAX_HEAD_BYTES} bytes")
        return None
    fields = _split_fields(window[first_lf + 1 : end.start()])

    method = request.group(1).decode("ascii")
    target = request.group(2).decode("latin-1")
    host_fields = [value for name, value in fields if name == "host"]
    if len(host_fields) > 1:
        raise BadValue("more than one Host field")
    host, port = _parse_authority(host_fields[0], "Host") if host_fields else (None, None)
    connect_host: str | None = None
    connect_port: int | None = None
    if method == "CONNECT":
        connect_host, connect_port = _parse_authority(target, "CONNECT target")
        if connect_host is None or connect_port is None:
            raise BadValue("CONNECT target is not host:port")
        host, port = connect_host, connect_port
    else:
        absolute = _ABSOLUTE_FORM.match(target)
        if absolute:
            authority = absolute.group(1).rpartition("@")[2]  # drop userinfo
            host, port = _parse_authority(authority, "request target")
    user_agent = next((value for name, value in fields if name == "user-agent"), None)
    return HttpRequestHead(
        method=method,
        target=target,
        version=request.group(3).decode("ascii"),
        host=host,
        port=port,
        user_agent=user_agent,
        headers=tuple(fields),
        connect_host=connect_host,
        connect_port=connect_port,
        head_length=end.end(),
    )
