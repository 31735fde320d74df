"""The shipped deployment files start and serve, as shipped.

Each one's exact command line and configuration runs in a network namespace of its own
(root; in CI always), so the fixed ports they name (3478, 9641) cannot collide with
anything: the Docker image's ENTRYPOINT and CMD with the image's natsrv.toml, the
compose service with its environment, the Kubernetes DaemonSet's arguments with its
ConfigMap and Secret, each answering a real Binding (the image's HEALTHCHECK command)
and, where TURN is on, a real Allocate. The systemd unit passes ``systemd-analyze
verify`` with and without the port-443 drop-in."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import require, require_root, require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NODE_IP = "198.51.100.10"  # the "host's" address inside the namespace (documentation range)
IMAGE_CONFIG = "/etc/natsrv/natsrv.toml"

#: A TURN client run inside the namespace: an unsigned Allocate must get 401 with a
#: NONCE; signed with REST credentials it must get a relay on NODE_IP.
ALLOCATE = """
import base64, hashlib, hmac, socket, sys, time
from natsrv.stun import Attr, Message, MessageClass, Method, decode_untrusted
from natsrv.stun.integrity import long_term_key
server, secret = (sys.argv[1], 3478), sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(5)
def ask(msg, key=None):
    sock.sendto(msg.encode(key=key, fingerprint=True), server)
    while True:
        reply = decode_untrusted(sock.recv(2048))
        if reply.transaction_id == msg.transaction_id:
            return reply
first = ask(Message(Method.ALLOCATE, MessageClass.REQUEST,
                    attributes=[(Attr.REQUESTED_TRANSPORT, 17)]))
assert first.get(Attr.ERROR_CODE).code == 401, first
user = f"{int(time.time()) + 600}:deploy-test"
password = base64.b64encode(hmac.new(secret.encode(), user.encode(), hashlib.sha1).digest())
realm = first.get(Attr.REALM)
msg = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[
    (Attr.REQUESTED_TRANSPORT, 17), (Attr.USERNAME, user), (Attr.REALM, realm),
    (Attr.NONCE, first.get(Attr.NONCE))])
reply = ask(msg, key=long_term_key(user, realm, password.decode()))
assert reply.cls == MessageClass.SUCCESS, reply.get(Attr.ERROR_CODE)
print(reply.get(Attr.XOR_RELAYED_ADDRESS)[0])
"""


class Namespace:
    """A network namespace with loopback up, NODE_IP on it too."""

    def __init__(self) -> None:
        self.name = f"natsrv-deploy-{os.getpid()}-{secrets.token_hex(3)}"
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            for argv in (["ip", "link", "set", "lo", "up"],
                         ["ip", "addr", "add", f"{NODE_IP}/32", "dev", "lo"]):  # fmt: skip
                subprocess.run(self.argv(argv), check=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        subprocess.run(["ip", "netns", "delete", self.name], check=False)

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)  # fmt: skip

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """Start ``argv``; return once it logged that it is ready (or died)."""
        proc = subprocess.Popen(self.argv(argv), stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env}, cwd=ROOT)  # fmt: skip
        self.procs.append(proc)
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # ends when the process does
            seen.append(line)
            if "listening on" in line and "admin" not in line and _all_listening(seen, argv):
                return proc
        proc.wait(timeout=10)
        pytest.fail(f"{argv} exited {proc.returncode} before it was ready:\n{''.join(seen)}")

    def http_status(self, url: str) -> str:
        script = ("import sys, urllib.request\n"
                  "print(urllib.request.urlopen(sys.argv[1], timeout=5).status)")  # fmt: skip
        done = self.run([sys.executable, "-c", script, url])
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _all_listening(lines: list[str], argv: list[str]) -> bool:
    # natsrv logs "listening on ..." per socket, then the admin and TURN lines, and last
    # READY; the image's default listens on both families, UDP and TCP.
    text = "".join(lines)
    wanted = 4 if "--listen" not in argv else 2
    return text.count("listening on") >= wanted


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    require_root()
    require_tool("ip")
    with Namespace() as ns:
        yield ns


def _natsrv() -> str:
    path = shutil.which("natsrv", path=str(Path(sys.executable).parent)) or shutil.which(
        "natsrv")  # fmt: skip
    require(path is not None, "the natsrv command is not installed")
    assert path is not None
    return path


def _dockerfile() -> dict[str, list[str]]:
    """The Dockerfile's exec-form instructions: ENTRYPOINT, CMD and the HEALTHCHECK's."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"(ENTRYPOINT|CMD|HEALTHCHECK)\s+(.*)$", line)
        if m:
            found[m.group(1)] = json.loads(m.group(2)[m.group(2).index("["):])
    return found


def _image_argv(args: list[str], config: Path) -> list[str]:
    entry = _dockerfile()["ENTRYPOINT"]
    assert entry == ["natsrv"]
    return [_natsrv(), *(str(config) if a == IMAGE_CONFIG else a for a in args)]


def _ping(ns: Namespace, target: str) -> None:
    health = _dockerfile()["HEALTHCHECK"]
    assert health[:2] == ["natsrv", "ping"]
    done = ns.run([_natsrv(), "ping", target, *health[3:]])
    assert done.returncode == 0, done.stderr
    assert "answered: mapped address" in done.stdout


def _image_config(tmp_path: Path) -> Path:
    # COPY deploy/natsrv.toml /etc/natsrv/natsrv.toml
    assert f"COPY deploy/natsrv.toml {IMAGE_CONFIG}" in (DEPLOY / "Dockerfile").read_text()
    config = tmp_path / "natsrv.toml"
    shutil.copy(DEPLOY / "natsrv.toml", config)
    return config


def test_docker_image_command_answers_on_both_families(namespace: Namespace,
                                                       tmp_path: Path) -> None:  # fmt: skip
    argv = _image_argv(_dockerfile()["CMD"], _image_config(tmp_path))
    namespace.start(argv, env={})
    _ping(namespace, "127.0.0.1:3478")  # the HEALTHCHECK, as written
    _ping(namespace, "[::1]:3478")  # the default listens on IPv6 too
    assert namespace.http_status("http://127.0.0.1:9641/readyz") == "200"


def test_compose_service_relays(namespace: Namespace, tmp_path: Path) -> None:
    service = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["natsrv"]
    assert service["network_mode"] == "host"
    secret = secrets.token_hex(16)
    env = {"NATSRV_AUTH_SECRET": secret, "NATSRV_RELAY_IP": NODE_IP}

    def interpolate(text: str) -> str:  # compose's ${VAR:?message}
        return re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", lambda m: env[m.group(1)], text)

    for value in service["environment"].values():
        assert interpolate(value) in env.values()
    config = _image_config(tmp_path)  # ./natsrv.toml mounted over the image's
    argv = _image_argv([interpolate(a) for a in service["command"]], config)
    namespace.start(argv, env={k: interpolate(v) for k, v in service["environment"].items()})
    _ping(namespace, f"{NODE_IP}:3478")
    done = namespace.run([sys.executable, "-c", ALLOCATE, NODE_IP, secret])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == NODE_IP


def test_kubernetes_daemonset_serves_and_is_ready(namespace: Namespace, tmp_path: Path) -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())}
    toml = docs["ConfigMap"]["data"]["natsrv.toml"]
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secret = secrets.token_hex(16)
    # The Secret volume: key auth-secret under the auth mount; the ConfigMap's file
    # under the config mount. Both moved into tmp_path, the paths rewritten.
    secret_file = tmp_path / "auth-secret"
    secret_file.write_text(secret + "\n")
    toml = toml.replace(f"{mounts['auth']}/auth-secret", str(secret_file))
    assert str(secret_file) in toml
    config = tmp_path / "natsrv.toml"
    config.write_text(toml)
    args = [a.replace("$(NODE_IP)", NODE_IP) for a in container["args"]]
    args = [str(config) if a == f"{mounts['config']}/natsrv.toml" else a for a in args]
    namespace.start([_natsrv(), *args], env={})
    _ping(namespace, f"{NODE_IP}:3478")
    probe = container["readinessProbe"]["httpGet"]
    assert namespace.http_status(f"http://{NODE_IP}:{probe['port']}{probe['path']}") == "200"
    live = container["livenessProbe"]["httpGet"]
    assert namespace.http_status(f"http://{NODE_IP}:{live['port']}{live['path']}") == "200"
    done = namespace.run([sys.executable, "-c", ALLOCATE, NODE_IP, secret])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == NODE_IP


@pytest.mark.parametrize("drop_in", [False, True], ids=["unit", "unit+port-443"])
def test_systemd_unit_verifies(tmp_path: Path, drop_in: bool) -> None:
    tool = require_tool("systemd-analyze")
    unit = (DEPLOY / "natsrv.service").read_text()
    assert "ExecStart=/opt/natsrv/bin/natsrv serve" in unit
    unit = unit.replace("/opt/natsrv/bin/natsrv", _natsrv())  # where this checkout installed it
    if drop_in:
        unit += (DEPLOY / "natsrv-port-443.conf").read_text()
    else:
        assert "CAP_NET_BIND_SERVICE" not in re.sub(r"#.*", "", unit)
    path = tmp_path / "natsrv.service"
    path.write_text(unit)
    done = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), (
        done.stdout + done.stderr)
