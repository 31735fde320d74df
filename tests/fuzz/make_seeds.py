"""Write the seed corpora of the fuzz harnesses (tests/fuzz/corpus/*): the RFC 5769
vectors and the messages real clients send first (a browser's Allocate, aioice's
Binding with ICE attributes, coturn's uclient ChannelBind, ChannelData).

    python tests/fuzz/make_seeds.py
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from natsrv.stun import Attr, ChangeRequest, MessageClass, Method  # noqa: E402
from natsrv.stun.integrity import long_term_key  # noqa: E402
from natsrv.stun.message import encode_message  # noqa: E402

TID = bytes(range(12))


def vectors() -> list[bytes]:
    out = []
    for path in sorted((HERE.parent / "vectors").glob("*.hex")):
        lines = [ln.split("#")[0] for ln in path.read_text().splitlines()]
        out.append(bytes.fromhex("".join(lines)))
    return out


def codec_seeds() -> list[bytes]:
    key = long_term_key("alice", "fuzz.example", "secret")
    signed = [(Attr.USERNAME, "alice"), (Attr.REALM, "fuzz.example"), (Attr.NONCE, "n" * 12)]
    return [
        *vectors(),
        encode_message(Method.BINDING, MessageClass.REQUEST, TID, []),
        encode_message(Method.BINDING, MessageClass.REQUEST, TID, [], fingerprint=True),
        encode_message(Method.BINDING, MessageClass.REQUEST, TID + bytes(4), [], cookie=False),
        encode_message(Method.BINDING, MessageClass.REQUEST, TID, [  # aioice / libwebrtc
            (Attr.USERNAME, "abcd:efgh"), (Attr.PRIORITY, 1853824767),
            (Attr.ICE_CONTROLLING, 0x1234567890), (Attr.USE_CANDIDATE, True)],
            key=b"k" * 16, fingerprint=True),
        encode_message(Method.BINDING, MessageClass.REQUEST, TID,
                       [(Attr.CHANGE_REQUEST, ChangeRequest(True, True))]),
        encode_message(Method.BINDING, MessageClass.REQUEST, TID,
                       [(Attr.RESPONSE_PORT, 9), (Attr.PADDING, bytes(64))]),
        encode_message(Method.ALLOCATE, MessageClass.REQUEST, TID,  # a browser's first
                       [(Attr.REQUESTED_TRANSPORT, 17)], fingerprint=True),
        encode_message(Method.ALLOCATE, MessageClass.REQUEST, TID,
                       [(Attr.REQUESTED_TRANSPORT, 17), *signed], key=key, fingerprint=True),
        encode_message(Method.CHANNEL_BIND, MessageClass.REQUEST, TID,  # turnutils_uclient
                       [(Attr.CHANNEL_NUMBER, 0x4000),
                        (Attr.XOR_PEER_ADDRESS, ("203.0.113.5", 5000)), *signed], key=key),
        encode_message(Method.SEND, MessageClass.INDICATION, TID,
                       [(Attr.XOR_PEER_ADDRESS, ("203.0.113.5", 5000)), (Attr.DATA, b"hi")]),
        b"\x40\x00\x00\x05hello\x00\x00\x00",
    ]  # fmt: skip


def native_seeds() -> list[bytes]:
    """Inputs for fuzz_native.py, whose first byte picks a template (its ``shaped``): the
    codec's seeds as raw datagrams, a plain Binding request, one with a FINGERPRINT
    (correct, and with a byte of it flipped), ChannelData on each routed channel, and
    datagrams of 65,504 and 65,505, 65,535 and 65,536 bytes."""
    return [
        *(b"\x03" + seed for seed in codec_seeds()),
        b"\x00" + TID,
        b"\x01" + TID,
        b"\x01" + TID + b"\x19\x01",
        *(b"\x02" + bytes([i]) + b"\x00\x05hello" for i in range(4)),
        *(b"\x04" + bytes([n - 65_490]) + b"\x40\x01" for n in (65_504, 65_505, 65_535, 65_536)),
    ]


def classify_seeds() -> list[bytes]:
    """Records for fuzz_classify.py: natsrv's own answers (through the core, as the
    harness's server at 192.0.2.1:3478 with alternate 192.0.2.2:3479 gives them) to
    the requests the classifier sends, each tagged with the endpoint it came from."""
    try:  # the request builders' module since the classifier was split into modules
        from classifier.binding import binding_request
    except ImportError:
        from classifier.transport import binding_request
    from tests.fuzz.harness import PRIMARY, SendToClient, make_server

    server, _ = make_server()
    client = ("198.51.100.7", 40000)

    def answer(cookie: bool = True, change_ip: bool = False, change_port: bool = False,
               extra: list[tuple[int, object]] | None = None) -> bytes:  # fmt: skip
        request = binding_request(cookie=cookie, change_ip=change_ip, change_port=change_port)
        request.attributes += extra or []
        effects = server.receive(request.encode(), ("udp", client, PRIMARY), 1e9)
        (reply,) = [e for e in effects if isinstance(e, SendToClient)]
        source = reply.five_tuple[2]
        where = 0 if source == PRIMARY else 1 if source[0] != PRIMARY[0] else 2
        return bytes([1 | where << 2]) + len(reply.data).to_bytes(2, "big") + reply.data

    plain, classic = answer(), answer(cookie=False)
    both, port = answer(change_ip=True, change_port=True), answer(change_port=True)
    error = answer(extra=[(0x0031, b"abcd")])  # an unknown required attribute: 420
    timeout = b"\x00"
    return [
        plain * 24,  # every probe answered from where it went: open internet
        (classic + both + port) * 8,  # RFC 3489 dialect, CHANGE-REQUEST served
        (plain + both + port) * 8,
        (plain + timeout + timeout) * 8,  # a filtering NAT drops the changed answers
        (plain + error) * 12,
        (classic + timeout) * 12,
    ]


def main() -> None:
    for name, seeds in (("codec", codec_seeds()), ("turn", [bytes(range(i, i + 40))
                                                          for i in range(0, 200, 40)]),
                        ("classify", classify_seeds()), ("native", native_seeds())):  # fmt: skip
        target = HERE / "corpus" / name
        target.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (target / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    main()
