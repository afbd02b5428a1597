"""Record real clients and servers on loopback with tcpdump, for replay tests.

Everything stays on 127.0.0.1 / ::1. Servers are started on free ports; ``Recording``
captures only those ports so unrelated loopback traffic of the machine stays out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from monitor.dissect import DNS_PORTS
from tests.tshark_oracle import require_tool


def free_port(family: int = socket.AF_INET) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def recording(path: Path, ports: list[int], iface: str = "lo") -> Iterator[Path]:
    """tcpdump on ``iface`` for ``ports`` into ``path`` while the body runs."""
    tcpdump = require_tool("tcpdump")
    expr = " or ".join(f"port {p}" for p in ports)
    # --immediate-mode makes libpcap use one frame of the kernel buffer per packet, so the
    # default 2 MB buffer overflows on a fast loopback burst: ask for 128 MiB (-B, KiB).
    proc = subprocess.Popen([tcpdump, "-i", iface, "-U", "--immediate-mode", "-B", "131072",
                             "-s", "0", "-w", str(path), expr],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    line = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if b"listening on" in line or not line:
            break
    if b"listening on" not in line:
        proc.kill()
        raise RuntimeError(f"tcpdump did not start: {line!r}")
    # "listening on" is printed before every interface of `-i any` is attached.
    time.sleep(1.0)
    try:
        yield path
    finally:
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        # A recording that lost packets would make every comparison with it meaningless.
        dropped = re.search(rb"(\d+) packets? dropped by kernel", err or b"")
        if dropped and int(dropped.group(1)):
            raise RuntimeError(f"tcpdump dropped {dropped.group(1).decode()} packets")


@contextlib.contextmanager
def http_server(port: int, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "--directory", str(directory)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def self_signed_cert(directory: Path, name: str = "avmon.test") -> tuple[Path, Path]:
    openssl = require_tool("openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    if not cert.exists():
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def tls_server(port: int, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``openssl s_server`` answering with a fixed page (``-www``)."""
    openssl = require_tool("openssl")
    cert, key = self_signed_cert(directory)
    proc = subprocess.Popen([openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                             str(cert), "-key", str(key), "-www", "-quiet"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class DnsServer:
    """A small authoritative DNS responder (dnspython) on UDP and TCP loopback.

    ``answers`` maps a lower-case name to a list of (rrtype, value) records; a CNAME
    record is followed by the resolver-style chain in the answer section.
    """

    def __init__(self, port: int, answers: dict[str, list[tuple[str, str]]],
                 host: str = "127.0.0.1") -> None:
        self.port = port
        self.answers = answers
        self._stop = threading.Event()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._udp.bind((host, port))
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((host, port))
        except OSError:
            self._udp.close()
            self._tcp.close()
            raise
        self._tcp.listen(8)
        self._udp.settimeout(0.2)
        self._tcp.settimeout(0.2)
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]

    def __enter__(self) -> DnsServer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    def respond(self, wire: bytes) -> bytes:
        import dns.message
        import dns.rrset

        query = dns.message.from_wire(wire)
        resp = dns.message.make_response(query)
        q = query.question[0]
        name = q.name.to_text().rstrip(".").lower()
        ttl = 300
        for _ in range(8):
            records = self.answers.get(name, [])
            cname = [v for t, v in records if t == "CNAME"]
            if cname:
                resp.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", "CNAME",
                                                       cname[0] + "."))
                name = cname[0]
                ttl = max(ttl - 100, 30)
                continue
            for rtype, value in records:
                if dns.rdatatype.to_text(q.rdtype) == rtype:
                    resp.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", rtype, value))
            break
        return bytes(resp.to_wire())

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._udp.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self._udp.sendto(self.respond(data), addr)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                buf = b""
                try:
                    while True:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                        while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                            n = int.from_bytes(buf[:2], "big")
                            msg, buf = buf[2:2 + n], buf[2 + n:]
                            out = self.respond(msg)
                            conn.sendall(len(out).to_bytes(2, "big") + out)
                except (TimeoutError, OSError):
                    pass


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def run(cmd: list[str], timeout: float = 30, check: bool = False,
        input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:  # noqa: A002
    """Run a client to completion (stdin: ``input``, or nothing)."""
    if input is None:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, check=check,
                              stdin=subprocess.DEVNULL, env=dict(os.environ))
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=check,
                          input=input, env=dict(os.environ))


class ThreadedServer:
    """A TCP server on ``host`` answering each connection in its own thread."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError


class ConnectProxy(ThreadedServer):
    """An explicit HTTP proxy on ``host`` that only tunnels: whatever the CONNECT target
    says, it connects from ``host`` to ``upstream`` (nothing leaves the machine)."""

    def __init__(self, host: str, upstream: tuple[str, int]) -> None:
        super().__init__(host)
        self.upstream = upstream
        self.targets: list[str] = []

    def handle(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            self.targets.append(target)
            rest = head.split(b"\r\n\r\n", 1)[1]
            with socket.create_connection(self.upstream, timeout=10,
                                          source_address=(self.host, 0)) as up:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    up.sendall(rest)
                pump = threading.Thread(target=_relay, args=(up, client), daemon=True)
                pump.start()
                _relay(client, up)
                pump.join(timeout=5)


def _relay(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def dns_server(answers: dict[str, list[tuple[str, str]]],
               host: str = "127.0.0.1") -> Iterator[DnsServer]:
    """A DnsServer on ``host`` and a port avmon dissects as DNS (53, else 5353 or 5355)."""
    last: OSError | None = None
    for port in sorted(DNS_PORTS):
        try:
            server = DnsServer(port, answers, host)
        except OSError as exc:
            last = exc
            continue
        with server:
            yield server
        return
    pytest.skip(f"no DNS port free on {host}: {last}")
