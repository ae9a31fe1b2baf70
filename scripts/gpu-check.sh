#!/usr/bin/env bash
# The GPU check, in two halves (the lent GPU machine has no Rust toolchain).
#
# Here:   scripts/gpu-check.sh
#         builds the test and bench executables with the kernels required and
#         stages them, with the script that runs them, in .gpu/ (git-ignored).
# There:  the device tool's run, with carry [".gpu"] and the command
#         bash .gpu/run.sh
#         runs every reference case on the GPU, GPU versus CPU on random
#         tensors (2^20 + 3 and 2^28 elements), the GPU bandwidth table beside a
#         device-to-device copy and PyTorch eager, and writes logs under $OUT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export NVCC="${NVCC:-$(bash scripts/cuda-toolchain.sh)/nvcc}"
export LOWBIT_REQUIRE_CUDA=1

exes=$(cargo test --release --no-run --message-format=json --test backends --test golden 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
cargo build --release --example gpu_bench

rm -rf .gpu && mkdir -p .gpu
for exe in $exes; do
    # strip cargo's hash suffix: backends-0123abcd -> backends
    cp "$exe" ".gpu/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"
done
cp target/release/examples/gpu_bench scripts/torch_peer.py .gpu/

cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine from the repository root; logs go to $OUT.
set -u
out="${OUT:-/tmp/lowbit-gpu}"; mkdir -p "$out"
cd .gpu
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
./golden 2>&1 | tee "$out/golden.txt" | tail -3 || status=1
./backends 2>&1 | tee "$out/backends.txt" | grep -E '^(test|[0-9]+ passed)' || status=1
LOWBIT_TEST_ELEMENTS=268435456 ./backends agrees 2>&1 | tee "$out/backends-2e28.txt" | grep -E '^(test|[0-9]+ passed)' || status=1
./gpu_bench > "$out/gpu_bench.tsv" 2> "$out/gpu_bench.err" || status=1
python3 torch_peer.py > "$out/torch.tsv" 2> "$out/torch.err" || echo "torch peer failed (see torch.err)"
python3 - "$out" <<'PY'
import sys, csv
out = sys.argv[1]
def rows(name):
    try:
        return list(csv.reader(open(f"{out}/{name}"), delimiter="\t"))[1:]
    except OSError:
        return []
torch = {(r[0], r[1], r[2]): float(r[4]) for r in rows("torch.tsv")}
print(f"{'quantizer':40} {'dtype':5} {'dir':4} {'GB/s':>7} {'of copy':>7} {'torch GB/s':>10}")
for r in rows("gpu_bench.tsv"):
    t = torch.get((r[0], r[1], r[2]))
    print(f"{r[0]:40} {r[1]:5} {r[2]:4} {float(r[4]):7.1f} {float(r[5]):7.3f} {t if t is not None else '-':>10}")
PY
exit $status
RUN
chmod +x .gpu/run.sh
echo "staged in .gpu/: $(ls .gpu | tr '\n' ' ')"
echo "next: the device tool's run with carry [\".gpu\"] and command 'bash .gpu/run.sh'"
