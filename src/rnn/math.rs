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
    crate::fastmath::vectorised(
        #[inline(always)]
        || rnn_forward_body(kind, pre, h_next),
    )
}

#[inline(always)]
fn rnn_forward_body<F: Scalar>(kind: CellKind, pre: &mut [F], h_next: &mut [F]) {
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
    crate::fastmath::vectorised(
        #[inline(always)]
        || rnn_backward_body(kind, act, dh, d_pre),
    )
}

#[inline(always)]
fn rnn_backward_body<F: Scalar>(kind: CellKind, act: &[F], dh: &mut [F], d_pre: &mut [F]) {
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
    crate::fastmath::vectorised(
        #[inline(always)]
        || lstm_forward_body(gates, c_prev, c_next, h_next),
    )
}

#[inline(always)]
fn lstm_forward_body<F: Scalar>(gates: &mut [F], c_prev: &[F], c_next: &mut [F], h_next: &mut [F]) {
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
    crate::fastmath::vectorised(
        #[inline(always)]
        || lstm_backward_body(acts, c_prev, c, dh, dc, d_pre),
    )
}

#[inline(always)]
fn lstm_backward_body<F: Scalar>(
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
    crate::fastmath::vectorised(
        #[inline(always)]
        || gru_forward_body(gx, gh, h_prev, h_next),
    )
}

#[inline(always)]
fn gru_forward_body<F: Scalar>(gx: &mut [F], gh: &[F], h_prev: &[F], h_next: &mut [F]) {
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
    crate::fastmath::vectorised(
        #[inline(always)]
        || gru_backward_body(acts, hn, h_prev, dh, d_gx, d_gh),
    )
}

#[inline(always)]
fn gru_backward_body<F: Scalar>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values over the range where the activations bend and saturate.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2001) as f32 - 1000.0) / 90.0)
            .collect()
    }

    /// The public functions run the bodies compiled for AVX-512 or AVX2 where the CPU has them; the bodies
    /// called here directly are compiled for the baseline. Both give the same bits.
    #[test]
    fn vectorised_gate_math_equals_the_baseline_bit_for_bit() {
        let h = 37; // not a multiple of any vector width
        let (c_prev, h_prev, dh0, dc0) = (values(h, 1), values(h, 2), values(h, 3), values(h, 4));
        for kind in [CellKind::Tanh, CellKind::Relu] {
            let (mut pre_a, mut pre_b) = (values(h, 5), values(h, 5));
            let (mut out_a, mut out_b) = (vec![0.0; h], vec![0.0; h]);
            rnn_forward(kind, &mut pre_a, &mut out_a);
            rnn_forward_body(kind, &mut pre_b, &mut out_b);
            assert_eq!((&pre_a, &out_a), (&pre_b, &out_b));
            let (mut dh_a, mut dh_b) = (dh0.clone(), dh0.clone());
            let (mut dp_a, mut dp_b) = (vec![0.0; h], vec![0.0; h]);
            rnn_backward(kind, &pre_a, &mut dh_a, &mut dp_a);
            rnn_backward_body(kind, &pre_b, &mut dh_b, &mut dp_b);
            assert_eq!((dh_a, dp_a), (dh_b, dp_b));
        }

        let (mut g_a, mut g_b) = (values(4 * h, 6), values(4 * h, 6));
        let (mut c_a, mut c_b, mut h_a, mut h_b) =
            (vec![0.0; h], vec![0.0; h], vec![0.0; h], vec![0.0; h]);
        lstm_forward(&mut g_a, &c_prev, &mut c_a, &mut h_a);
        lstm_forward_body(&mut g_b, &c_prev, &mut c_b, &mut h_b);
        assert_eq!((&g_a, &c_a, &h_a), (&g_b, &c_b, &h_b));
        let (mut dh_a, mut dh_b, mut dc_a, mut dc_b) =
            (dh0.clone(), dh0.clone(), dc0.clone(), dc0.clone());
        let (mut dp_a, mut dp_b) = (vec![0.0; 4 * h], vec![0.0; 4 * h]);
        lstm_backward(&g_a, &c_prev, &c_a, &mut dh_a, &mut dc_a, &mut dp_a);
        lstm_backward_body(&g_b, &c_prev, &c_b, &mut dh_b, &mut dc_b, &mut dp_b);
        assert_eq!((dh_a, dc_a, dp_a), (dh_b, dc_b, dp_b));

        let gh = values(3 * h, 7);
        let (mut gx_a, mut gx_b) = (values(3 * h, 8), values(3 * h, 8));
        let (mut h_a, mut h_b) = (vec![0.0; h], vec![0.0; h]);
        gru_forward(&mut gx_a, &gh, &h_prev, &mut h_a);
        gru_forward_body(&mut gx_b, &gh, &h_prev, &mut h_b);
        assert_eq!((&gx_a, &h_a), (&gx_b, &h_b));
        let (mut dh_a, mut dh_b) = (dh0.clone(), dh0.clone());
        let (mut dx_a, mut dx_b, mut dr_a, mut dr_b) = (
            vec![0.0; 3 * h],
            vec![0.0; 3 * h],
            vec![0.0; 3 * h],
            vec![0.0; 3 * h],
        );
        gru_backward(
            &gx_a,
            &gh[2 * h..],
            &h_prev,
            &mut dh_a,
            &mut dx_a,
            &mut dr_a,
        );
        gru_backward_body(
            &gx_b,
            &gh[2 * h..],
            &h_prev,
            &mut dh_b,
            &mut dx_b,
            &mut dr_b,
        );
        assert_eq!((dh_a, dx_a, dr_a), (dh_b, dx_b, dr_b));
    }
}
