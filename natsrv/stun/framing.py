"""ChannelData messages and STUN/ChannelData framing on stream transports.

RFC 8656 §12.4 (ChannelData: channel number 0x4000-0x4FFF, 16-bit length, data; padded
to a multiple of 4 over TCP/TLS, optionally over UDP), RFC 8489 §6.2.2 (STUN over TCP
carries no framing of its own: the header length delimits messages), RFC 7983 §7
(the first two bits tell STUN, 0b00, from ChannelData, 0b01).
"""

from __future__ import annotations

import struct

from .constants import HEADER_SIZE
from .errors import ParseError

CHANNEL_MIN = 0x4000
#: RFC 8656 narrowed channels to 0x4000-0x4FFF; RFC 5766 clients (coturn's tools among
#: them) still use up to 0x7FFE, so those are accepted too.
CHANNEL_MAX = 0x7FFE
_CD_HEADER = struct.Struct(">HH")
_unpack_header = _CD_HEADER.unpack_from


def is_channel_data(first_byte: int) -> bool:
    return 0x40 <= first_byte <= 0x7F


def decode_channel_data_untrusted(data: bytes) -> tuple[int, bytes]:
    """``(channel, payload)`` of a ChannelData message (a datagram or a frame that
    ``StreamFramer`` cut out), or ParseError. Padding after the payload is ignored."""
    try:
        channel, length = _unpack_header(data)
    except struct.error:
        raise ParseError("shorter than a ChannelData header") from None
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise ParseError("channel number out of range")
    end = 4 + length
    if end > len(data):
        raise ParseError("ChannelData length runs past the datagram")
    return channel, data[4:end]


def encode_channel_data(channel: int, payload: bytes, *, stream: bool = False) -> bytes:
    """A ChannelData message; over stream transports it is padded to 4 bytes (§12.5)."""
    head = _CD_HEADER.pack(channel, len(payload))
    if stream and len(payload) & 3:
        return head + payload + b"\x00" * (4 - (len(payload) & 3))
    return head + payload


class StreamFramer:
    """Splits a byte stream into whole STUN messages and ChannelData frames.

    ``feed(data)`` returns the complete frames now available (possibly none, possibly
    several) and keeps a partial one. Frames larger than ``max_frame`` and bytes that
    start neither a STUN message nor ChannelData raise ParseError: the connection is
    then beyond repair and the caller closes it. The buffer never exceeds ``max_frame``.
    """

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int = 65535 + 4) -> None:
        self._buffer = bytearray()
        self.max_frame = max_frame

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def take_rest(self) -> bytes:
        """The bytes after the last complete frame, removed: on an RFC 6062 data
        connection what follows the ConnectionBind is the client's raw stream."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        pos = 0
        end = len(buffer)
        while end - pos >= 4:
            first = buffer[pos]
            length = (buffer[pos + 2] << 8) | buffer[pos + 3]
            if first < 0x40:
                size = HEADER_SIZE + length
                if length & 3:
                    raise ParseError("STUN length is not a multiple of 4")
            elif first <= 0x7F:
                size = 4 + ((length + 3) & ~3)
            else:
                raise ParseError("stream carries neither STUN nor ChannelData")
            if size > self.max_frame:
                raise ParseError("frame larger than the maximum")
            if end - pos < size:
                break
            if first < 0x40:
                frames.append(bytes(buffer[pos : pos + size]))
            else:
                frames.append(bytes(buffer[pos : pos + 4 + length]))
            pos += size
        if pos:
            del buffer[:pos]
        return frames
