//! Sequence → value: a recurrent layer read out at the last valid step by a linear head.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, s};

use crate::error::check_shape;
use crate::layers::{Linear, LinearConfig};
use crate::module::{ParamVisitor, visit_child_params};
use crate::rnn::{Recurrent, RecurrentConfig, RecurrentInit, SeqGrads, SeqInput};
use crate::{Error, Mode, Module, Result, Rng, Scalar};

/// `ŷ_b = head(output_b[len_b − 1])`: inputs `(B, T, I)` → predictions `(B, out)`.
///
/// The PyTorch equivalent is `rnn = nn.RNN/LSTM/GRU(I, H, batch_first=True)`,
/// `head = nn.Linear(D·H, out)`, `head(rnn(x)[0][:, -1])`; parameter names `rnn.*`, `head.*`.
pub struct SeqRegressor<F: Scalar> {
    pub rnn: Recurrent<F>,
    pub head: Linear<F>,
    /// The step each row was read at, kept for backward: (B, T, read step per row).
    read: Option<(usize, usize, Vec<usize>)>,
}

impl<F: Scalar> SeqRegressor<F> {
    /// A regressor with `out` outputs; the recurrent layer is made batch-first.
    pub fn new(
        config: RecurrentConfig,
        init: &RecurrentInit,
        out: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let config = config.batch_first(true);
        let head_in = config.output_size();
        let rnn = Recurrent::with_init(config, init, rng)?;
        let head = Linear::new(LinearConfig::new(head_in, out), rng);
        Ok(SeqRegressor {
            rnn,
            head,
            read: None,
        })
    }

    /// Predictions `(B, out)` for inputs `(B, T, I)`; `lengths` (one per row, `1..=T`) selects the
    /// step each row is read at (the last one when `None`).
    pub fn forward(
        &mut self,
        x: ArrayView3<'_, F>,
        lengths: Option<&[usize]>,
        mode: Mode,
        rng: &mut Rng,
    ) -> Result<Array2<F>> {
        self.read = None;
        let mut inp = SeqInput::new(x);
        if let Some(l) = lengths {
            inp = inp.lengths(l);
        }
        let out = self.rnn.forward(inp, mode, rng)?; // (B, T, D·H)
        let (batch, t_len, width) = out.output.dim();
        let read: Vec<usize> = (0..batch)
            .map(|b| lengths.map_or(t_len - 1, |l| l[b] - 1))
            .collect();
        let mut last = Array2::<F>::zeros((batch, width)); // (B, D·H)
        for (b, &t) in read.iter().enumerate() {
            last.row_mut(b).assign(&out.output.slice(s![b, t, ..]));
        }
        let pred = self.head.forward(last.view(), mode)?;
        if mode.is_train() {
            self.read = Some((batch, t_len, read));
        }
        Ok(pred)
    }

    /// Backward from ∂L/∂ŷ `(B, out)`; returns the recurrent layer's gradients, including the
    /// per-step norms ‖∂L/∂h_t‖.
    pub fn backward(&mut self, d_pred: ArrayView2<'_, F>) -> Result<SeqGrads<F>> {
        let op = "SeqRegressor::backward";
        let (batch, t_len, read) = self.read.take().ok_or(Error::NoForwardCache { op })?;
        check_shape(
            op,
            "d_pred (B, out)",
            &[batch, self.head.out_features()],
            d_pred.shape(),
        )?;
        let d_last = self.head.backward(d_pred)?; // (B, D·H)
        let mut d_out = Array3::<F>::zeros((batch, t_len, d_last.ncols()));
        for (b, &t) in read.iter().enumerate() {
            d_out.slice_mut(s![b, t, ..]).assign(&d_last.row(b));
        }
        self.rnn.backward(d_out.view(), None, None)
    }
}

impl<F: Scalar> Module<F> for SeqRegressor<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        visit_child_params("rnn", &mut self.rnn, f);
        visit_child_params("head", &mut self.head, f);
    }
}
