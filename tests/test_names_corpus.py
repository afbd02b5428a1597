"""Names avmon reports on the peer corpus, against the peers' expected outputs and tshark.

For every capture in ``tests/data/corpus/MANIFEST.json``: the TLS SNIs, QUIC SNIs, DNS
query names and HTTP hosts in avmon's ``tls``/``quic``/``dns``/``http`` records must
contain everything tshark (run here, as the oracle) and the peer (Zeek, Suricata, nDPI)
report — no missed name — and nothing that neither of them reports — no invented name.
DNS answer addresses are compared with the answer section as tshark 4.0 dissected it
(recorded in the manifest).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import CORPUS, replay
from tests.tshark_oracle import require_tool

MANIFEST = {e["file"]: e for e in json.loads((CORPUS / "MANIFEST.json").read_text())}

#: Names a peer reports that are not DNS, TLS, QUIC or HTTP at all, so avmon does not
#: look for them: Zeek's dns.log includes NetBIOS name service (UDP 137) queries.
NOT_OURS = {"zeek_wikipedia.pcap": {"dns_queries": {"brwc0cb383d1f42", "workgroup"}}}

TSHARK_FIELDS = ["frame.protocols", "tls.handshake.type", "tls.handshake.extensions_server_name",
                 "gquic.tag.sni", "dns.qry.name", "http.request", "http.host",
                 "http.request.method", "http.request.uri"]


def tshark_names(path: Path) -> dict[str, set[str]]:
    tshark = require_tool("tshark")
    # QUIC on UDP/853 (DNS over QUIC) is not on tshark's default QUIC ports.
    out = subprocess.run(
        [tshark, "-n", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE",
         "-d", "udp.port==853,quic", "-T", "fields", "-E", "separator=\t",
         "-E", "occurrence=a", "-E", "aggregator=|"]
        + [a for f in TSHARK_FIELDS for a in ("-e", f)],
        check=True, capture_output=True, text=True).stdout
    names: dict[str, set[str]] = {k: set() for k in ("sni", "quic_sni", "dns_queries",
                                                     "http_hosts")}
    for line in out.splitlines():
        row = dict(zip(TSHARK_FIELDS, line.split("\t"), strict=False))
        protos = row.get("frame.protocols", "").split(":")
        if "1" in row.get("tls.handshake.type", "").split("|"):
            for sni in filter(None, row.get("tls.handshake.extensions_server_name", "")
                              .split("|")):
                names["quic_sni" if "quic" in protos else "sni"].add(sni.lower().rstrip("."))
        for sni in filter(None, row.get("gquic.tag.sni", "").split("|")):
            names["quic_sni"].add(sni.lower())
        for q in filter(None, row.get("dns.qry.name", "").split("|")):
            names["dns_queries"].add(q.lower().rstrip("."))
        if row.get("http.request") and row.get("http.request.method") != "CONNECT":
            for h in filter(None, row.get("http.host", "").split("|")):
                names["http_hosts"].add(_host(h))
        elif row.get("http.request.method") == "CONNECT":
            names["http_hosts"].add(_host(row.get("http.request.uri", "")))
    return names


def _host(h: str) -> str:
    h = h.strip().lower()
    if h.startswith("["):
        return h[1:h.index("]")]
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def avmon_names(records: list[dict]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    names: dict[str, set[str]] = {k: set() for k in ("sni", "quic_sni", "dns_queries",
                                                     "http_hosts")}
    answers: dict[str, set[str]] = {}
    for r in records:
        et = r["event_type"]
        if et == "tls" and r["tls"].get("sni"):
            names["sni"].add(r["tls"]["sni"])
        elif et == "quic" and r["quic"].get("sni"):
            names["quic_sni"].add(r["quic"]["sni"])
        elif et == "http" and r["http"].get("hostname"):
            names["http_hosts"].add(r["http"]["hostname"])
        elif et == "dns":
            d = r["dns"]
            if d.get("rrname"):
                names["dns_queries"].add(d["rrname"])
            for a in d.get("answers", []):
                if a.get("rrtype") in ("A", "AAAA") and "rdata" in a:
                    answers.setdefault(d.get("rrname", ""), set()).add(_canon(a["rdata"]))
    return names, answers


def _canon(addr: str) -> str:
    import ipaddress

    return str(ipaddress.ip_address(addr))


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_names(name: str, tmp_path: Path) -> None:
    entry = MANIFEST[name]
    records, pipe = replay([CORPUS / name], tmp_path)
    got, got_answers = avmon_names(records)
    oracle = tshark_names(CORPUS / name)
    skip = NOT_OURS.get(name, {})
    for kind in ("sni", "quic_sni", "dns_queries", "http_hosts"):
        peer = {n.lower().rstrip(".") for n in entry["expected"][kind]}
        want = (oracle[kind] | peer) - skip.get(kind, set())
        missed = want - got[kind]
        invented = got[kind] - oracle[kind] - peer
        assert not missed, f"{name}: {kind} missed {sorted(missed)}"
        assert not invented, f"{name}: {kind} invented {sorted(invented)}"
    # Answer addresses: everything tshark found in the answer sections, per name.
    for qname, addrs in entry["tshark"]["derived"]["dns_answers"].items():
        want_addrs = {_canon(a) for a in addrs}
        have = got_answers.get(qname.lower(), set())
        assert want_addrs <= have, f"{name}: answers for {qname}: missed {want_addrs - have}"
    assert not [k for k in pipe.dissector.stats.parse_errors if k[0] in ("tls", "quic")], \
        pipe.dissector.stats.parse_errors
