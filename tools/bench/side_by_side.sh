#!/usr/bin/env bash
# skipgate against PyTorch on the workloads of bench/WORKLOADS.md, side by side, on a QUIET
# machine (nothing else running: ratios taken on a loaded machine mean little).
#
#   tools/bench/side_by_side.sh [--iters N] [--only NAME,NAME...] [--out DIR]
#
# For 2 threads and then for 1, every workload runs in its own process, ours then PyTorch's, one
# after the other (so both sides see the same machine state, and peak_rss_mb is that workload's
# alone). Writes
#   DIR/<date>-skipgate-2t.jsonl  DIR/<date>-torch-2t.jsonl
#   DIR/<date>-skipgate-1t.jsonl  DIR/<date>-torch-1t.jsonl
#   DIR/<date>-machine.txt        (CPU, kernel, versions, commit, load average)
# (DIR defaults to docs/bench) and prints compare.py's table for each thread count
# (speedup = torch ms / skipgate ms: above 1, skipgate is faster).
#
# Needs: cargo; PyTorch and torchvision in a venv (PYTHON=..., default .venv-torch/bin/python of
# this checkout or of the main checkout of its repository: python3 -m venv .venv-torch &&
# .venv-torch/bin/pip install torch torchvision numpy safetensors); the reference scripts
# torch_baseline.py and compare.py (BENCH_REF=..., default the shared folder's bench/ beside the
# checkout, ../shared/bench).
set -euo pipefail

usage() {
    echo "usage: $0 [--iters N] [--only NAME,NAME...] [--out DIR]" >&2
    exit 2
}

iters=10
only=rnn_train,lstm_train,gru_train,lstm_infer,charlstm_train,seed_sum_train,resnet20_train,resnet20_infer,resnet18_infer
out=
while [[ $# -gt 0 ]]; do
    case $1 in
        --iters) [[ $# -ge 2 ]] || usage; iters=$2; shift 2 ;;
        --only) [[ $# -ge 2 ]] || usage; only=$2; shift 2 ;;
        --out) [[ $# -ge 2 ]] || usage; out=$2; shift 2 ;;
        *) usage ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${out:-$root/docs/bench}

if [[ -z ${PYTHON:-} ]]; then
    main_checkout=$(cd "$(git rev-parse --git-common-dir)/.." && pwd)
    for candidate in "$root/.venv-torch/bin/python" "$main_checkout/.venv-torch/bin/python"; do
        if [[ -x $candidate ]]; then
            PYTHON=$candidate
            break
        fi
    done
fi
if [[ -z ${PYTHON:-} ]] || ! "$PYTHON" -c 'import torch, torchvision' 2>/dev/null; then
    echo "error: no Python with torch and torchvision (set PYTHON=...; see the top of $0)" >&2
    exit 2
fi
ref=${BENCH_REF:-$root/../shared/bench}
for f in torch_baseline.py compare.py; do
    if [[ ! -f $ref/$f ]]; then
        echo "error: $ref/$f not found (set BENCH_REF to the folder holding the reference)" >&2
        exit 2
    fi
done

cargo build --release --quiet
skipgate=$root/target/release/skipgate

mkdir -p "$out"
stamp=$(date +%F)
load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
if awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }' 2>/dev/null; then
    echo "warning: load average $load: the machine is not quiet, the ratios will be noisy" >&2
fi
{
    echo "date:       $(date -Is)"
    echo "cpu:        $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
    echo "cpus:       $(nproc)"
    echo "kernel:     $(uname -sr)"
    echo "load avg:   $load (at the start)"
    echo "skipgate:   $("$skipgate" --version) at $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (uncommitted changes)')"
    echo "rustc:      $(rustc --version)"
    echo "torch:      $("$PYTHON" -c 'import torch, torchvision; print(torch.__version__, "torchvision", torchvision.__version__)')"
    echo "iters:      $iters (after 3 warm-up steps), one process per workload"
} > "$out/$stamp-machine.txt"
cat "$out/$stamp-machine.txt"

for threads in 2 1; do
    ours=$out/$stamp-skipgate-${threads}t.jsonl
    theirs=$out/$stamp-torch-${threads}t.jsonl
    : > "$ours"
    : > "$theirs"
    for w in ${only//,/ }; do
        echo "== $w, $threads thread(s)" >&2
        RAYON_NUM_THREADS=$threads "$skipgate" bench --only "$w" --threads "$threads" --iters "$iters" | tee -a "$ours"
        # The reference prints no memory figure: the process's peak resident set from
        # /usr/bin/time is added to its line as peak_rss_mb (interpreter and libraries included).
        OMP_NUM_THREADS=$threads /usr/bin/time -f '%M' -o "$out/.rss" \
            "$PYTHON" "$ref/torch_baseline.py" --only "$w" --threads "$threads" --iters "$iters" \
            > "$out/.torch-line"
        "$PYTHON" -c 'import json, sys
rss_mb = int(open(sys.argv[1]).read().split()[-1]) / 1024
for line in open(sys.argv[2]):
    if line.startswith("{"):
        record = json.loads(line)
        record["peak_rss_mb"] = round(rss_mb, 1)
        print(json.dumps(record))' "$out/.rss" "$out/.torch-line" | tee -a "$theirs"
    done
done

for threads in 2 1; do
    echo
    echo "$threads thread(s): $out/$stamp-skipgate-${threads}t.jsonl vs $out/$stamp-torch-${threads}t.jsonl"
    "$PYTHON" "$ref/compare.py" "$out/$stamp-skipgate-${threads}t.jsonl" "$out/$stamp-torch-${threads}t.jsonl"
done
rm -f "$out/.rss" "$out/.torch-line"

echo
echo "peak resident memory (MiB), skipgate / PyTorch:"
for threads in 2 1; do
    "$PYTHON" - "$out/$stamp-skipgate-${threads}t.jsonl" "$out/$stamp-torch-${threads}t.jsonl" "$threads" <<'PY'
import json, sys
ours = {r["workload"]: r for r in map(json.loads, open(sys.argv[1]))}
theirs = {r["workload"]: r for r in map(json.loads, open(sys.argv[2]))}
for name, r in ours.items():
    if name in theirs:
        print(f"  {sys.argv[3]}t {name:<16} {r['peak_rss_mb']:>8.1f} {theirs[name]['peak_rss_mb']:>8.1f}")
PY
done
