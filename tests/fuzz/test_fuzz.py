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
from dataclasses import dataclass
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


#: Executions of the native harness in the suite (a few seconds on the clang build).
NATIVE_RUNS = 200_000
#: The fewest edges of the C code the clang build must show after NATIVE_RUNS: the
#: Binding parser and answer, the listener's and the relay's decisions reach about 69
#: (the batched I/O needs sockets); the gcc build shows none, nor a clang build whose
#: coverage callbacks went to the sanitizer's stubs.
NATIVE_MIN_EDGES = 50
ASAN_OPTIONS = "detect_leaks=0:quarantine_size_mb=8:malloc_context_size=4"


@dataclass(frozen=True)
class AsanBuild:
    extension: Path  #: the ASan copy of natsrv._fastpath
    preload: Path  #: the sanitizer runtime LD_PRELOAD loads first
    coverage: bool  #: whether libFuzzer sees the C code's edges (clang)


def build_asan_extension(directory: Path) -> AsanBuild:
    """A copy of natsrv._fastpath built with AddressSanitizer in ``directory``: with
    clang and SanitizerCoverage for libFuzzer, atheris's ASan+libFuzzer runtime
    preloaded (fuzz_native.py's docstring says why that one); gcc and its libasan, with
    no coverage feedback, only on a machine without clang and never in CI."""
    import atheris

    include = f"-I{sysconfig.get_paths()['include']}"
    target = directory / f"_fastpath{sysconfig.get_config_var('EXT_SUFFIX')}"
    source = str(HERE.parent.parent / "natsrv" / "_fastpath.c")
    flags = ["-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer"]
    clang = shutil.which("clang")
    if clang is None and os.environ.get("CI") != "true" and shutil.which("gcc"):
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                 text=True, check=True).stdout.strip()  # fmt: skip
        require(Path(libasan).is_file(), "neither clang nor gcc's libasan is installed")
        subprocess.run(["gcc", *flags, "-fsanitize=address", include, source, "-o", str(target)],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        assert b"__asan_init" in target.read_bytes()
        return AsanBuild(target, Path(libasan).resolve(), coverage=False)
    require(clang is not None, "clang is not installed (Debian: clang, libclang-rt-14-dev)")
    assert clang is not None
    runtime = Path(atheris.path()) / "asan_with_fuzzer.so"
    require(runtime.is_file(), f"atheris installed no {runtime.name}")
    subprocess.run([clang, *flags, "-fsanitize=address,fuzzer-no-link", include, source,
                    "-o", str(target)], check=True, capture_output=True, timeout=120)  # fmt: skip
    binary = target.read_bytes()
    assert b"__asan_init" in binary and b"__sanitizer_cov_8bit_counters_init" in binary
    return AsanBuild(target, runtime, coverage=True)


@pytest.fixture(scope="module")
def native_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[AsanBuild, str]:
    """One bounded run of fuzz_native.py on the ASan build, from its kept corpus:
    the build and libFuzzer's output."""
    require(MISSING is None, MISSING or "")
    directory = tmp_path_factory.mktemp("native")
    build = build_asan_extension(directory)
    corpus = directory / "corpus"
    shutil.copytree(HERE / "corpus" / "native", corpus)
    env = {**os.environ, "NATSRV_FASTPATH_SO": str(build.extension),
           "LD_PRELOAD": str(build.preload), "ASAN_OPTIONS": ASAN_OPTIONS}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_native.py"), f"-runs={NATIVE_RUNS}", "-max_len=1500",
         "-timeout=10", "-seed=1", "-rss_limit_mb=4096", f"-artifact_prefix={directory}/",
         str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=directory, env=env,
    )  # fmt: skip
    tail = "\n".join(proc.stderr.splitlines()[-25:])
    assert proc.returncode == 0, tail
    return build, proc.stderr


def test_native_parser_under_address_sanitizer(native_run: tuple[AsanBuild, str]) -> None:
    """fuzz_native.py against an ASan build of the extension: no crash, no sanitizer
    report, and the native decisions equal the Python ones on every input."""
    _, output = native_run
    tail = "\n".join(output.splitlines()[-25:])
    done = re.search(r"Done (\d+) runs", output)
    assert done is not None and int(done.group(1)) >= NATIVE_RUNS, tail
    assert "AddressSanitizer" not in output, tail


def test_native_fuzzing_sees_the_c_code_coverage(native_run: tuple[AsanBuild, str]) -> None:
    """libFuzzer is guided by the C code's edges: the extension's counters are
    registered with the libFuzzer atheris drives, and the run ends with at least
    NATIVE_MIN_EDGES edges, all of them native (the Python side is not instrumented:
    alone it reaches none, which is what the gcc build shows)."""
    build, output = native_run
    require(build.coverage, "clang is not installed: the gcc build gives libFuzzer no coverage")
    tail = "\n".join(output.splitlines()[-25:])
    assert "Using preloaded libfuzzer" in output, tail
    assert "provided by a library other than libFuzzer" not in output, tail
    counters = re.search(r"Loaded 1 modules\s+\((\d+) inline 8-bit counters\)", output)
    assert counters is not None and int(counters.group(1)) >= NATIVE_MIN_EDGES, tail
    final = re.search(r"DONE\s+cov: (\d+) ft: (\d+)", output)
    assert final is not None and int(final.group(1)) >= NATIVE_MIN_EDGES, tail
