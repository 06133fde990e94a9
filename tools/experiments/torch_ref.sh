#!/usr/bin/env bash
# The PyTorch side of docs/experiments.md (torch 2.15 CPU; adding: 1 intra-op thread, which is
# much faster than 2 on a shared 2-core machine; charlm: 2 threads). Run from the repository root.
# Usage: tools/experiments/torch_ref.sh adding MODEL [STEPS] [SEED] | charlm [SEED]
set -euo pipefail
PY="${PY:-/work/main/.venv-torch/bin/python}"
out=docs/experiments
case "$1" in
  adding)
    m="$2"; steps="${3:-5000}"; seed="${4:-0}"; extra=()
    [ "$m" = lstm ] && extra=(--forget-bias 1.0)
    name="torch-adding-$m"; [ "$seed" != 0 ] && name="$name-seed$seed"
    nice -n 5 "$PY" tools/torch_ref/adding_reference.py --model "$m" "${extra[@]}" \
      --steps "$steps" --eval-every 250 --seed "$seed" --threads 1 --out "$out/$name.jsonl" ;;
  charlm)
    seed="${2:-0}"
    nice -n 5 "$PY" tools/torch_ref/charlm_reference.py --steps 3000 --eval-every 500 \
      --seed "$seed" --threads 2 --out "$out/torch-charlm-seed$seed.jsonl" ;;
  *) echo "usage: $0 adding MODEL [STEPS] [SEED] | charlm [SEED]" >&2; exit 2 ;;
esac
