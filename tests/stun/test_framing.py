"""ChannelData and stream framing (RFC 8656 §12.4-12.5, RFC 8489 §6.2.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natsrv.stun import (
    Message,
    MessageClass,
    Method,
    ParseError,
    StreamFramer,
    decode_channel_data_untrusted,
    encode_channel_data,
)


def test_channel_data_round_trip() -> None:
    assert decode_channel_data_untrusted(encode_channel_data(0x4001, b"abc")) == (0x4001, b"abc")
    assert encode_channel_data(0x4001, b"abc", stream=True) == b"\x40\x01\x00\x03abc\x00"
    with pytest.raises(ParseError):
        decode_channel_data_untrusted(b"\x7f\xff\x00\x00")
    with pytest.raises(ParseError):
        decode_channel_data_untrusted(b"\x40\x00\x00\x08abc")


@given(st.lists(st.binary(max_size=50), min_size=1, max_size=6), st.data())
def test_framer_splits_at_any_boundary(payloads: list[bytes], data: st.DataObject) -> None:
    frames = []
    for i, p in enumerate(payloads):
        if i % 2:
            frames.append(encode_channel_data(0x4000 + i, p, stream=True))
        else:
            frames.append(Message(Method.BINDING, MessageClass.REQUEST).encode())
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    framer = StreamFramer()
    out: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[last:cut])
        last = cut
    expected = [
        f if i % 2 == 0 else encode_channel_data(0x4000 + i, payloads[i])
        for i, f in enumerate(frames)
    ]
    assert out == expected
    assert framer.pending == 0


def test_framer_refuses_oversize_and_garbage() -> None:
    framer = StreamFramer(max_frame=100)
    with pytest.raises(ParseError, match="larger than the maximum"):
        framer.feed(b"\x00\x01\x01\x00" + bytes(16))
    with pytest.raises(ParseError, match="neither STUN nor ChannelData"):
        StreamFramer().feed(b"\xff\xfenot stun")
