"""Shared helpers for the PyTorch reference fixture generators.

Every fixture is one safetensors file at tests/fixtures/<group>/<case>.safetensors.
See tests/fixtures/README.md for the conventions the Rust parity tests rely on.
"""

import json
import struct
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def setup() -> None:
    """Pin the numerics: float32 default, one CPU thread, deterministic kernels."""
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def case_seed(group: str, case: str) -> int:
    """Fixed per-case seed: CRC-32 of "<group>/<case>" (stored in the config as "seed")."""
    return zlib.crc32(f"{group}/{case}".encode()) & 0x7FFFFFFF


def _prepare(name: str, t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.is_floating_point():
        if t.dtype != torch.float32:
            raise TypeError(f"{name}: float tensors must be float32, got {t.dtype}")
    elif t.dtype != torch.int64:
        raise TypeError(f"{name}: integer tensors must be int64, got {t.dtype}")
    if not torch.isfinite(t.double()).all():
        raise ValueError(f"{name}: non-finite values")
    # Own, contiguous storage (safetensors refuses shared or strided tensors).
    return t.clone().contiguous()


def save(group: str, case: str, tensors: dict, cfg: dict, script: str) -> Path:
    """Write one fixture with the standard metadata (config, generator, torch)."""
    out = {k: _prepare(k, v) for k, v in tensors.items()}
    path = FIXTURES / group / f"{case}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "config": json.dumps(cfg, sort_keys=True),
        "generator": f"tools/torch_ref/{script}",
        "torch": torch.__version__,
    }
    save_file(out, str(path), metadata=metadata)
    _canonical_header(path)
    size = path.stat().st_size
    print(f"  {path.relative_to(REPO_ROOT)}  ({len(out)} tensors, {size} bytes)")
    return path


def _canonical_header(path: Path) -> None:
    """Sort the __metadata__ keys in the header so regeneration is byte-for-byte stable.

    save_file writes the metadata map in hash order, which changes from run to run. Only the
    order of keys inside __metadata__ changes here: same header length, same tensor offsets.
    """
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header_bytes = raw[8 : 8 + n]
    header = json.loads(header_bytes)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:
        raise RuntimeError(f"{path}: canonical header is longer than the original")
    text = text + b" " * (n - len(text))  # safetensors pads headers with spaces
    path.write_bytes(raw[:8] + text + raw[8 + n :])


def grads_of(named) -> dict:
    """{"grad.<name>": tensor.grad} for (name, tensor) pairs that require grad."""
    out = {}
    for name, t in named:
        if t.grad is None:
            raise RuntimeError(f"no gradient for {name}")
        out[f"grad.{name}"] = t.grad
    return out
