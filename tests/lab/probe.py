"""UDP probe for the NAT lab self-test (run inside the "cli" namespace).

Reads a plan from stdin, ``{"timeout": s, "grace": s, "steps": [...]}``, runs its steps
in order and prints one JSON object mapping each step's ``key`` to its result. Steps:

- ``{"op": "bind", "key", "sock", "port": 0}`` -> ``{"local": [ip, port]}``
- ``{"op": "ask", "key", "sock", "to": [ip, port], "reply_from"?, "reply_to"?,
  "timeout"?}``: a request to the reflector (reflector.py). A plain request waits for
  its reply. One with ``reply_from``/``reply_to`` also asks for a marker and waits for
  it (its arrival proves the request got there), then ``grace`` seconds more for a reply
  that was sent first but delivered late. -> ``{"reply": message | null,
  "marker": bool}``
- ``{"op": "send", "key", "sock", "to": [ip, port], "payload": text}`` -> ``{}``;
  ``"to": {"seen_of": KEY}`` means the address the reflector saw in step KEY's reply
  (a mapped address), e.g. to test hairpinning.
- ``{"op": "take", "key", "sock", "payload": text}``: was ``payload`` received on
  ``sock`` (waiting up to ``grace`` seconds for it)? -> ``{"from": [ip, port] | null}``

Every wait is bounded; nothing waits longer than the plan's ``timeout`` per step.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

Message = tuple[bytes, tuple[str, int]]


class Probe:
    def __init__(self, timeout: float, grace: float) -> None:
        self.timeout = timeout
        self.grace = grace
        self.socks: dict[str, socket.socket] = {}
        self.inbox: dict[str, list[Message]] = {}
        self.sel = selectors.DefaultSelector()
        self.counter = 0

    def pump(self, seconds: float, done: Callable[[], bool]) -> bool:
        """Receive on every socket until ``done()`` or ``seconds`` have passed."""
        deadline = time.monotonic() + seconds
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self.sel.select(left):
                name = key.data
                data, src = self.socks[name].recvfrom(4096)
                self.inbox[name].append((data, src))
        return True

    def find(self, sock: str, rid: str, kind: str) -> dict[str, Any] | None:
        for data, _ in self.inbox[sock]:
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("id") == rid and msg.get("kind") == kind:
                return msg
        return None

    def step(self, st: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        op, name = st["op"], st.get("sock", "")
        if op == "bind":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", st.get("port", 0)))
            self.socks[name] = s
            self.inbox[name] = []
            self.sel.register(s, selectors.EVENT_READ, name)
            return {"local": list(s.getsockname())}
        s = self.socks[name]
        if op == "send":
            to = st["to"]
            if isinstance(to, dict):
                to = results[to["seen_of"]]["reply"]["seen"]
            s.sendto(st["payload"].encode(), tuple(to))
            return {}
        if op == "take":
            def found() -> Message | None:
                return next((m for m in self.inbox[name] if m[0] == st["payload"].encode()),
                            None)
            self.pump(self.grace, lambda: found() is not None)
            hit = found()
            return {"from": list(hit[1]) if hit else None}
        if op == "ask":
            self.counter += 1
            rid = f"{st.get('key', op)}-{self.counter}"
            redirected = bool(st.get("reply_from") or st.get("reply_to"))
            req = {"id": rid, "reply_from": st.get("reply_from"),
                   "reply_to": st.get("reply_to"), "marker": redirected}
            s.sendto(json.dumps(req).encode(), tuple(st["to"]))
            timeout = st.get("timeout", self.timeout)
            if not redirected:
                self.pump(timeout, lambda: self.find(name, rid, "reply") is not None)
                reply = self.find(name, rid, "reply")
                return {"reply": reply, "marker": reply is not None}
            marker = self.pump(timeout, lambda: self.find(name, rid, "marker") is not None)
            if marker:
                self.pump(self.grace, lambda: self.find(name, rid, "reply") is not None)
            return {"reply": self.find(name, rid, "reply"), "marker": marker}
        raise ValueError(f"unknown op {op!r}")


def main() -> int:
    plan = json.load(sys.stdin)
    probe = Probe(plan.get("timeout", 1.0), plan.get("grace", 0.1))
    results = {}
    for i, st in enumerate(plan["steps"]):
        results[st.get("key", f"step{i}")] = probe.step(st, results)
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
