//! Gradient flow through time: ‖∂L/∂h_t‖ for every step of a sequence when the loss is taken at
//! the last step, and the largest singular values of the recurrent weights.
//!
//! Backpropagation through time carries `∂L/∂h_t = J_{t+1}ᵀ ∂L/∂h_{t+1}` (plus what the output at
//! `t` adds), with `J_{t+1} = ∂h_{t+1}/∂h_t`. For the tanh RNN `J = diag(1 − h²) W_hh`, so
//! `‖∂L/∂h_1‖ ≤ (σ_max(W_hh) · max(1 − h²))^{T−1} ‖∂L/∂h_T‖`: with `σ_max(W_hh) < 1` the gradient
//! that reaches the early steps shrinks geometrically with `T`. The LSTM's cell path multiplies
//! by the forget gate only, and the GRU's state path by `z`, so theirs can survive.

use std::collections::BTreeMap;

use ndarray::{ArrayD, ArrayView2, ArrayView3, s};

use super::svd::largest_singular_value;
use crate::loss::mse_loss;
use crate::models::SeqRegressor;
use crate::rnn::{CellKind, Recurrent, RecurrentInit};
use crate::{Error, Mode, Module, Result, Rng, Scalar};

/// ‖∂L/∂h_t‖ for `t = 1..=T`, the loss taken at the last step.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeProfile {
    /// `norms[t − 1] = ‖∂L/∂h_t‖`, the Frobenius norm over the batch, of the top layer's forward
    /// direction.
    pub norms: Vec<f64>,
}

impl TimeProfile {
    /// Number of steps `T`.
    pub fn len(&self) -> usize {
        self.norms.len()
    }

    /// Whether the profile has no steps (never, for a profile this module made).
    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    /// `‖∂L/∂h_1‖ / ‖∂L/∂h_T‖`: the fraction of the gradient that survives the trip back to the
    /// first step (1 when nothing is lost; a vanishing gradient makes it tiny).
    pub fn reach(&self) -> f64 {
        self.norms[0] / self.norms[self.len() - 1]
    }

    /// `‖∂L/∂h_t‖ / ‖∂L/∂h_T‖` for every `t`.
    pub fn relative(&self) -> Vec<f64> {
        let last = self.norms[self.len() - 1];
        self.norms.iter().map(|n| n / last).collect()
    }
}

/// Runs `model` forward (train mode) on `x (B, T, I)`, takes the MSE against `y (B, out)` at the
/// last step and backpropagates through time, returning ‖∂L/∂h_t‖ for every step.
///
/// The model's parameter gradients are zeroed afterwards, so the probe leaves no trace (with
/// dropout between layers, `rng` draws the masks as a training step would).
///
/// # Errors
/// Shape errors from the model and the loss (`x` or `y` not matching the model).
pub fn step_gradient_profile<F: Scalar>(
    model: &mut SeqRegressor<F>,
    x: ArrayView3<'_, F>,
    y: ArrayView2<'_, F>,
    rng: &mut Rng,
) -> Result<TimeProfile> {
    let pred = model.forward(x, None, Mode::Train, rng)?;
    let (_, d_pred) = mse_loss(pred.view(), y)?;
    let grads = model.backward(d_pred.view())?;
    model.zero_grad();
    let config = model.rnn.config();
    let row = (config.num_layers - 1) * config.directions();
    let norms = grads.step_grad_norms.slice(s![row, ..]).to_vec();
    if norms.is_empty() {
        return Err(Error::invalid(
            "step_gradient_profile",
            "sequence length",
            "expected at least one step",
        ));
    }
    Ok(TimeProfile { norms })
}

/// The same model in f64, its weights widened exactly.
///
/// A vanishing gradient falls below f32's smallest normal number (about 1e-38) within a few
/// hundred steps of a tanh RNN; measured in f64 it keeps its true size down to about 1e-308.
///
/// # Errors
/// Only if the model's configuration cannot be rebuilt (never for a model that exists).
pub fn widen(model: &mut SeqRegressor<f32>) -> Result<SeqRegressor<f64>> {
    let mut values = BTreeMap::<String, ArrayD<f32>>::new();
    model.visit_params(&mut |name, p| {
        values.insert(name.to_string(), p.value.to_owned());
    });
    let config = model.rnn.config().clone();
    let out = model.head.out_features();
    let mut wide =
        SeqRegressor::<f64>::new(config, &RecurrentInit::default(), out, &mut Rng::seed(0))?;
    wide.visit_params(&mut |name, mut p| {
        let v = &values[name]; // the same configuration has the same parameter names
        p.value.zip_mut_with(v, |w, &n| *w = f64::from(n));
    });
    Ok(wide)
}

/// The largest singular value of a recurrent layer's `weight_hh`, whole and per gate block.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentSpectrum {
    /// `σ_max(W_hh)` of the whole `(G·H, H)` matrix.
    pub whole: f64,
    /// `σ_max` of each gate's `(H, H)` block, in PyTorch's order (`hh` for the vanilla RNN;
    /// `i f g o` for the LSTM; `r z n` for the GRU).
    pub gates: Vec<(&'static str, f64)>,
}

/// Names of the gate blocks of `weight_hh`, in PyTorch's stacking order.
pub fn gate_names(kind: CellKind) -> &'static [&'static str] {
    match kind {
        CellKind::Tanh | CellKind::Relu => &["hh"],
        CellKind::Lstm => &["i", "f", "g", "o"],
        CellKind::Gru => &["r", "z", "n"],
    }
}

/// [`RecurrentSpectrum`] of layer `layer` (forward direction) of `rnn`.
///
/// # Errors
/// [`Error::Invalid`] for a layer the network does not have, or weights holding NaN.
pub fn recurrent_spectrum<F: Scalar>(
    rnn: &Recurrent<F>,
    layer: usize,
) -> Result<RecurrentSpectrum> {
    let config = rnn.config();
    if layer >= config.num_layers {
        return Err(Error::invalid(
            "recurrent_spectrum",
            format!("layer {layer}"),
            format!("the network has {} layers", config.num_layers),
        ));
    }
    let w = rnn.direction_params(layer, 0).weight_hh.value.view(); // (G·H, H)
    let h = config.hidden_size;
    let gates = gate_names(config.kind)
        .iter()
        .enumerate()
        .map(|(g, &name)| {
            Ok((
                name,
                largest_singular_value(w.slice(s![g * h..(g + 1) * h, ..]))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecurrentSpectrum {
        whole: largest_singular_value(w)?,
        gates,
    })
}
