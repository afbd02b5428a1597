"""Configuration: one TOML file, validated once into a tree of frozen records.

Every key is optional except what a rule needs. Unknown keys, bad CIDRs, unknown
classifications, bad jurisdiction codes and missing files are rejected with
:class:`~monitor.errors.ConfigError`, whose message is one line naming the file, the key
(with its line where it can be found) and the problem. The defaults encode the NCSC
guidance: a flagged jurisdiction (Russia by default) is never acceptable for SECRET and
above.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from pathlib import Path
from typing import Any, Final

import msgspec
import tomli

from monitor.errors import ConfigError
from monitor.flow.table import MAX_FLOWS, FlowTimeouts
from monitor.limits import Limits

__all__ = ["BASES", "CLASSIFICATIONS", "SEVERITIES", "AlertException", "Config", "GeoConfig",
           "PolicyConfig", "Rule", "Segment", "load_config"]

#: Classifications in ascending order (UK Government Security Classifications, plus the
#: OFFICIAL-SENSITIVE handling caveat, which is ordered between OFFICIAL and SECRET).
CLASSIFICATIONS: Final = ("OFFICIAL", "OFFICIAL-SENSITIVE", "SECRET", "TOP SECRET")
UNCLASSIFIED: Final = "unclassified"
#: Alert severities, most severe first; Suricata's numeric severity is the position + 1.
SEVERITIES: Final = ("critical", "high", "medium", "low")
#: Bases on which a destination can be under a jurisdiction's control.
BASES: Final = ("vendor", "registration", "geolocation", "asn")
_CC: Final = re.compile(r"^[A-Z]{2}$")


class Segment(msgspec.Struct, frozen=True):
    name: str
    cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    classification: str

    @property
    def level(self) -> int:
        return CLASSIFICATIONS.index(self.classification)


class Rule(msgspec.Struct, frozen=True):
    #: Stable identifier (appears in alerts and metrics).
    id: str
    #: Suricata-style numeric signature id for ``alert.signature_id``.
    sid: int
    description: str
    #: Classifications the rule protects.
    classifications: tuple[str, ...]
    #: Jurisdiction codes the rule is about (default: the policy's flagged set).
    jurisdictions: tuple[str, ...]
    #: Which bases count (default: the policy's, which defaults to any).
    bases: tuple[str, ...]
    severity: str
    #: Bytes to the server after which a further, escalated alert is raised (0: never).
    upload_threshold_bytes: int
    escalate_to: str
    #: Only flows attributed to an AV vendor (the default), or any flow.
    require_vendor: bool = True


class AlertException(msgspec.Struct, frozen=True):
    """An allow-list entry: matching flows raise no alert while it is in force."""

    owner: str
    reason: str
    expires: dt.date
    rule: str | None = None
    segment: str | None = None
    vendor: str | None = None
    server_name: str | None = None
    #: Line in the config file (for `avmon check`).
    line: int = 0

    def expired(self, today: dt.date) -> bool:
        return today > self.expires


class PolicyConfig(msgspec.Struct, frozen=True):
    flagged_jurisdictions: tuple[str, ...] = ("RU",)
    bases: tuple[str, ...] = BASES
    rules: tuple[Rule, ...] = ()
    exceptions: tuple[AlertException, ...] = ()


class GeoConfig(msgspec.Struct, frozen=True):
    #: None: the bundled databases.
    country_db: Path | None = None
    registration_db: Path | None = None
    asn_db: Path | None = None
    registry: Path | None = None


class Config(msgspec.Struct, frozen=True):
    path: Path | None = None
    geo: GeoConfig = msgspec.field(default_factory=GeoConfig)
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    segments: tuple[Segment, ...] = ()
    #: Signature directory (None: the bundled vendor files).
    signatures: Path | None = None
    timeouts: FlowTimeouts = msgspec.field(default_factory=FlowTimeouts)
    max_flows: int = MAX_FLOWS
    community_id_seed: int = 0
    limits: Limits = msgspec.field(default_factory=Limits)
    #: Alertmanager sink options (None: no sink); keys as in docs/alert-sinks.md.
    alertmanager: dict[str, Any] | None = None
    #: Syslog sink options (None: no sink).
    syslog: dict[str, Any] | None = None


def default_rules(flagged: tuple[str, ...], bases: tuple[str, ...],
                  threshold: int) -> tuple[Rule, ...]:
    """The NCSC guidance as rules: never for SECRET and above; not for OFFICIAL systems
    that handle national security (high for OFFICIAL-SENSITIVE, medium for OFFICIAL)."""
    return (
        Rule("secret-flagged-jurisdiction", 9_100_001,
             "AV cloud traffic from a SECRET or above segment to an endpoint controlled by "
             "a flagged jurisdiction", ("SECRET", "TOP SECRET"), flagged, bases, "critical",
             threshold, "critical"),
        Rule("official-sensitive-flagged-jurisdiction", 9_100_002,
             "AV cloud traffic from an OFFICIAL-SENSITIVE segment to an endpoint controlled "
             "by a flagged jurisdiction", ("OFFICIAL-SENSITIVE",), flagged, bases, "high",
             threshold, "critical"),
        Rule("official-flagged-jurisdiction", 9_100_003,
             "AV cloud traffic from an OFFICIAL segment to an endpoint controlled by a "
             "flagged jurisdiction", ("OFFICIAL",), flagged, bases, "medium", threshold,
             "high"),
    )


#: Default upload volume that escalates (a sample upload rather than a hash lookup).
DEFAULT_UPLOAD_THRESHOLD: Final = 1 << 20


class _Checker:
    """Validates one parsed TOML document, naming the file, key and line in errors."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, key: str, after: int = 0) -> int:
        leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
        pat = re.compile(rf"^\s*(\[\[?\s*)?{re.escape(leaf)}\s*(=|\]|\.)")
        for i, line in enumerate(self.lines[after:], start=after + 1):
            if pat.search(line):
                return i
        return 0

    def fail(self, key: str, problem: str, after: int = 0) -> ConfigError:
        line = self.line_of(key, after)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: key '{key}': {problem}")

    def table(self, obj: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(key, "must be a table")
        for k in obj:
            if k not in allowed:
                hint = _hint(k, allowed)
                raise self.fail(f"{key}.{k}" if key else k, "unknown key" + hint)
        return obj

    def string(self, obj: Any, key: str) -> str:
        if not isinstance(obj, str) or not obj:
            raise self.fail(key, "must be a non-empty string")
        return obj

    def strings(self, obj: Any, key: str) -> tuple[str, ...]:
        if not isinstance(obj, list) or not all(isinstance(x, str) and x for x in obj):
            raise self.fail(key, "must be a list of strings")
        return tuple(obj)

    def integer(self, obj: Any, key: str, minimum: int = 0) -> int:
        if not isinstance(obj, int) or isinstance(obj, bool) or obj < minimum:
            raise self.fail(key, f"must be an integer >= {minimum}")
        return obj

    def number(self, obj: Any, key: str) -> float:
        if not isinstance(obj, (int, float)) or isinstance(obj, bool) or obj <= 0:
            raise self.fail(key, "must be a positive number")
        return float(obj)

    def codes(self, obj: Any, key: str) -> tuple[str, ...]:
        codes = self.strings(obj, key)
        for c in codes:
            if not _CC.match(c):
                raise self.fail(key, f"'{c}' is not an ISO 3166-1 alpha-2 code (e.g. 'RU')")
        return codes

    def choice(self, obj: Any, key: str, options: tuple[str, ...]) -> str:
        value = self.string(obj, key)
        if value not in options:
            raise self.fail(key, f"'{value}' is not one of {', '.join(options)}")
        return value

    def file(self, obj: Any, key: str) -> Path:
        p = Path(self.string(obj, key)).expanduser()
        if not p.is_absolute():
            p = self.path.parent / p
        if not p.exists():
            raise self.fail(key, f"file not found: {p}")
        return p


def _hint(key: str, allowed: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


_TOP: Final = {"geo", "policy", "segments", "signatures", "flow", "limits", "alertmanager",
                "syslog"}
_FACILITIES: Final = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",
                      "uucp", "cron", "authpriv", "ftp", "local0", "local1", "local2",
                      "local3", "local4", "local5", "local6", "local7")


def load_config(path: str | Path | None) -> Config:
    """Load and validate a configuration file; None gives the defaults."""
    if path is None:
        policy = PolicyConfig(rules=default_rules(("RU",), BASES, DEFAULT_UPLOAD_THRESHOLD))
        return Config(policy=policy)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    try:
        doc = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    c = _Checker(p, text)
    c.table(doc, "", _TOP)

    geo = GeoConfig()
    if "geo" in doc:
        g = c.table(doc["geo"], "geo", {"country_db", "registration_db", "asn_db", "registry"})
        geo = GeoConfig(**{k: c.file(v, f"geo.{k}") for k, v in g.items()})

    segments = _segments(c, doc.get("segments", []))
    flagged: tuple[str, ...] = ("RU",)
    bases: tuple[str, ...] = BASES
    threshold = DEFAULT_UPLOAD_THRESHOLD
    rules: tuple[Rule, ...] | None = None
    exceptions: tuple[AlertException, ...] = ()
    if "policy" in doc:
        pol = c.table(doc["policy"], "policy", {"flagged_jurisdictions", "bases",
                                                "upload_threshold_bytes", "rules",
                                                "exceptions"})
        if "flagged_jurisdictions" in pol:
            flagged = c.codes(pol["flagged_jurisdictions"], "policy.flagged_jurisdictions")
        if "bases" in pol:
            bases = tuple(c.choice(b, "policy.bases", BASES)
                          for b in c.strings(pol["bases"], "policy.bases"))
        if "upload_threshold_bytes" in pol:
            threshold = c.integer(pol["upload_threshold_bytes"], "policy.upload_threshold_bytes")
        if "rules" in pol:
            rules = _rules(c, pol["rules"], flagged, bases, threshold)
        if rules is None:
            rules = default_rules(flagged, bases, threshold)
        if "exceptions" in pol:
            exceptions = _exceptions(c, pol["exceptions"], rules, segments)
    if rules is None:
        rules = default_rules(flagged, bases, threshold)
    policy = PolicyConfig(flagged, bases, rules, exceptions)

    sig_dir: Path | None = None
    if "signatures" in doc:
        s = c.table(doc["signatures"], "signatures", {"directory"})
        if "directory" in s:
            sig_dir = c.file(s["directory"], "signatures.directory")

    timeouts = FlowTimeouts()
    max_flows = MAX_FLOWS
    seed = 0
    if "flow" in doc:
        f = c.table(doc["flow"], "flow", {"tcp_idle_seconds", "udp_idle_seconds",
                                          "tcp_closed_seconds", "active_seconds", "max_flows",
                                          "community_id_seed"})
        timeouts = FlowTimeouts(
            tcp_idle=c.number(f.get("tcp_idle_seconds", timeouts.tcp_idle),
                              "flow.tcp_idle_seconds"),
            udp_idle=c.number(f.get("udp_idle_seconds", timeouts.udp_idle),
                              "flow.udp_idle_seconds"),
            tcp_closed=c.number(f.get("tcp_closed_seconds", timeouts.tcp_closed),
                                "flow.tcp_closed_seconds"),
            active=c.number(f.get("active_seconds", timeouts.active), "flow.active_seconds"))
        max_flows = c.integer(f.get("max_flows", MAX_FLOWS), "flow.max_flows", 1)
        seed = c.integer(f.get("community_id_seed", 0), "flow.community_id_seed")
        if seed > 0xFFFF:
            raise c.fail("flow.community_id_seed", "must fit in 16 bits")
    limits = Limits()
    if "limits" in doc:
        fields = set(Limits.__struct_fields__)
        lim = c.table(doc["limits"], "limits", fields)
        limits = Limits(**{k: c.integer(v, f"limits.{k}", 1) for k, v in lim.items()})
    alertmanager: dict[str, Any] | None = None
    if "alertmanager" in doc:
        a = c.table(doc["alertmanager"], "alertmanager",
                    {"url", "resend_seconds", "resolve_after_seconds", "spool_dir",
                     "spool_max_bytes", "timeout_seconds", "generator_url"})
        url = c.string(a.get("url"), "alertmanager.url")
        if not re.match(r"^https?://[^/\s]+", url):
            raise c.fail("alertmanager.url", f"'{url}' is not an http(s) URL")
        alertmanager = {"url": url.rstrip("/")}
        for key in ("resend_seconds", "resolve_after_seconds", "timeout_seconds"):
            if key in a:
                alertmanager[key] = c.number(a[key], f"alertmanager.{key}")
        if "spool_dir" in a:
            spool = Path(c.string(a["spool_dir"], "alertmanager.spool_dir")).expanduser()
            alertmanager["spool_dir"] = spool if spool.is_absolute() else p.parent / spool
        if "spool_max_bytes" in a:
            alertmanager["spool_max_bytes"] = c.integer(a["spool_max_bytes"],
                                                        "alertmanager.spool_max_bytes", 4096)
        if "generator_url" in a:
            alertmanager["generator_url"] = c.string(a["generator_url"],
                                                     "alertmanager.generator_url")
    syslog: dict[str, Any] | None = None
    if "syslog" in doc:
        sl = c.table(doc["syslog"], "syslog", {"address", "app_name", "facility", "hostname",
                                               "max_message_bytes", "timeout_seconds"})
        address = c.string(sl.get("address"), "syslog.address")
        if not re.match(r"^(udp|tcp)://[^/\s]+:\d+$|^unix:///\S+$", address):
            raise c.fail("syslog.address", f"'{address}' is not udp://HOST:PORT, "
                                            "tcp://HOST:PORT or unix:///PATH")
        syslog = {"address": address}
        if "app_name" in sl:
            syslog["app_name"] = c.string(sl["app_name"], "syslog.app_name")
        if "facility" in sl:
            syslog["facility"] = c.choice(sl["facility"], "syslog.facility", _FACILITIES)
        if "hostname" in sl:
            syslog["hostname"] = c.string(sl["hostname"], "syslog.hostname")
        if "max_message_bytes" in sl:
            syslog["max_message_bytes"] = c.integer(sl["max_message_bytes"],
                                                    "syslog.max_message_bytes", 480)
        if "timeout_seconds" in sl:
            syslog["timeout_seconds"] = c.number(sl["timeout_seconds"], "syslog.timeout_seconds")
    return Config(path=p, geo=geo, policy=policy, segments=segments, signatures=sig_dir,
                  timeouts=timeouts, max_flows=max_flows, community_id_seed=seed,
                  limits=limits, alertmanager=alertmanager, syslog=syslog)


def _segments(c: _Checker, raw: Any) -> tuple[Segment, ...]:
    if not isinstance(raw, list):
        raise c.fail("segments", "must be an array of tables ([[segments]])")
    out: list[Segment] = []
    names: set[str] = set()
    seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
    after = 0
    for i, seg in enumerate(raw):
        key = f"segments[{i}]"
        after = c.line_of("segments", after) or after
        s = c.table(seg, key, {"name", "cidrs", "classification", "description"})
        for required in ("name", "cidrs", "classification"):
            if required not in s:
                raise c.fail(key, f"missing '{required}'", after)
        name = c.string(s["name"], f"{key}.name")
        if name in names:
            raise c.fail(f"{key}.name", f"duplicate segment name '{name}'", after)
        names.add(name)
        classification = s["classification"]
        if classification not in CLASSIFICATIONS:
            raise c.fail(f"{key}.classification",
                         f"unknown classification '{classification}' (one of "
                         f"{', '.join(CLASSIFICATIONS)})", after)
        nets = []
        for text in c.strings(s["cidrs"], f"{key}.cidrs"):
            try:
                net = ipaddress.ip_network(text, strict=True)
            except ValueError as exc:
                raise c.fail(f"{key}.cidrs", f"bad CIDR '{text}': {exc}", after) from None
            if net in seen:
                raise c.fail(f"{key}.cidrs", f"{net} is already in segment '{seen[net]}'",
                             after)
            seen[net] = name
            nets.append(net)
        out.append(Segment(name, tuple(nets), classification))
        after += 1
    return tuple(out)


def _rules(c: _Checker, raw: Any, flagged: tuple[str, ...], bases: tuple[str, ...],
           threshold: int) -> tuple[Rule, ...]:
    if not isinstance(raw, list):
        raise c.fail("policy.rules", "must be an array of tables ([[policy.rules]])")
    out: list[Rule] = []
    ids: set[str] = set()
    sids: set[int] = set()
    for i, r in enumerate(raw):
        key = f"policy.rules[{i}]"
        t = c.table(r, key, {"id", "sid", "description", "classifications", "jurisdictions",
                             "bases", "severity", "upload_threshold_bytes", "escalate_to",
                             "require_vendor"})
        for required in ("id", "classifications", "severity"):
            if required not in t:
                raise c.fail(key, f"missing '{required}'")
        rid = c.string(t["id"], f"{key}.id")
        if rid in ids:
            raise c.fail(f"{key}.id", f"duplicate rule id '{rid}'")
        ids.add(rid)
        sid = c.integer(t.get("sid", 9_200_000 + i), f"{key}.sid", 1)
        if sid in sids:
            raise c.fail(f"{key}.sid", f"duplicate sid {sid}")
        sids.add(sid)
        classes = tuple(c.choice(x, f"{key}.classifications", CLASSIFICATIONS)
                        for x in c.strings(t["classifications"], f"{key}.classifications"))
        severity = c.choice(t["severity"], f"{key}.severity", SEVERITIES)
        out.append(Rule(
            id=rid, sid=sid, description=str(t.get("description", rid)),
            classifications=classes,
            jurisdictions=c.codes(t["jurisdictions"], f"{key}.jurisdictions")
            if "jurisdictions" in t else flagged,
            bases=tuple(c.choice(b, f"{key}.bases", BASES)
                        for b in c.strings(t["bases"], f"{key}.bases")) if "bases" in t
            else bases,
            severity=severity,
            upload_threshold_bytes=c.integer(t.get("upload_threshold_bytes", threshold),
                                             f"{key}.upload_threshold_bytes"),
            escalate_to=c.choice(t.get("escalate_to", "critical"), f"{key}.escalate_to",
                                 SEVERITIES),
            require_vendor=bool(t.get("require_vendor", True)),
        ))
    return tuple(out)


def _exceptions(c: _Checker, raw: Any, rules: tuple[Rule, ...],
                segments: tuple[Segment, ...]) -> tuple[AlertException, ...]:
    if not isinstance(raw, list):
        raise c.fail("policy.exceptions", "must be an array of tables")
    out: list[AlertException] = []
    after = 0
    for i, e in enumerate(raw):
        key = f"policy.exceptions[{i}]"
        after = c.line_of("exceptions", after) or after
        t = c.table(e, key, {"owner", "reason", "expires", "rule", "segment", "vendor",
                             "server_name"})
        for required in ("owner", "reason", "expires"):
            if required not in t:
                raise c.fail(key, f"missing '{required}' (every exception needs an owner, a "
                                  "reason and an expiry date)", after)
        expires = t["expires"]
        if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
            raise c.fail(f"{key}.expires", "must be a TOML date like 2027-03-31", after)
        if not any(k in t for k in ("rule", "segment", "vendor", "server_name")):
            raise c.fail(key, "must name at least one of rule, segment, vendor, server_name",
                         after)
        if "segment" in t and t["segment"] not in {s.name for s in segments}:
            raise c.fail(f"{key}.segment", f"unknown segment '{t['segment']}'", after)
        if "rule" in t and t["rule"] not in {r.id for r in rules}:
            raise c.fail(f"{key}.rule", f"unknown rule '{t['rule']}'", after)
        out.append(AlertException(
            owner=c.string(t["owner"], f"{key}.owner"),
            reason=c.string(t["reason"], f"{key}.reason"), expires=expires,
            rule=t.get("rule"), segment=t.get("segment"), vendor=t.get("vendor"),
            server_name=str(t["server_name"]).lower().rstrip(".") if "server_name" in t
            else None, line=c.line_of("owner", after)))
        after += 1
    return tuple(out)
