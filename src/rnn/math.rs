//! The gate equations of one time step for one batch row, forward and backward.
//!
//! These few functions are the whole of the cell math: the single cells ([`super::Cell`]) and the
//! multi-layer driver ([`super::Recurrent`]) both call them, so the equations exist once. Each
//! function reads the pre-activations that the matrix products produced and writes the
//! activations back in place (the backward pass needs them), so a time step allocates nothing.
//!
//! Slices: `H` is the hidden size; gate vectors are `G·H` long with the gate blocks in PyTorch's
//! order (LSTM i, f, g, o; GRU r, z, n).

use crate::Scalar;
use crate::ops::{
    relu, relu_grad_from_output, sigmoid, sigmoid_grad_from_output, tanh, tanh_grad_from_output,
};

use super::CellKind;

/// Vanilla RNN: `h' = act(pre)`; `pre` (H) becomes the activation, also written to `h_next` (H).
#[inline]
pub fn rnn_forward<F: Scalar>(kind: CellKind, pre: &mut [F], h_next: &mut [F]) {
    for (p, h) in pre.iter_mut().zip(h_next.iter_mut()) {
        *p = match kind {
            CellKind::Relu => relu(*p),
            _ => tanh(*p),
        };
        *h = *p;
    }
}

/// Vanilla RNN backward: `d_pre = dh ⊙ act'(h')`. On return `dh` holds the part of ∂L/∂h that
/// does not go through `W_hh` (zero for the vanilla RNN).
#[inline]
pub fn rnn_backward<F: Scalar>(kind: CellKind, act: &[F], dh: &mut [F], d_pre: &mut [F]) {
    for ((a, d), g) in act.iter().zip(dh.iter_mut()).zip(d_pre.iter_mut()) {
        let slope = match kind {
            CellKind::Relu => relu_grad_from_output(*a),
            _ => tanh_grad_from_output(*a),
        };
        *g = *d * slope;
        *d = F::zero();
    }
}

/// LSTM: `gates` (4H) holds `W_ih x + b_ih + W_hh h + b_hh` and becomes `(i, f, g, o)`;
/// `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`.
#[inline]
pub fn lstm_forward<F: Scalar>(gates: &mut [F], c_prev: &[F], c_next: &mut [F], h_next: &mut [F]) {
    let h = c_prev.len();
    let (gi, rest) = gates.split_at_mut(h);
    let (gf, rest) = rest.split_at_mut(h);
    let (gg, go) = rest.split_at_mut(h);
    // Slices of exactly H let the compiler drop the bounds checks and vectorise the loop.
    let (go, c_next, h_next) = (&mut go[..h], &mut c_next[..h], &mut h_next[..h]);
    for j in 0..h {
        let i = sigmoid(gi[j]);
        let f = sigmoid(gf[j]);
        let g = tanh(gg[j]);
        let o = sigmoid(go[j]);
        gi[j] = i;
        gf[j] = f;
        gg[j] = g;
        go[j] = o;
        let c = f * c_prev[j] + i * g;
        c_next[j] = c;
        h_next[j] = o * tanh(c);
    }
}

/// LSTM backward. In: activations `acts` (4H), `c_prev`, `c` (this step's cell), `dh` = ∂L/∂h',
/// `dc` = ∂L/∂c' from later steps. Out: `d_pre` (4H) = ∂L/∂(pre-activations), `dc` = ∂L/∂c_prev,
/// `dh` = the part of ∂L/∂h_prev not through `W_hh` (zero).
#[inline]
pub fn lstm_backward<F: Scalar>(
    acts: &[F],
    c_prev: &[F],
    c: &[F],
    dh: &mut [F],
    dc: &mut [F],
    d_pre: &mut [F],
) {
    let h = c.len();
    let (di, rest) = d_pre.split_at_mut(h);
    let (df, rest) = rest.split_at_mut(h);
    let (dg, d_o) = rest.split_at_mut(h);
    let (d_o, c_prev, dh, dc) = (&mut d_o[..h], &c_prev[..h], &mut dh[..h], &mut dc[..h]);
    let (ai, af, ag, ao) = (
        &acts[..h],
        &acts[h..2 * h],
        &acts[2 * h..3 * h],
        &acts[3 * h..4 * h],
    );
    for j in 0..h {
        let (i, f, g, o) = (ai[j], af[j], ag[j], ao[j]);
        let tc = tanh(c[j]);
        let dct = dc[j] + dh[j] * o * tanh_grad_from_output(tc);
        d_o[j] = dh[j] * tc * sigmoid_grad_from_output(o);
        di[j] = dct * g * sigmoid_grad_from_output(i);
        df[j] = dct * c_prev[j] * sigmoid_grad_from_output(f);
        dg[j] = dct * i * tanh_grad_from_output(g);
        dc[j] = dct * f;
        dh[j] = F::zero();
    }
}

/// GRU. `gx` (3H) holds `W_ih x + b_ih` and becomes `(r, z, n)`; `gh` (3H) is `W_hh h + b_hh`.
/// `r = σ(gx_r + gh_r)`, `z = σ(gx_z + gh_z)`, `n = tanh(gx_n + r ⊙ gh_n)`, `h' = (1 − z) ⊙ n + z ⊙ h`.
#[inline]
pub fn gru_forward<F: Scalar>(gx: &mut [F], gh: &[F], h_prev: &[F], h_next: &mut [F]) {
    let h = h_prev.len();
    let (xr, rest) = gx.split_at_mut(h);
    let (xz, xn) = rest.split_at_mut(h);
    let (xn, h_next) = (&mut xn[..h], &mut h_next[..h]);
    let (hr, hz, hn) = (&gh[..h], &gh[h..2 * h], &gh[2 * h..3 * h]);
    for j in 0..h {
        let r = sigmoid(xr[j] + hr[j]);
        let z = sigmoid(xz[j] + hz[j]);
        let n = tanh(xn[j] + r * hn[j]);
        xr[j] = r;
        xz[j] = z;
        xn[j] = n;
        h_next[j] = (F::one() - z) * n + z * h_prev[j];
    }
}

/// GRU backward. In: activations `acts` = (r, z, n), `hn` = `W_hn h + b_hn` (H), `h_prev`, `dh` =
/// ∂L/∂h'. Out: `d_gx` (3H) = ∂L/∂(W_ih x + b_ih), `d_gh` (3H) = ∂L/∂(W_hh h + b_hh), and `dh`
/// = the part of ∂L/∂h_prev not through `W_hh`, `dh' ⊙ z`.
#[inline]
pub fn gru_backward<F: Scalar>(
    acts: &[F],
    hn: &[F],
    h_prev: &[F],
    dh: &mut [F],
    d_gx: &mut [F],
    d_gh: &mut [F],
) {
    let h = h_prev.len();
    for j in 0..h {
        let (r, z, n) = (acts[j], acts[h + j], acts[2 * h + j]);
        let d = dh[j];
        let dn = d * (F::one() - z) * tanh_grad_from_output(n);
        let dz = d * (h_prev[j] - n) * sigmoid_grad_from_output(z);
        let dr = dn * hn[j] * sigmoid_grad_from_output(r);
        d_gx[j] = dr;
        d_gh[j] = dr;
        d_gx[h + j] = dz;
        d_gh[h + j] = dz;
        d_gx[2 * h + j] = dn;
        d_gh[2 * h + j] = dn * r;
        dh[j] = d * z;
    }
}
