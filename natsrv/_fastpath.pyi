"""Types of the optional native data path (natsrv/_fastpath.c)."""

BATCH: int
ROUNDS: int
MAX_TAIL: int
GSO_MAX_SEGMENTS: int
GSO_MIN_RUN: int

class Route:
    fd: int
    channel: int
    deadline: float
    packets: int
    bytes: int
    def __init__(self, fd: int, host: str, port: int, channel: int, deadline: float) -> None: ...

def drain_listener(
    fd: int, tail: bytes, mapped: bool, routes: dict[bytes, Route], now: float, /
) -> tuple[
    list[tuple[bytes, tuple[str, int]]], int, int, int, int, int, int, int, int, bool
]: ...
def drain_relays(
    fds: list[int], routes: dict[bytes, Route], now: float, /
) -> tuple[
    list[tuple[int, bytes, tuple[str, int]]], int, int, int, int, int, int, int, bool
]: ...
def binding_answer(
    data: bytes, host: str, port: int, tail: bytes, mapped: bool, /
) -> bytes | None: ...
def listener_decision(
    data: bytes, host: str, port: int, tail: bytes, mapped: bool,
    routes: dict[bytes, Route], fd: int, now: float, /,
) -> tuple[str, bytes] | None: ...
def relay_decision(
    data: bytes, host: str, port: int, routes: dict[bytes, Route], fd: int, now: float, /
) -> bytes | None: ...
def send_datagrams(
    fd: int, items: list[tuple[bytes, tuple[str, int]]], /
) -> tuple[int, int, int]: ...
def route_key(fd: int, host: str, port: int, channel: int, /) -> bytes: ...
def set_gso(on: bool, /) -> bool: ...
def gso_enabled(fd: int, /) -> bool: ...
