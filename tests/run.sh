#!/usr/bin/env bash
# Install everything the test suite needs on a Debian machine (as root), then run it:
# lint (ruff), types (mypy --strict) and the whole pytest suite. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# haproxy: tests/interop/test_haproxy.py (natsrv behind a PROXY-protocol proxy);
# systemd: systemd-analyze verify of deploy/natsrv.service; clang and libclang-rt-dev
# (its sanitizer files): the AddressSanitizer + SanitizerCoverage build of the native
# data path that tests/fuzz/fuzz_native.py fuzzes.
packages=(python3 python3-venv python3-dev gcc iproute2 nftables coturn stun-client stun-server
          chromium openssl procps util-linux systemd haproxy clang libclang-rt-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
if [ "${CI:-}" = true ]; then
    # CI builds the native data path (natsrv/_fastpath.c): its absence is a failure there.
    .venv/bin/python -c 'import natsrv._fastpath' || { echo "natsrv._fastpath was not built" >&2; exit 1; }
fi

.venv/bin/ruff check .
.venv/bin/mypy  # --strict on natsrv/ and classifier/ (pyproject.toml)
exec .venv/bin/python -m pytest "$@"
