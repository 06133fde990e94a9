"""Reference fixtures for tests/fixtures/optim/: 10 steps of SGD / Adam / AdamW on nn.Linear(4, 3).

Each step: zero_grad; loss = mse_loss(model(x), y); backward;
total = clip_grad_norm_(params, max_norm) (norm before clipping); opt.step().
All cases share the same seed, so init.*, x and y are identical across the four files.
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import case_seed, save, setup

GROUP = "optim"
SCRIPT = "optim.py"
STEPS = 10
SEED = case_seed(GROUP, "shared")
CLIP_EPS = 1e-6  # clip_grad_norm_: coef = max_norm / (total + 1e-6), clamped to <= 1


def problem():
    torch.manual_seed(SEED)
    model = nn.Linear(4, 3)  # default init, drawn first
    x = torch.randn(8, 4)
    w_true = 2.0 * torch.randn(3, 4)
    y = x @ w_true.T + 0.5 + 0.1 * torch.randn(8, 3)
    return model, x, y


def make_opt(params, hp):
    if hp["optimizer"] == "SGD":
        return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"],
                               dampening=hp["dampening"], weight_decay=hp["weight_decay"],
                               nesterov=hp["nesterov"], maximize=False, foreach=False)
    if hp["optimizer"] == "Adam":
        return torch.optim.Adam(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                                weight_decay=hp["weight_decay"], amsgrad=hp["amsgrad"],
                                maximize=False, foreach=False)
    if hp["optimizer"] == "AdamW":
        return torch.optim.AdamW(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                                 weight_decay=hp["weight_decay"], amsgrad=hp["amsgrad"],
                                 maximize=False, foreach=False)
    raise ValueError(hp["optimizer"])


def run(case: str, hp: dict, max_norm: float) -> None:
    model, x, y = problem()
    # Snapshot with clone(): the parameters are updated in place by opt.step().
    tensors = {"init.weight": model.weight.detach().clone(),
               "init.bias": model.bias.detach().clone(), "x": x, "y": y}
    opt = make_opt(model.parameters(), hp)
    clipped = []
    norms = []
    for k in range(1, STEPS + 1):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, norm_type=2.0,
                                               foreach=False)
        if max_norm / (total.item() + CLIP_EPS) < 1.0:
            clipped.append(k)
        norms.append(round(total.item(), 4))
        opt.step()
        tensors[f"step{k}.weight"] = model.weight.detach().clone()
        tensors[f"step{k}.bias"] = model.bias.detach().clone()
        tensors[f"step{k}.grad_norm"] = total
        tensors[f"step{k}.loss"] = loss
    print(f"  {case}: max_norm={max_norm} grad norms={norms} clipped steps={clipped}")
    if not clipped or len(clipped) == STEPS:
        raise RuntimeError(f"{case}: clipping must trigger on some steps but not all: {clipped}")
    cfg = {
        **hp,
        "model": "Linear(4, 3)",
        "loss": "mse_loss(reduction=mean)",
        "steps": STEPS,
        "max_norm": max_norm,
        "norm_type": 2.0,
        "clip_eps": CLIP_EPS,
        "clipped_steps": clipped,
        "maximize": False,
        "foreach": False,
        "seed": SEED,
    }
    save(GROUP, case, tensors, cfg, SCRIPT)


SGD_BASE = {"optimizer": "SGD", "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
ADAM_BASE = {"betas": [0.9, 0.999], "eps": 1e-8, "amsgrad": False}

CASES = [
    ("sgd_momentum", {**SGD_BASE, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}, 4.0),
    ("sgd_nesterov", {**SGD_BASE, "lr": 0.1, "momentum": 0.9, "nesterov": True}, 4.0),
    ("adam", {"optimizer": "Adam", **ADAM_BASE, "lr": 0.05, "weight_decay": 1e-2}, 6.6),
    ("adamw", {"optimizer": "AdamW", **ADAM_BASE, "lr": 0.05, "weight_decay": 0.1}, 6.6),
]


def main() -> None:
    setup()
    print(f"[{GROUP}]")
    for case, hp, max_norm in CASES:
        run(case, hp, max_norm)


if __name__ == "__main__":
    main()
