//! Tokens → next-token logits: embedding, recurrent layer, linear head on every step.

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::check_shape;
use crate::layers::{Embedding, Linear, LinearConfig};
use crate::loss::softmax;
use crate::module::{ParamVisitor, visit_child_params};
use crate::rnn::{
    CellKind, Recurrent, RecurrentConfig, RecurrentInit, RnnState, SeqGrads, SeqInput,
};
use crate::{Error, Mode, Module, Result, Rng, Scalar};

/// Architecture of a [`TokenRnn`], stored in checkpoints so a model can be rebuilt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRnnConfig {
    /// Number of input tokens `V`.
    pub vocab_size: usize,
    /// Embedding width `E`.
    pub embedding_dim: usize,
    /// The recurrent layer; its `input_size` must be `embedding_dim` (batch-first is forced).
    pub rnn: RecurrentConfig,
    /// Initialisation options of the recurrent layer.
    pub init: RecurrentInit,
    /// Number of output classes `C` (for a language model, `V`).
    pub num_classes: usize,
}

impl TokenRnnConfig {
    /// A language model over `vocab_size` tokens: `C = V`.
    pub fn language_model(
        kind: CellKind,
        vocab_size: usize,
        embedding_dim: usize,
        hidden: usize,
    ) -> Self {
        TokenRnnConfig {
            vocab_size,
            embedding_dim,
            rnn: RecurrentConfig::new(kind, embedding_dim, hidden),
            init: RecurrentInit::default(),
            num_classes: vocab_size,
        }
    }
}

/// `logits[b·T + t] = head(rnn(emb(ids))[b, t])`: ids `(B, T)` → logits `(B·T, C)`.
///
/// The PyTorch equivalent is `emb = nn.Embedding(V, E)`, `rnn = nn.LSTM(E, H, batch_first=True)`,
/// `head = nn.Linear(D·H, C)`; parameter names `emb.weight`, `rnn.*`, `head.*`.
pub struct TokenRnn<F: Scalar> {
    pub emb: Embedding<F>,
    pub rnn: Recurrent<F>,
    pub head: Linear<F>,
    config: TokenRnnConfig,
    /// (B, T) of the last train-mode forward.
    dims: Option<(usize, usize)>,
}

/// What [`TokenRnn::forward`] returns.
#[derive(Clone, Debug)]
pub struct TokenOutput<F> {
    /// `(B·T, C)`, row `b·T + t`.
    pub logits: Array2<F>,
    /// The final recurrent state, to continue the stream from.
    pub state: RnnState<F>,
}

impl<F: Scalar> TokenRnn<F> {
    /// A model with PyTorch's default initialisation.
    pub fn new(config: TokenRnnConfig, rng: &mut Rng) -> Result<Self> {
        if config.rnn.input_size != config.embedding_dim {
            return Err(Error::invalid(
                "TokenRnn::new",
                "rnn.input_size",
                format!(
                    "must equal embedding_dim {}, got {}",
                    config.embedding_dim, config.rnn.input_size
                ),
            ));
        }
        let mut config = config;
        config.rnn.batch_first = true;
        let emb = Embedding::new(config.vocab_size, config.embedding_dim, None, rng)?;
        let rnn = Recurrent::with_init(config.rnn.clone(), &config.init, rng)?;
        let head = Linear::new(
            LinearConfig::new(config.rnn.output_size(), config.num_classes),
            rng,
        );
        Ok(TokenRnn {
            emb,
            rnn,
            head,
            config,
            dims: None,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &TokenRnnConfig {
        &self.config
    }

    /// Logits for every step of `ids` `(B, T)`, starting from `state` (zeros when `None`).
    pub fn forward(
        &mut self,
        ids: ArrayView2<'_, usize>,
        state: Option<&RnnState<F>>,
        mode: Mode,
        rng: &mut Rng,
    ) -> Result<TokenOutput<F>> {
        self.dims = None;
        let (batch, t_len) = ids.dim();
        let flat: Vec<usize> = ids.iter().copied().collect();
        let e = self.emb.forward(&flat, mode)?; // (B·T, E)
        let e = e
            .into_shape_with_order((batch, t_len, self.config.embedding_dim))
            .expect("(B, T, E)");
        let mut inp = SeqInput::new(e.view());
        if let Some(s) = state {
            inp = inp.state(s);
        }
        let out = self.rnn.forward(inp, mode, rng)?; // (B, T, D·H)
        let state = out.state();
        let width = out.output.dim().2;
        let hidden = out
            .output
            .into_shape_with_order((batch * t_len, width))
            .expect("standard layout");
        let logits = self.head.forward(hidden.view(), mode)?;
        if mode.is_train() {
            self.dims = Some((batch, t_len));
        }
        Ok(TokenOutput { logits, state })
    }

    /// Backward from ∂L/∂logits `(B·T, C)`; returns the recurrent layer's gradients.
    pub fn backward(&mut self, d_logits: ArrayView2<'_, F>) -> Result<SeqGrads<F>> {
        let op = "TokenRnn::backward";
        let (batch, t_len) = self.dims.ok_or(Error::NoForwardCache { op })?;
        check_shape(
            op,
            "d_logits (B·T, C)",
            &[batch * t_len, self.config.num_classes],
            d_logits.shape(),
        )?;
        self.dims = None;
        let d_hidden = self.head.backward(d_logits)?; // (B·T, D·H)
        let width = d_hidden.ncols();
        let d_out = d_hidden
            .into_shape_with_order((batch, t_len, width))
            .expect("standard layout");
        let grads = self.rnn.backward(d_out.view(), None, None)?;
        let d_emb = grads
            .d_input
            .view()
            .into_shape_with_order((batch * t_len, self.config.embedding_dim))
            .expect("standard layout");
        self.emb.backward(d_emb)?;
        Ok(grads)
    }

    /// Generates `len` tokens after `prime` (at least one token), sampling each from
    /// softmax(logits / temperature). Runs in eval mode and keeps no caches.
    pub fn sample(
        &mut self,
        prime: &[usize],
        len: usize,
        temperature: f64,
        rng: &mut Rng,
    ) -> Result<Vec<usize>> {
        if prime.is_empty() {
            return Err(Error::invalid(
                "TokenRnn::sample",
                "prime",
                "needs at least one token",
            ));
        }
        let ids = Array2::from_shape_vec((1, prime.len()), prime.to_vec()).expect("(1, P)");
        let mut out = self.forward(ids.view(), None, Mode::Eval, rng)?;
        let mut generated = Vec::with_capacity(len);
        for _ in 0..len {
            let last = out.logits.row(out.logits.nrows() - 1);
            let probs = softmax(last, F::of(temperature))?;
            let next = draw(probs.iter().map(|p| p.f64()), rng);
            generated.push(next);
            let ids = Array2::from_elem((1, 1), next);
            out = self.forward(ids.view(), Some(&out.state), Mode::Eval, rng)?;
        }
        Ok(generated)
    }
}

/// Draws an index from a discrete distribution by inverse CDF.
fn draw(probs: impl Iterator<Item = f64> + Clone, rng: &mut Rng) -> usize {
    let u = rng.uniform() * probs.clone().sum::<f64>();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, p) in probs.enumerate() {
        acc += p;
        last = i;
        if u < acc {
            return i;
        }
    }
    last
}

impl<F: Scalar> Module<F> for TokenRnn<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        visit_child_params("emb", &mut self.emb, f);
        visit_child_params("rnn", &mut self.rnn, f);
        visit_child_params("head", &mut self.head, f);
    }
}
