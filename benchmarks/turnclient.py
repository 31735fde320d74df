"""A small blocking TURN client on natsrv's own codec, over UDP, TCP or TLS: enough to
play the legitimate client while a benchmark attacks the server (Binding, the 401 dance,
Allocate, CreatePermission, ChannelBind, ChannelData, Refresh). UDP requests are
retransmitted as RFC 8489 §6.2.1 says (RTO doubling, ``tries`` sends); on a stream a
request is sent once and its answer awaited for ``stream_timeout`` seconds.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

from natsrv.stun import (
    Attr,
    Message,
    MessageClass,
    Method,
    ParseError,
    StreamFramer,
    decode_untrusted,
    encode_channel_data,
)
from natsrv.stun.integrity import long_term_key

Address = tuple[str, int]


class TurnError(Exception):
    """A request failed: no answer in time, or an error response (``code``)."""

    def __init__(self, what: str, code: int | None = None) -> None:
        super().__init__(what)
        self.code = code


def code_of(reply: Message) -> int | None:
    value = reply.get(Attr.ERROR_CODE)
    return None if value is None else int(value.code)


class TurnClient:
    """One client 5-tuple. ``kind`` is "udp", "tcp" or "tls"; ``source`` the local IP."""

    def __init__(
        self,
        kind: str,
        server: Address,
        *,
        user: str = "",
        password: str = "",
        realm: str = "",
        source: str = "127.0.0.1",
        rto: float = 0.25,
        tries: int = 7,
        tls_context: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        stream_timeout: float = 5.0,
    ) -> None:
        self.kind, self.server = kind, server
        self.user, self.realm = user, realm
        self.key = long_term_key(user, realm, password) if user else b""
        self.nonce: str | None = None
        self.rto, self.tries = rto, tries
        self.stream_timeout = stream_timeout
        self.framer = StreamFramer()
        self.pending: list[bytes] = []  #: stream frames read ahead
        #: Frames that came while a reply was awaited and were not it (data, indications).
        self.pending_data: list[bytes] = []
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        stype = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
        raw = socket.socket(family, stype)
        try:
            raw.bind((source, 0))
            if kind != "udp":
                raw.settimeout(connect_timeout)
                raw.connect(server)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if kind == "tls":
                    ctx = tls_context or _insecure_context()
                    raw = ctx.wrap_socket(raw, server_hostname="localhost")
        except BaseException:
            raw.close()
            raise
        self.sock = raw

    @property
    def local(self) -> Address:
        name = self.sock.getsockname()
        return name[0], name[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TurnClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sending and receiving ---------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        if self.kind == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def receive_frame(self, timeout: float) -> bytes | None:
        """The next datagram or stream frame, or None after ``timeout`` seconds."""
        if self.pending:
            return self.pending.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if self.kind == "udp":
                return data
            if not data:
                raise TurnError("connection closed by the server")
            frames = self.framer.feed(data)
            if frames:
                self.pending.extend(frames[1:])
                return frames[0]

    def transact(self, msg: Message, *, sign: bool = True) -> Message:
        if sign and self.nonce is not None:
            msg.attributes += [(Attr.USERNAME, self.user), (Attr.REALM, self.realm),
                               (Attr.NONCE, self.nonce)]  # fmt: skip
        data = msg.encode(key=self.key if sign and self.nonce else None, fingerprint=True)
        tries = self.tries if self.kind == "udp" else 1
        wait = self.rto
        for attempt in range(tries):
            self.send_raw(data)
            deadline = time.monotonic() + (wait if self.kind == "udp" else self.stream_timeout)
            if attempt == tries - 1 and self.kind == "udp":
                deadline = time.monotonic() + self.rto * 16  # RFC 8489: Rm x RTO at the end
            while True:
                frame = self.receive_frame(deadline - time.monotonic())
                if frame is None:
                    break
                if frame[0] < 0x40:
                    try:
                        reply = decode_untrusted(frame)
                    except ParseError:
                        continue
                    if reply.transaction_id == msg.transaction_id:
                        return reply
                self.pending_data.append(frame)
            wait *= 2
        raise TurnError(f"no answer to {msg.method:#x} after {tries} sends")

    def request(self, method: int, *attrs: tuple[int, Any]) -> Message:
        """A signed request with the 401/438 dance; raises ``TurnError`` on an error."""
        for _ in range(3):
            msg = Message(method, MessageClass.REQUEST, attributes=list(attrs))
            reply = self.transact(msg)
            code = code_of(reply)
            if code in (401, 438) and reply.get(Attr.NONCE) not in (None, self.nonce):
                self.nonce = reply.get(Attr.NONCE)
                continue
            if reply.cls != MessageClass.SUCCESS:
                raise TurnError(f"{method:#x} answered {code}", code)
            return reply
        raise TurnError(f"{method:#x}: no usable nonce", code_of(reply))

    # -- what a TURN client does ---------------------------------------------------------
    def binding(self) -> Address:
        reply = self.transact(Message(Method.BINDING, MessageClass.REQUEST), sign=False)
        if reply.cls != MessageClass.SUCCESS:
            raise TurnError("Binding failed", code_of(reply))
        value: Address = reply.get(Attr.XOR_MAPPED_ADDRESS)
        return value

    def allocate(self, *attrs: tuple[int, Any]) -> Address:
        reply = self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17), *attrs)
        relayed: Address = reply.get(Attr.XOR_RELAYED_ADDRESS)
        return relayed

    def refresh(self, lifetime: int | None = None) -> None:
        attrs = [] if lifetime is None else [(Attr.LIFETIME, lifetime)]
        self.request(Method.REFRESH, *attrs)

    def permit(self, peer: Address) -> None:
        self.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, peer))

    def bind_channel(self, channel: int, peer: Address) -> None:
        self.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, channel),
                     (Attr.XOR_PEER_ADDRESS, peer))  # fmt: skip

    def send_channel(self, channel: int, payload: bytes) -> None:
        self.send_raw(encode_channel_data(channel, payload, stream=self.kind != "udp"))


def _insecure_context() -> ssl.SSLContext:
    """The benchmark's server has a throwaway self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def make_certificate(directory: str) -> tuple[str, str]:
    """A throwaway self-signed certificate for localhost: (cert path, key path)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path
