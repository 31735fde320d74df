"""Sans-IO STUN/TURN codec: the wire format of RFC 8489, 5389, 3489, 5780, 8656 and 6062.

No sockets, no clock: bytes in, :class:`Message` out, and back.
"""

from .attributes import (
    Address,
    AddressErrorCode,
    ChangeRequest,
    ErrorCodeValue,
    Icmp,
    PasswordAlgorithm,
)
from .constants import MAGIC_COOKIE, Attr, ErrorCode, MessageClass, Method
from .errors import ParseError, RequestError
from .framing import (
    StreamFramer,
    decode_channel_data_untrusted,
    encode_channel_data,
    is_channel_data,
)
from .message import Message, decode_untrusted, verify_integrity, verify_integrity_sha256

__all__ = [
    "MAGIC_COOKIE",
    "Address",
    "AddressErrorCode",
    "Attr",
    "ChangeRequest",
    "ErrorCode",
    "ErrorCodeValue",
    "Icmp",
    "Message",
    "MessageClass",
    "Method",
    "ParseError",
    "PasswordAlgorithm",
    "RequestError",
    "StreamFramer",
    "decode_channel_data_untrusted",
    "decode_untrusted",
    "encode_channel_data",
    "is_channel_data",
    "verify_integrity",
    "verify_integrity_sha256",
]
