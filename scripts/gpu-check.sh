#!/usr/bin/env bash
# The GPU check, in two halves (the lent GPU machine has no Rust toolchain).
#
# Here:   scripts/gpu-check.sh
#         builds the test and bench executables with the kernels required and
#         stages them, with the script that runs them, in .gpu/ (git-ignored).
# There:  the device tool's run, with carry [".gpu"] and the command
#         bash .gpu/run.sh
#         runs every reference case on the GPU, GPU versus CPU on random
#         tensors (2^20 + 3 and 2^28 elements), bit packing and the flip
#         ratio GPU versus CPU, the training test and train_digits with
#         cuBLAS (PyTorch's libcublas), the GPU bandwidth table beside a
#         device-to-device copy and PyTorch eager, and writes logs under $OUT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export NVCC="${NVCC:-$(bash scripts/cuda-toolchain.sh)/nvcc}"
export LOWBIT_REQUIRE_CUDA=1

exes=$(cargo test --release --no-run --message-format=json --test backends --test golden --test bits_backends --test training 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
cargo build --release --bin lowbit --example train_digits

rm -rf .gpu && mkdir -p .gpu
for exe in $exes; do
    # strip cargo's hash suffix: backends-0123abcd -> backends
    cp "$exe" ".gpu/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"
done
cp target/release/lowbit target/release/examples/train_digits scripts/torch_peer.py .gpu/

cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine from the repository root; logs go to $OUT.
set -u
out="${OUT:-/tmp/lowbit-gpu}"; mkdir -p "$out"
cd .gpu
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
# cuBLAS for the training runs: the machine's CUDA or PyTorch's wheel. cudarc
# asks for libcublas.so (or .so.12, .so.11, ...), so link whichever is found.
cublas=$(find /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu \
    $(python3 -c 'import site; print(*site.getsitepackages())' 2>/dev/null) \
    -maxdepth 4 -name 'libcublas.so*' 2>/dev/null | sort | head -1)
if [ -n "$cublas" ]; then
    mkdir -p lib && ln -sf "$cublas" lib/libcublas.so
    export LD_LIBRARY_PATH="$PWD/lib:$(dirname "$cublas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
echo "libcublas: ${cublas:-not found}" | tee "$out/cublas.txt"
./golden 2>&1 | tee "$out/golden.txt" | tail -3 || status=1
./backends 2>&1 | tee "$out/backends.txt" | grep -E '^(test|[0-9]+ passed)' || status=1
LOWBIT_TEST_ELEMENTS=268435456 ./backends agrees 2>&1 | tee "$out/backends-2e28.txt" | grep -E '^(test|[0-9]+ passed)' || status=1
./bits_backends 2>&1 | tee "$out/bits_backends.txt" | grep -E '^(test|[0-9]+ passed)' || status=1
./training 2>&1 | tee "$out/training.txt" | grep -E '^(test|[0-9]+ passed)' || status=1
./train_digits --device cuda > "$out/train_digits-cuda.txt" 2>&1 || status=1
./train_digits --device cpu > "$out/train_digits-cpu.txt" 2>&1 || status=1
grep -hE '^(lowbit backend|matrix products|  binarized|  full)' "$out"/train_digits-*.txt
./lowbit info 2>&1 | tee "$out/info.txt"
./lowbit bench --device cuda --size 268435456 --json > "$out/bench.json" 2> "$out/bench.err" || status=1
python3 torch_peer.py > "$out/torch.tsv" 2> "$out/torch.err" || echo "torch peer failed (see torch.err)"
python3 - "$out" <<'PY'
import sys, csv, json
out = sys.argv[1]
try:
    torch_rows = list(csv.reader(open(f"{out}/torch.tsv"), delimiter="\t"))[1:]
except OSError:
    torch_rows = []
torch = {(r[0], r[1], r[2]): float(r[4]) for r in torch_rows}
names = {"forward": "fwd", "backward": "bwd"}
bench = json.load(open(f"{out}/bench.json"))
print(f"{bench['elements']} elements, {bench['reason']}")
print(f"{'quantizer':60} {'dtype':5} {'dir':4} {'GB/s':>7} {'of copy':>7} {'torch GB/s':>10}")
for r in bench["results"]:
    key = (r["quantizer"], r["dtype"], names[r["direction"]])
    t = f"{torch[key]:10.1f}" if key in torch else f"{'-':>10}"
    print(f"{r['quantizer']:60} {r['dtype']:5} {names[r['direction']]:4} {r['gb_per_s']:7.1f} {r['ratio_to_copy']:7.3f} {t}")
PY
exit $status
RUN
chmod +x .gpu/run.sh
echo "staged in .gpu/: $(ls .gpu | tr '\n' ' ')"
echo "next: the device tool's run with carry [\".gpu\"] and command 'bash .gpu/run.sh'"
