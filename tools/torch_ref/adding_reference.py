"""PyTorch reference for the adding problem, the same setup as `skipgate train --task adding`.

Data: x (B, T, 2); channel 0 ~ U(0, 1); channel 1 is 1 at one position a ~ U{0..T/2-1} and one
position b ~ U{T/2..T-1}, 0 elsewhere; y = x[a, 0] + x[b, 0]. A fresh training batch every step
(from the training generator), a fixed validation set of `--val-size` sequences (from its own
generator, seeded separately).

Model: nn.{RNN,GRU,LSTM}(2, H, batch_first=True) -> last step -> nn.Linear(H, 1); PyTorch's default
initialisation, except for the LSTM with --forget-bias: bias_ih forget block (gates i, f, g, o ->
block 1) = value and bias_hh forget block = 0. MSE loss, Adam, global-norm clipping.

Output: one JSON line per evaluation ({"kind":"eval","step":..,"val_mse":..,"elapsed_s":..}, with
the mean training loss and the mean / max global gradient norm (before clipping) and the number of
clipped steps since the previous evaluation) on stdout and in --out, then a {"kind":"summary",...}
line.

    /work/main/.venv-torch/bin/python tools/torch_ref/adding_reference.py --model gru --out x.jsonl
"""

import argparse
import json
import time

import torch
from torch import nn


def adding_batch(n, seq_len, gen):
    """(n, T, 2) inputs and (n, 1) targets of the adding problem, drawn from `gen`."""
    values = torch.rand(n, seq_len, generator=gen)
    half = seq_len // 2
    a = torch.randint(0, half, (n,), generator=gen)
    b = torch.randint(half, seq_len, (n,), generator=gen)
    markers = torch.zeros(n, seq_len)
    rows = torch.arange(n)
    markers[rows, a] = 1.0
    markers[rows, b] = 1.0
    x = torch.stack([values, markers], dim=2)
    y = (values[rows, a] + values[rows, b]).unsqueeze(1)
    return x, y


class Regressor(nn.Module):
    def __init__(self, kind, hidden, forget_bias=None):
        super().__init__()
        cls = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.rnn = cls(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        if forget_bias is not None:
            if kind != "lstm":
                raise ValueError("--forget-bias applies to the LSTM only")
            with torch.no_grad():
                self.rnn.bias_ih_l0[hidden : 2 * hidden].fill_(forget_bias)
                self.rnn.bias_hh_l0[hidden : 2 * hidden].fill_(0.0)

    def forward(self, x):
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1, :])  # (B, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["rnn", "gru", "lstm"], required=True)
    p.add_argument("--forget-bias", type=float, default=None)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-seed", type=int, default=12345)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON-lines file for the curve")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Regressor(args.model, args.hidden, args.forget_bias)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_gen = torch.Generator().manual_seed(args.seed + 1)
    val_x, val_y = adding_batch(args.val_size, args.seq_len, torch.Generator().manual_seed(args.val_seed))
    baseline = torch.mean((val_y - 1.0) ** 2).item()

    out = open(args.out, "w") if args.out else None

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    def evaluate():
        model.eval()
        with torch.no_grad():
            mse = torch.mean((model(val_x).double() - val_y.double()) ** 2).item()
        model.train()
        return mse

    config = {k: v for k, v in vars(args).items() if k != "out"}
    emit({"kind": "config", **config, "torch": torch.__version__, "baseline_mse": baseline})
    t0 = time.perf_counter()
    loss_sum, loss_n = 0.0, 0
    gn_sum, gn_max, clipped = 0.0, 0.0, 0
    for step in range(1, args.steps + 1):
        x, y = adding_batch(args.batch, args.seq_len, train_gen)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        max_norm = args.clip if args.clip > 0 else float("inf")
        gn = nn.utils.clip_grad_norm_(model.parameters(), max_norm).item()  # norm before clipping
        opt.step()
        loss_sum += loss.item()
        loss_n += 1
        gn_sum += gn
        gn_max = max(gn_max, gn)
        clipped += int(args.clip > 0 and gn > args.clip)
        if step % args.eval_every == 0 or step == args.steps:
            emit({
                "kind": "eval",
                "step": step,
                "val_mse": evaluate(),
                "train_loss": loss_sum / loss_n,
                "grad_norm_mean": gn_sum / loss_n,
                "grad_norm_max": gn_max,
                "clipped_steps": clipped,
                "elapsed_s": round(time.perf_counter() - t0, 2),
            })
            loss_sum, loss_n = 0.0, 0
            gn_sum, gn_max, clipped = 0.0, 0.0, 0
    emit({"kind": "summary", "steps": args.steps, "wall_s": round(time.perf_counter() - t0, 2)})
    if out:
        out.close()


if __name__ == "__main__":
    main()
