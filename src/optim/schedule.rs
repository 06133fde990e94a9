//! Learning-rate schedules as pure functions of the step count.
//!
//! `step` is the number of optimizer steps already taken (0 for the first step); the trainer calls
//! `optimizer.set_lr(schedule.lr_at(base_lr, step))` before each step, so a resumed run needs only
//! the step count to continue on the same curve.

use std::f64::consts::PI;
use std::fmt;

use crate::{Error, Result};

/// The decay part of a learning-rate schedule (warm-up is added by [`LrSchedule`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// lr_t = lr.
    Constant,
    /// PyTorch `StepLR`: lr_t = lr · γ^⌊t / step_size⌋.
    Step {
        /// Steps between decays (> 0).
        step_size: u64,
        /// Multiplicative factor per decay (> 0).
        gamma: f64,
    },
    /// PyTorch `CosineAnnealingLR` (closed form), held at its end:
    /// lr_t = min_lr + (lr − min_lr)·(1 + cos(π·t/T))/2 for t < T, min_lr for t ≥ T.
    Cosine {
        /// T: the step at which lr reaches `min_lr` (> 0), usually the number of training steps.
        total_steps: u64,
        /// The final learning rate (≥ 0).
        min_lr: f64,
    },
}

const SYNTAX: &str =
    "expected constant, step:<step_size>:<gamma> or cosine[:<min_lr>[:<total_steps>]]";

impl Schedule {
    /// The learning rate for step `step` (0-based) given the base rate `base_lr`.
    pub fn lr_at(&self, base_lr: f64, step: u64) -> f64 {
        match *self {
            Schedule::Constant => base_lr,
            Schedule::Step { step_size, gamma } => {
                base_lr * gamma.powf((step / step_size.max(1)) as f64)
            }
            Schedule::Cosine {
                total_steps,
                min_lr,
            } => {
                if step >= total_steps {
                    min_lr
                } else {
                    min_lr
                        + (base_lr - min_lr) * (1.0 + (PI * step as f64 / total_steps as f64).cos())
                            / 2.0
                }
            }
        }
    }

    /// Checks the parameters: step_size > 0, γ > 0 and finite, T > 0, min_lr ≥ 0 and finite.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the bad parameter.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "Schedule";
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { step_size, gamma } => {
                if step_size == 0 {
                    Err(Error::invalid(OP, "step_size", "must be > 0"))
                } else if !(gamma.is_finite() && gamma > 0.0) {
                    Err(Error::invalid(
                        OP,
                        "gamma",
                        format!("must be finite and > 0, got {gamma}"),
                    ))
                } else {
                    Ok(())
                }
            }
            Schedule::Cosine {
                total_steps,
                min_lr,
            } => {
                if total_steps == 0 {
                    Err(Error::invalid(
                        OP,
                        "total_steps",
                        "cosine needs a number of steps > 0",
                    ))
                } else if !(min_lr.is_finite() && min_lr >= 0.0) {
                    Err(Error::invalid(
                        OP,
                        "min_lr",
                        format!("must be finite and ≥ 0, got {min_lr}"),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Parses the CLI syntax:
    ///
    /// * `constant`
    /// * `step:<step_size>:<gamma>`, e.g. `step:1000:0.5`
    /// * `cosine` (min_lr 0, T = `total_steps`), `cosine:<min_lr>`, `cosine:<min_lr>:<T>`
    ///
    /// `total_steps` is the length of the training run, used by `cosine` without an explicit T.
    /// The result is [validated](Schedule::validate).
    ///
    /// # Errors
    /// [`Error::Invalid`] saying what is wrong and what is expected.
    pub fn parse(s: &str, total_steps: u64) -> Result<Self> {
        const OP: &str = "Schedule::parse";
        let fields: Vec<&str> = s.trim().split(':').map(str::trim).collect();
        let bad = |msg: String| Error::invalid(OP, format!("schedule '{s}'"), msg);
        let num_u64 = |what: &str, v: &str| {
            v.parse::<u64>().map_err(|_| {
                bad(format!(
                    "{what} '{v}' is not a non-negative integer ({SYNTAX})"
                ))
            })
        };
        let num_f64 = |what: &str, v: &str| {
            v.parse::<f64>()
                .map_err(|_| bad(format!("{what} '{v}' is not a number ({SYNTAX})")))
        };
        let sched = match fields.as_slice() {
            ["constant"] => Schedule::Constant,
            ["step", size, gamma] => Schedule::Step {
                step_size: num_u64("step_size", size)?,
                gamma: num_f64("gamma", gamma)?,
            },
            ["cosine"] => Schedule::Cosine {
                total_steps,
                min_lr: 0.0,
            },
            ["cosine", min] => Schedule::Cosine {
                total_steps,
                min_lr: num_f64("min_lr", min)?,
            },
            ["cosine", min, t] => Schedule::Cosine {
                total_steps: num_u64("total_steps", t)?,
                min_lr: num_f64("min_lr", min)?,
            },
            [name, ..] if ["constant", "step", "cosine"].contains(name) => {
                return Err(bad(format!("wrong number of ':' fields ({SYNTAX})")));
            }
            [name, ..] => return Err(bad(format!("unknown schedule '{name}' ({SYNTAX})"))),
            [] => return Err(bad(SYNTAX.to_string())),
        };
        sched.validate().map_err(|e| bad(e.to_string()))?;
        Ok(sched)
    }
}

impl fmt::Display for Schedule {
    /// The [`Schedule::parse`] syntax (`cosine` with both fields), so the output parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { step_size, gamma } => write!(f, "step:{step_size}:{gamma}"),
            Schedule::Cosine {
                total_steps,
                min_lr,
            } => write!(f, "cosine:{min_lr}:{total_steps}"),
        }
    }
}

/// A [`Schedule`] with linear warm-up.
///
/// ```text
/// lr_t = schedule.lr_at(lr, t) · (t + 1) / warmup_steps    for t < warmup_steps
/// lr_t = schedule.lr_at(lr, t)                             otherwise
/// ```
///
/// The warm-up factor multiplies the schedule, and the schedule counts from step 0 (not from the
/// end of the warm-up): step boundaries and the cosine's T are positions in the whole run, so
/// `cosine` with T = the number of training steps ends at `min_lr` on the last step whatever the
/// warm-up. The first step uses lr/warmup_steps and step `warmup_steps − 1` the full
/// `schedule.lr_at(lr, t)`. `warmup_steps = 0` means no warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The decay schedule.
    pub schedule: Schedule,
    /// Number of linear warm-up steps (0: none).
    pub warmup_steps: u64,
}

impl LrSchedule {
    /// `schedule` with `warmup_steps` steps of linear warm-up.
    pub fn new(schedule: Schedule, warmup_steps: u64) -> Self {
        LrSchedule {
            schedule,
            warmup_steps,
        }
    }

    /// The constant schedule without warm-up.
    pub fn constant() -> Self {
        Self::new(Schedule::Constant, 0)
    }

    /// The learning rate for step `step` (0-based) given the base rate `base_lr`.
    pub fn lr_at(&self, base_lr: f64, step: u64) -> f64 {
        let lr = self.schedule.lr_at(base_lr, step);
        if step < self.warmup_steps {
            lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            lr
        }
    }
}

impl From<Schedule> for LrSchedule {
    fn from(schedule: Schedule) -> Self {
        LrSchedule::new(schedule, 0)
    }
}
