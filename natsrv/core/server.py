"""The one sans-IO entry point: bytes from a client in, effects out.

``Server.receive(data, five_tuple, now)`` takes every datagram or stream frame a client
sends, on any listener, and returns what to do: a Binding answer (RFC 8489 §6.3, RFC
5780, RFC 3489), a TURN answer (RFC 8656), a relayed datagram, an error response, or
nothing for malformed bytes (dropped and counted; RFC 8489 §6.3 says silently).
``Server.receive_from_peer`` does the same for a datagram that a peer sent to a relay
socket, ``expire`` and ``next_deadline`` for time, ``connection_closed`` for the end of
a TCP/TLS connection. The trio shell (``natsrv/net``) does nothing but move bytes
between sockets and these methods.

The hot paths stay cheap: a plain Binding request is answered from a prepared encoder
without a full parse; ChannelData from a client and datagrams from peers take the TURN
core's fast lookups (``channel_to_peer``, ``peer_to_client``) and build one effect or
one plain value each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping

from ..stun.attributes import Address, ErrorCodeValue
from ..stun.constants import Attr, MessageClass, Method
from ..stun.errors import ParseError
from ..stun.fast import (
    CHANNEL_DATA,
    KIND_OF_FIRST_BYTE,
    STUN,
    BindingSuccess,
    encode_data_indication,
)
from ..stun.framing import decode_channel_data_untrusted, encode_channel_data
from ..stun.message import Message, decode_untrusted, encode_message
from .binding import BindingService
from .effects import Effect, FiveTuple, SendToClient
from .turn import TurnServer

_WILDCARD = {False: "0.0.0.0", True: "::"}
_KIND = KIND_OF_FIRST_BYTE
_CHANNEL_DATA = CHANNEL_DATA
_STUN = STUN
_REQUEST = MessageClass.REQUEST
_BINDING = Method.BINDING
_STREAMS = ("tcp", "tls")

#: Counters kept by ``Server`` itself (the TURN core adds its own, ``turn.COUNTERS``).
COUNTERS = (
    "dropped_malformed",  #: not STUN, not ChannelData, or failing the codec's checks
    "dropped_channel_data_without_turn",  #: ChannelData to a server without TURN
    "dropped_not_a_request",  #: Binding indications and responses, stray responses
    "errors_not_served",  #: a TURN (or unknown) method on a server without TURN: 400
)


class Server:
    """Everything one server process decides: Binding on each group of endpoints, and
    TURN when configured.

    ``bindings`` maps each local endpoint the shell listens on (UDP, TCP or TLS, as
    ``getsockname`` reports it) to the :class:`BindingService` of its group; a stream
    accepted on a wildcard listener reports its specific local address, which is
    served by the group of the wildcard endpoint with the same port (or, failing
    that, the first group). ``counters`` is the one counter store of the process: the
    TURN core and the shell count into it too.
    """

    def __init__(
        self,
        bindings: dict[Address, BindingService],
        turn: TurnServer | None = None,
        *,
        counters: MutableMapping[str, int],
        software: str | None = None,
    ) -> None:
        if not bindings:
            raise ValueError("a server needs at least one endpoint")
        self.bindings = dict(bindings)
        self.turn = turn
        self.counters = counters
        for name in COUNTERS:
            counters.setdefault(name, 0)
        self._software = software
        #: Answers by (method, transport, result), shared with the TURN core; plain
        #: Binding successes are counted apart, per transport (a cheaper count on the
        #: hottest path).
        self.requests: Counter[tuple[int, str, str]] = Counter() if turn is None else turn.requests
        self.plain_answers: dict[str, int] = {"udp": 0, "tcp": 0, "tls": 0, "dtls": 0}
        self._channel_to_peer = None if turn is None else turn.channel_to_peer
        # Prepared plain-Binding encoders per local endpoint, filled on first use.
        self._plain: dict[Address, BindingSuccess] = {}

    # -- clients -------------------------------------------------------------------------
    def receive(self, data: bytes, five_tuple: FiveTuple, now: float) -> list[Effect]:
        """Everything a client's datagram or stream frame ``data`` on ``five_tuple``
        (``(transport, client, local)``) calls for; never raises for any input."""
        try:
            kind = _KIND[data[0]]
            if kind == _CHANNEL_DATA:
                channel_to_peer = self._channel_to_peer
                if channel_to_peer is None:
                    self.counters["dropped_channel_data_without_turn"] += 1
                    return []
                channel, payload = decode_channel_data_untrusted(data)
                route = channel_to_peer(five_tuple, channel, len(payload), now)
                return [] if route is None else [(route, payload)]
            if kind == _STUN:
                plain = self._plain.get(five_tuple[2])
                if plain is None:
                    plain = self._plain_for(five_tuple[2])
                out = plain.answer_plain(data, five_tuple[1])
                if out is not None:
                    self.plain_answers[five_tuple[0]] += 1
                    return [SendToClient(five_tuple, out)]
            msg = decode_untrusted(data)
        except (ParseError, IndexError):  # IndexError: an empty datagram
            self.counters["dropped_malformed"] += 1
            return []
        return self._message(msg, five_tuple, len(data), now)

    def _message(
        self, msg: Message, five_tuple: FiveTuple, size: int, now: float
    ) -> list[Effect]:
        if msg.method == _BINDING:
            if msg.cls != _REQUEST:
                self.counters["dropped_not_a_request"] += 1
                return []  # Binding indications (keepalives) and responses get no answer.
            answer, result = self._binding_for(five_tuple[2]).handle(msg, five_tuple, size)
            self.requests[(_BINDING, five_tuple[0], result)] += 1
            return [answer]
        if self.turn is not None:
            return self.turn.handle(msg, five_tuple, now)
        if msg.cls != _REQUEST:
            self.counters["dropped_not_a_request"] += 1
            return []
        # A TURN (or unknown) method on a server without TURN: a small 400.
        self.counters["errors_not_served"] += 1
        self.requests[(msg.method, five_tuple[0], "400")] += 1
        attrs: list[tuple[int, object]] = [
            (Attr.ERROR_CODE, ErrorCodeValue(400, "Bad Request: method not served here"))
        ]
        if self._software:
            attrs.append((Attr.SOFTWARE, self._software))
        out = encode_message(msg.method, MessageClass.ERROR, msg.transaction_id, attrs,
                             cookie=msg.cookie, fingerprint=True)  # fmt: skip
        return [SendToClient(five_tuple, out)]

    def _binding_for(self, local: Address) -> BindingService:
        binding = self.bindings.get(local)
        if binding is None:
            wildcard = (_WILDCARD[":" in local[0]], local[1])
            binding = self.bindings.get(wildcard) or next(iter(self.bindings.values()))
        return binding

    def plain_binding(self, local: Address) -> BindingSuccess:
        """The encoder of plain Binding answers on the local endpoint ``local`` (what a
        native data path answers with: its trailing attributes, MAPPED-ADDRESS or not)."""
        plain = self._plain.get(local)
        return plain if plain is not None else self._plain_for(local)

    def _plain_for(self, local: Address) -> BindingSuccess:
        plain = self._binding_for(local).plain(local)
        if len(self._plain) < 256:
            self._plain[local] = plain
        return plain

    # -- peers ---------------------------------------------------------------------------
    def receive_from_peer(
        self, relay: Address, peer: Address, data: bytes, now: float
    ) -> tuple[FiveTuple, bytes] | None:
        """Where a datagram from ``peer`` to the relay socket ``relay`` goes: the client's
        5-tuple and the ChannelData or Data indication to send it, or None to drop it
        (counted by the TURN core with its reason)."""
        turn = self.turn
        if turn is None:
            return None
        hop = turn.peer_to_client(relay, peer, len(data), now)
        if hop is None:
            return None
        five_tuple, channel = hop
        if channel is not None:
            # Padded on streams only (RFC 8656 §12.5): a DTLS record delimits it as UDP does.
            stream = five_tuple[0] in _STREAMS
            return five_tuple, encode_channel_data(channel, data, stream=stream)
        return five_tuple, encode_data_indication(peer, data)

    def request_counts(self) -> Counter[tuple[int, str, str]]:
        """Answers sent by (method, transport, result), plain Bindings included."""
        out = Counter(self.requests)
        for transport, count in self.plain_answers.items():
            if count:
                out[(_BINDING, transport, "success")] += count
        return out

    # -- time and connections ------------------------------------------------------------
    def holds_allocation(self, five_tuple: FiveTuple) -> bool:
        """Whether the client on ``five_tuple`` has an allocation or an RFC 6062 data
        connection (so it authenticated): the shell keeps such connections over ones
        that never did."""
        return self.turn is not None and self.turn.holds_connection(five_tuple)

    def expire(self, now: float) -> list[Effect]:
        """Reclaim what expired by ``now`` (allocations, permissions, channels,
        reservations)."""
        return [] if self.turn is None else self.turn.expire(now)

    def next_deadline(self) -> float | None:
        """When ``expire`` next has work (None: nothing scheduled)."""
        return None if self.turn is None else self.turn.next_deadline()

    def connection_closed(self, five_tuple: FiveTuple, now: float) -> list[Effect]:
        """A client's TCP/TLS connection ended: its allocation goes with it (or the
        peer connection it was bound to, for an RFC 6062 data connection)."""
        return [] if self.turn is None else self.turn.connection_closed(five_tuple, now)

    # -- RFC 6062 peer connections ---------------------------------------------------------
    def tcp_peer_arrived(
        self, relay: Address, peer: Address, now: float
    ) -> tuple[int | None, list[Effect]]:
        """A peer connected to the TCP relay ``relay``: its CONNECTION-ID and what to
        do, or None to close it at once."""
        if self.turn is None:
            return None, []
        return self.turn.tcp.peer_arrived(relay, peer, now)

    def tcp_peer_connected(self, cid: int, ok: bool, now: float) -> list[Effect]:
        """The connection that a ``ConnectToPeer`` asked for is up (``ok``) or failed."""
        if self.turn is None:
            return []
        return self.turn.tcp.connected(cid, ok, now)

    def tcp_connection_ended(
        self, cid: int, now: float, *, to_peer: int = 0, to_client: int = 0
    ) -> list[Effect]:
        """The peer connection ``cid`` or its data connection closed, after relaying
        ``to_peer`` and ``to_client`` bytes."""
        if self.turn is None:
            return []
        return self.turn.tcp.ended(cid, to_peer, to_client)


__all__ = ["COUNTERS", "Server"]
