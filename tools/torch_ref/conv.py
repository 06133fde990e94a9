"""Reference fixtures for tests/fixtures/conv/: Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1).

Loss for gradients: L = sum(output * grad_output).
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import torch
import torch.nn as nn

from common import case_seed, grads_of, save, setup

GROUP = "conv"
SCRIPT = "conv.py"


def pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def conv(case: str, cin: int, cout: int, k, input_shape, stride=1, padding=0, dilation=1,
         groups=1, bias=True) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    m = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                  groups=groups, bias=bias)
    x = torch.randn(*input_shape, requires_grad=True)
    y = m(x)
    grad_output = torch.randn(*y.shape)
    (y * grad_output).sum().backward()
    params = dict(m.named_parameters())
    tensors = {"input": x, **params, "grad_output": grad_output, "output": y}
    tensors.update(grads_of([("input", x), *params.items()]))
    cfg = {"op": "conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": pair(k),
           "stride": pair(stride), "padding": pair(padding), "dilation": pair(dilation),
           "groups": groups, "bias": bias, "input_shape": list(input_shape), "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def pool(case: str, op: str, input_shape, kernel=None, stride=None, padding=0) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    x = torch.randn(*input_shape, requires_grad=True)
    cfg = {"op": op, "input_shape": list(input_shape), "seed": seed}
    if op == "maxpool2d":
        m = nn.MaxPool2d(kernel, stride=stride, padding=padding)
    elif op == "avgpool2d":
        m = nn.AvgPool2d(kernel, stride=stride, padding=padding)  # count_include_pad=True
        cfg["count_include_pad"] = True
    else:
        m = nn.AdaptiveAvgPool2d(1)
        cfg["output_size"] = [1, 1]
    if op != "adaptive_avgpool2d":
        cfg.update({"kernel_size": pair(kernel), "stride": pair(stride if stride else kernel),
                    "padding": pair(padding), "ceil_mode": False})
    y = m(x)
    grad_output = torch.randn(*y.shape)
    (y * grad_output).sum().backward()
    tensors = {"input": x, "grad_output": grad_output, "output": y, "grad.input": x.grad}
    save(GROUP, case, tensors, cfg, SCRIPT)


def main() -> None:
    setup()
    print(f"[{GROUP}]")
    conv("conv3x3_s1_p1", 4, 6, 3, (2, 4, 7, 9), padding=1)
    conv("conv3x3_s2_p1_nobias", 4, 6, 3, (2, 4, 9, 8), stride=2, padding=1, bias=False)
    conv("conv1x1_s2_nobias", 4, 8, 1, (2, 4, 8, 7), stride=2, bias=False)
    conv("conv1x1_s1", 6, 5, 1, (2, 6, 5, 4))
    conv("conv7x7_s2_p3_nobias", 3, 8, 7, (2, 3, 16, 15), stride=2, padding=3, bias=False)
    conv("conv3x3_groups2", 4, 6, 3, (2, 4, 6, 7), padding=1, groups=2)
    conv("conv3x3_depthwise", 4, 4, 3, (2, 4, 6, 6), stride=2, padding=1, groups=4)
    conv("conv3x3_dilation2", 3, 4, 3, (2, 3, 9, 9), padding=2, dilation=2)
    conv("conv_rect", 3, 4, (3, 2), (2, 3, 7, 6), stride=(2, 1), padding=(1, 0),
         dilation=(1, 2))
    pool("maxpool3x3_s2_p1", "maxpool2d", (2, 3, 9, 8), kernel=3, stride=2, padding=1)
    pool("maxpool2x2", "maxpool2d", (2, 3, 6, 7), kernel=2)
    pool("avgpool3x3_s2_p1", "avgpool2d", (2, 3, 8, 7), kernel=3, stride=2, padding=1)
    pool("avgpool2x2", "avgpool2d", (2, 3, 6, 6), kernel=2)
    pool("adaptive_avgpool1", "adaptive_avgpool2d", (2, 5, 4, 3))


if __name__ == "__main__":
    main()
