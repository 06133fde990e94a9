"""Reference fixtures for tests/fixtures/batchnorm/: nn.BatchNorm2d in train and eval mode.

Loss for gradients: L = sum(output * grad_output). Parameters and buffers are stored under their
state_dict names (weight, bias, running_mean, running_var, num_batches_tracked), so the five
tensors of `train_step` are exactly the module's state_dict after the step.
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import torch
import torch.nn as nn

from common import case_seed, grads_of, save, setup

GROUP = "batchnorm"
SCRIPT = "batchnorm.py"
C = 3
# Per-channel offsets and scales of the inputs: the batch mean is far from 0, so a missing mean
# subtraction or a wrong variance shows at once.
OFFSET = torch.tensor([3.0, -2.0, 0.5]).view(1, C, 1, 1)
SCALE = torch.tensor([1.5, 0.5, 2.0]).view(1, C, 1, 1)


def make_input(*shape) -> torch.Tensor:
    return OFFSET + SCALE * torch.randn(*shape)


def random_affine(m: nn.BatchNorm2d) -> None:
    """Replace the default γ = 1, β = 0 by random values (γ of both signs, |γ| ≥ 0.5)."""
    with torch.no_grad():
        sign = torch.tensor([1.0, -1.0, 1.0])
        m.weight.copy_(sign * (0.5 + torch.rand(C)))
        m.bias.copy_(torch.randn(C))


def train_step(case: str) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    m = nn.BatchNorm2d(C)
    random_affine(m)
    weight, bias = m.weight.detach().clone(), m.bias.detach().clone()
    x = make_input(4, C, 5, 5).requires_grad_(True)
    grad_output = torch.randn(4, C, 5, 5)
    m.train()
    y = m(x)
    (y * grad_output).sum().backward()
    sd = m.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert torch.equal(sd["weight"], weight) and torch.equal(sd["bias"], bias)
    assert sd["num_batches_tracked"].dtype == torch.int64 and sd["num_batches_tracked"].shape == ()
    tensors = {"input": x, **sd, "grad_output": grad_output, "output": y}
    tensors.update(grads_of([("input", x), ("weight", m.weight), ("bias", m.bias)]))
    cfg = {"op": "batch_norm2d", "num_features": C, "eps": m.eps, "momentum": m.momentum,
           "affine": True, "track_running_stats": True, "mode": "train", "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


# Five train steps with different batch shapes; the last has N·H·W = 2, where the unbiased
# running variance is twice the biased batch variance.
STEP_SHAPES = [(4, C, 5, 5), (2, C, 4, 4), (3, C, 2, 2), (5, C, 3, 3), (2, C, 1, 1)]


def running_stats(case: str) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    eps, momentum = 1e-3, 0.25
    m = nn.BatchNorm2d(C, eps=eps, momentum=momentum)
    random_affine(m)
    tensors = {"weight": m.weight.detach().clone(), "bias": m.bias.detach().clone()}
    m.train()
    with torch.no_grad():
        for k, shape in enumerate(STEP_SHAPES, start=1):
            x = make_input(*shape)
            y = m(x)
            tensors[f"step{k}.input"] = x
            tensors[f"step{k}.output"] = y
            # Buffers are updated in place: copy them now.
            tensors[f"step{k}.running_mean"] = m.running_mean.clone()
            tensors[f"step{k}.running_var"] = m.running_var.clone()
            tensors[f"step{k}.num_batches_tracked"] = m.num_batches_tracked.clone()
        m.eval()
        x = make_input(4, C, 5, 5)
        tensors["eval.input"] = x
        tensors["eval.output"] = m(x)
    assert m.num_batches_tracked.item() == len(STEP_SHAPES)
    cfg = {"op": "batch_norm2d", "num_features": C, "eps": eps, "momentum": momentum,
           "affine": True, "track_running_stats": True, "steps": len(STEP_SHAPES),
           "step_shapes": [list(s) for s in STEP_SHAPES], "mode": "train x5, then eval",
           "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def main() -> None:
    setup()
    print(f"[{GROUP}]")
    train_step("train_step")
    running_stats("running_stats")


if __name__ == "__main__":
    main()
