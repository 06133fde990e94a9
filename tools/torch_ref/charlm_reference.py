"""PyTorch reference for the character LSTM, the same setup as `skipgate train --task charlm`.

Text: the vocabulary is the sorted set of the characters of the whole text; the first
floor(0.9 * n) ids train, the rest validate. Model: Embedding(V, E) -> LSTM(E, H, batch_first) ->
Linear(H, V), PyTorch's default initialisation. Training: each step draws `--batch` windows whose
starts are uniform in 0 .. len(train) - seq_len - 1 (inputs ids[s : s + T], targets ids[s + 1 :
s + T + 1]), cross-entropy mean over all B*T characters, Adam, global-norm clipping.

Validation: mean cross-entropy (nats/char) over ALL non-overlapping windows of the validation
split: window k has inputs val[k*T : k*T + T] and targets val[k*T + 1 : k*T + T + 1] for
k = 0 .. floor((len - 1) / T) - 1, in batches of `--batch` (the last may be smaller), averaged
over all scored characters (a fresh zero state per window).

Output: one JSON line per evaluation ({"kind":"eval","step":..,"val_loss":..,...}) on stdout and
in --out, then a {"kind":"summary",...} line.

    /work/main/.venv-torch/bin/python tools/torch_ref/charlm_reference.py --out charlm.jsonl
"""

import argparse
import json
import time

import torch
from torch import nn


class CharLstm(nn.Module):
    def __init__(self, vocab, embedding, hidden):
        super().__init__()
        self.emb = nn.Embedding(vocab, embedding)
        self.rnn = nn.LSTM(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, ids):
        out, _ = self.rnn(self.emb(ids))  # (B, T, H)
        return self.head(out)  # (B, T, V)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default="/work/main/data/tinyshakespeare/input.txt")
    p.add_argument("--train-fraction", type=float, default=0.9)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON-lines file for the curve")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_train = int(len(ids) * args.train_fraction)
    train, val = ids[:n_train], ids[n_train:]
    T, B = args.seq_len, args.batch

    # All non-overlapping validation windows, in order.
    windows = (len(val) - 1) // T
    starts = torch.arange(windows) * T
    offs = torch.arange(T)
    val_x = val[starts[:, None] + offs]  # (W, T)
    val_y = val[starts[:, None] + offs + 1]  # (W, T)

    model = CharLstm(len(chars), args.embedding, args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed + 1)

    out = open(args.out, "w") if args.out else None

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    def evaluate():
        model.eval()
        total, count, correct = 0.0, 0, 0
        with torch.no_grad():
            for i in range(0, windows, B):
                x, y = val_x[i : i + B], val_y[i : i + B]
                logits = model(x).reshape(-1, len(chars))
                total += nn.functional.cross_entropy(
                    logits.double(), y.reshape(-1), reduction="sum"
                ).item()
                count += y.numel()
                correct += (logits.argmax(1) == y.reshape(-1)).sum().item()
        model.train()
        return total / count, correct / count

    config = {k: v for k, v in vars(args).items() if k != "out"}
    emit({
        "kind": "config", **config, "torch": torch.__version__, "vocab": len(chars),
        "train_chars": len(train), "val_chars": len(val), "val_windows": windows,
    })
    t0 = time.perf_counter()
    eval_time = 0.0
    loss_sum, loss_n = 0.0, 0
    for step in range(1, args.steps + 1):
        s = torch.randint(0, len(train) - T, (B,), generator=gen)
        x = train[s[:, None] + offs]
        y = train[s[:, None] + offs + 1]
        loss = nn.functional.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        loss_sum += loss.item()
        loss_n += 1
        if step % args.eval_every == 0 or step == args.steps:
            e0 = time.perf_counter()
            val_loss, val_acc = evaluate()
            eval_time += time.perf_counter() - e0
            emit({
                "kind": "eval",
                "step": step,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "train_loss": loss_sum / loss_n,
                "elapsed_s": round(time.perf_counter() - t0, 2),
            })
            loss_sum, loss_n = 0.0, 0
    emit({
        "kind": "summary", "steps": args.steps, "wall_s": round(time.perf_counter() - t0, 2),
        "eval_s": round(eval_time, 2),
    })
    if out:
        out.close()


if __name__ == "__main__":
    main()
