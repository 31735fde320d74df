"""What the fuzz harnesses share: the server under test and its invariants.

Each harness is a script for atheris (libFuzzer): ``python tests/fuzz/fuzz_codec.py
[libFuzzer flags] [corpus dirs]``. ``tests/fuzz/test_fuzz.py`` runs each for a bounded
number of executions as part of the test suite; longer campaigns are recorded in
benchmarks/README.md. The invariant everywhere: any input either parses or raises the
codec's one ``ParseError``; the server's entry points never raise, and what they send
back to an unauthenticated source stays small.
"""

from __future__ import annotations

from collections import Counter

from natsrv.core.binding import BindingConfig, BindingService
from natsrv.core.credentials import StaticUsers
from natsrv.core.effects import Effect, Event, SendToClient
from natsrv.core.nonce import NonceFactory
from natsrv.core.policy import PeerPolicy
from natsrv.core.server import Server
from natsrv.core.turn import TurnServer, TurnSettings

PRIMARY = ("192.0.2.1", 3478)
ALTERNATE = ("192.0.2.2", 3479)
RELAY_IP = "192.0.2.1"
REALM = "fuzz.example"
USERS = {"alice": "secret", "bob": "hunter2"}
#: The largest answer an unauthenticated request may get, whatever it is: a Binding
#: answer holds at most five addresses, SOFTWARE and FINGERPRINT (PADDING only up to
#: the request's own size); an error at most an ERROR-CODE, a few attributes.
MAX_UNAUTHENTICATED_ANSWER = 260


class FakeOpener:
    """Binds nothing: records the relay ports the core holds."""

    def __init__(self) -> None:
        self.bound: set[tuple[str, int]] = set()

    def bind(self, ip: str, port: int) -> bool:
        if (ip, port) in self.bound:
            return False
        self.bound.add((ip, port))
        return True

    def bind_tcp(self, ip: str, port: int) -> bool:
        return self.bind(ip, port)  # RFC 6062 relays hold a port the same way

    def close(self, relay: tuple[str, int]) -> None:
        self.bound.remove(relay)


def make_server(**settings: object) -> tuple[Server, FakeOpener]:
    opener = FakeOpener()
    base: dict[str, object] = {"realm": REALM, "relay_ips": (RELAY_IP,),
                               "relay_ports": (50000, 50063), "unauth_rate": 0.0,
                               "unauth_global_rate": 0.0, "max_allocations": 32}  # fmt: skip
    base.update(settings)
    counters: Counter[str] = Counter()
    turn = TurnServer(
        TurnSettings(**base),  # type: ignore[arg-type]
        credentials=StaticUsers(USERS), nonces=NonceFactory(bytes(32), 600.0),
        policy=PeerPolicy(), opener=opener, counters=counters,
    )  # fmt: skip
    binding = BindingService(BindingConfig(PRIMARY, ALTERNATE[0], ALTERNATE[1], "natsrv"))
    server = Server(dict.fromkeys(binding.config.endpoints(), binding), turn,
                    counters=counters, software="natsrv")  # fmt: skip
    return server, opener


def check_effects(effects: list[Effect]) -> None:
    assert isinstance(effects, list)
    for effect in effects:
        if isinstance(effect, SendToClient):
            assert isinstance(effect.data, bytes) and 4 <= len(effect.data) <= 65535 + 20
        elif isinstance(effect, Event):
            assert isinstance(effect.name, str)
        else:
            route, payload = effect
            assert isinstance(payload, bytes) and len(route) == 2
