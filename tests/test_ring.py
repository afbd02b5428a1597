"""The TPACKET_V3 ring source against the kernel: loopback checked packet for packet
against tcpdump, a veth pair (and an 802.1Q subinterface on it) in a private network
namespace, BPF filtering, and kernel drops with a deliberately tiny ring."""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from monitor.capture.batch import Batch, LinkType
from monitor.capture.bpf import INSN, compile_bpf
from monitor.capture.ring import RingCapture
from monitor.errors import ConfigError
from tests.helpers import internet_checksum
from tests.recorder import free_port
from tests.tshark_oracle import require_tool

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="ring capture needs CAP_NET_RAW")

HOST_IP, NS_IP = "10.99.0.1", "10.99.0.2"
VLAN_HOST_IP, VLAN_NS_IP = "10.99.0.5", "10.99.0.6"
VLAN_ID = 42


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _run_capture(cap: RingCapture, on_batch: Callable[[Batch], None]) -> threading.Thread:
    def loop() -> None:
        for batch in cap:
            on_batch(batch)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    time.sleep(0.2)
    return thread


def _finish(cap: RingCapture, thread: threading.Thread, settle: float = 0.6) -> None:
    time.sleep(settle)  # the kernel retires a partly filled block after block_timeout_ms
    cap.stop()
    thread.join(5)
    assert not thread.is_alive()


def _packets(batches: list[Batch]) -> list[bytes]:
    return [b.packet(i) for b in batches for i in range(len(b))]


def _read_pcap(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    out, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        out.append(data[pos + 16 : pos + 16 + caplen])
        pos += 16 + caplen
    return out


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    """A fresh namespace holding one end of a veth pair; yields (netns, host end, ns end)."""
    require_tool("ip")
    tag = f"{os.getpid() % 100000}"
    ns, host, peer = f"avmonX{tag}", f"avh{tag}", f"avn{tag}"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
        _ip("addr", "add", f"{HOST_IP}/30", "dev", host)
        _ip("link", "set", host, "up")
        _ip("-n", ns, "addr", "add", f"{NS_IP}/30", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host, peer
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _send_from_ns(ns: str, dst: str, port: int, count: int) -> None:
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"[s.sendto(b'avmon-%05d' % i, ('{dst}', {port})) for i in range({count})]\n")
    subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], check=True,
                   capture_output=True, timeout=30)


def test_bad_bpf_is_one_line_config_error() -> None:
    require_tool("tcpdump")
    with pytest.raises(ConfigError) as err:
        compile_bpf("udp port")
    msg = str(err.value)
    assert msg.startswith("--bpf: ") and "\n" not in msg and "syntax error" in msg
    with pytest.raises(ConfigError, match=r"^--bpf: "):
        RingCapture(["lo"], bpf="tcp and and")
    program = compile_bpf("udp port 9")
    assert program and len(program) % INSN.size == 0
    code, _, _, k = INSN.unpack_from(program)
    assert (code, k) == (0x28, 12)  # ldh [12]: the Ethernet type


@root_only
def test_loopback_matches_tcpdump(tmp_path: Path) -> None:
    tcpdump = require_tool("tcpdump")
    uport, tport = free_port(), free_port()
    expr = f"udp port {uport} or tcp port {tport}"
    pcap = tmp_path / "lo.pcap"
    dump = subprocess.Popen([tcpdump, "-i", "lo", "--immediate-mode", "-U", "-B", "131072",
                             "-w", str(pcap), "--", expr], stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        assert "listening" in dump.stderr.readline()
        batches: list[Batch] = []
        cap = RingCapture(["lo"], bpf=expr, block_size=1 << 20, block_count=8)
        thread = _run_capture(cap, batches.append)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(200):
            udp.sendto(b"dgram-%04d" % i + b"." * (i * 7), ("127.0.0.1", uport))
        udp.close()
        with socket.create_server(("127.0.0.1", tport)) as server:
            client = socket.create_connection(("127.0.0.1", tport))
            conn, _ = server.accept()
            client.sendall(b"request " * 1000)
            assert conn.recv(100)
            conn.sendall(b"reply " * 30000)
            got = 0
            while got < 6 * 30000:
                got += len(client.recv(65536))
            client.close()
            conn.close()
        _finish(cap, thread)
        cap.close()
    finally:
        time.sleep(0.3)
        dump.send_signal(signal.SIGINT)
        _, summary = dump.communicate(timeout=10)
    ours, theirs = _packets(batches), _read_pcap(pcap)
    # Immediate mode makes libpcap use one frame per packet: it needs a large buffer (-B).
    assert "\n0 packets dropped by kernel" in summary
    assert len(theirs) > 200
    assert len(ours) == len(theirs)
    assert ours == theirs
    assert all(lt == LinkType.ETHERNET for b in batches for lt in b.linktypes)
    frames = [b.first_frame for b in batches]
    assert frames[0] == 1 and frames == sorted(frames)
    assert cap.packets_read == len(ours)


@root_only
def test_veth_bpf_and_vlan(netns: tuple[str, str, str], tmp_path: Path) -> None:
    require_tool("tcpdump")
    ns, host, peer = netns
    # Tagged frames are injected from the namespace (the sandbox kernel may lack 8021q,
    # so no VLAN subinterface): the receiving core strips the tag into the skb as it does
    # for any 802.1Q frame, and the ring must put it back.
    tcpreplay = require_tool("tcpreplay")
    tagged_pcap = tmp_path / "tagged.pcap"
    _write_udp_pcap(tagged_pcap, 30, _mac(None, host), _mac(ns, peer), vlan=VLAN_ID,
                    src_ip=VLAN_NS_IP, dst_ip=VLAN_HOST_IP)

    filtered: list[Batch] = []
    everything: list[Batch] = []
    cap_f = RingCapture([host], bpf="udp port 9", block_size=1 << 16, block_count=4)
    cap_all = RingCapture([host], block_size=1 << 16, block_count=4)
    threads = [_run_capture(cap_f, filtered.append), _run_capture(cap_all, everything.append)]
    _send_from_ns(ns, HOST_IP, 9, 50)
    _send_from_ns(ns, HOST_IP, 10, 20)
    subprocess.run(["ip", "netns", "exec", ns, tcpreplay, "-q", "-i", peer, str(tagged_pcap)],
                   check=True, capture_output=True, timeout=60)
    for cap, thread in zip((cap_f, cap_all), threads, strict=True):
        _finish(cap, thread)
        cap.close()

    kept = _packets(filtered)
    # The kernel strips the tag before the filter runs, so "udp port 9" also keeps the
    # tagged datagrams (as with libpcap on Linux); port 10 is filtered out.
    assert len(kept) == 80
    untagged = [f for f in kept if f[12:14] == b"\x08\x00"]
    assert len(untagged) == 50
    for i, frame in enumerate(untagged):
        assert frame[23] == 17 and struct.unpack_from("!H", frame, 36)[0] == 9
        assert frame.endswith(b"avmon-%05d" % i)
    assert all(f[12:14] == b"\x81\x00" for f in kept if f not in untagged)

    seen = _packets(everything)
    plain = [f for f in seen if f[12:14] == b"\x08\x00" and f[23] == 17]
    assert len(plain) == 70
    tagged = [f for f in seen if f[12:14] == b"\x81\x00"]
    tagged_udp = [f for f in tagged if f[16:18] == b"\x08\x00" and f[27] == 17]
    assert len(tagged_udp) == 30
    for i, frame in enumerate(tagged_udp):
        assert struct.unpack_from("!H", frame, 14)[0] & 0x0FFF == VLAN_ID
        assert socket.inet_ntoa(frame[30:34]) == VLAN_NS_IP
        assert frame.endswith(b"avmon-%05d" % i)
    assert all(b.caplens.sum() == b.wirelens.sum() for b in everything)


def _write_udp_pcap(path: Path, count: int, dst_mac: bytes, src_mac: bytes, *,
                    vlan: int | None = None, src_ip: str = NS_IP,
                    dst_ip: str = HOST_IP, flows: int = 1) -> None:
    """Ethernet/IPv4/UDP frames to port 9, payload ``avmon-NNNNN``, optionally tagged,
    from ``flows`` source ports in turn."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    for i in range(count):
        payload = b"avmon-%05d" % i
        udp = struct.pack("!HHHH", 40000 + i % flows, 9, 8 + len(payload), 0) + payload
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                          src, dst)
        hdr = hdr[:10] + struct.pack("!H", internet_checksum(hdr)) + hdr[12:]
        frame = dst_mac + src_mac + tag + b"\x08\x00" + hdr + udp
        out += struct.pack("<IIII", 1, i, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


def _mac(ns: str | None, dev: str) -> bytes:
    cmd = ["ip", "-n", ns] if ns else ["ip"]
    text = subprocess.run([*cmd, "-br", "link", "show", dev], check=True, capture_output=True,
                          text=True).stdout.split()
    return bytes.fromhex(text[2].replace(":", ""))


@root_only
def test_tiny_ring_reports_drops_and_stays_bounded(netns: tuple[str, str, str],
                                                    tmp_path: Path) -> None:
    tcpreplay = require_tool("tcpreplay")
    ns, host, peer = netns
    sent = 5000
    pcap = tmp_path / "burst.pcap"
    _write_udp_pcap(pcap, sent, _mac(None, host), _mac(ns, peer))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cap = RingCapture([host], bpf="udp port 9", block_size=4096, block_count=2,
                      frame_size=2048, block_timeout_ms=10)
    payloads: list[bytes] = []

    def slow(batch: Batch) -> None:
        payloads.extend(batch.packet(i)[-11:] for i in range(len(batch)))
        time.sleep(0.002)

    thread = _run_capture(cap, slow)
    subprocess.run(["ip", "netns", "exec", ns, tcpreplay, "-q", "--topspeed", "-i", peer,
                    str(pcap)], check=True, capture_output=True, timeout=60)
    _finish(cap, thread, settle=1.0)
    dropped = cap.dropped()
    cap.close()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"tiny ring: sent {sent}, read {cap.packets_read}, dropped {dropped}")
    assert dropped > 0
    assert cap.packets_read == len(payloads) > 0
    assert cap.packets_read + dropped == sent
    # What was read arrives in send order, with gaps only where the ring overflowed.
    numbers = [int(p[6:]) for p in payloads]
    assert numbers == sorted(set(numbers))
    assert (rss_after - rss_before) * 1024 < 50 << 20  # ru_maxrss is in KiB on Linux


@root_only
def test_any_yields_raw_ip() -> None:
    require_tool("tcpdump")
    port = free_port()
    batches: list[Batch] = []
    cap = RingCapture(["any"], bpf=f"udp port {port}", block_size=1 << 16, block_count=4)
    thread = _run_capture(cap, batches.append)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for i in range(10):
            udp.sendto(b"any-%02d" % i, ("127.0.0.1", port))
    _finish(cap, thread)
    cap.close()
    frames = _packets(batches)
    # "any" sees a loopback packet going out and coming in, as tcpdump -i any does.
    assert len(frames) == 20
    assert all(f[0] >> 4 == 4 and f.endswith(b"any-%02d" % (i // 2)) for i, f in enumerate(frames))
    assert all(lt == LinkType.RAW for b in batches for lt in b.linktypes)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


def _peak_rss(pid: int) -> int:
    """VmHWM of ``pid`` and of each of its children, in bytes (the largest)."""
    pids = [pid]
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pids += [int(c) for c in f.read().split()]
    peak = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
    return peak


@root_only
@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_avmon_live_burst_reports_drops_in_metrics(workers: int, netns: tuple[str, str, str],
                                                   tmp_path: Path) -> None:
    """`avmon live` with a 1 MB ring under tcpreplay at top speed, its processes stopped
    while the burst arrives so that the ring overflows however fast this machine is: the
    kernel drops what the ring cannot hold, /metrics shows it (read + dropped = sent), and
    memory stays flat."""
    import sys
    import urllib.request

    tcpreplay = require_tool("tcpreplay")
    ns, host, peer = netns
    sent = 200_000
    pcap = tmp_path / "burst.pcap"
    _write_udp_pcap(pcap, sent, _mac(None, host), _mac(ns, peer), flows=20_000)
    mport = free_port()
    live = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "live", "-i", host, "--bpf", "udp port 9",
         "--ring-mb", "1", "--workers", str(workers), "--metrics-listen",
         f"127.0.0.1:{mport}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)

    def metrics() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
            return r.read().decode()

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if "avmon_packets_total" in metrics():
                    break
            except OSError:
                pass
            assert live.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        # A fast machine drains a 1 MB ring as quickly as tcpreplay fills it; with every
        # avmon process stopped, the 200,000 frames (about 20 MB of ring) cannot fit.
        os.killpg(live.pid, signal.SIGSTOP)
        try:
            subprocess.run(["ip", "netns", "exec", ns, tcpreplay, "-q", "--topspeed", "-i",
                            peer, str(pcap)], check=True, capture_output=True, timeout=120)
        finally:
            os.killpg(live.pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while True:
            text = metrics()
            read = _metric(text, 'avmon_packets_total{source="ring"}')
            dropped = _metric(text, 'avmon_capture_dropped_packets_total{source="ring"}')
            if read + dropped >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        peak = _peak_rss(live.pid)
    finally:
        live.send_signal(signal.SIGTERM)
        rc = live.wait(timeout=60)
    err = live.stderr.read().decode() if live.stderr else ""
    assert rc == 0, err
    print(f"workers {workers}: sent {sent}, read {read:.0f}, dropped {dropped:.0f}, "
          f"peak RSS {peak >> 20} MiB")
    assert dropped > 0
    assert read + dropped == sent
    assert peak < 300 << 20
