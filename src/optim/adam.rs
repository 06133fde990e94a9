//! Adam and AdamW with the semantics and operation order of PyTorch's single-tensor
//! (`foreach=False`) `torch.optim.Adam` / `torch.optim.AdamW`.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Zip};

use super::{Optimizer, check_layout, check_range, param_layout, split_state_name};
use crate::error::fmt_shape;
use crate::{Error, Module, Result, Scalar};

/// Hyper-parameters of [`Adam`] (PyTorch's names; `Default` is `torch.optim.Adam`'s defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate η ≥ 0. Default 1e-3.
    pub lr: f64,
    /// (β₁, β₂) ∈ [0, 1)², decay rates of the first and second moments. Default (0.9, 0.999).
    pub betas: (f64, f64),
    /// ε ≥ 0 added to the denominator. Default 1e-8.
    pub eps: f64,
    /// Weight decay λ ≥ 0: L2 (added to the gradient) for Adam, decoupled for AdamW.
    /// Default 0 (use [`AdamConfig::adamw_default`] for AdamW's 0.01).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// `torch.optim.AdamW`'s defaults: as [`AdamConfig::default`] but λ = 0.01.
    pub fn adamw_default() -> Self {
        AdamConfig {
            weight_decay: 0.01,
            ..AdamConfig::default()
        }
    }
}

/// Per-parameter state.
#[derive(Clone, Debug)]
struct AdamState<F> {
    /// Steps taken for this parameter (t in the bias corrections).
    step: u64,
    /// First moment m, the parameter's shape.
    exp_avg: ArrayD<F>,
    /// Second moment v, the parameter's shape.
    exp_avg_sq: ArrayD<F>,
}

/// Adam (`torch.optim.Adam`) or, built with [`Adam::adamw`], AdamW (`torch.optim.AdamW`).
///
/// For every parameter p with gradient g, at step t = 1, 2, … (m, v start at zero):
///
/// ```text
/// p = p·(1 − η·λ)                       (AdamW, if λ ≠ 0)
/// g = g + λ·p                           (Adam, if λ ≠ 0)
/// m = lerp(m, g, 1 − β₁)                = β₁·m + (1 − β₁)·g
/// v = β₂·v + (1 − β₂)·g·g
/// step_size = η / (1 − β₁ᵗ)
/// denom = √v / √(1 − β₂ᵗ) + ε
/// p = p − step_size · m / denom
/// ```
///
/// Scalars are computed in `f64` and rounded to `F` once; element-wise operations follow
/// PyTorch's kernels: `lerp` is `m + w·(g − m)` for |w| < 0.5 and `g − (g − m)·(1 − w)`
/// otherwise, `addcmul` is `v + (c·g)·g`, `addcdiv` is `p + (−step_size·m) / denom`.
///
/// State: `step.<param>`, `exp_avg.<param>`, `exp_avg_sq.<param>`, see the [module docs](super).
#[derive(Clone, Debug)]
pub struct Adam<F> {
    cfg: AdamConfig,
    /// `true` for AdamW (decoupled weight decay).
    decoupled: bool,
    state: BTreeMap<String, AdamState<F>>,
}

const KINDS: [&str; 3] = ["step", "exp_avg", "exp_avg_sq"];

impl<F: Scalar> Adam<F> {
    /// Adam with L2 weight decay (λ·p added to the gradient).
    ///
    /// # Errors
    /// [`Error::Invalid`] if η < 0, ε < 0, λ < 0, a beta is outside [0, 1), or any is not finite.
    pub fn new(cfg: AdamConfig) -> Result<Self> {
        Self::build(cfg, false)
    }

    /// AdamW: decoupled weight decay, p ← p·(1 − η·λ) before the Adam update.
    ///
    /// # Errors
    /// As [`Adam::new`].
    pub fn adamw(cfg: AdamConfig) -> Result<Self> {
        Self::build(cfg, true)
    }

    fn build(cfg: AdamConfig, decoupled: bool) -> Result<Self> {
        let op = if decoupled { "AdamW::new" } else { "Adam::new" };
        check_range(op, "lr", cfg.lr, 0.0, f64::INFINITY, false)?;
        check_range(op, "beta1", cfg.betas.0, 0.0, 1.0, false)?;
        check_range(op, "beta2", cfg.betas.1, 0.0, 1.0, false)?;
        check_range(op, "eps", cfg.eps, 0.0, f64::INFINITY, false)?;
        check_range(
            op,
            "weight_decay",
            cfg.weight_decay,
            0.0,
            f64::INFINITY,
            false,
        )?;
        Ok(Adam {
            cfg,
            decoupled,
            state: BTreeMap::new(),
        })
    }

    /// `true` for AdamW (decoupled weight decay), `false` for Adam (L2).
    pub fn is_decoupled(&self) -> bool {
        self.decoupled
    }

    /// The configuration (with the current learning rate).
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }

    fn op(&self, adam: &'static str, adamw: &'static str) -> &'static str {
        if self.decoupled { adamw } else { adam }
    }
}

/// PyTorch's `lerp(start, end, weight)` for a scalar weight, in `F`.
#[inline]
fn lerp<F: Scalar>(start: F, end: F, weight: F) -> F {
    if weight.abs() < F::of(0.5) {
        start + weight * (end - start)
    } else {
        end - (end - start) * (F::one() - weight)
    }
}

impl<F: Scalar> Optimizer<F> for Adam<F> {
    fn step(&mut self, model: &mut dyn Module<F>) -> Result<()> {
        let op = self.op("Adam::step", "AdamW::step");
        let layout = param_layout(op, model)?;
        if self.state.is_empty() {
            for (name, shape) in layout {
                let zeros = ArrayD::zeros(shape);
                self.state.insert(
                    name,
                    AdamState {
                        step: 0,
                        exp_avg: zeros.clone(),
                        exp_avg_sq: zeros,
                    },
                );
            }
        } else {
            check_layout(op, &self.state, &layout, |s| s.exp_avg.shape())?;
        }

        let AdamConfig {
            lr,
            betas: (beta1, beta2),
            eps,
            weight_decay,
        } = self.cfg;
        let decoupled = self.decoupled;
        // Python-float scalars, rounded to F where PyTorch hands them to a kernel.
        let decay = F::of(1.0 - lr * weight_decay);
        let lam = F::of(weight_decay);
        let w1 = F::of(1.0 - beta1);
        let b2 = F::of(beta2);
        let c2 = F::of(1.0 - beta2);
        let eps_f = F::of(eps);
        let state = &mut self.state;

        model.visit_params(&mut |name, mut p| {
            let st = state.get_mut(name).expect("checked by check_layout");
            st.step += 1;
            let t = st.step as f64;
            let bias_correction1 = 1.0 - beta1.powf(t);
            let bias_correction2 = 1.0 - beta2.powf(t);
            let step_size = lr / bias_correction1;
            let bc2_sqrt = F::of(bias_correction2.sqrt());
            let neg_step_size = F::of(-step_size);

            let decay_first = weight_decay != 0.0 && decoupled;
            let l2 = weight_decay != 0.0 && !decoupled;
            Zip::from(&mut p.value)
                .and(&p.grad)
                .and(&mut st.exp_avg)
                .and(&mut st.exp_avg_sq)
                .for_each(|p, &g, m, v| {
                    // p = p·(1 − η·λ) (AdamW only)
                    if decay_first {
                        *p *= decay;
                    }
                    // g = g + λ·p (Adam only)
                    let g = if l2 { g + lam * *p } else { g };
                    // m = lerp(m, g, 1 − β₁)
                    *m = lerp(*m, g, w1);
                    // v = v·β₂, then v = v + ((1 − β₂)·g)·g
                    let vb = *v * b2;
                    *v = vb + c2 * g * g;
                    // denom = √v / √bc₂ + ε
                    let denom = v.sqrt() / bc2_sqrt + eps_f;
                    // p = p + (−step_size·m) / denom
                    *p += neg_step_size * *m / denom;
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
        let mut out = Vec::with_capacity(3 * self.state.len());
        for (name, s) in &self.state {
            out.push((format!("exp_avg.{name}"), s.exp_avg.clone()));
            out.push((format!("exp_avg_sq.{name}"), s.exp_avg_sq.clone()));
            out.push((
                format!("step.{name}"),
                ArrayD::from_elem(Vec::<usize>::new(), F::of(s.step as f64)),
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn load_state_tensors(&mut self, tensors: Vec<(String, ArrayD<F>)>) -> Result<()> {
        let op = self.op("Adam::load_state_tensors", "AdamW::load_state_tensors");
        type Parts<F> = (Option<u64>, Option<ArrayD<F>>, Option<ArrayD<F>>);
        let mut parts: BTreeMap<String, Parts<F>> = BTreeMap::new();
        for (full, t) in tensors {
            let (kind, param) = split_state_name(op, &full, &KINDS)?;
            let entry = parts.entry(param.to_string()).or_default();
            let dup = match kind {
                "step" => {
                    if !t.shape().is_empty() {
                        return Err(Error::shape(
                            op,
                            format!("state tensor '{full}'"),
                            "()",
                            t.shape(),
                        ));
                    }
                    let v = t.iter().next().copied().unwrap_or_else(F::zero).f64();
                    if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0) {
                        return Err(Error::invalid(
                            op,
                            format!("state tensor '{full}'"),
                            format!("a step count must be a non-negative integer, got {v}"),
                        ));
                    }
                    entry.0.replace(v as u64).is_some()
                }
                "exp_avg" => entry.1.replace(t).is_some(),
                _ => entry.2.replace(t).is_some(),
            };
            if dup {
                return Err(Error::invalid(
                    op,
                    format!("state tensor '{full}'"),
                    "appears twice",
                ));
            }
        }
        let mut state = BTreeMap::new();
        for (param, (step, m, v)) in parts {
            let missing = |kind: &str| {
                Error::invalid(
                    op,
                    format!("state tensor '{kind}.{param}'"),
                    "is missing (each parameter needs step, exp_avg and exp_avg_sq)",
                )
            };
            let step = step.ok_or_else(|| missing("step"))?;
            let exp_avg = m.ok_or_else(|| missing("exp_avg"))?;
            let exp_avg_sq = v.ok_or_else(|| missing("exp_avg_sq"))?;
            if exp_avg_sq.shape() != exp_avg.shape() {
                return Err(Error::shape(
                    op,
                    format!("state tensor 'exp_avg_sq.{param}' (same as exp_avg.{param})"),
                    fmt_shape(exp_avg.shape()),
                    exp_avg_sq.shape(),
                ));
            }
            state.insert(
                param,
                AdamState {
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        self.state = state;
        Ok(())
    }

    fn name(&self) -> &'static str {
        if self.decoupled { "adamw" } else { "adam" }
    }
}
