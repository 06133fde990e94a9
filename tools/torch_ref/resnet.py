"""Reference fixtures for tests/fixtures/resnet/: whole residual networks.

* `resnet20_a`: the CIFAR ResNet-20 with option-A shortcuts, written here as an nn.Module whose
  state_dict keys are skipgate's (conv1, bn1, layer{s}.{b}.conv1/bn1/conv2/bn2, fc). One train-mode
  forward and backward of the cross-entropy, then SGD steps on the same batch.
* `preact_resnet8_b`: a pre-activation ResNet-8 with option-B (projection) shortcuts and reduced
  widths (8, 16, 32), skipgate's names (conv1, layer{s}.{b}.bn1/conv1/bn2/conv2/downsample.0,
  final_bn, fc). One train-mode forward and backward.
* `torchvision_resnet18`, `torchvision_resnet50`: torchvision's own models in eval mode, their
  state_dict filled from the closed-form formula below (no weight file is stored).

The closed-form state_dict (`formula_state_dict`), written identically in
tests/parity_resnet.rs (`formula_value`):

Tensor k (k = 0, 1, …) in state_dict order — every parameter in named_parameters() order, then
every buffer in named_buffers() order (skipgate: visit_params, then visit_buffers) — with n
elements in row-major order gets, for i = 0 … n−1 and s(i) = sin(0.1·i + k), computed in float64
and rounded to float32 once:

    conv weight (4-d), fan_in = C_in·kh·kw       √(2 / fan_in)·s(i)
    linear weight (2-d), fan_in = in_features    √(1 / fan_in)·s(i)
    BatchNorm weight (1-d)                       1 + 0.2·s(i)
    bias (BatchNorm, linear)                     0.1·s(i)
    running_mean                                 0.1·s(i)
    running_var                                  1 + 0.5·|cos(0.3·i + k)|
    num_batches_tracked                          0

The fixture's config.formula holds the constants: {"phase_step": 0.1, "conv_weight": 2,
"linear_weight": 1, "bn_weight": [1, 0.2], "bias": 0.1, "running_mean": 0.1,
"running_var": [1, 0.5, 0.3]}.
"""

import json
import math
import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import case_seed, grads_of, save, setup

GROUP = "resnet"
SCRIPT = "resnet.py"

# The closed-form state_dict's constants (also stored in the fixture's config).
FORMULA = {
    "phase_step": 0.1,
    "conv_weight": 2.0,
    "linear_weight": 1.0,
    "bn_weight": [1.0, 0.2],
    "bias": 0.1,
    "running_mean": 0.1,
    "running_var": [1.0, 0.5, 0.3],
}


# ---------------------------------------------------------------- networks with skipgate's names
class BasicBlockA(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), option-A shortcut (He et al. 2016,
    CIFAR): identity, or x subsampled by the stride with the extra channels zero-padded, split
    p // 2 in front and p − p // 2 behind."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = x
        if self.stride != 1 or self.pad:
            p = self.pad
            sc = F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, p // 2, p - p // 2))
        return F.relu(out + sc)


class CifarResNetA(nn.Module):
    """CIFAR ResNet-(6n+2): conv1 3×3 → bn1 → relu → layer1..3 (n blocks each, stride 2 at the
    start of layer2 and layer3) → global average pool → fc."""

    def __init__(self, n: int = 3, widths=(16, 32, 64), classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for s, w in enumerate(widths):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlockA(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, classes)
        self.stages = len(widths)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(x.mean((2, 3)))


class PreActBlockB(nn.Module):
    """Pre-activation block (He et al. 2016b) as skipgate builds it: p = relu(bn1(x));
    y = conv2(relu(bn2(conv1(p)))) + shortcut, the shortcut x itself, or — when the shape changes —
    the projection downsample = conv1×1(p) of the pre-activated input (no BatchNorm: the next
    block's BN1 normalises the sum). Nothing after the sum."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        p = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(p))))
        return out + (self.downsample(p) if self.downsample is not None else x)


class PreActResNetB(nn.Module):
    """conv1 3×3 (no BN: the first block normalises) → layer1..3 → relu(final_bn) → pool → fc."""

    def __init__(self, n: int, widths, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        cin = widths[0]
        for s, w in enumerate(widths):
            blocks = []
            for b in range(n):
                blocks.append(PreActBlockB(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.final_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, classes)
        self.stages = len(widths)

    def forward(self, x):
        x = self.conv1(x)
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(F.relu(self.final_bn(x)).mean((2, 3)))


def perturb_batchnorm(model: nn.Module) -> None:
    """Replace BatchNorm's default γ = 1, β = 0, running statistics 0 / 1 by random values, as in
    a network part-way through training (drawn from the seeded generator, module order)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c))
                m.bias.copy_(0.1 * torch.randn(c))
                m.running_mean.copy_(0.1 * torch.randn(c))
                m.running_var.copy_(1 + 0.5 * torch.rand(c))
                m.num_batches_tracked.fill_(3)


def sd_tensors(model: nn.Module, prefix: str = "") -> dict:
    return {f"{prefix}{k}": v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- resnet20_a
SGD = {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 5e-4, "nesterov": False}
STEPS = 5


def step5_keys(model: nn.Module) -> list:
    """The state_dict keys stored after the SGD steps: everything except the six stage-3
    convolution weights (75 % of the parameters), to keep the file under 2.5 MB. Their values
    still shape every stored tensor through the five forward and backward passes."""
    return [k for k in model.state_dict() if not (k.startswith("layer3.") and ".conv" in k)]


def resnet20_a(case: str) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    model = CifarResNetA(n=3)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # torchvision's (and skipgate's) initialisation
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    perturb_batchnorm(model)
    init = sd_tensors(model)
    x = torch.randn(4, 3, 16, 16)
    targets = torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(model.parameters(), foreach=False, **SGD)
    model.train()
    tensors = {**init, "input": x, "targets": targets}
    for k in range(1, STEPS + 1):
        opt.zero_grad()
        xin = x.clone().requires_grad_(k == 1)
        logits = model(xin)
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        if k == 1:
            tensors["logits"] = logits
            tensors["loss"] = loss
            tensors.update(grads_of([("input", xin), *model.named_parameters()]))
        tensors[f"step{k}.loss"] = loss
        opt.step()
    after = model.state_dict()
    kept = step5_keys(model)
    for key in kept:
        tensors[f"step{STEPS}.{key}"] = after[key]
    assert after["bn1.num_batches_tracked"].item() == 3 + STEPS
    cfg = {"model": "resnet20", "shortcut": "A", "blocks_per_stage": [3, 3, 3],
           "widths": [16, 32, 64], "in_channels": 3, "num_classes": 10,
           "input_shape": [4, 3, 16, 16], "mode": "train", "loss": "cross_entropy",
           "optimizer": "SGD", **SGD, "foreach": False, "steps": STEPS, "step_keys": kept,
           "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


# ---------------------------------------------------------------- preact_resnet8_b
def preact_resnet8_b(case: str) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    widths = [8, 16, 32]
    model = PreActResNetB(n=1, widths=widths, classes=5)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    perturb_batchnorm(model)
    init = sd_tensors(model)
    x = torch.randn(3, 3, 8, 8, requires_grad=True)
    targets = torch.randint(0, 5, (3,))
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    tensors = {**init, "input": x, "targets": targets, "logits": logits, "loss": loss}
    tensors.update(grads_of([("input", x), *model.named_parameters()]))
    after = model.state_dict()
    for key, v in after.items():
        if "running" in key or "num_batches" in key:
            tensors[f"step1.{key}"] = v
    cfg = {"model": "preact-resnet8-b", "shortcut": "B", "blocks_per_stage": [1, 1, 1],
           "widths": widths, "in_channels": 3, "num_classes": 5, "input_shape": [3, 3, 8, 8],
           "mode": "train", "loss": "cross_entropy", "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


# ---------------------------------------------------------------- torchvision, closed-form weights
def formula_values(name: str, shape, k: int) -> np.ndarray:
    """The closed-form value of tensor number k (see the module docstring), float64."""
    n = int(np.prod(shape)) if len(shape) else 1
    i = np.arange(n, dtype=np.float64)
    s = np.sin(FORMULA["phase_step"] * i + k)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        a, b, f = FORMULA["running_var"]
        v = a + b * np.abs(np.cos(f * i + k))
    elif leaf == "running_mean":
        v = FORMULA["running_mean"] * s
    elif leaf == "bias":
        v = FORMULA["bias"] * s
    elif leaf == "weight" and len(shape) == 4:
        v = math.sqrt(FORMULA["conv_weight"] / (shape[1] * shape[2] * shape[3])) * s
    elif leaf == "weight" and len(shape) == 2:
        v = math.sqrt(FORMULA["linear_weight"] / shape[1]) * s
    elif leaf == "weight" and len(shape) == 1:
        a, b = FORMULA["bn_weight"]
        v = a + b * s
    else:
        raise AssertionError(f"no formula for {name} {tuple(shape)}")
    return v.reshape(tuple(shape))


def formula_state_dict(model: nn.Module, dtype=torch.float32) -> dict:
    """{name: tensor} for every parameter then every buffer, from the closed form."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    out = {}
    for k, (name, t) in enumerate(named):
        if name.endswith("num_batches_tracked"):
            out[name] = torch.zeros((), dtype=torch.int64)
        else:
            v = torch.from_numpy(formula_values(name, tuple(t.shape), k))
            out[name] = v.to(torch.float32).to(dtype)  # rounded to float32 once
    return out


def torchvision_case(case: str, arch: str) -> None:
    import torchvision

    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    sd = formula_state_dict(model)
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    keys = list(model.state_dict().keys())
    params = [n for n, _ in model.named_parameters()]
    buffers = [n for n, _ in model.named_buffers()]
    assert sorted(keys) == sorted(params + buffers)
    cfg = {"model": arch, "torchvision": torchvision.__version__, "mode": "eval",
           "num_classes": 1000, "input_shape": [2, 3, 64, 64], "formula": FORMULA,
           "state_dict_keys": keys, "parameter_keys": params, "buffer_keys": buffers,
           "seed": seed}
    save(GROUP, case, {"input": x, "logits": logits}, cfg, SCRIPT)


def main() -> None:
    setup()
    print(f"[{GROUP}]")
    resnet20_a("resnet20_a")
    preact_resnet8_b("preact_resnet8_b")
    torchvision_case("torchvision_resnet18", "resnet18")
    torchvision_case("torchvision_resnet50", "resnet50")


if __name__ == "__main__":
    main()
