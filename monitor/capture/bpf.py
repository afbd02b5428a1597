"""Classic BPF filters for AF_PACKET sockets.

``compile_bpf`` turns a pcap-filter expression into a kernel ``sock_filter`` array by
running ``tcpdump -ddd`` (no interface needed: the link type is given with ``-y``), so
avmon shares tcpdump's filter language without linking libpcap. ``attach_bpf`` hands the
program to a socket with ``SO_ATTACH_FILTER``.
"""

from __future__ import annotations

import ctypes
import shutil
import socket
import struct
import subprocess
from typing import Final

from monitor.errors import ConfigError

__all__ = ["attach_bpf", "compile_bpf", "INSN"]

#: One classic BPF instruction (struct sock_filter): u16 code, u8 jt, u8 jf, u32 k.
INSN: Final = struct.Struct("HBBI")
#: setsockopt option attaching a classic BPF program (asm-generic/socket.h).
SO_ATTACH_FILTER: Final = 26
#: Longest program the kernel accepts (BPF_MAXINSNS).
BPF_MAXINSNS: Final = 4096
#: Seconds tcpdump may take to compile an expression.
COMPILE_TIMEOUT: Final = 30.0


class _SockFprog(ctypes.Structure):
    """struct sock_fprog: instruction count and a pointer to the instructions."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _fail(message: str) -> ConfigError:
    first = message.strip().splitlines()[0] if message.strip() else "cannot compile filter"
    return ConfigError(f"--bpf: {first.removeprefix('tcpdump: ')}")


def compile_bpf(expr: str, linktype: str = "EN10MB") -> bytes:
    """Compile ``expr`` for link type ``linktype`` (tcpdump's ``-y`` name) into a packed
    ``sock_filter`` array; a bad expression raises :class:`ConfigError` (one line)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise ConfigError("--bpf: tcpdump is needed to compile filters and was not found")
    try:
        proc = subprocess.run(  # noqa: S603 - argument list, no shell
            [tcpdump, "-ddd", "-y", linktype, "--", expr],
            capture_output=True, text=True, timeout=COMPILE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--bpf: cannot run tcpdump: {exc}") from None
    if proc.returncode != 0:
        raise _fail(proc.stderr)
    lines = proc.stdout.split()
    try:
        numbers = [int(word) for word in lines]
    except ValueError:
        raise _fail(f"unexpected tcpdump output: {proc.stdout[:80]!r}") from None
    if not numbers or len(numbers) != 1 + 4 * numbers[0]:
        raise _fail("unexpected tcpdump output (instruction count mismatch)")
    count = numbers[0]
    if not 0 < count <= BPF_MAXINSNS:
        raise _fail(f"filter has {count} instructions (kernel limit {BPF_MAXINSNS})")
    out = bytearray(INSN.size * count)
    for i in range(count):
        code, jt, jf, k = numbers[1 + 4 * i : 5 + 4 * i]
        INSN.pack_into(out, i * INSN.size, code, jt, jf, k & 0xFFFFFFFF)
    return bytes(out)


def attach_bpf(sock: socket.socket, program: bytes) -> None:
    """Attach a packed ``sock_filter`` array to ``sock`` (SO_ATTACH_FILTER)."""
    if not program or len(program) % INSN.size:
        raise ValueError("BPF program must be a non-empty array of 8-byte instructions")
    # The buffer must stay alive while the kernel copies it during setsockopt.
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // INSN.size, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))
    del buf
