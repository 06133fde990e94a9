//! Parameters, buffers and the [`Module`] trait that names them.
//!
//! A layer owns its tensors as typed [`Param`]s (value and accumulated gradient side by side).
//! [`Module::visit_params`] walks them in a fixed order under their PyTorch names
//! (`weight_ih_l0`, `rnn.bias_hh_l1_reverse`, `head.weight`, …). Optimizers, checkpoints, gradient
//! clipping and gradient checks are all written once against this visitor, so they work for every
//! model without knowing its structure.

use ndarray::{Array, ArrayViewMutD, Dimension};

use crate::Scalar;

/// Whether a forward pass is part of training.
///
/// * `Train`: layers keep what their backward pass needs, dropout is active, BatchNorm uses batch
///   statistics and updates its running statistics.
/// * `Eval`: nothing is cached (inference keeps no activations), dropout is the identity, BatchNorm
///   uses its running statistics. Calling `backward` after an `Eval` forward is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

impl Mode {
    /// `true` for [`Mode::Train`].
    pub fn is_train(self) -> bool {
        self == Mode::Train
    }
}

/// A learnable tensor and the gradient accumulated for it (`grad += ∂L/∂value` on each backward).
#[derive(Clone, Debug)]
pub struct Param<F, D: Dimension> {
    pub value: Array<F, D>,
    pub grad: Array<F, D>,
}

impl<F: Scalar, D: Dimension> Param<F, D> {
    /// Wraps `value` with a zero gradient of the same shape.
    pub fn new(value: Array<F, D>) -> Self {
        let grad = Array::zeros(value.raw_dim());
        Param { value, grad }
    }

    /// A type-erased mutable view, as the visitor hands it out.
    pub fn as_mut(&mut self) -> ParamMut<'_, F> {
        ParamMut {
            value: self.value.view_mut().into_dyn(),
            grad: self.grad.view_mut().into_dyn(),
        }
    }
}

/// A parameter's value and gradient, with the dimension erased.
pub struct ParamMut<'a, F> {
    pub value: ArrayViewMutD<'a, F>,
    pub grad: ArrayViewMutD<'a, F>,
}

/// Non-learnable state that belongs in a checkpoint (PyTorch "buffers").
pub enum BufferMut<'a, F> {
    /// Floating-point state such as BatchNorm's `running_mean`.
    Values(ArrayViewMutD<'a, F>),
    /// An integer counter such as BatchNorm's `num_batches_tracked` (stored as a 0-d int64).
    Count(&'a mut i64),
}

/// Visitor callback over parameters: `(name, param)`.
pub type ParamVisitor<'v, F> = dyn FnMut(&str, ParamMut<'_, F>) + 'v;
/// Visitor callback over buffers: `(name, buffer)`.
pub type BufferVisitor<'v, F> = dyn FnMut(&str, BufferMut<'_, F>) + 'v;

/// Anything with named learnable parameters.
pub trait Module<F: Scalar> {
    /// Calls `f(name, param)` for every learnable tensor, always in the same order, with the name
    /// PyTorch's `state_dict` would use for it.
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>);

    /// Calls `f(name, buffer)` for every non-learnable tensor of the `state_dict`. Default: none.
    fn visit_buffers(&mut self, _f: &mut BufferVisitor<'_, F>) {}

    /// Sets every gradient to zero.
    fn zero_grad(&mut self) {
        self.visit_params(&mut |_, mut p| p.grad.fill(F::zero()));
    }

    /// Total number of learnable scalars.
    fn num_params(&mut self) -> usize {
        let mut n = 0;
        self.visit_params(&mut |_, p| n += p.value.len());
        n
    }

    /// Names and shapes of all parameters, in visiting order.
    fn param_shapes(&mut self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        self.visit_params(&mut |name, p| out.push((name.to_string(), p.value.shape().to_vec())));
        out
    }
}

/// Visits `child`'s parameters with `prefix.` in front of each name (`prefix` empty: unchanged).
pub fn visit_child_params<F: Scalar>(
    prefix: &str,
    child: &mut dyn Module<F>,
    f: &mut ParamVisitor<'_, F>,
) {
    child.visit_params(&mut |name, p| f(&join(prefix, name), p));
}

/// Visits `child`'s buffers with `prefix.` in front of each name.
pub fn visit_child_buffers<F: Scalar>(
    prefix: &str,
    child: &mut dyn Module<F>,
    f: &mut BufferVisitor<'_, F>,
) {
    child.visit_buffers(&mut |name, b| f(&join(prefix, name), b));
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
