"""Reference fixtures for tests/fixtures/gradflow/: ‖∂L/∂h_t‖ for every step of a sequence regressor.

The model is nn.RNN / nn.LSTM / nn.GRU (batch_first) followed by nn.Linear(H, 1) on the last step,
L = mse_loss(head(output[:, -1]), y). The total gradient reaching each hidden state (through the
output and through the recurrence) is not exposed by the fused modules, so the same weights are run
step by step with the matching cell (nn.RNNCell / nn.LSTMCell / nn.GRUCell), each h_t keeping its
gradient (retain_grad). Stored: the state_dict (rnn.*, head.*), x, y, loss, the module's output
(to tie the cell loop to the module) and step_grad_norm[t] = ‖∂L/∂h_t‖ (Frobenius over the batch).
"""

import sys

sys.dont_write_bytecode = True  # keep tools/torch_ref free of __pycache__

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import case_seed, save, setup

GROUP = "gradflow"
SCRIPT = "gradflow.py"

LAYERS = {"rnn_tanh": (nn.RNN, nn.RNNCell), "lstm": (nn.LSTM, nn.LSTMCell), "gru": (nn.GRU, nn.GRUCell)}


def case(name: str, *, T=40, B=4, I=3, H=8) -> None:
    seed = case_seed(GROUP, name)
    torch.manual_seed(seed)
    layer_cls, cell_cls = LAYERS[name]
    rnn = layer_cls(I, H, batch_first=True)
    head = nn.Linear(H, 1)
    x = torch.rand(B, T, I)
    y = torch.rand(B, 1)

    cell = cell_cls(I, H)
    with torch.no_grad():
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, p).copy_(getattr(rnn, f"{p}_l0"))
    h = torch.zeros(B, H)
    c = torch.zeros(B, H)
    hs = []
    for t in range(T):
        if name == "lstm":
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        h.retain_grad()
        hs.append(h)
    loss = F.mse_loss(head(hs[-1]), y)
    loss.backward()
    norms = torch.stack([h.grad.norm() for h in hs])

    output, _ = rnn(x)
    tensors = {f"rnn.{k}": v for k, v in rnn.state_dict().items()}
    tensors.update({f"head.{k}": v for k, v in head.state_dict().items()})
    tensors.update({"x": x, "y": y, "loss": loss, "output": output, "cell_output": torch.stack(hs, 1),
                    "step_grad_norm": norms})
    cfg = {"seed": seed, "cell": name, "T": T, "B": B, "input_size": I, "hidden_size": H}
    save(GROUP, name, tensors, cfg, SCRIPT)


def main() -> None:
    setup()
    print(f"{GROUP}:")
    for name in LAYERS:
        case(name)


if __name__ == "__main__":
    main()
