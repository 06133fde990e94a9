//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay,
//! with the semantics of `torch.optim.SGD`.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Zip};

use super::{Optimizer, check_layout, check_range, param_layout, split_state_name};
use crate::{Error, Module, Result, Scalar};

/// Hyper-parameters of [`Sgd`] (PyTorch's names and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate η ≥ 0. Default 1e-3.
    pub lr: f64,
    /// Momentum μ ≥ 0. Default 0 (no momentum buffer).
    pub momentum: f64,
    /// Dampening τ ∈ [0, 1]: the new gradient enters the buffer with weight 1 − τ. Default 0.
    pub dampening: f64,
    /// L2 weight decay λ ≥ 0, added to the gradient as λ·p. Default 0.
    pub weight_decay: f64,
    /// Nesterov momentum (needs μ > 0 and τ = 0). Default false.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr` (other fields at their defaults).
    pub fn with_lr(lr: f64) -> Self {
        SgdConfig {
            lr,
            ..SgdConfig::default()
        }
    }
}

/// Per-parameter state: the shape the state was created for and the momentum buffer
/// (`None` when μ = 0).
#[derive(Clone, Debug)]
struct SgdState<F> {
    shape: Vec<usize>,
    momentum_buffer: Option<ArrayD<F>>,
}

/// `torch.optim.SGD`. For every parameter p with gradient g, per step:
///
/// ```text
/// d = g + λ·p                          (if λ ≠ 0)
/// if μ ≠ 0:
///     b = d                            (first step)
///     b = μ·b + (1 − τ)·d              (later steps)
///     d = d + μ·b   if nesterov   else   d = b
/// p = p − η·d
/// ```
///
/// State: `momentum_buffer.<param>` (only when μ ≠ 0), see the [module docs](super).
#[derive(Clone, Debug)]
pub struct Sgd<F> {
    cfg: SgdConfig,
    /// Created at the first step (or by loading), keyed by parameter name.
    state: BTreeMap<String, SgdState<F>>,
}

const KINDS: [&str; 1] = ["momentum_buffer"];

impl<F: Scalar> Sgd<F> {
    /// An SGD optimizer with no state yet.
    ///
    /// # Errors
    /// [`Error::Invalid`] if η < 0, μ < 0, λ < 0, τ ∉ [0, 1], any of them is not finite, or
    /// Nesterov is asked for with μ = 0 or τ ≠ 0.
    pub fn new(cfg: SgdConfig) -> Result<Self> {
        const OP: &str = "Sgd::new";
        check_range(OP, "lr", cfg.lr, 0.0, f64::INFINITY, false)?;
        check_range(OP, "momentum", cfg.momentum, 0.0, f64::INFINITY, false)?;
        check_range(OP, "dampening", cfg.dampening, 0.0, 1.0, true)?;
        check_range(
            OP,
            "weight_decay",
            cfg.weight_decay,
            0.0,
            f64::INFINITY,
            false,
        )?;
        if cfg.nesterov && (cfg.momentum == 0.0 || cfg.dampening != 0.0) {
            return Err(Error::invalid(
                OP,
                "nesterov",
                format!(
                    "Nesterov momentum requires momentum > 0 and dampening = 0 (got momentum {}, dampening {})",
                    cfg.momentum, cfg.dampening
                ),
            ));
        }
        Ok(Sgd {
            cfg,
            state: BTreeMap::new(),
        })
    }

    /// The configuration (with the current learning rate).
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }
}

impl<F: Scalar> Optimizer<F> for Sgd<F> {
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()> {
        const OP: &str = "Sgd::step";
        let layout = param_layout(OP, model)?;
        if self.state.is_empty() {
            for (name, shape) in layout {
                self.state.insert(
                    name,
                    SgdState {
                        shape,
                        momentum_buffer: None,
                    },
                );
            }
        } else {
            check_layout(OP, &self.state, &layout, |s| &s.shape)?;
        }

        // Coefficients as PyTorch passes them to its kernels: Python floats rounded to F.
        let wd = self.cfg.weight_decay;
        let lam = F::of(wd);
        let mu = F::of(self.cfg.momentum);
        let keep = F::of(1.0 - self.cfg.dampening);
        let neg_lr = F::of(-self.cfg.lr);
        let momentum = self.cfg.momentum != 0.0;
        let nesterov = self.cfg.nesterov;
        let state = &mut self.state;

        model.visit_params(&mut |name, mut p| {
            let st = state.get_mut(name).expect("checked by check_layout");
            // d = g + λ·p
            let decayed = |g: F, p: F| if wd != 0.0 { g + lam * p } else { g };
            if !momentum {
                // p = p + (−η)·d
                Zip::from(&mut p.value)
                    .and(&p.grad)
                    .for_each(|p, &g| *p += neg_lr * decayed(g, *p));
                return;
            }
            let first = st.momentum_buffer.is_none();
            let b = st
                .momentum_buffer
                .get_or_insert_with(|| ArrayD::zeros(p.value.raw_dim()));
            Zip::from(&mut p.value)
                .and(&p.grad)
                .and(b)
                .for_each(|p, &g, b| {
                    let d = decayed(g, *p);
                    // b = d on the first step; else b = μ·b, then b = b + (1 − τ)·d (two kernels
                    // in PyTorch, two roundings here)
                    *b = if first { d } else { *b * mu + keep * d };
                    // d = d + μ·b (Nesterov) or d = b
                    let d = if nesterov { d + mu * *b } else { *b };
                    // p = p + (−η)·d
                    *p += neg_lr * d;
                });
        });
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn state_tensors(&self) -> Vec<(String, ArrayD<F>)> {
        self.state
            .iter()
            .filter_map(|(name, s)| {
                s.momentum_buffer
                    .as_ref()
                    .map(|b| (format!("momentum_buffer.{name}"), b.clone()))
            })
            .collect()
    }

    fn load_state_tensors(&mut self, tensors: Vec<(String, ArrayD<F>)>) -> Result<()> {
        const OP: &str = "Sgd::load_state_tensors";
        let mut state = BTreeMap::new();
        for (full, t) in tensors {
            let (_, param) = split_state_name(OP, &full, &KINDS)?;
            if self.cfg.momentum == 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!("state tensor '{full}'"),
                    "this optimizer has momentum 0 and keeps no momentum buffer",
                ));
            }
            if state.contains_key(param) {
                return Err(Error::invalid(
                    OP,
                    format!("state tensor '{full}'"),
                    "appears twice",
                ));
            }
            state.insert(
                param.to_string(),
                SgdState {
                    shape: t.shape().to_vec(),
                    momentum_buffer: Some(t),
                },
            );
        }
        self.state = state;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "sgd"
    }
}
