"""``natsrv serve`` as a separate process on loopback, for the safety benchmarks and the
tests that run their bounded versions: started on port 0 (the addresses are read back
from its log), its admin listener scraped, its RSS and open descriptors read from
``/proc``, stopped by PID.

    with NatsrvProcess(["--listen", "127.0.0.1:0", "--user", "a:b"]) as server:
        server.udp, server.tcp, server.tls, server.admin, server.rss(), server.fds()
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
Address = tuple[str, int]
_LISTENING = re.compile(r"listening on (udp|tcp|tls) (\S+):(\d+)$")
_ADMIN = re.compile(r"admin \(metrics, sessions, health\) on http://(\S+):(\d+)/")
_SAMPLE = re.compile(r'^(\w+)(?:\{([^}]*)\})? (\S+)$')


def raise_nofile(need: int) -> int:
    """Raise this process's soft open-file limit to at least ``need`` (up to the hard
    limit); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


class NatsrvProcess:
    """One ``natsrv serve`` process and its log lines (JSON objects) as they come.

    ``preexec`` runs in the child before exec (e.g. to lower its RLIMIT_NOFILE);
    ``python_prelude`` is Python run in the child before natsrv is imported (the
    clock-jump test installs a fake ``time.time`` with it).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        preexec: Callable[[], None] | None = None,
        python_prelude: str | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        if python_prelude is None:
            command = [sys.executable, "-m", "natsrv", "serve"]
        else:
            launcher = "\n".join([python_prelude, "import sys", "from natsrv.cli import main",
                                  "sys.exit(main())"])  # fmt: skip
            command = [sys.executable, "-c", launcher, "serve"]
        # One process (its RSS, descriptors and tasks are what is read); ``args`` may
        # say otherwise.
        self.argv = [*command, "--log-format", "json", "--workers", "1", *args]
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            cwd=cwd or ROOT, preexec_fn=preexec, env=full_env,
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, object] | None] = queue.Queue()
        self.log: list[dict[str, object]] = []
        self.udp: list[Address] = []
        self.tcp: list[Address] = []
        self.tls: list[Address] = []
        self.admin: Address | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self.wait_for("TURN enabled", ready_timeout, want_ready=True)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                obj = json.loads(line)
            except ValueError:
                obj = {"message": line.rstrip("\n")}
            self.lines.put(obj if isinstance(obj, dict) else {"message": line})
        self.lines.put(None)

    def _note(self, obj: dict[str, object]) -> None:
        if len(self.log) >= 10_000:  # a long run logs per allocation: keep the latest
            del self.log[:5_000]
        self.log.append(obj)
        message = str(obj.get("message", ""))
        m = _LISTENING.search(message)
        if m:
            kind, ip, port = m.groups()
            getattr(self, kind).append((ip, int(port)))
        m = _ADMIN.search(message)
        if m:
            self.admin = (m.group(1), int(m.group(2)))

    def _ready(self) -> bool:
        # "TURN enabled" is the last line before the server is serving (every use here
        # configures a user).
        return any("TURN enabled" in str(o.get("message")) for o in self.log)

    def wait_for(
        self, needle: str, timeout: float = 10.0, *, want_ready: bool = False
    ) -> dict[str, object]:
        """The next log line containing ``needle`` (or, with ``want_ready``, until the
        server reports its listeners); raises ``TimeoutError`` or ``RuntimeError`` (the
        process ended)."""
        deadline = time.monotonic() + timeout
        while True:
            if want_ready and self._ready():
                return {}
            try:
                obj = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"natsrv did not log {needle!r} within {timeout} s") from None
            if obj is None:
                self.lines.put(None)
                tail = "\n".join(str(o.get("message")) for o in self.log[-10:])
                raise RuntimeError(f"natsrv exited ({self.proc.poll()}):\n{tail}")
            self._note(obj)
            if not want_ready and needle in json.dumps(obj):
                return obj

    def drain_log(self) -> None:
        """Take in the log lines that came so far."""
        while True:
            try:
                obj = self.lines.get_nowait()
            except queue.Empty:
                return
            if obj is None:
                self.lines.put(None)
                return
            self._note(obj)

    # -- what the process holds ---------------------------------------------------------
    def rss(self) -> int:
        """Resident set size in bytes."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def http(self, path: str, method: str = "GET") -> bytes:
        assert self.admin is not None, "start natsrv with --metrics-listen 127.0.0.1:0"
        request = urllib.request.Request(f"http://{self.admin[0]}:{self.admin[1]}{path}",
                                         method=method)  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {'name{labels}': value} (and plain 'name' for unlabelled)."""
        samples: dict[str, float] = {}
        for line in self.http("/metrics").decode().splitlines():
            if line.startswith("#") or not line:
                continue
            m = _SAMPLE.match(line)
            if m:
                name, labels, value = m.groups()
                samples[f"{name}{{{labels}}}" if labels else name] = float(value)
        return samples

    def sessions(self) -> list[dict[str, object]]:
        data = json.loads(self.http("/sessions"))
        return list(data) if isinstance(data, list) else list(data.get("sessions", []))

    # -- stopping ------------------------------------------------------------------------
    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reader.join(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> NatsrvProcess:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
