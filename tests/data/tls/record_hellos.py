"""Record the ClientHello fixtures in this folder from real TLS clients on loopback.

Starts ``openssl s_server`` on 127.0.0.1 with a throw-away self-signed certificate, puts
a relay in front of it that records what the client sends, and runs each client in
CLIENTS against the relay; the client's first bytes (its TLS records up to and including
the ClientHello) are written to ``<name>.bin``. ``expected.json`` gets, per fixture, the
client command, its version, the SNI/ALPN it was told to send and tshark's JA3 for it.

Run from the repository root: ``python tests/data/tls/record_hellos.py``. Needs openssl,
gnutls-cli, tshark and scapy. The tests import :func:`record_client_hello` from here to
repeat a recording live.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (argv with {port} placeholder, expected SNI, expected ALPN)
CLIENTS: dict[str, tuple[list[str], str | None, list[str]]] = {
    "openssl-s_client": (
        ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-servername", "avmon.test",
         "-alpn", "h2,http/1.1"],
        "avmon.test", ["h2", "http/1.1"],
    ),
    "openssl-s_client-tls1": (
        ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-servername",
         "Legacy.AVMON.test.", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
        "legacy.avmon.test", [],
    ),
    "openssl-s_client-nosni": (
        ["openssl", "s_client", "-connect", "127.0.0.1:{port}", "-noservername",
         "-groups", "X25519:P-256:P-384:ffdhe2048"],
        None, [],
    ),
    "gnutls-cli": (
        ["gnutls-cli", "--insecure", "--sni-hostname=gnutls.avmon.test", "--alpn=http/1.1",
         "-p", "{port}", "127.0.0.1"],
        "gnutls.avmon.test", ["http/1.1"],
    ),
}


def _make_cert(workdir: Path) -> tuple[Path, Path]:
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=avmon.test"],
        check=True, capture_output=True, timeout=60,
    )
    return key, cert


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pump(src: socket.socket, dst: socket.socket, sink: bytearray | None) -> None:
    try:
        while chunk := src.recv(65536):
            if sink is not None:
                sink += chunk
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def record_client_hello(argv: list[str], timeout: float = 20.0) -> bytes:
    """Run ``argv`` (with ``{port}``) against a local s_server through a recording relay
    and return the bytes the client sent (its whole side of the connection)."""
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = _make_cert(Path(tmp))
        server_port = _free_port()
        server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{server_port}", "-key", str(key),
             "-cert", str(cert), "-alpn", "h2,http/1.1", "-cipher", "DEFAULT:@SECLEVEL=0",
             "-naccept", "1", "-quiet"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            relay = socket.socket()
            relay.bind(("127.0.0.1", 0))
            relay.listen(1)
            relay.settimeout(timeout)
            relay_port = relay.getsockname()[1]
            # s_server accepts one connection (-naccept 1), so it is not probed: the
            # relay retries its upstream connect until the server listens.
            client = subprocess.Popen(
                [a.replace("{port}", str(relay_port)) for a in argv],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                conn, _ = relay.accept()
                upstream = _connect_retry(server_port, deadline)
                sent = bytearray()
                threads = [
                    threading.Thread(target=_pump, args=(conn, upstream, sent), daemon=True),
                    threading.Thread(target=_pump, args=(upstream, conn, None), daemon=True),
                ]
                for t in threads:
                    t.start()
                client.wait(timeout=max(1.0, deadline - time.monotonic()))
                for t in threads:
                    t.join(timeout=2)
                conn.close()
                upstream.close()
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
                relay.close()
            return bytes(sent)
        finally:
            if server.poll() is None:
                server.kill()
            server.wait()


def _connect_retry(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def first_flight(sent: bytes) -> bytes:
    """The client's records up to the end of the record holding the ClientHello's last
    byte (read straight from the record headers, independent of avmon's parser)."""
    pos, joined, need = 0, 0, None
    while pos + 5 <= len(sent):
        length = int.from_bytes(sent[pos + 3 : pos + 5], "big")
        body = sent[pos + 5 : pos + 5 + length]
        if need is None and joined == 0 and len(body) >= 4:
            need = 4 + int.from_bytes(body[1:4], "big")
        joined += len(body)
        pos += 5 + length
        if need is not None and joined >= need:
            return sent[:pos]
    raise ValueError("no complete ClientHello in the recorded bytes")


def tshark_ja3(records: bytes) -> tuple[str, str]:
    """(ja3_full, ja3) that tshark computes for ``records`` sent on a synthetic TCP flow."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    packets = [
        IP(src="127.0.0.1", dst="127.0.0.2") / TCP(sport=40000, dport=443, flags="S", seq=0),
        IP(src="127.0.0.2", dst="127.0.0.1") / TCP(sport=443, dport=40000, flags="SA", seq=0,
                                                   ack=1),
        IP(src="127.0.0.1", dst="127.0.0.2") / TCP(sport=40000, dport=443, flags="A", seq=1,
                                                   ack=1),
    ]
    mss, seq = 1400, 1
    for i in range(0, len(records), mss):
        chunk = records[i : i + mss]
        packets.append(IP(src="127.0.0.1", dst="127.0.0.2")
                       / TCP(sport=40000, dport=443, flags="PA", seq=seq, ack=1) / chunk)
        seq += len(chunk)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hello.pcap"
        wrpcap(str(path), packets)
        out = subprocess.run(
            ["tshark", "-n", "-r", str(path), "-Y", "tls.handshake.type == 1", "-T", "fields",
             "-e", "tls.handshake.ja3_full", "-e", "tls.handshake.ja3"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout
    full, digest = out.strip().split("\t")
    return full, digest


def _version(argv0: str) -> str:
    cmd = ["openssl", "version"] if argv0 == "openssl" else [argv0, "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    return out.splitlines()[0].strip()


def main() -> int:
    for tool in ("openssl", "gnutls-cli", "tshark"):
        if shutil.which(tool) is None:
            print(f"{tool} not found", file=sys.stderr)
            return 1
    expected: dict[str, dict[str, object]] = {}
    for name, (argv, sni, alpn) in CLIENTS.items():
        records = first_flight(record_client_hello(argv))
        (HERE / f"{name}.bin").write_bytes(records)
        ja3_full, ja3 = tshark_ja3(records)
        expected[name] = {
            "command": " ".join(argv),
            "client_version": _version(argv[0]),
            "bytes": len(records),
            "sni": sni,
            "alpn": alpn,
            "tshark_ja3_full": ja3_full,
            "tshark_ja3": ja3,
        }
        print(f"{name}: {len(records)} bytes, ja3 {ja3}")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
