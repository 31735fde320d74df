"""The sans-IO packages import neither trio nor socket (docs/architecture.md, "The layers")."""

from __future__ import annotations

import subprocess
import sys

SANS_IO = [
    "natsrv.stun",
    "natsrv.stun.message",
    "natsrv.stun.framing",
    "natsrv.core",
    "classifier.verdict",
]


def test_sans_io_modules_import_neither_trio_nor_socket() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import natsrv.stun, natsrv.core\n"
        "names = [m.name for p in (natsrv.stun, natsrv.core)\n"
        "         for m in pkgutil.iter_modules(p.__path__, p.__name__ + '.')]\n"
        "names += ['classifier.verdict', 'classifier.plan', 'classifier.crosscheck']\n"
        "for n in names:\n"
        "    try:\n"
        "        importlib.import_module(n)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if e.name != n: raise\n"
        "bad = [m for m in ('trio', 'socket', '_socket') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
