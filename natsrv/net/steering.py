"""Which worker the kernel hands a client to: by its source IP address.

An ``SO_REUSEPORT`` group spreads packets and connections over its members by a hash of
the 4-tuple, so two connections of one client (an RFC 6062 control connection and the
data connection its ConnectionBind comes on, or a client's UDP and TCP 5-tuples) may
land on different workers, and only one of them holds the allocation. A classic BPF
program attached to the group (``SO_ATTACH_REUSEPORT_CBPF``, Linux 4.5 for UDP, 4.6 for
TCP) picks the member instead: the source address modulo the number of workers, so
every 5-tuple of one address goes to one worker. Member ``i`` is the ``i``-th socket
that joined the group, which is worker ``i``'s (the parent binds them in that order and
keeps them, so the order never changes).
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct

log = logging.getLogger("natsrv")

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)

# Classic BPF (linux/filter.h): load a word at an absolute offset, A %= K, return A.
_LD_W_ABS = 0x00 | 0x00 | 0x20
_ALU_MOD_K = 0x04 | 0x90 | 0x00
_RET_A = 0x06 | 0x10
#: Negative offsets from here address the network (IP) header, wherever the data is.
_SKF_NET_OFF = -0x100000
#: Where the last 32 bits of the source address are: IPv4 (the whole address), IPv6.
_SOURCE_WORD: dict[int, int] = {socket.AF_INET: 12, socket.AF_INET6: 8 + 12}


def _program(family: int, members: int) -> bytes:
    insns = ((_LD_W_ABS, (_SKF_NET_OFF + _SOURCE_WORD[family]) & 0xFFFFFFFF),
             (_ALU_MOD_K, members), (_RET_A, 0))  # fmt: skip
    return b"".join(struct.pack("=HBBI", code, 0, 0, k) for code, k in insns)


def steer_by_source(sock: socket.socket, members: int) -> bool:
    """Make ``sock``'s ``SO_REUSEPORT`` group choose member ``source IP % members``.
    False (and one log line) where the kernel cannot; the group then hashes 4-tuples."""
    if members < 2:
        return True
    program = _program(sock.family, members)
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buf))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        log.warning("cannot steer clients to workers by address (%s): a client's second "
                    "connection may reach another worker (RFC 6062 ConnectionBind fails "
                    "then)", exc.strerror)  # fmt: skip
        return False
    return True


def worker_of(ip: str, members: int) -> int:
    """The member ``steer_by_source`` picks for a client at ``ip`` (for tests and logs)."""
    packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return int.from_bytes(packed[-4:], "big") % members


__all__ = ["steer_by_source", "worker_of"]
