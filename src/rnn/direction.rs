//! One direction of one recurrent layer over a whole sequence: the forward time loop and the
//! backpropagation-through-time loop.
//!
//! Shapes: `T` time steps, `B` batch rows, `I` input features, `H` hidden units, `G` gate blocks
//! (1 RNN, 3 GRU, 4 LSTM). Sequences are time-major: row `t·B + b` of an input matrix is time
//! step `t` of batch row `b`.
//!
//! Forward, per direction:
//! 1. all input projections in one GEMM: `gates = X·W_ihᵀ + b_ih (+ b_hh)`        // (T·B, G·H)
//! 2. for each step: `gates_t += h_{t−1}·W_hhᵀ`, then the gate math in place    // (B, G·H)
//!
//! Backward walks the steps in reverse, carrying `dh` (and `dc`), and stores the gate gradients of
//! every step; the weight gradients are then three large GEMMs over all steps at once:
//! `dW_ih += dGᵀ·X`, `dW_hh += dGᵀ·H_prev`, `dX += dG·W_ih`.
//!
//! Variable lengths: a row whose sequence has ended (`t ≥ len_b`) keeps its state unchanged and
//! outputs zeros, in both directions. The reverse direction therefore starts each row at its own
//! last valid step, exactly as PyTorch's packed sequences do.

use ndarray::{Array1, Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut3, Axis, Ix1, Ix2, s};

use crate::gemm::gemm;
use crate::{Param, Scalar};

use super::CellKind;
use super::math;

/// The four tensors of one direction of one layer, PyTorch layout.
#[derive(Clone, Debug)]
pub struct DirectionParams<F: Scalar> {
    /// `(G·H, I)`: input-to-hidden weights, gate blocks stacked.
    pub weight_ih: Param<F, Ix2>,
    /// `(G·H, H)`: hidden-to-hidden weights.
    pub weight_hh: Param<F, Ix2>,
    /// `(G·H)`.
    pub bias_ih: Param<F, Ix1>,
    /// `(G·H)`.
    pub bias_hh: Param<F, Ix1>,
}

/// What the backward pass of one direction needs from its forward pass.
#[derive(Clone, Debug)]
pub struct DirectionCache<F> {
    /// Gate activations of every step, `(T·B, G·H)`; rows of finished sequences are unused.
    gates: Array2<F>,
    /// Hidden states in time order, `(T+1, B, H)`: forward holds `h0` at 0 and `h_t` at `t+1`;
    /// reverse holds `h_t` at `t` and `h0` at `T`.
    states: Array3<F>,
    /// LSTM cell states, indexed like `states`; empty `(0, 0, 0)` for other cells.
    cells: Array3<F>,
    /// GRU only: `W_hn h_{t−1} + b_hn` of every step, `(T·B, H)`; empty otherwise.
    hn: Array2<F>,
}

impl<F: Scalar> DirectionCache<F> {
    /// The final hidden state `(B, H)`: after the last step of the walk.
    pub fn h_n(&self, reverse: bool) -> ArrayView2<'_, F> {
        let last = if reverse {
            0
        } else {
            self.states.len_of(Axis(0)) - 1
        };
        self.states.index_axis(Axis(0), last)
    }

    /// The final LSTM cell state `(B, H)`.
    pub fn c_n(&self, reverse: bool) -> ArrayView2<'_, F> {
        let last = if reverse {
            0
        } else {
            self.cells.len_of(Axis(0)) - 1
        };
        self.cells.index_axis(Axis(0), last)
    }
}

/// Where step `t` reads its previous state and writes its new one, in a `(T+1, B, H)` buffer.
#[inline]
fn prev_next(t: usize, reverse: bool) -> (usize, usize) {
    if reverse { (t + 1, t) } else { (t, t + 1) }
}

/// Borrows block `prev` for reading and block `next` for writing from one buffer of equal blocks.
#[inline]
fn split_prev_next<F>(buf: &mut [F], prev: usize, next: usize, block: usize) -> (&[F], &mut [F]) {
    if prev < next {
        let (a, b) = buf.split_at_mut(next * block);
        (&a[prev * block..(prev + 1) * block], &mut b[..block])
    } else {
        let (a, b) = buf.split_at_mut(prev * block);
        (&b[..block], &mut a[next * block..(next + 1) * block])
    }
}

#[inline]
fn is_active(lengths: Option<&[usize]>, t: usize, b: usize) -> bool {
    lengths.is_none_or(|l| t < l[b])
}

impl<F: Scalar> DirectionParams<F> {
    /// Hidden size `H`.
    pub fn hidden_size(&self) -> usize {
        self.weight_hh.value.ncols()
    }

    /// Runs the recurrence over all `T` steps.
    ///
    /// * `x`: `(T·B, I)` time-major inputs; `h0`, `c0`: `(B, H)` (`c0` for the LSTM only).
    /// * `out`: `(T, B, H)`, receives `h_t` for valid steps and zeros past each row's length.
    ///
    /// Shapes are the caller's responsibility (checked by [`super::Recurrent`] and [`super::Cell`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        kind: CellKind,
        x: ArrayView2<'_, F>,
        h0: ArrayView2<'_, F>,
        c0: Option<ArrayView2<'_, F>>,
        lengths: Option<&[usize]>,
        reverse: bool,
        mut out: ArrayViewMut3<'_, F>,
    ) -> DirectionCache<F> {
        let (t_len, batch, h) = out.dim();
        let gh = kind.gates() * h;
        let bh = batch * h;

        // (T·B, G·H) ← X·W_ihᵀ + b_ih, plus b_hh except for the GRU, whose n-gate needs W_hn h + b_hn apart.
        let mut gates = Array2::<F>::zeros((t_len * batch, gh));
        let mut bias = self.bias_ih.value.clone();
        if kind != CellKind::Gru {
            bias += &self.bias_hh.value;
        }
        gates.assign(&bias.broadcast((t_len * batch, gh)).expect("bias fits"));
        gemm(
            F::one(),
            x,
            self.weight_ih.value.t(),
            F::one(),
            gates.view_mut(),
        );

        let mut states = Array3::<F>::zeros((t_len + 1, batch, h));
        let start = if reverse { t_len } else { 0 };
        states.index_axis_mut(Axis(0), start).assign(&h0);
        let mut cells = if kind.has_cell_state() {
            let mut c = Array3::<F>::zeros((t_len + 1, batch, h));
            if let Some(c0) = c0 {
                c.index_axis_mut(Axis(0), start).assign(&c0);
            }
            c
        } else {
            Array3::zeros((0, 0, 0))
        };
        let (mut hn, mut recurrent) = if kind == CellKind::Gru {
            (
                Array2::<F>::zeros((t_len * batch, h)),
                Array2::<F>::zeros((batch, gh)),
            )
        } else {
            (Array2::zeros((0, 0)), Array2::zeros((0, 0)))
        };

        let w_hh_t = self.weight_hh.value.t();
        let states_buf = states.as_slice_mut().expect("standard layout");
        let cells_buf = cells.as_slice_mut().expect("standard layout");
        for step in 0..t_len {
            let t = if reverse { t_len - 1 - step } else { step };
            let (prev, next) = prev_next(t, reverse);
            let (h_prev, h_next) = split_prev_next(states_buf, prev, next, bh);
            let h_prev_m = ArrayView2::from_shape((batch, h), h_prev).expect("(B, H)");
            let mut gates_t = gates.slice_mut(s![t * batch..(t + 1) * batch, ..]);
            if kind == CellKind::Gru {
                // (B, 3H) ← h_{t−1}·W_hhᵀ + b_hh
                recurrent.assign(
                    &self
                        .bias_hh
                        .value
                        .broadcast((batch, gh))
                        .expect("bias fits"),
                );
                gemm(F::one(), h_prev_m, w_hh_t, F::one(), recurrent.view_mut());
            } else {
                gemm(F::one(), h_prev_m, w_hh_t, F::one(), gates_t.view_mut());
            }
            let gates_t = gates_t.as_slice_mut().expect("contiguous rows");
            let (c_prev, c_next) = if kind.has_cell_state() {
                split_prev_next(cells_buf, prev, next, bh)
            } else {
                (&[][..], &mut [][..])
            };
            let rec = recurrent.as_slice().expect("standard layout"); // GRU (B, 3H), else empty
            let hn_t = if kind == CellKind::Gru {
                &mut hn.as_slice_mut().expect("standard layout")[t * bh..(t + 1) * bh]
            } else {
                &mut [][..]
            };
            // The gate math of the batch rows, in blocks of rows on the pool's threads (the same
            // per-row work whichever block a row is in).
            let blocks = row_blocks(batch, gh);
            let rows_per = batch.div_ceil(blocks);
            let step_rows = |b0: usize,
                             g: &mut [F],
                             cp: &[F],
                             cn: &mut [F],
                             hp: &[F],
                             hx: &mut [F],
                             r: &[F],
                             n: &mut [F]| {
                for i in 0..g.len() / gh {
                    let row = i * h..(i + 1) * h;
                    if !is_active(lengths, t, b0 + i) {
                        hx[row.clone()].copy_from_slice(&hp[row.clone()]);
                        if kind.has_cell_state() {
                            cn[row.clone()].copy_from_slice(&cp[row]);
                        }
                        continue;
                    }
                    let g_row = &mut g[i * gh..(i + 1) * gh];
                    match kind {
                        CellKind::Tanh | CellKind::Relu => {
                            math::rnn_forward(kind, g_row, &mut hx[row])
                        }
                        CellKind::Lstm => math::lstm_forward(
                            g_row,
                            &cp[row.clone()],
                            &mut cn[row.clone()],
                            &mut hx[row],
                        ),
                        CellKind::Gru => {
                            let r_row = &r[i * gh..(i + 1) * gh];
                            math::gru_forward(g_row, r_row, &hp[row.clone()], &mut hx[row.clone()]);
                            n[row].copy_from_slice(&r_row[2 * h..]);
                        }
                    }
                }
            };
            if blocks == 1 {
                step_rows(0, gates_t, c_prev, c_next, h_prev, h_next, rec, hn_t);
            } else {
                let work = gates_t
                    .chunks_mut(rows_per * gh)
                    .zip(chunks(c_prev, rows_per * h, blocks))
                    .zip(chunks_mut(c_next, rows_per * h, blocks))
                    .zip(h_prev.chunks(rows_per * h))
                    .zip(h_next.chunks_mut(rows_per * h))
                    .zip(chunks(rec, rows_per * gh, blocks))
                    .zip(chunks_mut(hn_t, rows_per * h, blocks))
                    .enumerate();
                let step_rows = &step_rows;
                rayon::scope(|scope| {
                    for (blk, ((((((g, cp), cn), hp), hx), r), n)) in work {
                        scope.spawn(move |_| step_rows(blk * rows_per, g, cp, cn, hp, hx, r, n));
                    }
                });
            }
            let h_next_m = ArrayView2::from_shape((batch, h), &*h_next).expect("(B, H)");
            let mut out_t = out.index_axis_mut(Axis(0), t);
            out_t.assign(&h_next_m);
            for b in 0..batch {
                if !is_active(lengths, t, b) {
                    out_t.row_mut(b).fill(F::zero());
                }
            }
        }
        DirectionCache {
            gates,
            states,
            cells,
            hn,
        }
    }

    /// Backpropagation through time for this direction.
    ///
    /// * `x`: the `(T·B, I)` inputs of the forward pass; `cache`: what it kept.
    /// * `d_out`: `(T, B, H)` = ∂L/∂output (ignored past each row's length, where the output is constant 0).
    /// * `dh_n`, `dc_n`: `(B, H)` = ∂L/∂h_n, ∂L/∂c_n.
    /// * `dx`: `(T·B, I)`, receives `+= ∂L/∂x`; parameter gradients are accumulated in `self`.
    /// * `step_norms`: `(T)`, receives ‖∂L/∂h_t‖ (over the whole batch) for every step.
    ///
    /// Returns ∂L/∂h0 and (LSTM) ∂L/∂c0, each `(B, H)`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        kind: CellKind,
        x: ArrayView2<'_, F>,
        cache: &DirectionCache<F>,
        d_out: ArrayView3<'_, F>,
        dh_n: ArrayView2<'_, F>,
        dc_n: Option<ArrayView2<'_, F>>,
        lengths: Option<&[usize]>,
        reverse: bool,
        dx: ndarray::ArrayViewMut2<'_, F>,
        step_norms: &mut [f64],
    ) -> (Array2<F>, Option<Array2<F>>) {
        let (t_len, batch, h) = d_out.dim();
        let gh = kind.gates() * h;
        let bh = batch * h;
        let mut dh = dh_n.to_owned(); // (B, H): ∂L/∂h at the step being processed
        let mut dc = if kind.has_cell_state() {
            dc_n.map_or_else(|| Array2::zeros((batch, h)), |d| d.to_owned())
        } else {
            Array2::zeros((0, 0))
        };
        let mut d_gates = Array2::<F>::zeros((t_len * batch, gh)); // (T·B, G·H) ∂L/∂(input-side pre-activations)
        // GRU: ∂L/∂(W_hh h + b_hh) differs from d_gates in the n block; other cells share d_gates.
        let mut d_recurrent = if kind == CellKind::Gru {
            Array2::<F>::zeros((t_len * batch, gh))
        } else {
            Array2::zeros((0, 0))
        };
        let states = cache.states.as_slice().expect("standard layout");
        let cells = cache.cells.as_slice().expect("standard layout");
        let gates_all = cache.gates.as_slice().expect("standard layout");
        let hn_all = cache.hn.as_slice().expect("standard layout");
        let w_hh = self.weight_hh.value.view();

        for step in 0..t_len {
            let t = if reverse { step } else { t_len - 1 - step };
            let (prev, next) = prev_next(t, reverse);
            let d_out_t = d_out.index_axis(Axis(0), t);
            for b in 0..batch {
                if is_active(lengths, t, b) {
                    let mut row = dh.row_mut(b);
                    row += &d_out_t.row(b);
                }
            }
            step_norms[t] = dh.iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt();

            let rows = t * batch..(t + 1) * batch;
            let dh_buf = dh.as_slice_mut().expect("standard layout");
            let dc_buf = dc.as_slice_mut().expect("standard layout");
            let acts_t = &gates_all[t * batch * gh..(t + 1) * batch * gh];
            let dg_t = &mut d_gates.as_slice_mut().expect("standard layout")
                [t * batch * gh..(t + 1) * batch * gh];
            let dr_t = if kind == CellKind::Gru {
                &mut d_recurrent.as_slice_mut().expect("standard layout")
                    [t * batch * gh..(t + 1) * batch * gh]
            } else {
                &mut [][..]
            };
            let hn_t = if kind == CellKind::Gru {
                &hn_all[t * bh..(t + 1) * bh]
            } else {
                &[][..]
            };
            let (c_prev_t, c_t) = if kind.has_cell_state() {
                (
                    &cells[prev * bh..(prev + 1) * bh],
                    &cells[next * bh..(next + 1) * bh],
                )
            } else {
                (&[][..], &[][..])
            };
            let h_prev_t = &states[prev * bh..(prev + 1) * bh];
            // The gate math of the batch rows, in blocks of rows on the pool's threads.
            let blocks = row_blocks(batch, gh);
            let rows_per = batch.div_ceil(blocks);
            let step_rows = |b0: usize, rows: RowsBack<'_, F>| {
                for i in 0..rows.acts.len() / gh {
                    if !is_active(lengths, t, b0 + i) {
                        continue; // the state was carried: dh, dc pass through unchanged
                    }
                    let row = i * h..(i + 1) * h;
                    let gate_row = i * gh..(i + 1) * gh;
                    let acts = &rows.acts[gate_row.clone()];
                    let dg_row = &mut rows.d_gates[gate_row.clone()];
                    match kind {
                        CellKind::Tanh | CellKind::Relu => {
                            math::rnn_backward(kind, acts, &mut rows.dh[row], dg_row)
                        }
                        CellKind::Lstm => math::lstm_backward(
                            acts,
                            &rows.c_prev[row.clone()],
                            &rows.c[row.clone()],
                            &mut rows.dh[row.clone()],
                            &mut rows.dc[row],
                            dg_row,
                        ),
                        CellKind::Gru => math::gru_backward(
                            acts,
                            &rows.hn[row.clone()],
                            &rows.h_prev[row.clone()],
                            &mut rows.dh[row],
                            dg_row,
                            &mut rows.d_recurrent[gate_row],
                        ),
                    }
                }
            };
            let all = RowsBack {
                acts: acts_t,
                c_prev: c_prev_t,
                c: c_t,
                h_prev: h_prev_t,
                hn: hn_t,
                dh: dh_buf,
                dc: dc_buf,
                d_gates: dg_t,
                d_recurrent: dr_t,
            };
            if blocks == 1 {
                step_rows(0, all);
            } else {
                let step_rows = &step_rows;
                rayon::scope(|scope| {
                    for (blk, rows) in all.split(rows_per, h, gh, blocks).into_iter().enumerate() {
                        scope.spawn(move |_| step_rows(blk * rows_per, rows));
                    }
                });
            }
            // dh_{t−1} = (direct part left in dh) + dG_t·W_hh   (B, G·H)·(G·H, H)
            let d_rec_t = if kind == CellKind::Gru {
                d_recurrent.slice(s![rows, ..])
            } else {
                d_gates.slice(s![rows, ..])
            };
            gemm(F::one(), d_rec_t, w_hh, F::one(), dh.view_mut());
        }

        // Weight gradients over all steps at once.
        let h_prev_all = if reverse {
            cache.states.slice(s![1.., .., ..])
        } else {
            cache.states.slice(s![..t_len, .., ..])
        };
        let h_prev_all = h_prev_all
            .to_shape((t_len * batch, h))
            .expect("contiguous states");
        let d_rec = if kind == CellKind::Gru {
            d_recurrent.view()
        } else {
            d_gates.view()
        };
        gemm(
            F::one(),
            d_gates.t(),
            x,
            F::one(),
            self.weight_ih.grad.view_mut(),
        );
        gemm(
            F::one(),
            d_rec.t(),
            h_prev_all.view(),
            F::one(),
            self.weight_hh.grad.view_mut(),
        );
        self.bias_ih.grad += &d_gates.sum_axis(Axis(0));
        self.bias_hh.grad += &d_rec.sum_axis(Axis(0));
        gemm(
            F::one(),
            d_gates.view(),
            self.weight_ih.value.view(),
            F::one(),
            dx,
        );

        let dc0 = kind.has_cell_state().then_some(dc);
        (dh, dc0)
    }
}

/// One step's slices of the backward pass for a block of batch rows: gate activations, cell
/// states, previous hidden state, GRU `W_hn h + b_hn` (read), and the gradients it writes.
/// Buffers a cell does not use are empty.
struct RowsBack<'a, F> {
    acts: &'a [F],
    c_prev: &'a [F],
    c: &'a [F],
    h_prev: &'a [F],
    hn: &'a [F],
    dh: &'a mut [F],
    dc: &'a mut [F],
    d_gates: &'a mut [F],
    d_recurrent: &'a mut [F],
}

impl<'a, F> RowsBack<'a, F> {
    /// Blocks of `rows` batch rows (hidden width `h`, gate width `gh`), at most `count`.
    fn split(self, rows: usize, h: usize, gh: usize, count: usize) -> Vec<RowsBack<'a, F>> {
        let (hs, gs) = (rows * h, rows * gh);
        let mut c_prev = chunks(self.c_prev, hs, count).into_iter();
        let mut c = chunks(self.c, hs, count).into_iter();
        let mut hn = chunks(self.hn, hs, count).into_iter();
        let mut dc = chunks_mut(self.dc, hs, count).into_iter();
        let mut d_recurrent = chunks_mut(self.d_recurrent, gs, count).into_iter();
        self.acts
            .chunks(gs)
            .zip(self.h_prev.chunks(hs))
            .zip(self.dh.chunks_mut(hs))
            .zip(self.d_gates.chunks_mut(gs))
            .map(|(((acts, h_prev), dh), d_gates)| RowsBack {
                acts,
                c_prev: c_prev.next().expect("one block each"),
                c: c.next().expect("one block each"),
                h_prev,
                hn: hn.next().expect("one block each"),
                dh,
                dc: dc.next().expect("one block each"),
                d_gates,
                d_recurrent: d_recurrent.next().expect("one block each"),
            })
            .collect()
    }
}

/// Into how many blocks of batch rows a step's gate math is split: one per thread of the pool
/// when the step has enough values (`B·G·H`) to pay for the hand-over, else 1.
fn row_blocks(batch: usize, gh: usize) -> usize {
    const PARALLEL_MIN_VALUES: usize = 8192;
    if batch * gh < PARALLEL_MIN_VALUES {
        1
    } else {
        rayon::current_num_threads().min(batch)
    }
}

/// `s` in pieces of `size`, or `count` empty slices when `s` is empty (a buffer this cell does
/// not use).
fn chunks<F>(s: &[F], size: usize, count: usize) -> Vec<&[F]> {
    if s.is_empty() {
        vec![s; count]
    } else {
        s.chunks(size).collect()
    }
}

/// Mutable [`chunks`].
fn chunks_mut<F>(s: &mut [F], size: usize, count: usize) -> Vec<&mut [F]> {
    if s.is_empty() {
        (0..count).map(|_| &mut [][..]).collect()
    } else {
        s.chunks_mut(size).collect()
    }
}

/// Zero-initialised parameters of the right shapes (the caller initialises them).
pub fn zeros<F: Scalar>(
    kind: CellKind,
    input_size: usize,
    hidden_size: usize,
) -> DirectionParams<F> {
    let gh = kind.gates() * hidden_size;
    DirectionParams {
        weight_ih: Param::new(Array2::zeros((gh, input_size))),
        weight_hh: Param::new(Array2::zeros((gh, hidden_size))),
        bias_ih: Param::new(Array1::zeros(gh)),
        bias_hh: Param::new(Array1::zeros(gh)),
    }
}
