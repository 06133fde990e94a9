//! Single-step cells (`nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`) for loops written by hand.
//!
//! A cell step is a one-step run of the same direction kernel the full layer uses, so the two can
//! never disagree. In [`Mode::Train`] each `forward` pushes what its backward needs on a stack;
//! `backward` pops it, so calling `backward` in reverse order of the `forward`s is BPTT.

use ndarray::{Array2, Array3, ArrayView2};

use crate::error::check_shape;
use crate::module::ParamVisitor;
use crate::{Error, Mode, Module, Result, Rng, Scalar, init};

use super::CellKind;
use super::direction::{self, DirectionCache, DirectionParams};

/// One recurrent cell. Parameters `weight_ih` `(G·H, I)`, `weight_hh` `(G·H, H)`, `bias_ih`,
/// `bias_hh` `(G·H)`, as PyTorch's cells name them.
pub struct Cell<F: Scalar> {
    kind: CellKind,
    params: DirectionParams<F>,
    /// One entry per train-mode forward not yet matched by a backward: `(x (B, I), cache)`.
    stack: Vec<(Array2<F>, DirectionCache<F>)>,
}

/// Output of one [`Cell::forward`] step.
#[derive(Clone, Debug)]
pub struct CellOutput<F> {
    /// `(B, H)` new hidden state.
    pub h: Array2<F>,
    /// `(B, H)` new cell state (LSTM only).
    pub c: Option<Array2<F>>,
}

/// Gradients of one [`Cell::backward`] step.
#[derive(Clone, Debug)]
pub struct CellGrads<F> {
    /// ∂L/∂x `(B, I)`.
    pub d_x: Array2<F>,
    /// ∂L/∂h_prev `(B, H)`.
    pub d_h: Array2<F>,
    /// ∂L/∂c_prev `(B, H)`, LSTM only.
    pub d_c: Option<Array2<F>>,
}

impl<F: Scalar> Cell<F> {
    /// A cell with PyTorch's default initialisation U(−1/√H, 1/√H).
    pub fn new(
        kind: CellKind,
        input_size: usize,
        hidden_size: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        if input_size == 0 || hidden_size == 0 {
            return Err(Error::invalid(
                "Cell::new",
                "sizes",
                format!(
                    "input_size and hidden_size must be positive, got {input_size}, {hidden_size}"
                ),
            ));
        }
        let mut params = direction::zeros(kind, input_size, hidden_size);
        let bound = init::default_bound(hidden_size);
        init::fill_uniform(&mut params.weight_ih.value, bound, rng);
        init::fill_uniform(&mut params.weight_hh.value, bound, rng);
        init::fill_uniform(&mut params.bias_ih.value, bound, rng);
        init::fill_uniform(&mut params.bias_hh.value, bound, rng);
        Ok(Cell {
            kind,
            params,
            stack: Vec::new(),
        })
    }

    /// The cell type.
    pub fn kind(&self) -> CellKind {
        self.kind
    }

    /// Hidden size `H`.
    pub fn hidden_size(&self) -> usize {
        self.params.hidden_size()
    }

    /// Input size `I`.
    pub fn input_size(&self) -> usize {
        self.params.weight_ih.value.ncols()
    }

    /// One step: `x` `(B, I)`, `h` `(B, H)`, `c` `(B, H)` (LSTM; zeros when `None`).
    ///
    /// # Errors
    /// Shapes that do not fit, or `c` for a cell without a cell state.
    pub fn forward(
        &mut self,
        x: ArrayView2<'_, F>,
        h: ArrayView2<'_, F>,
        c: Option<ArrayView2<'_, F>>,
        mode: Mode,
    ) -> Result<CellOutput<F>> {
        let op = "Cell::forward";
        let (batch, hidden) = (x.nrows(), self.hidden_size());
        check_shape(
            op,
            "x (B, input_size)",
            &[batch, self.input_size()],
            x.shape(),
        )?;
        check_shape(op, "h (B, hidden_size)", &[batch, hidden], h.shape())?;
        if let Some(c) = c {
            if !self.kind.has_cell_state() {
                return Err(Error::invalid(
                    op,
                    "c",
                    format!("{} has no cell state", self.kind),
                ));
            }
            check_shape(op, "c (B, hidden_size)", &[batch, hidden], c.shape())?;
        }
        let mut out = Array3::<F>::zeros((1, batch, hidden));
        let cache = self
            .params
            .forward(self.kind, x, h, c, None, false, out.view_mut());
        let output = CellOutput {
            h: cache.h_n(false).to_owned(),
            c: self
                .kind
                .has_cell_state()
                .then(|| cache.c_n(false).to_owned()),
        };
        if mode.is_train() {
            self.stack.push((x.to_owned(), cache));
        }
        Ok(output)
    }

    /// Backward of the most recent unmatched train-mode step: `d_h` = ∂L/∂h', `d_c` = ∂L/∂c'
    /// (`None`: zero). Accumulates parameter gradients.
    ///
    /// # Errors
    /// No pending forward, or gradient shapes that differ from that step's outputs.
    pub fn backward(
        &mut self,
        d_h: ArrayView2<'_, F>,
        d_c: Option<ArrayView2<'_, F>>,
    ) -> Result<CellGrads<F>> {
        let op = "Cell::backward";
        let (x, _) = self.stack.last().ok_or(Error::NoForwardCache { op })?;
        let shape = [x.nrows(), self.hidden_size()];
        check_shape(op, "d_h (B, hidden_size)", &shape, d_h.shape())?;
        if let Some(d_c) = d_c {
            if !self.kind.has_cell_state() {
                return Err(Error::invalid(
                    op,
                    "d_c",
                    format!("{} has no cell state", self.kind),
                ));
            }
            check_shape(op, "d_c (B, hidden_size)", &shape, d_c.shape())?;
        }
        let (x, cache) = self.stack.pop().expect("checked above");
        let mut d_x = Array2::<F>::zeros(x.raw_dim());
        let d_out = Array3::<F>::zeros((1, shape[0], shape[1]));
        let mut norm = [0.0];
        let (d_h, d_c) = self.params.backward(
            self.kind,
            x.view(),
            &cache,
            d_out.view(),
            d_h,
            d_c,
            None,
            false,
            d_x.view_mut(),
            &mut norm,
        );
        Ok(CellGrads { d_x, d_h, d_c })
    }

    /// Number of train-mode steps waiting for their backward.
    pub fn pending_steps(&self) -> usize {
        self.stack.len()
    }

    /// Drops pending steps (e.g. after an aborted sequence).
    pub fn clear(&mut self) {
        self.stack.clear();
    }
}

impl<F: Scalar> Module<F> for Cell<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        f("weight_ih", self.params.weight_ih.as_mut());
        f("weight_hh", self.params.weight_hh.as_mut());
        f("bias_ih", self.params.bias_ih.as_mut());
        f("bias_hh", self.params.bias_hh.as_mut());
    }
}
