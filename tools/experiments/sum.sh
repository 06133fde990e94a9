#!/usr/bin/env bash
# The course's sum task (tanh RNN, input 1, hidden 10, T 5, 100 training / 1000 test sequences,
# full batch, Adam 0.01, 2000 steps) for seeds 0..4: skipgate's side. Run from the repository
# root after `cargo build --release`.
set -euo pipefail
for seed in 0 1 2 3 4; do
  /usr/bin/time -f "sum seed $seed wall %e s" nice -n 5 ./target/release/skipgate train \
    --task sum --seed "$seed" --quiet --overwrite --out "runs/sum-seed$seed"
done
