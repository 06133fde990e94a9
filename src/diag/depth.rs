//! Gradient flow through depth: ‖∂L/∂x‖ at the input of every block of a ResNet or its plain twin.
//!
//! A residual block passes the gradient on as `∂L/∂x = ∂L/∂y + F'(x)ᵀ ∂L/∂y`: the identity term
//! carries it to the first block undiminished however deep the network. A plain block has only
//! the second term, so in a deep plain network the product of the blocks' Jacobians decides what
//! reaches the early layers.

use ndarray::{ArrayD, ArrayView4};

use crate::loss::cross_entropy;
use crate::models::resnet::ResNet;
use crate::module::BufferMut;
use crate::{Mode, Module, Result, Scalar};

/// ‖∂L/∂x‖ at each block's input, and at the last block's output.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthProfile {
    /// As [`crate::models::resnet::NetGrads::block_grad_norms`]: index `b` the input of block `b`
    /// (0: the first), the last entry the output of the last block. Frobenius norms over the batch.
    pub norms: Vec<f64>,
}

impl DepthProfile {
    /// ‖∂L/∂x‖ at the first block's input over that at the last block's output: what survives
    /// the trip back through every block.
    pub fn reach(&self) -> f64 {
        self.norms[0] / self.norms[self.norms.len() - 1]
    }
}

/// Runs `net` forward in train mode (batch statistics, as in a training step) on `x (N, C, H, W)`,
/// takes the mean cross-entropy against `labels` and backpropagates, returning the gradient norm
/// at every block.
///
/// The probe leaves no trace: parameter gradients are zeroed afterwards and BatchNorm's running
/// statistics (which a train-mode forward updates) are put back as they were.
///
/// # Errors
/// Shape errors from the network and the loss.
pub fn block_gradient_profile<F: Scalar>(
    net: &mut ResNet<F>,
    x: ArrayView4<'_, F>,
    labels: &[usize],
) -> Result<DepthProfile> {
    let saved = save_buffers(net);
    let result = (|| {
        let logits = net.forward(x, Mode::Train)?;
        let (_, d_logits) = cross_entropy(logits.view(), labels, None)?;
        net.backward(d_logits.view())
    })();
    net.zero_grad();
    restore_buffers(net, saved);
    Ok(DepthProfile {
        norms: result?.block_grad_norms,
    })
}

/// A copy of a module's buffers (running statistics and counters), in visiting order.
enum Saved<F> {
    Values(ArrayD<F>),
    Count(i64),
}

fn save_buffers<F: Scalar>(m: &mut dyn Module<F>) -> Vec<Saved<F>> {
    let mut saved = Vec::new();
    m.visit_buffers(&mut |_, b| {
        saved.push(match b {
            BufferMut::Values(v) => Saved::Values(v.to_owned()),
            BufferMut::Count(c) => Saved::Count(*c),
        })
    });
    saved
}

fn restore_buffers<F: Scalar>(m: &mut dyn Module<F>, saved: Vec<Saved<F>>) {
    let mut saved = saved.into_iter();
    m.visit_buffers(&mut |_, b| match (b, saved.next()) {
        (BufferMut::Values(mut v), Some(Saved::Values(s))) => v.assign(&s),
        (BufferMut::Count(c), Some(Saved::Count(s))) => *c = s,
        _ => unreachable!("the same module visits the same buffers in the same order"),
    });
}
