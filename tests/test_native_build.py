"""The native data path is optional: CI builds it (and fails if it did not), and an
install without a C compiler still works, on the pure-Python path."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import native_built, require

ROOT = Path(__file__).parent.parent


def test_the_native_extension_was_built() -> None:
    require(native_built(), "natsrv._fastpath is not built (no C compiler or Python headers)")
    import natsrv._fastpath

    assert natsrv._fastpath.BATCH >= 32


def test_an_install_without_a_compiler_still_works(tmp_path: Path) -> None:
    # ``optional=True``: the failed build of the extension is a warning, not an error.
    env = {**os.environ, "CC": "false", "LDSHARED": "false"}
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("natsrv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "natsrv/net/fastpath.py" in names
    assert not [n for n in names if n.startswith("natsrv/_fastpath") and n.endswith(".so")]
