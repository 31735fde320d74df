"""Counters and gauges, and their Prometheus families; no I/O.

``Metrics`` is the process's one counter store: the core counts its reasons into it
(drops, allocations created and ended, challenges), the trio shell its I/O errors.
``Collector`` reads that store and the core's state when scraped (so every figure moves
as traffic flows, never only when an allocation ends) and yields the families
``natsrv/net/admin.py`` serves at ``/metrics`` in the Prometheus text format. No label
names a user or an address: TURN REST usernames would explode the cardinality.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _CollectorBase

from .stun.constants import method_name

if TYPE_CHECKING:
    from .core.server import Server

#: natsrv_dropped_datagrams_total{reason}: the counter each reason is read from.
DROP_REASONS = {
    "malformed": ("dropped_malformed", "malformed_drops"),
    "rate-limited": ("unauth_dropped",),
    "denied-peer": ("policy_drops",),
    "no-permission": ("permission_drops",),
    "no-channel": ("channel_drops",),
    "no-allocation": ("no_allocation_drops",),
    "bandwidth": ("bandwidth_drops",),
    "oversize": ("oversize_drops",),
    "no-turn": ("dropped_channel_data_without_turn",),
    "not-a-request": ("dropped_not_a_request",),
    "send-buffer-full": ("udp_send_dropped",),
    "send-error": ("udp_send_errors",),
    "stream-queue-full": ("stream_send_dropped",),
}

#: natsrv_stream_connection_events_total{event}: the counters each event is read from.
STREAM_EVENTS = {
    "accepted": ("tcp_accepted", "tls_accepted"),
    "evicted": ("stream_evicted",),
    "refused-per-source": ("stream_refused_per_source",),
    "refused-full": ("stream_refused_full",),
    "handshake-timeout": ("tls_handshake_timeouts",),
    "message-timeout": ("stream_timeouts",),
    "accept-error": ("tcp_accept_errors", "tls_accept_errors"),
}


class Metrics:
    """Named monotonically increasing counters plus point-in-time gauges."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        return {**self.counters, **self.gauges}


class Collector(_CollectorBase):
    """The Prometheus families of one server process, read at scrape time."""

    def __init__(
        self,
        metrics: Metrics,
        server: Callable[[], Server | None],
        tasks: Callable[[], int] | None = None,
    ) -> None:
        self.metrics = metrics
        self.server = server
        self.tasks = tasks

    def collect(self) -> Iterator[Metric]:
        counters = self.metrics.counters
        server = self.server()
        turn = server.turn if server is not None else None
        allocations = GaugeMetricFamily(
            "natsrv_allocations", "Live TURN allocations, by relay address family",
            labels=["family"],
        )  # fmt: skip
        families = {"ipv4": 0, "ipv6": 0}
        permissions = channels = 0
        ports_free = 0
        if turn is not None:
            for alloc in turn.allocations.values():
                for relay in alloc.relays.values():
                    families["ipv4" if relay.family == 4 else "ipv6"] += 1
                permissions += len(alloc.permissions)
                channels += len(alloc.channels)
            ports = turn.ports
            ports_free = (ports.high - ports.low + 1) * len(turn.settings.relay_ips) - len(
                ports.in_use
            )
        for family, count in families.items():
            allocations.add_metric([family], count)
        yield allocations
        yield GaugeMetricFamily("natsrv_permissions", "Installed permissions", value=permissions)
        yield GaugeMetricFamily("natsrv_channels", "Bound channels", value=channels)
        yield GaugeMetricFamily(
            "natsrv_relay_ports_free", "Relay ports neither allocated nor reserved",
            value=ports_free,
        )  # fmt: skip
        live_timers, timer_entries = turn.timers() if turn is not None else (0, 0)
        yield GaugeMetricFamily(
            "natsrv_timers", "Lifetime deadlines scheduled in the TURN core (allocations "
            "and reservations)", value=live_timers,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "natsrv_timer_heap_entries", "Entries in the TURN core's timer heap, stale ones "
            "included (bounded: compacted as it grows)", value=timer_entries,
        )  # fmt: skip
        if self.tasks is not None:
            yield GaugeMetricFamily("natsrv_tasks", "Running trio tasks", value=self.tasks())
        yield GaugeMetricFamily(
            "natsrv_stream_connections", "Open TCP and TLS client connections",
            value=self.metrics.gauges.get("stream_connections", 0),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "natsrv_tcp_peer_connections", "RFC 6062 peer connections (connecting, awaiting "
            "ConnectionBind, or relaying)",
            value=len(turn.tcp.connections) if turn is not None else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "natsrv_dtls_sessions", "DTLS sessions (handshaking or established)",
            value=self.metrics.gauges.get("dtls_sessions", 0),
        )  # fmt: skip
        streams = CounterMetricFamily(
            "natsrv_stream_connection_events", "TCP and TLS connections: accepted, "
            "evicted to make room, refused, timed out (TLS handshake, first or idle message)",
            labels=["event"],
        )  # fmt: skip
        for event, names in STREAM_EVENTS.items():
            streams.add_metric([event], sum(counters.get(name, 0) for name in names))
        yield streams
        requests = CounterMetricFamily(
            "natsrv_stun_requests", "Requests answered, by method, transport and result "
            "(success or the error code)", labels=["method", "transport", "result"],
        )  # fmt: skip
        if server is not None:
            for (method, transport, result), count in sorted(server.request_counts().items()):
                requests.add_metric([method_name(method), transport, result], count)
        yield requests
        failures = CounterMetricFamily(
            "natsrv_auth_failures", "Requests whose long-term credentials failed, by reason",
            labels=["reason"],
        )  # fmt: skip
        if turn is not None:
            for reason, count in sorted(turn.auth_failures.items()):
                failures.add_metric([reason], count)
        yield failures
        to_peer_packets, to_peer_bytes, to_client_packets, to_client_bytes = (
            turn.traffic() if turn is not None else (0, 0, 0, 0)
        )
        packets = CounterMetricFamily(
            "natsrv_relay_packets", "Datagrams relayed, by direction", labels=["direction"]
        )
        packets.add_metric(["to_peer"], to_peer_packets)
        packets.add_metric(["to_client"], to_client_packets)
        yield packets
        volume = CounterMetricFamily(
            "natsrv_relay_bytes", "Payload bytes relayed, by direction", labels=["direction"]
        )
        volume.add_metric(["to_peer"], to_peer_bytes)
        volume.add_metric(["to_client"], to_client_bytes)
        yield volume
        yield CounterMetricFamily(
            "natsrv_udp_gso_sends", "Sends on the native data path that carried a run of "
            "datagrams to one destination as one UDP GSO (UDP_SEGMENT) super-datagram",
            value=counters.get("udp_gso_sends", 0),
        )  # fmt: skip
        yield CounterMetricFamily(
            "natsrv_udp_gso_datagrams", "Datagrams carried by UDP GSO sends (the kernel cuts "
            "each super-datagram back into them)", value=counters.get("udp_gso_segments", 0),
        )  # fmt: skip
        yield CounterMetricFamily(
            "natsrv_udp_gso_refusals", "UDP GSO sends the kernel refused (sent again one "
            "datagram at a time; GSO then stays off for that socket, or for the process when "
            "the device or kernel cannot)", value=counters.get("udp_gso_refused", 0),
        )  # fmt: skip
        dropped = CounterMetricFamily(
            "natsrv_dropped_datagrams", "Datagrams and messages dropped, by reason",
            labels=["reason"],
        )  # fmt: skip
        for reason, names in DROP_REASONS.items():
            dropped.add_metric([reason], sum(counters.get(name, 0) for name in names))
        yield dropped
        lifecycle = CounterMetricFamily(
            "natsrv_allocation_events", "Allocations created and ended, by event",
            labels=["event"],
        )  # fmt: skip
        for event in ("created", "deleted", "expired", "closed"):
            lifecycle.add_metric([event], counters.get(f"allocations_{event}", 0))
        yield lifecycle


def family_data(collector: _CollectorBase) -> list[dict[str, Any]]:
    """What ``collector`` yields, as plain data (a worker process sends it to the
    parent, ``natsrv/net/workers.py``)."""
    return [
        {"name": family.name, "documentation": family.documentation, "type": family.type,
         "samples": [[sample.name, sample.labels, sample.value] for sample in family.samples]}
        for family in collector.collect()
    ]  # fmt: skip


class SummedCollector(_CollectorBase):
    """The families of several worker processes (``parts``, each from
    :func:`family_data`) summed sample by sample, so one scrape counts each worker once;
    then the families ``own`` yields (the parent's own)."""

    def __init__(self, own: Callable[[], list[Metric]]) -> None:
        self.parts: list[list[dict[str, Any]]] = []
        self.own = own

    def collect(self) -> Iterator[Metric]:
        families: dict[str, tuple[dict[str, Any], dict[tuple[Any, ...], float]]] = {}
        for part in self.parts:
            for family in part:
                _, sums = families.setdefault(family["name"], (family, {}))
                for name, labels, value in family["samples"]:
                    key = (name, tuple(sorted(labels.items())))
                    sums[key] = sums.get(key, 0.0) + value
        for name, (family, sums) in families.items():
            metric = Metric(name, family["documentation"], family["type"])
            for (sample, labels), value in sums.items():
                metric.add_sample(sample, dict(labels), value)
            yield metric
        yield from self.own()


__all__ = ["DROP_REASONS", "Collector", "Metrics", "SummedCollector", "family_data"]
