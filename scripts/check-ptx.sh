#!/usr/bin/env bash
# Checks that the CUDA kernels assemble for every GPU generation lowbit
# supports (sm_75, sm_80, sm_90), and that no float multiply-add was
# contracted into an fma (the CPU path rounds a*b and +c separately, so an
# fma would break bit-for-bit agreement).
#
#   scripts/check-ptx.sh                          compile kernels/*.cu, then check
#   LOWBIT_PTX_DIR=path scripts/check-ptx.sh      check the *.ptx already in path
#                                                 (the PTX build.rs embeds)
#   NVCC=/path/to/nvcc                            nvcc to use (else .cuda-venv's,
#                                                 else PATH); ptxas is taken from
#                                                 the same directory, else PATH
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archs=(sm_75 sm_80 sm_90)

find_tool() { # name
    local name="$1" dir
    if [[ -n "${NVCC:-}" ]]; then
        dir="$(dirname "$NVCC")"
    else
        dir="$(ls -d "$root"/.cuda-venv/lib/python3*/site-packages/nvidia/cu13/bin 2>/dev/null | head -n1)"
    fi
    if [[ -n "$dir" && -x "$dir/$name" ]]; then
        echo "$dir/$name"
    elif command -v "$name" >/dev/null; then
        command -v "$name"
    else
        echo "check-ptx: $name not found (set NVCC, or run scripts/cuda-toolchain.sh)" >&2
        return 1
    fi
}

ptxas="$(find_tool ptxas)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [[ -n "${LOWBIT_PTX_DIR:-}" ]]; then
    ptx_dir="$LOWBIT_PTX_DIR"
    echo "checking prebuilt PTX in $ptx_dir"
else
    nvcc="${NVCC:-$(find_tool nvcc)}"
    # The toolkit's own headers (cuda_fp16.h, cuda_bf16.h) sit beside bin/.
    include="$(cd "$(dirname "$nvcc")/.." && pwd)/include"
    ptx_dir="$tmp"
    for cu in "$root"/kernels/*.cu; do
        out="$ptx_dir/$(basename "${cu%.cu}").ptx"
        cmd=("$nvcc" -ptx -arch=compute_75 -fmad=false -std=c++17 -O3
            -I"$include" -I"$root/kernels" "$cu" -o "$out")
        echo "${cmd[*]}"
        "${cmd[@]}"
    done
fi

shopt -s nullglob
ptxs=("$ptx_dir"/*.ptx)
if ((${#ptxs[@]} == 0)); then
    echo "check-ptx: no .ptx files in $ptx_dir" >&2
    exit 1
fi

failed=0
for ptx in "${ptxs[@]}"; do
    name="$(basename "$ptx")"
    entries="$(grep -c '^\.visible \.entry' "$ptx" || true)"
    status=()
    for arch in "${archs[@]}"; do
        if "$ptxas" -arch="$arch" "$ptx" -o "$tmp/out.cubin"; then
            status+=("$arch ok")
        else
            status+=("$arch FAILED")
            failed=1
        fi
    done
    # Kernels that contain fma.rn.f32: none may, every formula is plain
    # arithmetic the CPU rounds step by step.
    fused="$(awk '/^\.visible \.entry/ { k = $3; sub(/\(.*/, "", k) }
                  /fma\.rn\.f32/ && k != "" { print k }' "$ptx" | sort -u)"
    if [[ -n "$fused" ]]; then
        status+=("FMA in: $(echo $fused)")
        failed=1
    fi
    printf '%-18s %3s kernels  %s\n' "$name" "$entries" "$(IFS=,; echo "${status[*]}" | sed 's/,/, /g')"
done

if ((failed)); then
    echo "check-ptx: FAILED" >&2
    exit 1
fi
echo "check-ptx: all PTX assembles for ${archs[*]}"
