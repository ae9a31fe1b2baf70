#!/usr/bin/env bash
# Checks the PTX that build.rs embedded: it assembles for every GPU
# generation lowbit supports (sm_75, sm_80, sm_90) with the ptxas of the
# release that compiled it, its ISA is the one `lowbit info` reports, and
# no float multiply-add was contracted into an fma (the CPU path rounds a*b
# and +c separately, so an fma would break bit-for-bit agreement).
#
#   LOWBIT_PTX_DIR=path scripts/check-ptx.sh    the *.ptx in path (build.rs's OUT_DIR)
#   LOWBIT_PTXAS=/path/to/ptxas                 ptxas to use (scripts/cuda-toolchain.sh
#                                               exports it), else PATH's
#   LOWBIT_PTX_ISA=8.0                          the .version every module must have
set -euo pipefail

archs=(sm_75 sm_80 sm_90)
ptxas="${LOWBIT_PTXAS:-$(command -v ptxas || true)}"
if [[ -z "$ptxas" || ! -x "$ptxas" ]]; then
    echo "check-ptx: ptxas not found (set LOWBIT_PTXAS, or run scripts/cuda-toolchain.sh)" >&2
    exit 1
fi
ptx_dir="${LOWBIT_PTX_DIR:?set LOWBIT_PTX_DIR to the directory of the embedded PTX}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "checking $ptx_dir with $("$ptxas" --version | tail -n 1)"

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
    isa="$(sed -n 's/^\.version //p' "$ptx")"
    status=("PTX ISA $isa")
    if [[ -n "${LOWBIT_PTX_ISA:-}" && "$isa" != "$LOWBIT_PTX_ISA" ]]; then
        status+=("not the expected ISA $LOWBIT_PTX_ISA")
        failed=1
    fi
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
