"""Relay families beyond the RFC's own codes (sans-IO): coturn's draft code for
ADDITIONAL-ADDRESS-FAMILY answered in kind, and an external (advertised) address per
family."""

from __future__ import annotations

from natsrv.stun import Attr, MessageClass
from natsrv.stun.attributes import AddressErrorCode

from .turn_helpers import PUBLIC_IP, RELAY_IP, RELAY_IP6, Client, make_server

V6 = 0x02


def test_the_draft_additional_address_family_gets_both_relays() -> None:
    server, _ = make_server(relay_ips=(RELAY_IP, RELAY_IP6))
    answer, _ = Client(server).allocate((Attr.ADDITIONAL_ADDRESS_FAMILY_DRAFT, V6))
    assert answer.cls == MessageClass.SUCCESS
    assert [ip for ip, _ in answer.get_all(Attr.XOR_RELAYED_ADDRESS)] == [PUBLIC_IP, RELAY_IP6]


def test_the_draft_request_gets_the_draft_address_error_code() -> None:
    server, _ = make_server()  # IPv4 only
    answer, _ = Client(server).allocate((Attr.ADDITIONAL_ADDRESS_FAMILY_DRAFT, V6))
    assert len(answer.get_all(Attr.XOR_RELAYED_ADDRESS)) == 1
    expected = AddressErrorCode(V6, 440, "Address Family not Supported")
    assert answer.get(Attr.ADDRESS_ERROR_CODE_DRAFT) == expected
    assert answer.get(Attr.ADDRESS_ERROR_CODE) is None


def test_an_external_address_per_family() -> None:
    server, _ = make_server(relay_ips=(RELAY_IP, RELAY_IP6), external_ip=None,
                            external_ips=(("203.0.113.4", RELAY_IP),
                                          ("2001:db8::4", None)))  # fmt: skip
    answer, _ = Client(server).allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, V6))
    assert [ip for ip, _ in answer.get_all(Attr.XOR_RELAYED_ADDRESS)] == [
        "203.0.113.4", "2001:db8::4"]  # fmt: skip
