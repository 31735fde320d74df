"""From the application's Config to the TURN core's own settings (natsrv.net.serve)."""

from __future__ import annotations

import pytest

from natsrv.config import Config, ConfigError, build_config, load_toml
from natsrv.core.turn import TurnSettings
from natsrv.net.serve import turn_settings
from natsrv.stun import Attr, Message, MessageClass, Method
from tests.core.turn_helpers import NOW, five_tuple, make_server, wire


def test_turn_settings_from_config() -> None:
    config = Config(
        listen=(("0.0.0.0", 3478), ("192.0.2.1", 3478), ("2001:db8::1", 3478)),
        realm="r", external_ip=("198.51.100.1", None), bandwidth=5,
    )
    settings = turn_settings(config)
    assert settings.relay_ips == ("192.0.2.1", "2001:db8::1")
    assert settings.realm == "r" and settings.bandwidth == 5
    with_relay = turn_settings(Config(relay_ip="192.0.2.9"))
    assert with_relay.relay_ips == ("192.0.2.9",)


def test_unauth_global_rate_from_the_config_file_to_the_limiter(tmp_path) -> None:
    assert Config().unauth_global_rate == TurnSettings().unauth_global_rate == 20000.0
    path = tmp_path / "natsrv.toml"
    path.write_text('unauth-rate = 0\nunauth-global-rate = "3"\n')
    config = build_config(load_toml(str(path)), {})
    settings = turn_settings(config)
    assert settings.unauth_global_rate == 3.0
    server, _ = make_server(
        unauth_rate=settings.unauth_rate, unauth_global_rate=settings.unauth_global_rate
    )
    assert server.limiter.global_rate == 3.0
    # Three answers a second from the whole server, whatever the source IP.
    request = Message(Method.ALLOCATE, MessageClass.REQUEST).add(Attr.REQUESTED_TRANSPORT, 17)
    answered = [bool(server.handle(wire(request), five_tuple(i), NOW)) for i in range(5)]
    assert answered == [True] * 3 + [False] * 2
    assert server.counters["unauth_dropped"] == 2
    assert server.handle(wire(request), five_tuple(9), NOW + 0.5)
    # 0 means no limit.
    path.write_text("unauth-rate = 0\nunauth_global_rate = 0\n")
    settings = turn_settings(build_config(load_toml(str(path)), {}))
    server, _ = make_server(
        unauth_rate=settings.unauth_rate, unauth_global_rate=settings.unauth_global_rate
    )
    assert all(server.handle(wire(request), five_tuple(i), NOW) for i in range(100))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('"lots"', "not a number per second: 'lots'"),
        ("-1", "must be a finite number per second, 0 or more: -1"),
        ('"nan"', "must be a finite number per second, 0 or more: 'nan'"),
        ('"inf"', "must be a finite number per second, 0 or more: 'inf'"),
    ],
)
@pytest.mark.parametrize("key", ["unauth-global-rate", "unauth-rate"])
def test_bad_unauth_rates_name_the_key(tmp_path, key: str, value: str, problem: str) -> None:
    path = tmp_path / "natsrv.toml"
    path.write_text(f"{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_toml(str(path))
    assert caught.value.key == key
    assert str(caught.value) == f"{key}: {problem}"
