#!/usr/bin/env bash
# Character LSTM on tiny Shakespeare (90/10 split, Embedding 64 -> LSTM 256 -> Linear, batch 32
# random windows of 64, Adam 2e-3, clip 5, 3000 steps, validation loss on the whole validation
# split every 500 steps): skipgate's side. Run from the repository root after
# `cargo build --release`. Usage: tools/experiments/charlm.sh [SEED] (default 0).
set -euo pipefail
seed="${1:-0}"
out="runs/charlm"
[ "$seed" != 0 ] && out="runs/charlm-seed$seed"
/usr/bin/time -f "charlm seed $seed wall %e s user %U s sys %S s" nice -n 5 ./target/release/skipgate train \
  --task charlm --steps 3000 --eval-every 500 --seed "$seed" --quiet --overwrite --out "$out"
