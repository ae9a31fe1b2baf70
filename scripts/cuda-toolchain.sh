#!/usr/bin/env bash
# Installs the pinned CUDA compiler (nvcc 13.0 from PyPI) into .cuda-venv and
# prints its bin directory. Idempotent: a second run only prints the path.
#
# The versions move together: a lone nvidia-nvvm upgrade emits PTX ISA 9.5,
# which ptxas 13.0 and driver 580 reject.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cuda-venv"
pins=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-nvvm==13.0.88
)

# The venv's python version is in the site-packages path: ask it, don't guess.
cu13() {
    "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
        | sed 's|$|/nvidia/cu13|'
}

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" >&2
fi
# Reinstall only when a pin is missing or at another version.
installed="$("$venv/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null || true)"
for pin in "${pins[@]}"; do
    if ! grep -qixF "$pin" <<<"$installed"; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}" >&2
        break
    fi
done

bin="$(cu13)/bin"
"$bin/nvcc" --version >/dev/null
echo "$bin"
