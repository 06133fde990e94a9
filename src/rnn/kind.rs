//! Which recurrence a layer runs.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The cell type of a recurrent layer, with PyTorch's gate layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CellKind {
    /// Vanilla RNN, `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)` (`nn.RNN`, the default nonlinearity).
    #[serde(rename = "rnn")]
    Tanh,
    /// Vanilla RNN with ReLU, `h' = relu(…)` (`nn.RNN(nonlinearity='relu')`).
    #[serde(rename = "rnn-relu")]
    Relu,
    /// LSTM with gates i, f, g, o stacked in that order (`nn.LSTM`).
    Lstm,
    /// GRU with gates r, z, n stacked in that order, reset applied after the recurrent matmul (`nn.GRU`).
    Gru,
}

impl CellKind {
    /// Number of gate blocks stacked in the weight matrices: `weight_ih` is `(gates·H, input)`.
    pub fn gates(self) -> usize {
        match self {
            CellKind::Tanh | CellKind::Relu => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// Whether the cell carries a second state `c` (only the LSTM).
    pub fn has_cell_state(self) -> bool {
        self == CellKind::Lstm
    }

    /// The CLI name: `rnn`, `rnn-relu`, `lstm`, `gru`.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Tanh => "rnn",
            CellKind::Relu => "rnn-relu",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }

    /// All kinds, in CLI order.
    pub const ALL: [CellKind; 4] = [
        CellKind::Tanh,
        CellKind::Relu,
        CellKind::Lstm,
        CellKind::Gru,
    ];
}

impl fmt::Display for CellKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CellKind {
    type Err = Error;

    /// Parses `rnn` (or `rnn-tanh`, `tanh`), `rnn-relu` (or `relu`), `lstm`, `gru`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "rnn" | "rnn-tanh" | "rnn_tanh" | "tanh" => Ok(CellKind::Tanh),
            "rnn-relu" | "rnn_relu" | "relu" => Ok(CellKind::Relu),
            "lstm" => Ok(CellKind::Lstm),
            "gru" => Ok(CellKind::Gru),
            other => Err(Error::invalid(
                "CellKind",
                "cell type",
                format!("expected one of rnn, rnn-relu, lstm, gru; got {other:?}"),
            )),
        }
    }
}
