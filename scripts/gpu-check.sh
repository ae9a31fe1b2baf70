#!/usr/bin/env bash
# The GPU check, in two halves (the lent GPU machine has no Rust toolchain).
#
# Here:   scripts/gpu-check.sh
#         builds the test and bench executables with the kernels required and
#         stages them, with the script that runs them, in .gpu/ (git-ignored).
# There:  the device tool's run, with carry [".gpu"] and the command
#         bash .gpu/run.sh
#
# run.sh runs in two parts, every step under a timeout of its own so that
# one hang cannot use up the machine's time, and prints a table last:
#   1. (under 5 minutes) the larq reference cases and every backend test on
#      the GPU at their default sizes, the host-path tests (contexts, the C
#      ABI on the last device, per-thread streams, a call captured into a
#      CUDA graph and replayed), then compute-sanitizer's memcheck over
#      the backend tests at small sizes (reported and skipped where the
#      machine's compute-sanitizer refuses the device);
#   2. bit packing and the flip ratio, the training test (candle on the
#      CPU: the candle-cuda build is not staged yet), GPU versus CPU at 2^28 elements,
#      the bandwidth table beside a device-to-device copy and PyTorch, and
#      python/tests (lowbit.torch) on CUDA tensors, from a staged wheel.
# Logs go under $OUT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${LOWBIT_NVRTC:-}" ]]; then
    eval "$(bash scripts/cuda-toolchain.sh)"
fi
export LOWBIT_REQUIRE_CUDA=1

exes=$(cargo test --release --no-run --message-format=json -p lowbit --features candle --test backends --test golden --test bits_backends --test training --test cuda_host 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])')
cargo build --release -p lowbit-cli --bin lowbit

rm -rf .gpu && mkdir -p .gpu
for exe in $exes; do
    # strip cargo's hash suffix: backends-0123abcd -> backends
    cp "$exe" ".gpu/$(basename "$exe" | sed 's/-[0-9a-f]*$//')"
done
cp target/release/lowbit scripts/torch_peer.py .gpu/

cat > .gpu/run.sh <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine from the repository root; logs go to $OUT.
set -u
out="${OUT:-/tmp/lowbit-gpu}"; mkdir -p "$out"
cd .gpu
export LOWBIT_TEST_REQUIRE_CUDA=1
status=0
summary=()

# step NAME SECONDS COMMAND...: runs COMMAND under a timeout, logs to
# $out/NAME.txt, and adds a line to the table.
step() {
    local name="$1" limit="$2"
    shift 2
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.txt" 2>&1 || rc=$?
    local took=$((SECONDS - start)) result=ok
    if ((rc == 124 || rc == 137)); then
        result="TIMEOUT after ${limit}s"
        status=1
    elif ((rc != 0)); then
        result="FAILED (exit $rc)"
        status=1
    fi
    summary+=("$(printf '%-22s %-22s %5ss  %s' "$name" "$result" "$took" \
        "$(grep -hE '^[0-9]+ passed|test result:|check-ptx:' "$out/$name.txt" | tail -1)")")
    echo "== $name: $result (${took}s)"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$out/gpu.txt"

# Part 1: correctness, under 5 minutes.
step golden 60 ./golden
step backends 120 ./backends
step cuda_host 60 ./cuda_host
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1 || true)
if [ -n "$sanitizer" ]; then
    step memcheck 150 env LOWBIT_TEST_ELEMENTS=4099 "$sanitizer" --tool memcheck \
        --error-exitcode 1 --print-limit 20 ./backends
    if grep -qiE 'not supported|unsupported device|Device not supported' "$out/memcheck.txt"; then
        echo "compute-sanitizer refused this device; its memcheck was not run" | tee -a "$out/memcheck.txt"
        summary[${#summary[@]}-1]="memcheck               refused by the device (see memcheck.txt)"
    fi
else
    echo "compute-sanitizer not found; memcheck not run" | tee "$out/memcheck.txt"
fi

# Part 2: the rest, and the numbers.
step bits_backends 90 ./bits_backends
step training 120 ./training
step agrees_2e28 240 env LOWBIT_TEST_ELEMENTS=268435456 ./backends agrees
./lowbit info > "$out/info.txt" 2>&1
step bench 300 sh -c "./lowbit bench --device cuda --size 268435456 --json > '$out/bench.json'"
step torch_peer 180 sh -c "python3 torch_peer.py > '$out/torch.tsv'"
# python/tests on CUDA tensors too: the repository's copy, from its root.
step pytorch 240 sh -c "pip install -q --no-deps ./lowbit-*.whl && cd .. && python3 -m pytest -q python/tests"

python3 - "$out" <<'PY' || true
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
echo
cat "$out/gpu.txt"
printf '%s\n' "${summary[@]}"
exit $status
RUN
chmod +x .gpu/run.sh
echo "staged in .gpu/: $(ls .gpu | tr '\n' ' ')"
echo "next: the device tool's run with carry [\".gpu\"] and command 'bash .gpu/run.sh'"
