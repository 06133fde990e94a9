"""Reference fixtures for tests/fixtures/layers/: Linear, Embedding, elementwise activations.

Loss for gradients: L = sum(output * grad_output).
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import torch
import torch.nn as nn

from common import case_seed, grads_of, save, setup

GROUP = "layers"
SCRIPT = "layers.py"


def linear(case: str, bias: bool) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    m = nn.Linear(4, 3, bias=bias)
    x = torch.randn(5, 4, requires_grad=True)
    grad_output = torch.randn(5, 3)
    y = m(x)
    (y * grad_output).sum().backward()
    params = dict(m.named_parameters())
    tensors = {"input": x, **params, "grad_output": grad_output, "output": y}
    tensors.update(grads_of([("input", x), *params.items()]))
    cfg = {"op": "linear", "in_features": 4, "out_features": 3, "bias": bias, "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def embedding(case: str, padding_idx) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    m = nn.Embedding(10, 5, padding_idx=padding_idx)
    # Repeats (3 three times, 7 twice) so gradient rows must accumulate; 0 appears
    # in both cases (in the padding case it is the padding row and gets no gradient).
    ids = torch.tensor([3, 7, 0, 3, 9, 7, 3] if padding_idx is None else [3, 0, 7, 0, 3, 9, 3],
                       dtype=torch.int64)
    grad_output = torch.randn(7, 5)
    y = m(ids)
    (y * grad_output).sum().backward()
    tensors = {"ids": ids, "weight": m.weight, "grad_output": grad_output, "output": y,
               "grad.weight": m.weight.grad}
    cfg = {"op": "embedding", "num_embeddings": 10, "embedding_dim": 5,
           "padding_idx": padding_idx, "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def activation(case: str, fn) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    x = 2.0 * torch.randn(4, 6)
    # Keep clear of the kink / flat region at 0: |x| >= 1e-3 everywhere.
    small = x.abs() < 1e-3
    x = torch.where(small, torch.where(x < 0, -0.5, 0.5), x)
    x.requires_grad_(True)
    grad_output = torch.randn(4, 6)
    y = fn(x)
    (y * grad_output).sum().backward()
    tensors = {"input": x, "grad_output": grad_output, "output": y, "grad.input": x.grad}
    cfg = {"op": case, "input_std": 2.0, "min_abs_input": 1e-3, "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def main() -> None:
    setup()
    print(f"[{GROUP}]")
    linear("linear", bias=True)
    linear("linear_nobias", bias=False)
    embedding("embedding", padding_idx=None)
    embedding("embedding_padding", padding_idx=0)
    activation("tanh", torch.tanh)
    activation("sigmoid", torch.sigmoid)
    activation("relu", torch.relu)


if __name__ == "__main__":
    main()
