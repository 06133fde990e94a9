#!/usr/bin/env bash
# The degradation problem on a Fashion-MNIST subset: plain and residual networks at depth 20 and 56,
# the first 5000 training images, 10 epochs of SGD (momentum 0.9, wd 5e-4, lr 0.05, 100 warm-up steps,
# cosine decay), no augmentation, seed 0. (With lr 0.1 and 20 warm-up steps the 56-layer residual
# network diverges for its first few dozen steps; docs/experiments.md shows both settings.)
# Run from the repository root after `cargo build --release`; needs /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist).
# The training loss per epoch is the mean of the logged batch losses of that epoch.
set -euo pipefail
for model in plain20 plain56 resnet20 resnet56; do
  /usr/bin/time -f "degradation $model wall %e s" nice -n 5 ./target/release/skipgate train \
    --task fashion-mnist --model "$model" --train-limit 5000 --epochs 10 --warmup 100 --lr 0.05 --no-augment \
    --seed 0 --quiet --overwrite --out "runs/degradation-fmnist-$model"
done
python3 - <<'PY'
import json
for model in ["plain20", "plain56", "resnet20", "resnet56"]:
    rows = [json.loads(l) for l in open(f"runs/degradation-fmnist-{model}/metrics.jsonl")]
    train = [r for r in rows if r["kind"] == "train"]
    tests = [r for r in rows if r["kind"] == "eval"]
    per_epoch = len(train) // max(len(tests), 1)
    means = [sum(r["loss"] for r in train[i:i + per_epoch]) / per_epoch
             for i in range(0, per_epoch * len(tests), per_epoch)]
    print(model, "train loss per epoch:", " ".join(f"{m:.4f}" for m in means),
          "| test acc per epoch:", " ".join(f"{r['test_accuracy']:.4f}" for r in tests))
PY
