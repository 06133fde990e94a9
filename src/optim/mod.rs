//! Optimizers, gradient clipping and learning-rate schedules, with PyTorch's arithmetic.
//!
//! * [`Sgd`] — `torch.optim.SGD` (momentum, dampening, Nesterov, L2 weight decay).
//! * [`Adam`] — `torch.optim.Adam` (L2 weight decay) and, built with [`Adam::adamw`],
//!   `torch.optim.AdamW` (decoupled weight decay), following PyTorch's single-tensor
//!   (`foreach=False`) code path operation by operation.
//! * [`clip_grad_norm`] / [`grad_norm`] — `torch.nn.utils.clip_grad_norm_` with `norm_type = 2`.
//! * [`Schedule`] / [`LrSchedule`] — constant, step and cosine schedules with linear warm-up, as
//!   pure functions of the step so that resuming needs nothing but the step count.
//!
//! ## Arithmetic
//! Scalar coefficients (`1 − β₁`, `lr / (1 − β₁ᵗ)`, `1 − lr·λ`, …) are computed in `f64`, as PyTorch
//! computes its Python floats, and converted to `F` once; the element-wise work then runs in `F`
//! in the order PyTorch's kernels use, so `f32` results agree with PyTorch to rounding.
//!
//! ## Optimizer state
//! State is kept per parameter and keyed by the parameter's NAME (as given by
//! [`Module::visit_params`]); it is created on the first [`Optimizer::step`]. Every later step
//! checks that the model still has exactly the same parameter names and shapes and otherwise
//! returns an error naming the parameter, before anything is updated.
//!
//! [`Optimizer::state_tensors`] exports the state as named tensors, `<kind>.<param name>`
//! (the kind is everything before the first `.`, the parameter name may itself contain dots):
//!
//! | name | optimizer | shape | meaning |
//! |---|---|---|---|
//! | `momentum_buffer.<param>` | SGD with momentum ≠ 0 | the parameter's | velocity `b` |
//! | `exp_avg.<param>` | Adam, AdamW | the parameter's | first moment `m` |
//! | `exp_avg_sq.<param>` | Adam, AdamW | the parameter's | second moment `v` |
//! | `step.<param>` | Adam, AdamW | `()` (0-d) | number of steps taken for that parameter |
//!
//! Step counts are stored as `F` like PyTorch stores them (as float32 for `f32`), exact up to
//! 2²⁴ steps in `f32`. Hyper-parameters (lr, betas, …) are not state: they come from the
//! configuration, and the learning rate from the schedule. Loading the exported tensors into a
//! freshly built optimizer of the same configuration resumes bit-exactly.

mod adam;
mod clip;
mod schedule;
mod sgd;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use ndarray::ArrayD;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, grad_norm};
pub use schedule::{LrSchedule, Schedule};
pub use sgd::{Sgd, SgdConfig};

use crate::error::fmt_shape;
use crate::{Error, Module, Result, Scalar};

/// An optimizer: updates every parameter of a [`Module`] from its accumulated `.grad`.
pub trait Optimizer<F: Scalar> {
    /// One update of every parameter from its `.grad`. Does not zero the gradients.
    ///
    /// # Errors
    /// * [`Error::Shape`] if a gradient's shape differs from its parameter's, or if a parameter's
    ///   shape differs from the shape its state was created with;
    /// * [`Error::Invalid`] if the model has a parameter without state or the state has a
    ///   parameter the model lacks (after the first step), or two parameters share a name.
    ///
    /// Nothing is updated when an error is returned.
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()>;

    /// The learning rate the next [`Optimizer::step`] uses.
    fn lr(&self) -> f64;

    /// Sets the learning rate (schedules call this before each step).
    fn set_lr(&mut self, lr: f64);

    /// Everything needed to resume bit-exactly, as named tensors (see the
    /// [module docs](self) for the naming), sorted by name.
    fn state_tensors(&self) -> Vec<(String, ArrayD<F>)>;

    /// Replaces the whole state by `tensors` (as produced by [`Optimizer::state_tensors`]).
    /// An empty list resets the optimizer to its never-stepped state.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown kind prefix (the message names it), a duplicate or
    /// incomplete entry, a non-integer step count; [`Error::Shape`] for tensors of one parameter
    /// whose shapes disagree. Shapes against the model are checked at the next step. On error the
    /// state is left unchanged.
    fn load_state_tensors(&mut self, tensors: Vec<(String, ArrayD<F>)>) -> Result<()>;

    /// Short lower-case name: `"sgd"`, `"adam"` or `"adamw"`.
    fn name(&self) -> &'static str;
}

/// Which optimizer [`build_optimizer`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    /// [`Sgd`].
    Sgd,
    /// [`Adam`] with L2 weight decay (added to the gradient).
    Adam,
    /// [`Adam`] with decoupled weight decay (AdamW).
    AdamW,
}

impl OptimizerKind {
    /// All kinds, in the order error messages list them.
    pub const ALL: [OptimizerKind; 3] = [
        OptimizerKind::Sgd,
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
    ];

    /// The name [`FromStr`] accepts: `"sgd"`, `"adam"`, `"adamw"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OptimizerKind {
    type Err = Error;

    /// Parses `sgd`, `adam` or `adamw` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        OptimizerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = OptimizerKind::ALL.iter().map(|k| k.as_str()).collect();
                Error::invalid(
                    "optimizer",
                    format!("name '{s}'"),
                    format!("expected one of {}", names.join(", ")),
                )
            })
    }
}

/// Everything [`build_optimizer`] needs, as the CLI collects it.
///
/// `momentum` and `nesterov` apply to SGD only and must be `0` / `false` for Adam and AdamW;
/// `betas` and `eps` apply to Adam and AdamW only and are ignored by SGD (SGD's dampening is 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerSpec {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// Learning rate (≥ 0).
    pub lr: f64,
    /// SGD momentum μ (≥ 0).
    pub momentum: f64,
    /// SGD Nesterov momentum (needs μ > 0).
    pub nesterov: bool,
    /// Weight decay λ (≥ 0): L2 for SGD and Adam, decoupled for AdamW.
    pub weight_decay: f64,
    /// Adam's (β₁, β₂), each in [0, 1).
    pub betas: (f64, f64),
    /// Adam's ε (≥ 0).
    pub eps: f64,
}

impl OptimizerSpec {
    /// PyTorch's defaults for `kind` with learning rate `lr`: momentum 0, no Nesterov, betas
    /// (0.9, 0.999), eps 1e-8, weight decay 0 (0.01 for AdamW).
    pub fn new(kind: OptimizerKind, lr: f64) -> Self {
        OptimizerSpec {
            kind,
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: if kind == OptimizerKind::AdamW {
                0.01
            } else {
                0.0
            },
            betas: (0.9, 0.999),
            eps: 1e-8,
        }
    }
}

/// Builds the optimizer `spec` describes.
///
/// # Errors
/// [`Error::Invalid`] for an invalid configuration (see [`Sgd::new`], [`Adam::new`]) or for
/// momentum / Nesterov given to Adam or AdamW.
pub fn build_optimizer<F: Scalar>(spec: &OptimizerSpec) -> Result<Box<dyn Optimizer<F>>> {
    match spec.kind {
        OptimizerKind::Sgd => Ok(Box::new(Sgd::new(SgdConfig {
            lr: spec.lr,
            momentum: spec.momentum,
            dampening: 0.0,
            weight_decay: spec.weight_decay,
            nesterov: spec.nesterov,
        })?)),
        OptimizerKind::Adam | OptimizerKind::AdamW => {
            if spec.momentum != 0.0 || spec.nesterov {
                return Err(Error::invalid(
                    "build_optimizer",
                    "momentum",
                    format!(
                        "momentum {} / nesterov {} apply to sgd only, not to {} (use betas)",
                        spec.momentum, spec.nesterov, spec.kind
                    ),
                ));
            }
            let cfg = AdamConfig {
                lr: spec.lr,
                betas: spec.betas,
                eps: spec.eps,
                weight_decay: spec.weight_decay,
            };
            Ok(Box::new(if spec.kind == OptimizerKind::AdamW {
                Adam::adamw(cfg)?
            } else {
                Adam::new(cfg)?
            }))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the optimizers.

/// Names and shapes of `model`'s parameters in visiting order, after checking that every grad
/// has its parameter's shape and that no name repeats.
pub(crate) fn param_layout<F: Scalar>(
    op: &'static str,
    model: &mut dyn Module<F>,
) -> Result<Vec<(String, Vec<usize>)>> {
    let mut layout = Vec::new();
    let mut first_err = None;
    let mut seen = HashSet::new();
    model.visit_params(&mut |name, p| {
        if first_err.is_some() {
            return;
        }
        if p.grad.shape() != p.value.shape() {
            first_err = Some(Error::shape(
                op,
                format!("grad of parameter '{name}'"),
                fmt_shape(p.value.shape()),
                p.grad.shape(),
            ));
        } else if !seen.insert(name.to_string()) {
            first_err = Some(Error::invalid(
                op,
                format!("parameter '{name}'"),
                "two parameters have this name; optimizer state is keyed by name",
            ));
        } else {
            layout.push((name.to_string(), p.value.shape().to_vec()));
        }
    });
    match first_err {
        Some(e) => Err(e),
        None => Ok(layout),
    }
}

/// Checks that `layout` (the model now) and `states` (created at the first step or loaded) hold
/// the same parameter names with the same shapes.
pub(crate) fn check_layout<S>(
    op: &'static str,
    states: &BTreeMap<String, S>,
    layout: &[(String, Vec<usize>)],
    shape_of: impl Fn(&S) -> &[usize],
) -> Result<()> {
    for (name, shape) in layout {
        match states.get(name) {
            None => {
                return Err(Error::invalid(
                    op,
                    format!("parameter '{name}'"),
                    "has no optimizer state (the model's parameters changed since the state was created)",
                ));
            }
            Some(s) => {
                let expected = shape_of(s);
                if expected != shape.as_slice() {
                    return Err(Error::shape(
                        op,
                        format!("parameter '{name}' (shape its optimizer state was created with)"),
                        fmt_shape(expected),
                        shape,
                    ));
                }
            }
        }
    }
    if states.len() != layout.len() {
        let names: HashSet<&str> = layout.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(missing) = states.keys().find(|k| !names.contains(k.as_str())) {
            return Err(Error::invalid(
                op,
                format!("optimizer state for '{missing}'"),
                "the model has no parameter of this name",
            ));
        }
    }
    Ok(())
}

/// Splits a state tensor name `kind.param` at the first dot; the kind must be one of `kinds`.
pub(crate) fn split_state_name<'a>(
    op: &'static str,
    name: &'a str,
    kinds: &[&str],
) -> Result<(&'a str, &'a str)> {
    let expected = || {
        let list: Vec<String> = kinds.iter().map(|k| format!("{k}.<param>")).collect();
        list.join(", ")
    };
    match name.split_once('.') {
        Some((kind, param)) if kinds.contains(&kind) && !param.is_empty() => Ok((kind, param)),
        Some((kind, _)) if !kinds.contains(&kind) => Err(Error::invalid(
            op,
            format!("state tensor '{name}'"),
            format!("unknown prefix '{kind}' (expected {})", expected()),
        )),
        _ => Err(Error::invalid(
            op,
            format!("state tensor '{name}'"),
            format!("expected a name of the form {}", expected()),
        )),
    }
}

/// Validates a scalar hyper-parameter: finite and within `[lo, hi)` / `[lo, hi]`.
pub(crate) fn check_range(
    op: &'static str,
    what: &str,
    v: f64,
    lo: f64,
    hi: f64,
    hi_inclusive: bool,
) -> Result<()> {
    let ok = v.is_finite() && v >= lo && if hi_inclusive { v <= hi } else { v < hi };
    if ok {
        Ok(())
    } else {
        let upper = if hi.is_infinite() {
            String::from("∞)")
        } else if hi_inclusive {
            format!("{hi}]")
        } else {
            format!("{hi})")
        };
        Err(Error::invalid(
            op,
            what,
            format!("{v} is outside [{lo}, {upper}"),
        ))
    }
}
