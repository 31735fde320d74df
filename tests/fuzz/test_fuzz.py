"""Bounded fuzz runs (atheris / libFuzzer) of every harness, part of the test suite.

Each harness runs in its own process for a fixed number of executions, from its seed
corpus (``tests/fuzz/corpus/NAME``; copied, so the run adds nothing to the repository).
A crash, a hang past ``-timeout``, or an uncaught exception makes libFuzzer exit
non-zero with the input that did it; the test fails and shows the tail of its output.
The long campaigns are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

#: harness -> (executions in the suite, -max_len)
HARNESSES = {
    "classify": (5_000, 4096),
    "codec": (60_000, 1500),
    "turn": (6_000, 1024),
}

try:
    import atheris  # noqa: F401

    MISSING = None
except ImportError:
    MISSING = "atheris is not installed (pip install -e '.[test]')"


@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_bounded_fuzz_run(name: str, tmp_path: Path) -> None:
    if MISSING is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    runs, max_len = HARNESSES[name]
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / name, corpus)
    proc = subprocess.run(
        [sys.executable, str(HERE / f"fuzz_{name}.py"), f"-runs={runs}", f"-max_len={max_len}",
         "-timeout=10", "-seed=1", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    tail = "\n".join(proc.stderr.splitlines()[-25:])
    assert proc.returncode == 0, tail
    assert f"Done {runs} runs" in proc.stderr, tail
