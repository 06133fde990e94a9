"""Reference fixtures for tests/fixtures/loss/: MSE and cross-entropy (reduction="mean").

The stored gradient is d loss / d input of the scalar loss itself (no grad_output).
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import torch
import torch.nn.functional as F

from common import case_seed, save, setup

GROUP = "loss"
SCRIPT = "loss.py"


def mse() -> None:
    case = "mse"
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    x = torch.randn(4, 3, requires_grad=True)
    target = torch.randn(4, 3)
    loss = F.mse_loss(x, target, reduction="mean")
    loss.backward()
    tensors = {"input": x, "target": target, "loss": loss, "grad.input": x.grad}
    cfg = {"op": "mse", "reduction": "mean", "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def cross_entropy(case: str, logits: torch.Tensor, targets: torch.Tensor, ignore_index, seed) -> None:
    logits = logits.clone().requires_grad_(True)
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    loss = F.cross_entropy(logits, targets, reduction="mean", **kwargs)
    loss.backward()
    tensors = {"logits": logits, "targets": targets, "loss": loss, "grad.logits": logits.grad}
    cfg = {"op": "cross_entropy", "reduction": "mean", "ignore_index": ignore_index,
           "num_classes": logits.shape[1], "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def main() -> None:
    setup()
    print(f"[{GROUP}]")
    mse()

    case = "cross_entropy"
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    logits = 1.5 * torch.randn(6, 5)
    targets = torch.randint(0, 5, (6,), dtype=torch.int64)
    cross_entropy(case, logits, targets, None, seed)

    case = "cross_entropy_ignore"
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    logits = 1.5 * torch.randn(6, 5)
    targets = torch.randint(0, 5, (6,), dtype=torch.int64)
    targets[1] = -100
    targets[4] = -100
    cross_entropy(case, logits, targets, -100, seed)

    # Extreme but finite float32 logits: needs max-subtraction (log-sum-exp) to stay finite.
    case = "cross_entropy_large"
    logits = torch.tensor(
        [
            [1e4, 0.0, -1e4, 0.5, 1e4],  # two tied maxima, target at -1e4 (loss ~ 2e4)
            [-1e4, -1e4, -1e4, -1e4, 0.0],  # target is the lone finite winner (loss ~ 0)
            [0.0, 1e4, 0.0, -1e4, 3.0],  # target 0, far below the max (loss ~ 1e4)
            [1.0, -2.0, 0.0, 0.5, -1e4],  # ordinary row with one -1e4 entry
        ],
        dtype=torch.float32,
    )
    targets = torch.tensor([2, 4, 0, 3], dtype=torch.int64)
    cross_entropy(case, logits, targets, None, None)  # hand-written values, no seed


if __name__ == "__main__":
    main()
