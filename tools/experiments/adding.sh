#!/usr/bin/env bash
# Adding problem (T=100, hidden 128, batch 64, Adam 1e-3, clip 1, 5000 steps, val MSE every 250
# steps on 1000 fixed sequences): skipgate's side. Run from the repository root after
# `cargo build --release`. Usage: [SEED=s] tools/experiments/adding.sh [rnn|gru|lstm ...]
# (default: all three, seed 0; a seed other than 0 writes runs/adding-<m>-seed<s>).
set -euo pipefail
seed="${SEED:-0}"
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(rnn gru lstm)
for m in "${models[@]}"; do
  extra=()
  [ "$m" = lstm ] && extra=(--forget-bias 1.0)
  out="runs/adding-$m"
  [ "$seed" != 0 ] && out="runs/adding-$m-seed$seed"
  /usr/bin/time -f "adding-$m seed $seed wall %e s user %U s sys %S s" nice -n 5 \
    ./target/release/skipgate train --task adding --model "$m" --steps 5000 --eval-every 250 \
    "${extra[@]}" --seed "$seed" --quiet --overwrite --out "$out"
done
