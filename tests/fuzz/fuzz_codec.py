"""Fuzz the codec and the one entry point with single datagrams and stream bytes.

Every input: ``decode_untrusted``, ``decode_channel_data_untrusted``,
``classify_untrusted`` return or raise ParseError; ``StreamFramer`` yields frames no
larger than its maximum or raises ParseError; ``Server.receive`` never raises, and an
answer to an unauthenticated datagram is never large (no amplification).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from natsrv.stun.errors import ParseError
    from natsrv.stun.fast import classify_untrusted
    from natsrv.stun.framing import StreamFramer, decode_channel_data_untrusted
    from natsrv.stun.message import decode_untrusted
    from tests.fuzz.harness import (
        MAX_UNAUTHENTICATED_ANSWER,
        PRIMARY,
        SendToClient,
        check_effects,
        make_server,
    )

SERVER, _ = make_server()


def one_input(data: bytes) -> None:
    for parse in (decode_untrusted, decode_channel_data_untrusted, classify_untrusted):
        try:
            parse(data)
        except ParseError:
            pass
    framer = StreamFramer(2048)
    try:
        for frame in framer.feed(data[: len(data) // 2]) + framer.feed(data[len(data) // 2 :]):
            assert len(frame) <= 2048
    except ParseError:
        pass
    for transport in ("udp", "tcp"):
        effects = SERVER.receive(data, (transport, ("198.51.100.7", 4000), PRIMARY), 1e9)
        check_effects(effects)
        for effect in effects:
            if isinstance(effect, SendToClient):
                assert len(effect.data) <= max(MAX_UNAUTHENTICATED_ANSWER, len(data)), (
                    len(effect.data), len(data))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
