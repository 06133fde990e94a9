"""Re-verify the committed fixtures independently of the generators.

Reloads every tests/fixtures/**.safetensors and checks
  * the metadata (config / generator / torch) and the dtype / contiguity conventions;
  * layers, losses: closed-form float64 formulas (numpy) for forward and gradients;
  * rnn: a hand-written float64 recurrence (no nn.RNN/LSTM/GRU; explicit gate order, explicit
    masking for `lengths`), differentiated with autograd, against every stored output and gradient;
  * optim: hand-written float64 SGD / Adam / AdamW updates with global-norm clipping.
  * batchnorm: the per-channel normalisation, running-statistics update and backward formulas
    in float64 (numpy), without nn.BatchNorm2d.
  * optim: hand-written float64 SGD / Adam / AdamW updates with global-norm clipping;
  * conv: a hand-written float64 convolution / pooling (padding, strided slices, einsum),
    differentiated with autograd.
  * resnet: whole networks rebuilt in float64 from the stored state_dict with those convolution
    and pooling helpers, BatchNorm, option-A padding, cross-entropy and SGD written out
    (autograd for the gradients); the torchvision cases from the closed-form state_dict
    (re-implemented here) and torchvision's key lists.
Exits non-zero on the first mismatch.
"""

import json
import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, REPO_ROOT  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def load(path: Path):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def close(name: str, got, want, rtol=RTOL, atol=ATOL) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != {want.shape}")
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        err = np.max(np.abs(got - want))
        raise AssertionError(f"{name}: max abs err {err:.3e}")
    return float(np.max(np.abs(got - want))) if got.size else 0.0


def np64(t: torch.Tensor) -> np.ndarray:
    return t.double().numpy()


# ---------------------------------------------------------------- structure
def check_structure(path: Path, meta: dict, t: dict) -> dict:
    for key in ("config", "generator", "torch"):
        assert key in meta, f"{path}: missing metadata {key}"
    gen = REPO_ROOT / meta["generator"]
    assert gen.is_file(), f"{path}: generator {meta['generator']} not found"
    for k, v in t.items():
        assert v.dtype in (torch.float32, torch.int64), f"{path}:{k} dtype {v.dtype}"
        assert v.is_contiguous()
    return json.loads(meta["config"])


# ---------------------------------------------------------------- layers
def check_layers(case: str, cfg: dict, t: dict) -> None:
    if cfg["op"] == "linear":
        x, w, go = np64(t["input"]), np64(t["weight"]), np64(t["grad_output"])
        b = np64(t["bias"]) if cfg["bias"] else np.zeros(w.shape[0])
        assert ("bias" in t) == cfg["bias"] and ("grad.bias" in t) == cfg["bias"]
        close("output", t["output"], x @ w.T + b)
        close("grad.input", t["grad.input"], go @ w)
        close("grad.weight", t["grad.weight"], go.T @ x)
        if cfg["bias"]:
            close("grad.bias", t["grad.bias"], go.sum(0))
    elif cfg["op"] == "embedding":
        ids, w, go = t["ids"].numpy(), np64(t["weight"]), np64(t["grad_output"])
        assert len(np.unique(ids)) < len(ids), "ids must contain repeats"
        close("output", t["output"], w[ids])
        gw = np.zeros_like(w)
        for i, row in zip(ids, go):
            if cfg["padding_idx"] is None or i != cfg["padding_idx"]:
                gw[i] += row
        close("grad.weight", t["grad.weight"], gw)
        if cfg["padding_idx"] is not None:
            assert (ids == cfg["padding_idx"]).any()
            assert not w[cfg["padding_idx"]].any(), "padding row is initialised to zero"
    else:
        x, go = np64(t["input"]), np64(t["grad_output"])
        assert np.abs(x).min() >= 1e-3
        if case == "tanh":
            y = np.tanh(x)
            d = 1 - y * y
        elif case == "sigmoid":
            y = 1 / (1 + np.exp(-x))
            d = y * (1 - y)
        else:
            y = np.maximum(x, 0)
            d = (x > 0).astype(np.float64)
        close("output", t["output"], y)
        close("grad.input", t["grad.input"], go * d)


# ---------------------------------------------------------------- loss
def check_loss(case: str, cfg: dict, t: dict) -> None:
    if cfg["op"] == "mse":
        x, y = np64(t["input"]), np64(t["target"])
        close("loss", t["loss"], np.mean((x - y) ** 2))
        close("grad.input", t["grad.input"], 2 * (x - y) / x.size)
        return
    z, tg = np64(t["logits"]), t["targets"].numpy()
    assert t["loss"].shape == ()
    ignore = cfg["ignore_index"]
    keep = np.ones(len(tg), bool) if ignore is None else tg != ignore
    if ignore is not None:
        assert (~keep).any(), "ignore case must contain ignored targets"
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    p = np.exp(z - lse[:, None])
    rows = np.nonzero(keep)[0]
    n = len(rows)
    loss = np.sum(lse[rows] - z[rows, tg[rows]]) / n
    grad = np.zeros_like(z)
    grad[rows] = p[rows]
    grad[rows, tg[rows]] -= 1
    grad /= n
    close("loss", t["loss"], loss, rtol=1e-6)
    close("grad.logits", t["grad.logits"], grad)


# ---------------------------------------------------------------- rnn
def cell_step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    gi = x @ w_ih.T + b_ih
    gh = h @ w_hh.T + b_hh
    if mode == "RNN_TANH":
        return torch.tanh(gi + gh), None, gi + gh
    if mode == "RNN_RELU":
        return torch.relu(gi + gh), None, gi + gh
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=1)  # PyTorch gate order i, f, g, o
        c1 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c1), c1, None
    if mode == "GRU":
        ir, iz, in_ = gi.chunk(3, dim=1)  # PyTorch gate order r, z, n
        hr, hz, hn = gh.chunk(3, dim=1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)  # reset applied after the recurrent matmul (incl. bias)
        return (1 - z) * n + z * h, None, None
    raise ValueError(mode)


def leaf(t):
    return t.double().clone().requires_grad_(True)


def check_rnn(case: str, cfg: dict, t: dict) -> float:
    """Returns the smallest |pre-activation| seen (relevant for RNN_RELU)."""
    mode, H = cfg["mode"], cfg["hidden_size"]
    lstm = mode == "LSTM"
    params = {k: leaf(v) for k, v in t.items() if k.startswith(("weight_", "bias_"))}
    min_pre = [float("inf")]

    def step(x, h, c, sfx):
        p = [params[f"{n}{sfx}"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h1, c1, pre = cell_step(mode, x, h, c, *p)
        if pre is not None:
            min_pre[0] = min(min_pre[0], pre.detach().abs().min().item())
        return h1, c1

    if cfg.get("cell"):
        x, hx = leaf(t["input"]), leaf(t["hx"])
        cx = leaf(t["cx"]) if lstm else None
        h1, c1 = step(x, hx, cx, "")
        loss = (h1 * t["grad_h1"].double()).sum()
        close("h1", t["h1"], h1.detach())
        leaves = {"input": x, "hx": hx}
        if lstm:
            loss = loss + (c1 * t["grad_c1"].double()).sum()
            close("c1", t["c1"], c1.detach())
            leaves["cx"] = cx
    else:
        L, D = cfg["num_layers"], 2 if cfg["bidirectional"] else 1
        bf = cfg["batch_first"]
        x_in = leaf(t["input"])
        x = x_in.transpose(0, 1) if bf else x_in  # (T, B, I)
        T, B = x.shape[0], x.shape[1]
        lengths = t["lengths"].tolist() if cfg["has_lengths"] else [T] * B
        assert ("lengths" in t) == cfg["has_lengths"] and ("h0" in t) == cfg["has_h0"]
        mask = torch.tensor([[tt < n for n in lengths] for tt in range(T)])[..., None]  # (T, B, 1)
        leaves = {"input": x_in}
        if cfg["has_h0"]:
            h0 = leaves["h0"] = leaf(t["h0"])
            if lstm:
                c0 = leaves["c0"] = leaf(t["c0"])
        else:
            h0 = torch.zeros(L * D, B, H, dtype=torch.float64)
        if not lstm or not cfg["has_h0"]:
            c0 = torch.zeros(L * D, B, H, dtype=torch.float64)
        layer_in, h_n, c_n = x, [], []
        zero = torch.zeros(B, H, dtype=torch.float64)
        for layer in range(L):
            outs = []
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                h, c = h0[layer * D + d], c0[layer * D + d]
                out = [None] * T
                for tt in range(T) if d == 0 else reversed(range(T)):
                    h1, c1 = step(layer_in[tt], h, c, sfx)
                    m = mask[tt]
                    out[tt] = torch.where(m, h1, zero)  # padded positions: output 0
                    h = torch.where(m, h1, h)  # state frozen outside the valid range
                    if lstm:
                        c = torch.where(m, c1, c)
                outs.append(torch.stack(out))
                h_n.append(h)
                c_n.append(c)
            layer_in = torch.cat(outs, dim=2)
        output = layer_in.transpose(0, 1) if bf else layer_in
        h_n = torch.stack(h_n)
        close("output", t["output"], output.detach())
        close("h_n", t["h_n"], h_n.detach())
        loss = (output * t["grad_output"].double()).sum() + (h_n * t["grad_h_n"].double()).sum()
        if lstm:
            c_n = torch.stack(c_n)
            close("c_n", t["c_n"], c_n.detach())
            loss = loss + (c_n * t["grad_c_n"].double()).sum()
        if cfg["has_lengths"]:
            pad = ~mask[..., 0]
            pad = pad.T if bf else pad
            assert (t["output"][pad] == 0).all() and (t["grad.input"][pad] == 0).all()
    loss.backward()
    leaves.update(params)
    expected = {f"grad.{k}" for k in leaves}
    stored = {k for k in t if k.startswith("grad.")}
    assert expected == stored, f"grad keys differ: {sorted(expected ^ stored)}"
    for k, v in leaves.items():
        close(f"grad.{k}", t[f"grad.{k}"], v.grad)
    return min_pre[0]


# ---------------------------------------------------------------- optim
def check_optim(case: str, cfg: dict, t: dict) -> None:
    x, y = np64(t["x"]), np64(t["y"])
    p = {"weight": np64(t["init.weight"]), "bias": np64(t["init.bias"])}
    buf, m, v = {}, {}, {}
    clipped = []
    for k in range(1, cfg["steps"] + 1):
        r = x @ p["weight"].T + p["bias"] - y
        loss = np.mean(r * r)
        g = {"weight": 2 * r.T @ x / r.size, "bias": 2 * r.sum(0) / r.size}
        total = np.sqrt(sum(np.sum(gi * gi) for gi in g.values()))
        coef = cfg["max_norm"] / (total + cfg["clip_eps"])
        if coef < 1:
            clipped.append(k)
            g = {n: gi * coef for n, gi in g.items()}
        lr, wd = cfg["lr"], cfg["weight_decay"]
        for n in p:
            gi = g[n]
            if cfg["optimizer"] == "SGD":
                gi = gi + wd * p[n]
                buf[n] = gi.copy() if k == 1 else cfg["momentum"] * buf[n] + (1 - cfg["dampening"]) * gi
                gi = gi + cfg["momentum"] * buf[n] if cfg["nesterov"] else buf[n]
                p[n] = p[n] - lr * gi
            else:
                b1, b2 = cfg["betas"]
                if cfg["optimizer"] == "AdamW":
                    p[n] = p[n] * (1 - lr * wd)
                else:
                    gi = gi + wd * p[n]
                m[n] = b1 * m.get(n, 0) + (1 - b1) * gi
                v[n] = b2 * v.get(n, 0) + (1 - b2) * gi * gi
                denom = np.sqrt(v[n]) / np.sqrt(1 - b2**k) + cfg["eps"]
                p[n] = p[n] - lr / (1 - b1**k) * m[n] / denom
        close(f"step{k}.loss", t[f"step{k}.loss"], loss)
        close(f"step{k}.grad_norm", t[f"step{k}.grad_norm"], total)
        close(f"step{k}.weight", t[f"step{k}.weight"], p["weight"])
        close(f"step{k}.bias", t[f"step{k}.bias"], p["bias"])
    assert clipped == cfg["clipped_steps"], (clipped, cfg["clipped_steps"])


# ---------------------------------------------------------------- batchnorm
def bn_train64(x, w, b, eps):
    """Train-mode batch norm over axes (N, H, W): y, x_hat, inv_std, batch mean, biased var."""
    mean = x.mean(axis=(0, 2, 3))
    var = ((x - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean[None, :, None, None]) * inv_std[None, :, None, None]
    return w[None, :, None, None] * x_hat + b[None, :, None, None], x_hat, inv_std, mean, var


def check_batchnorm(case: str, cfg: dict, t: dict) -> None:
    eps, mom = cfg["eps"], cfg["momentum"]
    w, b = np64(t["weight"]), np64(t["bias"])
    rm, rv = np.zeros(cfg["num_features"]), np.ones(cfg["num_features"])
    if case == "train_step":
        x, go = np64(t["input"]), np64(t["grad_output"])
        y, x_hat, inv_std, mean, var = bn_train64(x, w, b, eps)
        n = x.size // x.shape[1]
        close("output", t["output"], y)
        close("running_mean", t["running_mean"], (1 - mom) * rm + mom * mean)
        close("running_var", t["running_var"], (1 - mom) * rv + mom * var * n / (n - 1))
        assert t["num_batches_tracked"].shape == () and t["num_batches_tracked"].item() == 1
        s_dy = go.sum(axis=(0, 2, 3))
        s_dyxh = (go * x_hat).sum(axis=(0, 2, 3))
        c4 = lambda v: v[None, :, None, None]  # noqa: E731
        dx = c4(w * inv_std / n) * (n * go - c4(s_dy) - x_hat * c4(s_dyxh))
        close("grad.input", t["grad.input"], dx)
        close("grad.weight", t["grad.weight"], s_dyxh)
        close("grad.bias", t["grad.bias"], s_dy)
        return
    for k in range(1, cfg["steps"] + 1):
        x = np64(t[f"step{k}.input"])
        assert list(x.shape) == cfg["step_shapes"][k - 1]
        y, _, _, mean, var = bn_train64(x, w, b, eps)
        n = x.size // x.shape[1]
        rm = (1 - mom) * rm + mom * mean
        rv = (1 - mom) * rv + mom * var * n / (n - 1)
        close(f"step{k}.output", t[f"step{k}.output"], y)
        close(f"step{k}.running_mean", t[f"step{k}.running_mean"], rm)
        close(f"step{k}.running_var", t[f"step{k}.running_var"], rv)
        assert t[f"step{k}.num_batches_tracked"].item() == k
    x = np64(t["eval.input"])
    c4 = lambda v: v[None, :, None, None]  # noqa: E731
    close("eval.output", t["eval.output"], c4(w) * (x - c4(rm)) / np.sqrt(c4(rv) + eps) + c4(b))
# ---------------------------------------------------------------- conv
def windows(xp: torch.Tensor, k, s, d, out_hw):
    """Yields ((i, j), xp[:, :, i·dh + oh·sh, j·dw + ow·sw]) for every kernel tap: (N, C, OH, OW)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = k, s, d, out_hw
    for i in range(kh):
        for j in range(kw):
            yield (i, j), xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                             j * dw : j * dw + sw * (ow - 1) + 1 : sw]


def padded(x: torch.Tensor, p, value: float) -> torch.Tensor:
    n, c, h, w = x.shape
    xp = torch.full((n, c, h + 2 * p[0], w + 2 * p[1]), value, dtype=x.dtype)
    xp[:, :, p[0] : p[0] + h, p[1] : p[1] + w] = x
    return xp


def check_conv(case: str, cfg: dict, t: dict) -> None:
    """Hand-written float64 convolution / pooling (padding + strided slices + einsum, no
    F.conv2d or pooling kernels), differentiated with autograd."""
    x = leaf(t["input"])
    assert list(x.shape) == cfg["input_shape"]
    leaves = {"input": x}
    op = cfg["op"]
    if op == "adaptive_avgpool2d":
        y = x.mean(dim=(2, 3), keepdim=True)
    else:
        k, s, p = cfg["kernel_size"], cfg["stride"], cfg["padding"]
        d = cfg.get("dilation", [1, 1])
        n, c, h, w = x.shape
        oh = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        ow = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        if op == "conv2d":
            wt = leaves["weight"] = leaf(t["weight"])
            g = cfg["groups"]
            cout = cfg["out_channels"]
            assert list(wt.shape) == [cout, c // g, *k]
            assert ("bias" in t) == cfg["bias"]
            cg, og = c // g, cout // g
            y = torch.zeros(n, cout, oh, ow, dtype=torch.float64)
            for (i, j), patch in windows(padded(x, p, 0.0), k, s, d, (oh, ow)):
                parts = [torch.einsum("nchw,oc->nohw", patch[:, gi * cg : (gi + 1) * cg],
                                      wt[gi * og : (gi + 1) * og, :, i, j]) for gi in range(g)]
                y = y + torch.cat(parts, dim=1)
            if cfg["bias"]:
                b = leaves["bias"] = leaf(t["bias"])
                y = y + b[None, :, None, None]
        elif op == "maxpool2d":
            assert 2 * p[0] <= k[0] and 2 * p[1] <= k[1]
            taps = [v for _, v in windows(padded(x, p, float("-inf")), k, s, d, (oh, ow))]
            y = torch.stack(taps).max(dim=0).values
            # No ties among the values that are a window's maximum (gradient routing is unique).
            top2 = torch.stack(taps).topk(2, dim=0).values
            assert (top2[0] > top2[1]).all(), "tied window maximum"
        elif op == "avgpool2d":
            assert cfg["count_include_pad"]
            taps = [v for _, v in windows(padded(x, p, 0.0), k, s, d, (oh, ow))]
            y = torch.stack(taps).sum(dim=0) / (k[0] * k[1])
        else:
            raise AssertionError(f"unknown op {op}")
    close("output", t["output"], y.detach())
    (y * t["grad_output"].double()).sum().backward()
    expected = {f"grad.{name}" for name in leaves}
    stored = {key for key in t if key.startswith("grad.")}
    assert expected == stored, f"grad keys differ: {sorted(expected ^ stored)}"
    for name, v in leaves.items():
        close(f"grad.{name}", t[f"grad.{name}"], v.grad)


# ---------------------------------------------------------------- resnet
# Whole networks re-built in float64 from the stored state_dict alone: convolutions and pooling
# from the einsum / strided-slice helpers above (no F.conv2d, no nn modules), BatchNorm, option-A
# padding, cross-entropy and SGD written out; gradients by autograd.
class Net64:
    """Functional float64 network over a state_dict; `kind` is "cifar_a", "preact_b" or
    "torchvision". Records the smallest |ReLU input| seen (rounding could flip a ReLU there)."""

    def __init__(self, sd: dict, kind: str, eps: float = 1e-5, momentum: float = 0.1):
        self.sd, self.kind, self.eps, self.mom = sd, kind, eps, momentum
        # (stage, block) of every "layer{s}.{b}.…" key, in order.
        self.blocks = sorted({(int(k.split(".")[0][len("layer"):]), int(k.split(".")[1]))
                              for k in sd if k.startswith("layer")})
        self.min_relu = float("inf")
        self.new_stats = {}

    def relu(self, x):
        self.min_relu = min(self.min_relu, x.detach().abs().min().item())
        return torch.clamp(x, min=0.0)

    def conv(self, x, key, stride, pad):
        w = self.sd[key]
        oh = (x.shape[2] + 2 * pad - w.shape[2]) // stride + 1
        ow = (x.shape[3] + 2 * pad - w.shape[3]) // stride + 1
        y = 0
        for (i, j), patch in windows(padded(x, (pad, pad), 0.0), w.shape[2:], (stride, stride),
                                     (1, 1), (oh, ow)):
            y = y + torch.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
        return y

    def bn(self, x, p, train):
        c4 = lambda v: v[None, :, None, None]  # noqa: E731
        sd = self.sd
        if train:
            mean = x.mean(dim=(0, 2, 3))
            var = ((x - c4(mean)) ** 2).mean(dim=(0, 2, 3))
            n = x.numel() // x.shape[1]
            m = self.mom
            self.new_stats[f"{p}.running_mean"] = ((1 - m) * sd[f"{p}.running_mean"]
                                                  + m * mean.detach())
            self.new_stats[f"{p}.running_var"] = ((1 - m) * sd[f"{p}.running_var"]
                                                 + m * var.detach() * n / (n - 1))
            self.new_stats[f"{p}.num_batches_tracked"] = sd[f"{p}.num_batches_tracked"] + 1
        else:
            mean, var = sd[f"{p}.running_mean"], sd[f"{p}.running_var"]
        x_hat = (x - c4(mean)) / torch.sqrt(c4(var) + self.eps)
        return x_hat * c4(sd[f"{p}.weight"]) + c4(sd[f"{p}.bias"])

    def maxpool(self, x):  # 3×3, stride 2, padding 1
        oh, ow = (x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1
        xp = padded(x, (1, 1), float("-inf"))
        taps = [v for _, v in windows(xp, (3, 3), (2, 2), (1, 1), (oh, ow))]
        return torch.stack(taps).max(dim=0).values

    def block(self, x, p, stride, train):
        sd = self.sd
        if self.kind == "preact_b":
            pre = self.relu(self.bn(x, f"{p}.bn1", train))
            out = self.conv(pre, f"{p}.conv1.weight", stride, 1)
            out = self.conv(self.relu(self.bn(out, f"{p}.bn2", train)), f"{p}.conv2.weight", 1, 1)
            if f"{p}.downsample.0.weight" in sd:
                # Pre-activation projection: a 1×1 convolution of p, no BatchNorm.
                return out + self.conv(pre, f"{p}.downsample.0.weight", stride, 0)
            return out + x
        if f"{p}.conv3.weight" in sd:  # bottleneck, stride on the 3×3
            layers = [("1", 1, 0), ("2", stride, 1), ("3", 1, 0)]
        else:
            layers = [("1", stride, 1), ("2", 1, 1)]
        out = x
        for j, (i, st, pad) in enumerate(layers):
            out = self.bn(self.conv(out, f"{p}.conv{i}.weight", st, pad), f"{p}.bn{i}", train)
            if j < len(layers) - 1:
                out = self.relu(out)
        cout = out.shape[1]
        if f"{p}.downsample.0.weight" in sd:
            sc = self.conv(x, f"{p}.downsample.0.weight", stride, 0)
            sc = self.bn(sc, f"{p}.downsample.1", train)
        elif self.kind == "cifar_a" and (stride != 1 or cout != x.shape[1]):
            sub = x[:, :, ::stride, ::stride]
            pad = cout - x.shape[1]
            n, _, h, w = sub.shape
            sc = torch.cat([torch.zeros(n, pad // 2, h, w, dtype=sub.dtype), sub,
                            torch.zeros(n, pad - pad // 2, h, w, dtype=sub.dtype)], dim=1)
        else:
            sc = x
        return self.relu(out + sc)

    def forward(self, x, train: bool):
        self.new_stats = {}
        if self.kind == "torchvision":
            x = self.maxpool(self.relu(self.bn(self.conv(x, "conv1.weight", 2, 3), "bn1", train)))
        elif self.kind == "cifar_a":
            x = self.relu(self.bn(self.conv(x, "conv1.weight", 1, 1), "bn1", train))
        else:
            x = self.conv(x, "conv1.weight", 1, 1)
        for s, b in self.blocks:
            x = self.block(x, f"layer{s}.{b}", 2 if s > 1 and b == 0 else 1, train)
        if self.kind == "preact_b":
            x = self.relu(self.bn(x, "final_bn", train))
        pooled = x.mean(dim=(2, 3))
        return pooled @ self.sd["fc.weight"].T + self.sd["fc.bias"]


def cross_entropy64(z, targets):
    m = z.max(dim=1, keepdim=True).values.detach()
    lse = m[:, 0] + torch.log(torch.exp(z - m).sum(dim=1))
    return (lse - z[torch.arange(len(targets)), targets]).mean()


def state_of(t: dict, prefixes=("grad.", "step")) -> dict:
    """The fixture's state_dict: float64 leaves (parameters, requiring grad) and buffers."""
    sd = {}
    for k, v in t.items():
        if k in ("input", "targets", "logits", "loss") or k.startswith(prefixes):
            continue
        if v.dtype == torch.int64:
            sd[k] = v.clone()
        elif k.endswith(("running_mean", "running_var")):
            sd[k] = v.double()
        else:
            sd[k] = leaf(v)
    return sd


def check_resnet_train(case: str, cfg: dict, t: dict) -> str:
    sd = state_of(t)
    params = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    kind = "cifar_a" if cfg["shortcut"] == "A" else "preact_b"
    net = Net64(sd, kind)
    x = leaf(t["input"])
    targets = t["targets"]
    z = net.forward(x, True)
    loss = cross_entropy64(z, targets)
    loss.backward()
    close("logits", t["logits"], z.detach())
    close("loss", t["loss"], loss.detach())
    expected = {f"grad.{k}" for k in params} | {"grad.input"}
    stored = {k for k in t if k.startswith("grad.")}
    assert expected == stored, f"grad keys differ: {sorted(expected ^ stored)}"
    close("grad.input", t["grad.input"], x.grad)
    worst = 0.0
    for k, p in params.items():
        worst = max(worst, close(f"grad.{k}", t[f"grad.{k}"], p.grad))
    min_relu = net.min_relu
    if "steps" not in cfg:
        for k, v in net.new_stats.items():
            got = t[f"step1.{k}"]
            if k.endswith("num_batches_tracked"):
                assert got.item() == v.item() == 4, (k, got, v)
            else:
                close(f"step1.{k}", got, v)
        return f"  (min |relu input| = {min_relu:.2e})"
    # SGD, as torch.optim.SGD applies it (see check_optim), for cfg["steps"] steps on the batch.
    lr, mu, wd, damp = cfg["lr"], cfg["momentum"], cfg["weight_decay"], cfg["dampening"]
    assert not cfg["nesterov"]
    buf = {}
    for k in range(1, cfg["steps"] + 1):
        if k > 1:
            for p in params.values():
                p.grad = None
            z = net.forward(t["input"].double(), True)
            loss = cross_entropy64(z, targets)
            loss.backward()
            min_relu = min(min_relu, net.min_relu)
        close(f"step{k}.loss", t[f"step{k}.loss"], loss.detach())
        with torch.no_grad():
            for name, p in params.items():
                g = p.grad + wd * p
                buf[name] = g.clone() if k == 1 else mu * buf[name] + (1 - damp) * g
                p -= lr * buf[name]
            for name, v in net.new_stats.items():
                sd[name] = v
    stored = sorted(k[len("step5."):] for k in t if k.startswith("step5.") and k != "step5.loss")
    assert stored == sorted(cfg["step_keys"]), "step5 keys differ from config.step_keys"
    for key in cfg["step_keys"]:
        got, want = t[f"step5.{key}"], sd[key]
        if key.endswith("num_batches_tracked"):
            assert got.item() == want.item() == 3 + cfg["steps"], (key, got, want)
        else:
            close(f"step5.{key}", got, want.detach())
    return f"  (min |relu input| = {min_relu:.2e})"


def formula_state_dict64(names_shapes, formula: dict) -> dict:
    """The closed-form state_dict of tools/torch_ref/resnet.py / tests/parity_resnet.rs, rounded to
    float32 then widened to float64."""
    out = {}
    for k, (name, shape) in enumerate(names_shapes):
        leafname = name.rsplit(".", 1)[-1]
        if leafname == "num_batches_tracked":
            out[name] = torch.zeros((), dtype=torch.int64)
            continue
        i = np.arange(int(np.prod(shape)), dtype=np.float64)
        s = np.sin(formula["phase_step"] * i + k)
        if leafname == "running_var":
            a, b, f = formula["running_var"]
            v = a + b * np.abs(np.cos(f * i + k))
        elif leafname == "running_mean":
            v = formula["running_mean"] * s
        elif leafname == "bias":
            v = formula["bias"] * s
        elif len(shape) == 4:
            v = np.sqrt(formula["conv_weight"] / np.prod(shape[1:])) * s
        elif len(shape) == 2:
            v = np.sqrt(formula["linear_weight"] / shape[1]) * s
        else:
            a, b = formula["bn_weight"]
            v = a + b * s
        out[name] = torch.from_numpy(v.astype(np.float32).astype(np.float64).reshape(shape))
    return out


def check_resnet_torchvision(case: str, cfg: dict, t: dict) -> str:
    import torchvision

    model = getattr(torchvision.models, cfg["model"])()
    params = [n for n, _ in model.named_parameters()]
    buffers = [n for n, _ in model.named_buffers()]
    assert params == cfg["parameter_keys"] and buffers == cfg["buffer_keys"]
    assert list(model.state_dict()) == cfg["state_dict_keys"]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = formula_state_dict64([(n, shapes[n]) for n in params + buffers], cfg["formula"])
    net = Net64(sd, "torchvision")
    with torch.no_grad():
        z = net.forward(t["input"].double(), False)
    close("logits", t["logits"], z)
    return ""


def check_gradflow(case: str, cfg: dict, t: dict) -> str:
    """Recomputes ‖∂L/∂h_t‖ in float64 with cell_step, the loss at the last step."""
    mode = {"rnn_tanh": "RNN_TANH", "lstm": "LSTM", "gru": "GRU"}[cfg["cell"]]
    w = {k: leaf(t[f"rnn.{k}_l0"]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    x, y = t["x"].double(), t["y"].double()
    B, T, H = cfg["B"], cfg["T"], cfg["hidden_size"]
    h, c = torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    hs = []
    for step in range(T):
        h, c1, _ = cell_step(mode, x[:, step], h, c, w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"])
        c = c1 if c1 is not None else c
        h.retain_grad()
        hs.append(h)
    pred = hs[-1] @ t["head.weight"].double().T + t["head.bias"].double()
    loss = ((pred - y) ** 2).mean()
    loss.backward()
    close("loss", loss.detach(), t["loss"].double())
    close("cell_output", torch.stack(hs, 1).detach(), t["cell_output"].double())
    close("output", t["output"].double(), t["cell_output"].double())
    norms = torch.stack([g.grad.norm() for g in hs])
    close("step_grad_norm", norms, t["step_grad_norm"].double(), rtol=1e-4, atol=0.0)
    return f"  (‖∂L/∂h_1‖/‖∂L/∂h_T‖ = {float(norms[0] / norms[-1]):.2e})"


def main() -> None:
    files = sorted(FIXTURES.rglob("*.safetensors"))
    total = 0
    for path in files:
        meta, t = load(path)
        cfg = check_structure(path, meta, t)
        group, case = path.parent.name, path.stem
        note = ""
        try:
            if group == "layers":
                check_layers(case, cfg, t)
            elif group == "loss":
                check_loss(case, cfg, t)
            elif group == "rnn":
                mp = check_rnn(case, cfg, t)
                if cfg["mode"] == "RNN_RELU":
                    note = f"  (min |relu pre-activation| = {mp:.2e})"
            elif group == "optim":
                check_optim(case, cfg, t)
            elif group == "batchnorm":
                check_batchnorm(case, cfg, t)
            elif group == "conv":
                check_conv(case, cfg, t)
            elif group == "gradflow":
                note = check_gradflow(case, cfg, t)
            elif group == "resnet":
                if case.startswith("torchvision_"):
                    note = check_resnet_torchvision(case, cfg, t)
                else:
                    note = check_resnet_train(case, cfg, t)
            else:
                raise AssertionError(f"unknown group {group}")
        except AssertionError as e:
            sys.exit(f"FAIL {path.relative_to(REPO_ROOT)}: {e}")
        size = path.stat().st_size
        total += size
        print(f"ok  {group}/{case}.safetensors  {size} B{note}")
    print(f"{len(files)} fixtures, {total} bytes, all verified")


if __name__ == "__main__":
    main()
