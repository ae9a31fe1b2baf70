#!/usr/bin/env bash
# Installs the pinned CUDA compiler into .cuda-venv and prints the exports
# build.rs and scripts/check-ptx.sh read:
#
#   eval "$(bash scripts/cuda-toolchain.sh)"
#
# NVRTC 12.0 (CUDA's compiler as a library) compiles the kernels to PTX ISA
# 8.0, which every CUDA 12 and 13 driver loads (R525 and later); PyPI's CUDA
# 12 wheels carry NVRTC and ptxas but no nvcc. The runtime wheel brings
# cuda_fp16.h and cuda_bf16.h; the nvcc wheel brings ptxas 12.0, which
# checks that the PTX assembles. Idempotent: a second run only prints.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.cuda-venv"
pins=(
    nvidia-cuda-nvrtc-cu12==12.0.76
    nvidia-cuda-runtime-cu12==12.0.107
    nvidia-cuda-nvcc-cu12==12.0.76
)

nvidia="$(bash "$root/scripts/pinned-venv.sh" "$venv" "${pins[@]}")/nvidia"
test -f "$nvidia/cuda_nvrtc/lib/libnvrtc.so.12"
test -f "$nvidia/cuda_runtime/include/cuda_fp16.h"
"$nvidia/cuda_nvcc/bin/ptxas" --version >/dev/null
echo "export LOWBIT_NVRTC='$nvidia/cuda_nvrtc/lib/libnvrtc.so.12'"
echo "export LOWBIT_CUDA_INCLUDE='$nvidia/cuda_runtime/include'"
echo "export LOWBIT_PTXAS='$nvidia/cuda_nvcc/bin/ptxas'"
