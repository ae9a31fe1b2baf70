#!/usr/bin/env bash
# Installs the pinned nvcc 13.0 set from PyPI (../shared/README.md's recipe)
# and prints the exports that candle's CUDA kernels (candle-kernels, built
# by the `candle-cuda` feature) need at build time:
#
#   eval "$(bash scripts/nvcc-toolchain.sh)"
#
# lowbit's own kernels need no nvcc (NVRTC: scripts/cuda-toolchain.sh). The
# venv is kept where the machine keeps it, $LOWBIT_NVCC_VENV or
# ~/.cache/lowbit/nvcc-venv, outside the repository: a build that depends
# on its path stays valid across clones. Idempotent: a second run only prints.
set -euo pipefail

venv="${LOWBIT_NVCC_VENV:-$HOME/.cache/lowbit/nvcc-venv}"
# Kept together: a lone nvidia-nvvm upgrade emits PTX that ptxas 13.0 rejects.
pins=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-nvvm==13.0.88
)

cu13="$(bash "$(dirname "${BASH_SOURCE[0]}")/pinned-venv.sh" "$venv" "${pins[@]}")/nvidia/cu13"
"$cu13/bin/nvcc" --version >/dev/null
echo "export PATH='$cu13/bin':\"\$PATH\""
echo "export CUDA_ROOT='$cu13'"
echo "export NVCC_PREPEND_FLAGS='-I$cu13/include'"
