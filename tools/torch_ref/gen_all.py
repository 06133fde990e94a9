"""Regenerate every fixture under tests/fixtures/ (then run check.py to re-verify them).

    python3 -m venv .venv-torch
    .venv-torch/bin/pip install torch numpy safetensors torchvision   # torchvision: resnet.py
    .venv-torch/bin/python tools/torch_ref/gen_all.py
    .venv-torch/bin/python tools/torch_ref/check.py
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batchnorm  # noqa: E402
import conv  # noqa: E402
import gradflow  # noqa: E402
import layers  # noqa: E402
import loss  # noqa: E402
import optim  # noqa: E402
import resnet  # noqa: E402
import rnn  # noqa: E402


def main() -> None:
    for module in (layers, loss, rnn, optim, batchnorm, conv, resnet, gradflow):
        module.main()


if __name__ == "__main__":
    main()
