"""Reference fixtures for tests/fixtures/rnn/: nn.RNN (tanh, relu), nn.LSTM, nn.GRU and their cells.

Sequence layers: L = sum(output * grad_output) + sum(h_n * grad_h_n) [+ sum(c_n * grad_c_n)].
Cells:           L = sum(h1 * grad_h1) [+ sum(c1 * grad_c1)].
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from common import case_seed, grads_of, save, setup

GROUP = "rnn"
SCRIPT = "rnn.py"

CELLS = {
    "rnn_tanh": "RNN_TANH",
    "rnn_relu": "RNN_RELU",
    "lstm": "LSTM",
    "gru": "GRU",
}


def make_layer(mode: str, input_size, hidden_size, num_layers, bidirectional, batch_first):
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    if mode == "RNN_TANH":
        return nn.RNN(input_size, hidden_size, nonlinearity="tanh", **kw)
    if mode == "RNN_RELU":
        return nn.RNN(input_size, hidden_size, nonlinearity="relu", **kw)
    if mode == "LSTM":
        return nn.LSTM(input_size, hidden_size, **kw)
    if mode == "GRU":
        return nn.GRU(input_size, hidden_size, **kw)
    raise ValueError(mode)


def sequence_case(case: str, mode: str, *, T=5, B=3, I=4, H=6, num_layers=1,
                  bidirectional=False, batch_first=False, has_h0=False, lengths=None) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    # 1. module (default init), 2. input, 3. h0 [, c0], 4. grad_output, grad_h_n [, grad_c_n]
    m = make_layer(mode, I, H, num_layers, bidirectional, batch_first)
    D = 2 if bidirectional else 1
    is_lstm = mode == "LSTM"

    x = torch.randn((B, T, I) if batch_first else (T, B, I), requires_grad=True)
    h0 = c0 = None
    if has_h0:
        h0 = torch.randn(num_layers * D, B, H, requires_grad=True)
        if is_lstm:
            c0 = torch.randn(num_layers * D, B, H, requires_grad=True)
    grad_output = torch.randn((B, T, D * H) if batch_first else (T, B, D * H))
    grad_h_n = torch.randn(num_layers * D, B, H)
    grad_c_n = torch.randn(num_layers * D, B, H) if is_lstm else None

    hx = (h0, c0) if (is_lstm and has_h0) else h0
    if lengths is not None:
        lengths_t = torch.tensor(lengths, dtype=torch.int64)
        packed = pack_padded_sequence(x, lengths_t, batch_first=batch_first, enforce_sorted=False)
        out_packed, hn = m(packed, hx)
        output, _ = pad_packed_sequence(out_packed, batch_first=batch_first, total_length=T)
    else:
        output, hn = m(x, hx)
    h_n, c_n = hn if is_lstm else (hn, None)

    loss = (output * grad_output).sum() + (h_n * grad_h_n).sum()
    if is_lstm:
        loss = loss + (c_n * grad_c_n).sum()
    loss.backward()

    params = dict(m.named_parameters())
    assert list(params) == list(m.state_dict()), "parameter names must match the state_dict"

    tensors = {"input": x}
    leaves = [("input", x)]
    if has_h0:
        tensors["h0"] = h0
        leaves.append(("h0", h0))
        if is_lstm:
            tensors["c0"] = c0
            leaves.append(("c0", c0))
    if lengths is not None:
        tensors["lengths"] = lengths_t
    tensors.update(params)
    tensors["grad_output"] = grad_output
    tensors["grad_h_n"] = grad_h_n
    if is_lstm:
        tensors["grad_c_n"] = grad_c_n
    tensors["output"] = output
    tensors["h_n"] = h_n
    if is_lstm:
        tensors["c_n"] = c_n
    tensors.update(grads_of(leaves + list(params.items())))

    cfg = {
        "mode": mode,
        "input_size": I,
        "hidden_size": H,
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "batch_first": batch_first,
        "has_h0": has_h0,
        "has_lengths": lengths is not None,
        "seq_len": T,
        "batch": B,
        "bias": True,
        "seed": seed,
    }
    save(GROUP, case, tensors, cfg, SCRIPT)


def cell_case(case: str, mode: str, *, B=3, I=4, H=6) -> None:
    seed = case_seed(GROUP, case)
    torch.manual_seed(seed)
    if mode == "RNN_TANH":
        m = nn.RNNCell(I, H, nonlinearity="tanh")
    elif mode == "LSTM":
        m = nn.LSTMCell(I, H)
    elif mode == "GRU":
        m = nn.GRUCell(I, H)
    else:
        raise ValueError(mode)
    is_lstm = mode == "LSTM"
    x = torch.randn(B, I, requires_grad=True)
    hx = torch.randn(B, H, requires_grad=True)
    cx = torch.randn(B, H, requires_grad=True) if is_lstm else None
    grad_h1 = torch.randn(B, H)
    grad_c1 = torch.randn(B, H) if is_lstm else None

    if is_lstm:
        h1, c1 = m(x, (hx, cx))
        loss = (h1 * grad_h1).sum() + (c1 * grad_c1).sum()
    else:
        h1 = m(x, hx)
        loss = (h1 * grad_h1).sum()
    loss.backward()

    params = dict(m.named_parameters())
    tensors = {"input": x, "hx": hx}
    leaves = [("input", x), ("hx", hx)]
    if is_lstm:
        tensors["cx"] = cx
        leaves.append(("cx", cx))
    tensors.update(params)
    tensors["grad_h1"] = grad_h1
    tensors["h1"] = h1
    if is_lstm:
        tensors["grad_c1"] = grad_c1
        tensors["c1"] = c1
    tensors.update(grads_of(leaves + list(params.items())))
    cfg = {"mode": mode, "cell": True, "input_size": I, "hidden_size": H, "batch": B,
           "bias": True, "seed": seed}
    save(GROUP, case, tensors, cfg, SCRIPT)


def main() -> None:
    setup()
    print(f"[{GROUP}]")
    for name, mode in CELLS.items():
        sequence_case(f"{name}_basic", mode)
        sequence_case(f"{name}_deep_bidir_h0", mode, num_layers=2, bidirectional=True, has_h0=True)
        sequence_case(f"{name}_lengths", mode, num_layers=2, bidirectional=True, has_h0=True,
                      lengths=[5, 2, 4])
        sequence_case(f"{name}_batch_first", mode, batch_first=True)
    cell_case("rnn_cell_tanh", "RNN_TANH")
    cell_case("lstm_cell", "LSTM")
    cell_case("gru_cell", "GRU")
    # Long sequences: error accumulated through 60 recurrent steps.
    sequence_case("lstm_long", "LSTM", T=60, B=2, I=3, H=8, has_h0=True)
    sequence_case("gru_long", "GRU", T=60, B=2, I=3, H=8, has_h0=True)


if __name__ == "__main__":
    main()
