"""MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT and key derivation.

RFC 8489 §14.5 (HMAC-SHA1), §14.6 (HMAC-SHA256), §14.7 (CRC-32 xor 0x5354554E),
§9.1.2 and §9.2.2 (short- and long-term keys), §14.4 (USERHASH). Comparisons of
HMACs are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
import zlib

from .constants import FINGERPRINT_XOR

# RFC 3454 table B.1 ("commonly mapped to nothing"), as SASLprep (RFC 4013 §2.2) uses it.
_MAPPED_TO_NOTHING = dict.fromkeys(
    [0x00AD, 0x034F, 0x1806, 0x180B, 0x180C, 0x180D, 0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF,
     *range(0xFE00, 0xFE10)]
)


def saslprep(text: str) -> str:
    """The parts of SASLprep / OpaqueString that change real passwords: map to nothing,
    non-ASCII spaces to U+0020, then NFKC (RFC 4013 §2.1-2.2, RFC 8265 §4.2)."""
    if text.isascii():
        return text
    mapped = text.translate(_MAPPED_TO_NOTHING)
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in mapped)
    return unicodedata.normalize("NFKC", mapped)


def short_term_key(password: str) -> bytes:
    """RFC 8489 §9.1.2: key = OpaqueString(password)."""
    return saslprep(password).encode("utf-8")


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 8489 §9.2.2 (MD5 algorithm): key = MD5(username ":" realm ":" password)."""
    text = f"{username}:{realm}:{saslprep(password)}"
    return hashlib.md5(text.encode("utf-8", "surrogateescape"), usedforsecurity=False).digest()


def long_term_key_sha256(username: str, realm: str, password: str) -> bytes:
    """RFC 8489 §9.2.2 (SHA-256 algorithm)."""
    text = f"{username}:{realm}:{saslprep(password)}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def userhash(username: str, realm: str) -> bytes:
    """RFC 8489 §14.4: SHA-256(OpaqueString(username) ":" OpaqueString(realm))."""
    return hashlib.sha256(f"{saslprep(username)}:{saslprep(realm)}".encode()).digest()


# HMAC = H(K ^ opad || H(K ^ ipad || m)) (RFC 2104). The two keyed hash states depend
# only on the key, and a server uses a handful of keys (one per user), so they are
# computed once and copied per message: cheaper than hmac.digest's key setup each time.
_PADS: dict[tuple[bytes, str], tuple[object, object]] = {}
_PADS_MAX = 4096
_IPAD = bytes(range(256)).translate(bytes(b ^ 0x36 for b in range(256)))
_OPAD = bytes(range(256)).translate(bytes(b ^ 0x5C for b in range(256)))


def _hmac(key: bytes, data: bytes, name: str) -> bytes:
    pads = _PADS.get((key, name))
    if pads is None:
        h = hashlib.new(name)
        block = h.block_size
        if len(key) > block:
            key_block = hashlib.new(name, key).digest().ljust(block, b"\x00")
        else:
            key_block = key.ljust(block, b"\x00")
        inner = hashlib.new(name, key_block.translate(_IPAD))
        outer = hashlib.new(name, key_block.translate(_OPAD))
        if len(_PADS) >= _PADS_MAX:
            _PADS.clear()
        pads = _PADS[(key, name)] = (inner, outer)
    inner_h = pads[0].copy()  # type: ignore[attr-defined]
    inner_h.update(data)
    outer_h = pads[1].copy()  # type: ignore[attr-defined]
    outer_h.update(inner_h.digest())
    return outer_h.digest()  # type: ignore[no-any-return]


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    return _hmac(key, data, "sha1")


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return _hmac(key, data, "sha256")


def fingerprint(data: bytes) -> int:
    """RFC 8489 §14.7: CRC-32 of the message so far, XOR 0x5354554E."""
    return zlib.crc32(data) ^ FINGERPRINT_XOR


def digests_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
