"""Bounded fuzz runs (atheris / libFuzzer) of every harness, part of the test suite.

Each harness runs in its own process for a fixed number of executions, from its seed
corpus (``tests/fuzz/corpus/NAME``; copied, so the run adds nothing to the repository).
A crash, a hang past ``-timeout``, or an uncaught exception makes libFuzzer exit
non-zero with the input that did it; the test fails and shows the tail of its output.
The long campaigns are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import require

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
    # libFuzzer counts the corpus it loads too: at least ``runs`` executions.
    done = re.search(r"Done (\d+) runs", proc.stderr)
    assert done is not None and int(done.group(1)) >= runs, tail


#: Executions of the native harness in the suite (gcc + AddressSanitizer build).
NATIVE_RUNS = 20_000


def build_asan_extension(directory: Path) -> Path:
    """A copy of natsrv._fastpath built with AddressSanitizer in ``directory``."""
    gcc = shutil.which("gcc")
    require(gcc is not None, "gcc is not installed")
    assert gcc is not None
    target = directory / f"_fastpath{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
         "-fsanitize=address", f"-I{sysconfig.get_paths()['include']}",
         str(HERE.parent.parent / "natsrv" / "_fastpath.c"), "-o", str(target)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert b"__asan_init" in target.read_bytes()  # really instrumented
    return target


def test_native_parser_under_address_sanitizer(tmp_path: Path) -> None:
    """fuzz_native.py against an ASan build of the extension (libasan preloaded, as
    atheris documents for native extensions): no crash, no sanitizer report, and the
    native decisions equal the Python ones on every input."""
    require(MISSING is None, MISSING or "")
    extension = build_asan_extension(tmp_path)
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
    require(Path(libasan).is_file(), "gcc's libasan is not installed")
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / "codec", corpus)
    env = {
        **os.environ,
        "NATSRV_FASTPATH_SO": str(extension),
        "LD_PRELOAD": str(Path(libasan).resolve()),
        "ASAN_OPTIONS": "detect_leaks=0:quarantine_size_mb=8:malloc_context_size=4",
    }
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_native.py"), f"-runs={NATIVE_RUNS}", "-max_len=1500",
         "-timeout=10", "-seed=1", "-rss_limit_mb=4096", f"-artifact_prefix={tmp_path}/",
         str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    tail = "\n".join(proc.stderr.splitlines()[-25:])
    assert proc.returncode == 0, tail
    assert f"Done {NATIVE_RUNS} runs" in proc.stderr, tail
    assert "AddressSanitizer" not in proc.stderr, tail
