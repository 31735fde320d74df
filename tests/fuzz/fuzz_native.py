"""Fuzz the native data path's parsers (natsrv._fastpath), meant to run on a copy built
with AddressSanitizer (``tests/fuzz/test_fuzz.py`` builds one; ``NATSRV_FASTPATH_SO``
names it; LD_PRELOAD loads the sanitizer's runtime first).

Every input is taken as a datagram from a client, of each family, on a listener whose
table routes some channels, and as a datagram from a peer to a relay socket whose
table routes that peer as ChannelData or as a Data indication. The invariants: no
crash and no sanitizer report; the native Binding answer equals the Python fast
path's byte for byte (an answer exactly when Python answers); ChannelData is forwarded
only when it decodes (``decode_channel_data_untrusted``) to a routed channel, with
the same payload; what goes to a client is the ChannelData or Data indication Python
encodes.

The build (what ``test_fuzz.py`` does and benchmarks/README.md shows) is the one atheris
documents for native extensions: clang with ``-fsanitize=address,fuzzer-no-link`` (ASan
plus SanitizerCoverage's inline 8-bit counters, PC tables and comparison tracing, but
no libFuzzer linked in), and atheris's own ``asan_with_fuzzer.so`` preloaded (from
``python -c "import atheris; print(atheris.path())"``): the ASan runtime and libFuzzer
in one library, so the coverage callbacks of the extension reach the libFuzzer that
atheris drives ("INFO: Using preloaded libfuzzer", then "Loaded 1 modules (N inline
8-bit counters)": every ``cov:`` figure is an edge of the C code, since the Python
side is not instrumented here). Two ways that lose the coverage: clang's own ASan
runtime (``libclang_rt.asan-x86_64.so``) preloaded beside the wheel's built-in
libFuzzer, whose weak coverage symbols are bound first (atheris warns "Coverage
symbols are being provided by a library other than libFuzzer" and libFuzzer sees no
edge), and gcc, which has no SanitizerCoverage for libFuzzer at all (its libasan
takes the callbacks the same way). The wheel's runtime accepts clang 14's
instrumentation (the same ASan ABI, ``__asan_version_mismatch_check_v8``) and refuses
a gcc-built extension ("incompatible ASan runtimes"); gcc with its libasan is kept
only as a fallback where clang is absent, a mutation run without feedback.

The Python side (the oracle) is left uninstrumented: instrumenting it made a run 20x
slower (1.6k against 32k executions a second) for edges of code ``fuzz_codec.py``
already fuzzes with coverage. The inputs stay shaped, since no coverage leads a
mutator to a matching CRC-32, nor to a 64 KiB datagram under a short -max_len: the
first byte picks a template (a Binding request with or without FINGERPRINT,
ChannelData on a routed channel, raw bytes, the rest repeated to 65,490-65,553 bytes)
that the rest of the input fills and mutates.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zlib
from contextlib import nullcontext
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# On the ASan build (NATSRV_FASTPATH_SO) the coverage is the C code's; instrumenting
# the Python oracle too would make each run 20x slower (see above).
with atheris.instrument_imports() if not os.environ.get("NATSRV_FASTPATH_SO") else nullcontext():
    from natsrv.stun.errors import ParseError
    from natsrv.stun.fast import BindingSuccess, encode_attribute
    from natsrv.stun.framing import decode_channel_data_untrusted, encode_channel_data
    from natsrv.stun.message import decode_untrusted


def load_native():  # type: ignore[no-untyped-def]
    path = os.environ.get("NATSRV_FASTPATH_SO")
    if not path:
        import natsrv._fastpath

        return natsrv._fastpath
    spec = importlib.util.spec_from_file_location("natsrv._fastpath", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NATIVE = load_native()
TAILS = [
    (b"", False),
    (encode_attribute(0x8022, "natsrv"), True),
    (encode_attribute(0x802C, ("192.0.2.2", 3479)) + encode_attribute(0x8022, "x" * 9), False),
    (encode_attribute(0x802B, ("2001:db8::1", 3478)), True),
]
CLIENTS = [("198.51.100.7", 4000), ("2001:db8::7", 65535)]
LISTENER_FD, RELAY_FD = 5, 6
CHANNELS = (0x4000, 0x4001, 0x4FFF, 0x7FFE)
ROUTES = {
    NATIVE.route_key(LISTENER_FD, host, port, channel): NATIVE.Route(9, "203.0.113.5", 7, 0, 2e9)
    for host, port in CLIENTS
    for channel in CHANNELS
}
PEER_ROUTES = [
    {NATIVE.route_key(RELAY_FD, host, port, 0): NATIVE.Route(5, "198.51.100.7", 4000, ch, 2e9)
     for host, port in CLIENTS}
    for ch in (0x4001, 0)
]  # fmt: skip
COOKIE = b"\x21\x12\xa4\x42"
#: The lengths of template 4: across the largest Data indication payload (65,504) and
#: the largest ChannelData length field (65,535), beyond libFuzzer's -max_len.
LONG_SIZES = (65_490, 65_554)


def shaped(data: bytes) -> bytes:
    if not data:
        return data
    kind, rest = data[0] % 5, data[1:]
    if kind == 0:  # a plain Binding request from the rest, maybe mutated
        return (b"\x00\x01\x00\x00" + COOKIE + rest.ljust(12, b"\x00")[:12]) + rest[12:]
    if kind == 1:  # with a FINGERPRINT that matches (or a mutated one)
        head = b"\x00\x01\x00\x08" + COOKIE + rest.ljust(12, b"\x00")[:12]
        crc = (zlib.crc32(head) ^ 0x5354554E).to_bytes(4, "big")
        out = head + b"\x80\x28\x00\x04" + crc + rest[12:]
        if len(rest) > 13:
            i = rest[12] % len(out)
            out = out[:i] + bytes([out[i] ^ rest[13]]) + out[i + 1 :]
        return out
    if kind == 2:  # ChannelData on a routed channel, any length field
        channel = CHANNELS[rest[0] % 4] if rest else 0x4000
        return channel.to_bytes(2, "big") + rest[1:3].ljust(2, b"\x00") + rest[3:]
    if kind == 4:  # about as long as a datagram gets: the size limits of both relay ways
        size = LONG_SIZES[0] + (rest[0] % (LONG_SIZES[1] - LONG_SIZES[0]) if rest else 0)
        return ((rest or b"\x00") * (size // max(len(rest), 1) + 1))[:size]
    return rest


def one_input(data: bytes) -> None:
    datagram = shaped(data)
    for tail, mapped in TAILS:
        for client in CLIENTS:
            python = BindingSuccess(tail, mapped_address=mapped).answer_plain(datagram, client)
            native = NATIVE.binding_answer(datagram, client[0], client[1], tail, mapped)
            assert native == python, (datagram, client, native, python)
    for client in CLIENTS:
        decision = NATIVE.listener_decision(datagram, client[0], client[1], b"", False, ROUTES,
                                            LISTENER_FD, 1e9)  # fmt: skip
        if decision is None or decision[0] == "answer":
            continue
        channel, payload = decode_channel_data_untrusted(datagram)  # must decode
        assert channel in CHANNELS and decision == ("forward", payload)
    for routes in PEER_ROUTES:
        for peer in CLIENTS:
            out = NATIVE.relay_decision(datagram, peer[0], peer[1], routes, RELAY_FD, 1e9)
            assert out is not None or len(datagram) > 65504
            if out is None:
                continue
            if out[0] >= 0x40:
                assert out == encode_channel_data(0x4001, datagram)
            else:
                try:
                    msg = decode_untrusted(out)
                except ParseError:
                    raise AssertionError("a Data indication that does not decode") from None
                assert msg.get(0x0013) == datagram and msg.get(0x0012) == peer


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
