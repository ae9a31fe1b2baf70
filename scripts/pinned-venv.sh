#!/usr/bin/env bash
# Makes a venv at $1 holding exactly the pinned PyPI packages that follow
# (installing only when one is missing or at another version) and prints
# its site-packages directory. Shared by scripts/cuda-toolchain.sh and
# scripts/nvcc-toolchain.sh; everything but that path goes to stderr.
#
#   site="$(bash scripts/pinned-venv.sh VENV PIN...)"
set -euo pipefail
venv="$1"
shift
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" >&2
fi
installed="$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null || true)"
for pin in "$@"; do
    if ! grep -qixF "$pin" <<<"$installed"; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
        break
    fi
done
# The venv's python version is in the site-packages path: ask it, don't guess.
"$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
