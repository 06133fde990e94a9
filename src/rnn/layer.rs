//! Multi-layer, optionally bidirectional recurrent layers with PyTorch's semantics and names:
//! `nn.RNN`, `nn.LSTM` and `nn.GRU` in one type, [`Recurrent`].

use ndarray::{Array2, Array3, ArrayView3, Axis, s};

use crate::error::check_shape;
use crate::layers::dropout_mask;
use crate::module::ParamVisitor;
use crate::{Error, Mode, Module, Result, Rng, Scalar, init};

use super::CellKind;
use super::direction::{self, DirectionCache, DirectionParams};

/// Architecture of a [`Recurrent`] layer (PyTorch's constructor arguments).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecurrentConfig {
    /// Cell type.
    pub kind: CellKind,
    /// Features per time step of the input, `I`.
    pub input_size: usize,
    /// Hidden units per direction, `H`.
    pub hidden_size: usize,
    /// Stacked layers, `L` (layer `l > 0` reads the outputs of layer `l − 1`). Default 1.
    pub num_layers: usize,
    /// Run a second direction from the end of each sequence; outputs are concatenated. Default false.
    pub bidirectional: bool,
    /// Dropout probability on the outputs of every layer but the last, in [`Mode::Train`]. Default 0.
    pub dropout: f64,
    /// Input and output are `(B, T, ·)` instead of `(T, B, ·)`. States stay `(L·D, B, H)`. Default false.
    pub batch_first: bool,
}

impl RecurrentConfig {
    /// One unidirectional layer, seq-first, no dropout.
    pub fn new(kind: CellKind, input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig {
            kind,
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            dropout: 0.0,
            batch_first: false,
        }
    }

    /// Sets `num_layers`.
    pub fn layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets `bidirectional`.
    pub fn bidirectional(mut self, yes: bool) -> Self {
        self.bidirectional = yes;
        self
    }

    /// Sets the between-layer `dropout`.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets `batch_first`.
    pub fn batch_first(mut self, yes: bool) -> Self {
        self.batch_first = yes;
        self
    }

    /// Number of directions, `D` (1 or 2).
    pub fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Features per time step of the output, `D·H`.
    pub fn output_size(&self) -> usize {
        self.directions() * self.hidden_size
    }

    fn validate(&self) -> Result<()> {
        let op = "RecurrentConfig";
        if self.input_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            return Err(Error::invalid(
                op,
                "sizes",
                format!(
                    "input_size, hidden_size and num_layers must be positive, got {}, {}, {}",
                    self.input_size, self.hidden_size, self.num_layers
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                op,
                "dropout",
                format!("expected 0 ≤ p < 1, got {}", self.dropout),
            ));
        }
        Ok(())
    }
}

/// Initialisation choices beyond PyTorch's default (every tensor U(−1/√H, 1/√H)).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecurrentInit {
    /// LSTM only: set the forget-gate block of `bias_ih` to this value and of `bias_hh` to 0,
    /// so the forget gate starts near σ(value) (1.0 is the usual choice).
    pub forget_bias: Option<f64>,
    /// Make every gate block of `weight_hh` an orthogonal `H × H` matrix.
    pub orthogonal_recurrent: bool,
}

/// Inputs of one [`Recurrent::forward`] call.
#[derive(Clone, Copy, Debug)]
pub struct SeqInput<'a, F> {
    /// `(T, B, I)`, or `(B, T, I)` when `batch_first`.
    pub input: ArrayView3<'a, F>,
    /// Initial hidden state `(L·D, B, H)`; zeros when `None`.
    pub h0: Option<ArrayView3<'a, F>>,
    /// Initial LSTM cell state `(L·D, B, H)`; zeros when `None`.
    pub c0: Option<ArrayView3<'a, F>>,
    /// Valid length of every sequence (`1 ≤ len ≤ T`); all `T` when `None`.
    pub lengths: Option<&'a [usize]>,
}

impl<'a, F> SeqInput<'a, F> {
    /// Just the input: zero initial state, full lengths.
    pub fn new(input: ArrayView3<'a, F>) -> Self {
        SeqInput {
            input,
            h0: None,
            c0: None,
            lengths: None,
        }
    }

    /// Sets the initial hidden state.
    pub fn h0(mut self, h0: ArrayView3<'a, F>) -> Self {
        self.h0 = Some(h0);
        self
    }

    /// Sets the initial cell state (LSTM).
    pub fn c0(mut self, c0: ArrayView3<'a, F>) -> Self {
        self.c0 = Some(c0);
        self
    }

    /// Sets per-sequence lengths.
    pub fn lengths(mut self, lengths: &'a [usize]) -> Self {
        self.lengths = Some(lengths);
        self
    }
}

/// Everything [`Recurrent::forward`] returns, as PyTorch's module does.
#[derive(Clone, Debug)]
pub struct SeqOutput<F> {
    /// `(T, B, D·H)` (or `(B, T, D·H)` when `batch_first`): the last layer's hidden state at every
    /// step, both directions concatenated; zero past each sequence's length.
    pub output: Array3<F>,
    /// `(L·D, B, H)`: every layer's and direction's state after its last valid step.
    pub h_n: Array3<F>,
    /// `(L·D, B, H)`: the same for the LSTM cell state; `None` for RNN and GRU.
    pub c_n: Option<Array3<F>>,
}

impl<F: Scalar> SeqOutput<F> {
    /// The final states, to start the next chunk of a stream from (truncated BPTT) or to continue
    /// generating.
    pub fn state(&self) -> RnnState<F> {
        RnnState {
            h: self.h_n.clone(),
            c: self.c_n.clone(),
        }
    }
}

/// A recurrent state: `h` `(L·D, B, H)` and, for the LSTM, `c` of the same shape.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnState<F> {
    pub h: Array3<F>,
    pub c: Option<Array3<F>>,
}

impl<'a, F> SeqInput<'a, F> {
    /// Starts from `state` (`h0` and, when present, `c0`).
    pub fn state(mut self, state: &'a RnnState<F>) -> Self {
        self.h0 = Some(state.h.view());
        self.c0 = state.c.as_ref().map(|c| c.view());
        self
    }
}

/// Gradients returned by [`Recurrent::backward`].
#[derive(Clone, Debug)]
pub struct SeqGrads<F> {
    /// ∂L/∂input, same shape and layout as the input.
    pub d_input: Array3<F>,
    /// ∂L/∂h0 `(L·D, B, H)` (what a previous chunk would receive; truncated BPTT drops it).
    pub d_h0: Array3<F>,
    /// ∂L/∂c0 `(L·D, B, H)`, LSTM only.
    pub d_c0: Option<Array3<F>>,
    /// `(L·D, T)`: ‖∂L/∂h_t‖ (Frobenius norm over the batch) of layer `l`, direction `d` at row
    /// `l·D + d`, for every time step `t`. This is the gradient reaching the hidden state through
    /// both the output and the recurrence: the quantity that vanishes in a vanilla RNN.
    pub step_grad_norms: Array2<f64>,
}

struct LayerCache<F: Scalar> {
    /// `(T·B, I_l)`: what layer `l` read (after dropout for `l > 0`).
    input: Array2<F>,
    /// `(T·B, I_l)`: the dropout mask (0 or 1/(1−p)) applied to layer `l − 1`'s output.
    dropout_mask: Option<Array2<F>>,
    /// One per direction.
    dirs: Vec<DirectionCache<F>>,
}

struct Cache<F: Scalar> {
    layers: Vec<LayerCache<F>>,
    t_len: usize,
    batch: usize,
    lengths: Option<Vec<usize>>,
}

/// A stack of recurrent layers (`nn.RNN` / `nn.LSTM` / `nn.GRU`).
///
/// Parameters, per layer `l` and direction suffix `""` / `"_reverse"`, in PyTorch's order:
/// `weight_ih_l{l}` `(G·H, I_l)`, `weight_hh_l{l}` `(G·H, H)`, `bias_ih_l{l}` `(G·H)`,
/// `bias_hh_l{l}` `(G·H)`, where `I_0 = input_size` and `I_l = D·H` above.
pub struct Recurrent<F: Scalar> {
    config: RecurrentConfig,
    /// Index `l·D + d`.
    params: Vec<DirectionParams<F>>,
    cache: Option<Cache<F>>,
}

impl<F: Scalar> Recurrent<F> {
    /// A layer with PyTorch's default initialisation (every tensor U(−1/√H, 1/√H)).
    ///
    /// # Errors
    /// If a size is zero or `dropout` is outside `[0, 1)`.
    pub fn new(config: RecurrentConfig, rng: &mut Rng) -> Result<Self> {
        Self::with_init(config, &RecurrentInit::default(), rng)
    }

    /// A layer with the given initialisation options.
    pub fn with_init(
        config: RecurrentConfig,
        init_opts: &RecurrentInit,
        rng: &mut Rng,
    ) -> Result<Self> {
        config.validate()?;
        if init_opts.forget_bias.is_some() && config.kind != CellKind::Lstm {
            return Err(Error::invalid(
                "Recurrent::with_init",
                "forget_bias",
                format!(
                    "only the LSTM has a forget gate, the layer is {}",
                    config.kind
                ),
            ));
        }
        let h = config.hidden_size;
        let bound = init::default_bound(h);
        let mut params = Vec::new();
        for l in 0..config.num_layers {
            for _ in 0..config.directions() {
                let mut p = direction::zeros(config.kind, layer_input_size(&config, l), h);
                init::fill_uniform(&mut p.weight_ih.value, bound, rng);
                init::fill_uniform(&mut p.weight_hh.value, bound, rng);
                init::fill_uniform(&mut p.bias_ih.value, bound, rng);
                init::fill_uniform(&mut p.bias_hh.value, bound, rng);
                if init_opts.orthogonal_recurrent {
                    for g in 0..config.kind.gates() {
                        let q = init::orthogonal::<F>(h, h, 1.0, rng);
                        p.weight_hh
                            .value
                            .slice_mut(s![g * h..(g + 1) * h, ..])
                            .assign(&q);
                    }
                }
                if let Some(fb) = init_opts.forget_bias {
                    p.bias_ih.value.slice_mut(s![h..2 * h]).fill(F::of(fb));
                    p.bias_hh.value.slice_mut(s![h..2 * h]).fill(F::zero());
                }
                params.push(p);
            }
        }
        Ok(Recurrent {
            config,
            params,
            cache: None,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// Parameters of layer `layer`, direction `dir` (0 forward, 1 reverse).
    pub fn direction_params(&self, layer: usize, dir: usize) -> &DirectionParams<F> {
        &self.params[layer * self.config.directions() + dir]
    }

    fn op(&self) -> &'static str {
        match self.config.kind {
            CellKind::Tanh | CellKind::Relu => "RNN::forward",
            CellKind::Lstm => "LSTM::forward",
            CellKind::Gru => "GRU::forward",
        }
    }

    /// Runs all layers over the whole sequence.
    ///
    /// In [`Mode::Train`] the layer keeps what [`Recurrent::backward`] needs and applies dropout
    /// between layers with `rng`; in [`Mode::Eval`] it keeps nothing and `rng` is not used.
    ///
    /// # Errors
    /// Wrong input width or rank, empty input, `h0`/`c0` not `(L·D, B, H)`, `c0` for a cell without
    /// one, lengths not one per sequence or outside `1..=T`.
    pub fn forward(
        &mut self,
        inp: SeqInput<'_, F>,
        mode: Mode,
        rng: &mut Rng,
    ) -> Result<SeqOutput<F>> {
        self.cache = None;
        let cfg = self.config.clone();
        let (t_len, batch) = self.check_input(&inp)?;
        let (ld, h, dirs) = (
            cfg.num_layers * cfg.directions(),
            cfg.hidden_size,
            cfg.directions(),
        );

        // (T·B, I) time-major copy of the input.
        let x_tm = if cfg.batch_first {
            inp.input.permuted_axes([1, 0, 2])
        } else {
            inp.input
        };
        let mut layer_in = x_tm
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order((t_len * batch, cfg.input_size))
            .expect("standard layout");
        let zeros = Array2::<F>::zeros((batch, h));
        let mut h_n = Array3::<F>::zeros((ld, batch, h));
        let mut c_n = cfg
            .kind
            .has_cell_state()
            .then(|| Array3::<F>::zeros((ld, batch, h)));
        let mut caches = Vec::new();
        let mut pending_mask = None;
        let lengths = inp.lengths;

        for l in 0..cfg.num_layers {
            let mut out = Array3::<F>::zeros((t_len, batch, dirs * h)); // (T, B, D·H)
            let mut dir_caches = Vec::new();
            for d in 0..dirs {
                let k = l * dirs + d;
                let h0 = inp
                    .h0
                    .map_or(zeros.view(), |h0| h0.index_axis_move(Axis(0), k));
                let c0 = inp.c0.map(|c0| c0.index_axis_move(Axis(0), k));
                let reverse = d == 1;
                let cache = self.params[k].forward(
                    cfg.kind,
                    layer_in.view(),
                    h0,
                    c0,
                    lengths,
                    reverse,
                    out.slice_mut(s![.., .., d * h..(d + 1) * h]),
                );
                h_n.index_axis_mut(Axis(0), k).assign(&cache.h_n(reverse));
                if let Some(c_n) = c_n.as_mut() {
                    c_n.index_axis_mut(Axis(0), k).assign(&cache.c_n(reverse));
                }
                if mode.is_train() {
                    dir_caches.push(cache);
                }
            }
            if mode.is_train() {
                caches.push(LayerCache {
                    input: layer_in,
                    dropout_mask: pending_mask.take(),
                    dirs: dir_caches,
                });
            }
            let mut next = out
                .into_shape_with_order((t_len * batch, dirs * h))
                .expect("standard layout");
            if l + 1 < cfg.num_layers && mode.is_train() && cfg.dropout > 0.0 {
                let mask = dropout_mask::<F>(&[t_len * batch, dirs * h], cfg.dropout, rng)
                    .into_dimensionality()
                    .expect("2-D mask");
                next *= &mask;
                pending_mask = Some(mask);
            }
            layer_in = next;
        }

        let out = layer_in
            .into_shape_with_order((t_len, batch, dirs * h))
            .expect("standard layout");
        let output = if cfg.batch_first {
            out.permuted_axes([1, 0, 2])
                .as_standard_layout()
                .into_owned()
        } else {
            out
        };
        if mode.is_train() {
            self.cache = Some(Cache {
                layers: caches,
                t_len,
                batch,
                lengths: lengths.map(|l| l.to_vec()),
            });
        }
        Ok(SeqOutput { output, h_n, c_n })
    }

    /// Backpropagation through time through all layers and directions.
    ///
    /// `d_output` has the shape of `output`; `d_h_n` and `d_c_n` that of `h_n` and `c_n` (`None`
    /// means zero). Parameter gradients are accumulated; the cache of the forward pass is consumed.
    ///
    /// # Errors
    /// No train-mode forward before, or gradient shapes that differ from the forward outputs.
    pub fn backward(
        &mut self,
        d_output: ArrayView3<'_, F>,
        d_h_n: Option<ArrayView3<'_, F>>,
        d_c_n: Option<ArrayView3<'_, F>>,
    ) -> Result<SeqGrads<F>> {
        let op = "Recurrent::backward";
        let (t_len, batch) = match &self.cache {
            Some(c) => (c.t_len, c.batch),
            None => return Err(Error::NoForwardCache { op }),
        };
        let cfg = self.config.clone();
        let (h, dirs) = (cfg.hidden_size, cfg.directions());
        let ld = cfg.num_layers * dirs;
        let out_shape = if cfg.batch_first {
            [batch, t_len, dirs * h]
        } else {
            [t_len, batch, dirs * h]
        };
        // Shapes are checked before the cache is consumed, so a corrected call can still run.
        check_shape(op, "d_output", &out_shape, d_output.shape())?;
        let state_shape = [ld, batch, h];
        if let Some(d) = d_h_n {
            check_shape(op, "d_h_n", &state_shape, d.shape())?;
        }
        if let Some(d) = d_c_n {
            if !cfg.kind.has_cell_state() {
                return Err(Error::invalid(
                    op,
                    "d_c_n",
                    format!("{} has no cell state", cfg.kind),
                ));
            }
            check_shape(op, "d_c_n", &state_shape, d.shape())?;
        }
        let cache = self.cache.take().expect("checked above");

        let d_out_tm = if cfg.batch_first {
            d_output.permuted_axes([1, 0, 2])
        } else {
            d_output
        };
        let mut d_layer_out = d_out_tm.as_standard_layout().into_owned(); // (T, B, D·H)
        let zeros = Array2::<F>::zeros((batch, h));
        let mut d_h0 = Array3::<F>::zeros((ld, batch, h));
        let mut d_c0 = cfg
            .kind
            .has_cell_state()
            .then(|| Array3::<F>::zeros((ld, batch, h)));
        let mut norms = Array2::<f64>::zeros((ld, t_len));
        let lengths = cache.lengths.as_deref();

        let mut d_input = None;
        for (l, lc) in cache.layers.iter().enumerate().rev() {
            let in_size = lc.input.ncols();
            let mut dx = Array2::<F>::zeros((t_len * batch, in_size)); // (T·B, I_l)
            for d in 0..dirs {
                let k = l * dirs + d;
                let dh_n = d_h_n.map_or(zeros.view(), |g| g.index_axis_move(Axis(0), k));
                let dc_n = d_c_n.map(|g| g.index_axis_move(Axis(0), k));
                let mut norm_row = vec![0.0; t_len];
                let (dh0, dc0) = self.params[k].backward(
                    cfg.kind,
                    lc.input.view(),
                    &lc.dirs[d],
                    d_layer_out.slice(s![.., .., d * h..(d + 1) * h]),
                    dh_n,
                    dc_n,
                    lengths,
                    d == 1,
                    dx.view_mut(),
                    &mut norm_row,
                );
                norms.row_mut(k).assign(&ndarray::Array1::from(norm_row));
                d_h0.index_axis_mut(Axis(0), k).assign(&dh0);
                if let (Some(all), Some(one)) = (d_c0.as_mut(), dc0) {
                    all.index_axis_mut(Axis(0), k).assign(&one);
                }
            }
            if let Some(mask) = &lc.dropout_mask {
                dx *= mask;
            }
            if l == 0 {
                d_input = Some(dx);
            } else {
                d_layer_out = dx
                    .into_shape_with_order((t_len, batch, in_size))
                    .expect("standard layout");
            }
        }
        let d_input = d_input
            .expect("at least one layer")
            .into_shape_with_order((t_len, batch, cfg.input_size))
            .expect("standard layout");
        let d_input = if cfg.batch_first {
            d_input
                .permuted_axes([1, 0, 2])
                .as_standard_layout()
                .into_owned()
        } else {
            d_input
        };
        Ok(SeqGrads {
            d_input,
            d_h0,
            d_c0,
            step_grad_norms: norms,
        })
    }

    /// Checks the shapes of a forward call; returns `(T, B)`.
    fn check_input(&self, inp: &SeqInput<'_, F>) -> Result<(usize, usize)> {
        let cfg = &self.config;
        let op = self.op();
        let layout = if cfg.batch_first {
            "(B, T, input_size)"
        } else {
            "(T, B, input_size)"
        };
        let shape = inp.input.shape();
        if shape[2] != cfg.input_size {
            return Err(Error::shape(
                op,
                format!("input {layout}"),
                format!("(_, _, {})", cfg.input_size),
                shape,
            ));
        }
        let (t_len, batch) = if cfg.batch_first {
            (shape[1], shape[0])
        } else {
            (shape[0], shape[1])
        };
        if t_len == 0 || batch == 0 {
            return Err(Error::shape(
                op,
                format!("input {layout}"),
                "at least one time step and one sequence".to_string(),
                shape,
            ));
        }
        let state = [cfg.num_layers * cfg.directions(), batch, cfg.hidden_size];
        if let Some(h0) = inp.h0 {
            check_shape(
                op,
                "h0 (num_layers·directions, B, hidden_size)",
                &state,
                h0.shape(),
            )?;
        }
        if let Some(c0) = inp.c0 {
            if !cfg.kind.has_cell_state() {
                return Err(Error::invalid(
                    op,
                    "c0",
                    format!("{} has no cell state; pass h0 only", cfg.kind),
                ));
            }
            check_shape(
                op,
                "c0 (num_layers·directions, B, hidden_size)",
                &state,
                c0.shape(),
            )?;
        }
        if let Some(lengths) = inp.lengths {
            if lengths.len() != batch {
                return Err(Error::invalid(
                    op,
                    "lengths",
                    format!(
                        "expected one length per sequence ({batch}), got {}",
                        lengths.len()
                    ),
                ));
            }
            if let Some((b, &len)) = lengths
                .iter()
                .enumerate()
                .find(|&(_, &len)| len == 0 || len > t_len)
            {
                return Err(Error::invalid(
                    op,
                    "lengths",
                    format!("lengths[{b}] = {len}, expected 1 ≤ length ≤ T = {t_len}"),
                ));
            }
        }
        Ok((t_len, batch))
    }
}

/// Input width of layer `l`: `input_size` for the first, `D·H` above.
fn layer_input_size(cfg: &RecurrentConfig, l: usize) -> usize {
    if l == 0 {
        cfg.input_size
    } else {
        cfg.output_size()
    }
}

impl<F: Scalar> Module<F> for Recurrent<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        let dirs = self.config.directions();
        for (k, p) in self.params.iter_mut().enumerate() {
            let suffix = format!(
                "_l{}{}",
                k / dirs,
                if k % dirs == 1 { "_reverse" } else { "" }
            );
            f(&format!("weight_ih{suffix}"), p.weight_ih.as_mut());
            f(&format!("weight_hh{suffix}"), p.weight_hh.as_mut());
            f(&format!("bias_ih{suffix}"), p.bias_ih.as_mut());
            f(&format!("bias_hh{suffix}"), p.bias_hh.as_mut());
        }
    }
}
