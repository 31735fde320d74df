"""Reloading a running server (what SIGHUP does): the peer policy, a REST secret and
the TLS certificate change while an allocation keeps relaying; a broken certificate
changes nothing."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsrv.core.credentials import rest_credentials
from natsrv.net.serve import ServerInfo, serve
from natsrv.stun import Attr, MessageClass, Method

from .test_admin import IP, PEER_IP, Client, allocate_and_relay, config, udp_socket


def certificate(directory: Path, name: str) -> tuple[str, str, int]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return str(cert_path), str(key_path), cert.serial_number


async def served_serial(address: tuple[str, int]) -> tuple[int, trio.SSLStream[trio.SocketStream]]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stream = trio.SSLStream(await trio.open_tcp_stream(*address), context)
    with trio.fail_after(5):
        await stream.do_handshake()
    der = stream.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number, stream


async def test_reload_swaps_policy_secret_and_certificate_while_relaying(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    first_cert, first_key, first_serial = certificate(tmp_path, "first")
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    base = config(allow_peer=loopback, auth_secret=("old-secret",), tls_port=0,
                  tls_cert=first_cert, tls_key=first_key)  # fmt: skip
    info: ServerInfo = await nursery.start(serve, base)
    client, peer = await allocate_and_relay(info)
    serial, old_tls = await served_serial(info.tls[0])
    assert serial == first_serial

    second_cert, second_key, second_serial = certificate(tmp_path, "second")
    # The new config denies the peer's range and rotates the REST secret.
    new = replace(base, deny_peer=(ipaddress.ip_network(f"{PEER_IP}/32"),),
                  auth_secret=("new-secret",), tls_cert=second_cert, tls_key=second_key,
                  user_quota=50)  # fmt: skip
    assert info.reload(new.validate()) == []
    # New TLS connections get the new certificate; the open one still works.
    serial, new_tls = await served_serial(info.tls[0])
    assert serial == second_serial
    await old_tls.send_all(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12))
    with trio.fail_after(2):
        assert (await old_tls.receive_some(200))[:2] == b"\x01\x01"
    # The live allocation keeps relaying on its channel.
    await client.sock.sendto(b"\x40\x01\x00\x03abc", info.udp[0])
    with trio.fail_after(2):
        assert (await peer.recvfrom(100))[0] == b"abc"
    # The new rule: a new permission to the denied address is refused.
    reply = await client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, (PEER_IP, 9)))
    assert reply.get(Attr.ERROR_CODE).code == 403
    # The new secret works, the old one no longer does.
    for secret, expected in (("new-secret", MessageClass.SUCCESS), ("old-secret", None)):
        user, password = rest_credentials(secret, "rest", 600, time.time())
        rest = Client(await udp_socket(), info.udp[0], user, password)
        reply = await rest.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17))
        if expected is None:
            assert reply.get(Attr.ERROR_CODE).code == 401
        else:
            assert reply.cls == expected
        rest.sock.close()
    # A config whose certificate does not load changes nothing.
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    with pytest.raises((ssl.SSLError, OSError)):
        info.reload(replace(new, tls_cert=str(broken)))
    serial, third_tls = await served_serial(info.tls[0])
    assert serial == second_serial
    # Listening addresses cannot change live: reported, not applied.
    assert info.reload(replace(new, listen=((IP, 3478),))) == ["listen"]
    for stream in (old_tls, new_tls, third_tls):
        await stream.aclose()
    client.sock.close()
    peer.close()
