#!/usr/bin/env bash
# Runs lowbit's tests on the emulated CUDA device (emu/): the kernels are
# built in (NVRTC required), and the emulator's libcuda.so stands in for the
# NVIDIA driver, so every CUDA test body runs the embedded PTX, memory-checked.
#
#   scripts/emulated-cuda.sh [cargo test args...]
#   default: README's test command, cargo test --release --features candle
#
# A CUDA body that cannot run is a failure here (LOWBIT_TEST_REQUIRE_CUDA=1):
# only a body that needs a library with no emulated stand-in may skip, and
# it says so: cuBLAS, or candle's CUDA backend (which needs cuBLAS and
# kernels nvcc compiled to the GPU's machine code). The exit status is
# non-zero when any test fails.
#
# Environment: LOWBIT_NVRTC and LOWBIT_CUDA_INCLUDE (else
# scripts/cuda-toolchain.sh installs and sets the pinned NVRTC),
# LOWBIT_TEST_ELEMENTS (default 100003: the emulator runs a kernel on the
# host's cores, so the large random tensors are smaller than on a GPU),
# CUDA_EMU_* (see emu/src/lib.rs).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${LOWBIT_NVRTC:-}" ]]; then
    eval "$(bash scripts/cuda-toolchain.sh)"
fi
export LOWBIT_REQUIRE_CUDA=1

cargo build --release -p cuda-emu
lib="$root/target/emulated-cuda"
mkdir -p "$lib"
cp target/release/libcuda_emu.so "$lib/libcuda.so"
ln -sf libcuda.so "$lib/libcuda.so.1"

export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LOWBIT_TEST_REQUIRE_CUDA=1
export LOWBIT_TEST_ELEMENTS="${LOWBIT_TEST_ELEMENTS:-100003}"

if (($# == 0)); then
    set -- --release --features candle
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test "$@" 2>&1 | tee "$log" || status=$?
# The harness already fails a CUDA body that cannot run; this catches a
# skip from anywhere else.
if grep -E '\[cuda\] \.\.\. skipped' "$log" | grep -vE "skipped: needs (cuBLAS|candle's CUDA backend)"; then
    echo "emulated-cuda: a CUDA test body was skipped on the emulated device" >&2
    status=1
fi
ran="$(grep -cE '\[cuda\] \.\.\. ok' "$log" || true)"
echo "emulated-cuda: $ran CUDA test bodies passed on the emulated device"
exit "$status"
