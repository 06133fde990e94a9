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
//! Speed: a batch row's recurrence never reads another row, so the time loops run on blocks of
//! batch rows, one per thread, each over the whole sequence (no hand-over between steps); the
//! recurrent weights are packed once per call for all steps and blocks ([`PackedRhs`]); the
//! large per-sequence buffers come from the thread's buffer pool. None of this changes a bit of
//! the results (each row's arithmetic is the same in any block).
//!
//! Variable lengths: a row whose sequence has ended (`t ≥ len_b`) keeps its state unchanged and
//! outputs zeros, in both directions. The reverse direction therefore starts each row at its own
//! last valid step, exactly as PyTorch's packed sequences do.

use ndarray::{
    Array1, Array2, Array3, ArrayView, ArrayView2, ArrayView3, ArrayViewMut, ArrayViewMut2,
    ArrayViewMut3, Axis, Dimension, Ix1, Ix2, s,
};

use crate::gemm::{PackedRhs, gemm};
use crate::layers::scratch;
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
pub struct DirectionCache<F: Scalar> {
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

/// The cache's buffers go back to the thread's pool for the next forward pass.
impl<F: Scalar> Drop for DirectionCache<F> {
    fn drop(&mut self) {
        scratch::recycle(std::mem::take(&mut self.gates));
        scratch::recycle(std::mem::take(&mut self.states));
        scratch::recycle(std::mem::take(&mut self.cells));
        scratch::recycle(std::mem::take(&mut self.hn));
    }
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

/// A zero-filled array whose storage comes from this thread's pool of released buffers
/// ([`scratch::array`]): the caches of a time loop are tens of MB, and fresh pages cost a page
/// fault each on first touch.
fn pooled_zeros<F: Scalar, D: Dimension>(
    shape: impl ndarray::IntoDimension<Dim = D>,
) -> ndarray::Array<F, D> {
    let mut a = scratch::array(shape);
    a.fill(F::zero());
    a
}

/// Where step `t` reads its previous state and writes its new one, in a `(T+1, B, H)` buffer.
#[inline]
fn prev_next(t: usize, reverse: bool) -> (usize, usize) {
    if reverse { (t + 1, t) } else { (t, t + 1) }
}

#[inline]
fn is_active(lengths: Option<&[usize]>, t: usize, b: usize) -> bool {
    lengths.is_none_or(|l| t < l[b])
}

/// Into how many blocks of batch rows the time loop is split. The recurrence of one batch row
/// never reads another row, so each block runs the whole sequence on its own thread with no
/// hand-over between steps: one block per thread of the pool when a step has enough work
/// (`B·G·H` values) to pay for it, and at least [`MIN_ROWS_PER_BLOCK`] rows per block.
fn batch_blocks(batch: usize, gh: usize) -> usize {
    const PARALLEL_MIN_VALUES: usize = 8192;
    if batch * gh < PARALLEL_MIN_VALUES {
        return 1;
    }
    rayon::current_num_threads()
        .min(batch / MIN_ROWS_PER_BLOCK)
        .max(1)
}

/// The batch axis of `(T, B, ·)` buffers.
const BATCH: Axis = Axis(1);

/// Each block of the time loop holds at least this many batch rows.
const MIN_ROWS_PER_BLOCK: usize = 4;

/// `v` split along `axis` into blocks of `rows` (the last may be shorter); `count` empty views
/// when `v` is empty (a buffer this cell does not use).
fn split<'a, F, D: Dimension>(
    v: ArrayViewMut<'a, F, D>,
    axis: Axis,
    rows: usize,
    count: usize,
) -> Vec<ArrayViewMut<'a, F, D>> {
    if v.is_empty() {
        let ndim = v.ndim();
        return (0..count)
            .map(|_| ArrayViewMut::from_shape(D::zeros(ndim), &mut [][..]).expect("empty"))
            .collect();
    }
    let mut blocks = Vec::with_capacity(count);
    let mut rest = v;
    while rest.len_of(axis) > rows {
        let (head, tail) = rest.split_at(axis, rows);
        blocks.push(head);
        rest = tail;
    }
    blocks.push(rest);
    blocks
}

/// [`split`] of a shared view.
fn split_ref<'a, F, D: Dimension>(
    v: ArrayView<'a, F, D>,
    axis: Axis,
    rows: usize,
    count: usize,
) -> Vec<ArrayView<'a, F, D>> {
    if v.is_empty() {
        let ndim = v.ndim();
        return (0..count)
            .map(|_| ArrayView::from_shape(D::zeros(ndim), &[][..]).expect("empty"))
            .collect();
    }
    let mut blocks = Vec::with_capacity(count);
    let mut rest = v;
    while rest.len_of(axis) > rows {
        let (head, tail) = rest.split_at(axis, rows);
        blocks.push(head);
        rest = tail;
    }
    blocks.push(rest);
    blocks
}

/// A `(T·B, N)` time-major matrix as `(T, B, N)`.
fn by_step<F>(m: ArrayViewMut2<'_, F>, t_len: usize) -> ArrayViewMut3<'_, F> {
    let (rows, n) = m.dim();
    let batch = rows.checked_div(t_len).unwrap_or(0);
    m.into_shape_with_order((t_len, batch, n))
        .expect("time-major rows")
}

/// Shared [`by_step`].
fn by_step_ref<F>(m: ArrayView2<'_, F>, t_len: usize) -> ArrayView3<'_, F> {
    let (rows, n) = m.dim();
    let batch = rows.checked_div(t_len).unwrap_or(0);
    m.into_shape_with_order((t_len, batch, n))
        .expect("time-major rows")
}

/// The contiguous values of a standard-layout view.
fn values<'a, F>(v: ArrayView2<'a, F>) -> &'a [F] {
    v.to_slice().expect("contiguous rows")
}

/// The contiguous values of a standard-layout mutable view.
fn values_mut<'a, F>(v: ArrayViewMut2<'a, F>) -> &'a mut [F] {
    v.into_slice().expect("contiguous rows")
}

/// One block of batch rows of the forward time loop: views `(T, Bb, ·)` of the layer's buffers.
struct ForwardBlock<'a, F> {
    /// First batch row of the block (for the lengths).
    b0: usize,
    /// `(T, Bb, G·H)`: input projections in, gate activations out.
    gates: ArrayViewMut3<'a, F>,
    /// `(T+1, Bb, H)` hidden states; `cells` the same for the LSTM (else empty).
    states: ArrayViewMut3<'a, F>,
    cells: ArrayViewMut3<'a, F>,
    /// GRU: `(T, Bb, H)` of `W_hn h + b_hn` (else empty).
    hn: ArrayViewMut3<'a, F>,
    /// `(T, Bb, H)` outputs.
    out: ArrayViewMut3<'a, F>,
}

/// One block of batch rows of the backward time loop.
struct BackwardBlock<'a, F> {
    b0: usize,
    /// Forward caches `(T, Bb, G·H)`, `(T+1, Bb, H)`, `(T+1, Bb, H)`, `(T, Bb, H)`.
    acts: ArrayView3<'a, F>,
    states: ArrayView3<'a, F>,
    cells: ArrayView3<'a, F>,
    hn: ArrayView3<'a, F>,
    /// `(T, Bb, H)` = ∂L/∂output.
    d_out: ArrayView3<'a, F>,
    /// `(Bb, H)` carried ∂L/∂h, ∂L/∂c (empty `(0, 0)` for cells without a cell state), in: at
    /// the last step, out: at the initial state.
    dh: ArrayViewMut2<'a, F>,
    dc: ArrayViewMut2<'a, F>,
    /// `(T, Bb, G·H)` gate gradients out; GRU: `d_recurrent` the same for `W_hh h + b_hh`.
    d_gates: ArrayViewMut3<'a, F>,
    d_recurrent: ArrayViewMut3<'a, F>,
    /// `(T, Bb)`: Σ_j (∂L/∂h_t)² of every row and step (summed over rows in order later, so the
    /// norms do not depend on the blocks).
    sq_norms: ArrayViewMut2<'a, f64>,
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
        out: ArrayViewMut3<'_, F>,
    ) -> DirectionCache<F> {
        let (t_len, batch, h) = out.dim();
        let gh = kind.gates() * h;

        // (T·B, G·H) ← X·W_ihᵀ + b_ih, plus b_hh except for the GRU, whose n-gate needs W_hn h + b_hn apart.
        let mut gates: Array2<F> = scratch::array((t_len * batch, gh)); // bias written next
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

        // Every step writes its state for every row (a finished row copies the previous one),
        // so only the initial states are written here.
        let mut states: Array3<F> = scratch::array((t_len + 1, batch, h));
        let start = if reverse { t_len } else { 0 };
        states.index_axis_mut(Axis(0), start).assign(&h0);
        let mut cells = if kind.has_cell_state() {
            let mut c: Array3<F> = scratch::array((t_len + 1, batch, h));
            let mut c_start = c.index_axis_mut(Axis(0), start);
            match c0 {
                Some(c0) => c_start.assign(&c0),
                None => c_start.fill(F::zero()),
            }
            c
        } else {
            Array3::zeros((0, 0, 0))
        };
        let mut hn = if kind == CellKind::Gru {
            pooled_zeros((t_len * batch, h))
        } else {
            Array2::zeros((0, 0))
        };

        // W_hhᵀ (H, G·H), packed once for all steps and blocks.
        let w_hh_t = &PackedRhs::new(self.weight_hh.value.t());
        let blocks = batch_blocks(batch, gh);
        let rows = batch.div_ceil(blocks);
        let work: Vec<ForwardBlock<'_, F>> =
            split(by_step(gates.view_mut(), t_len), BATCH, rows, blocks)
                .into_iter()
                .zip(split(states.view_mut(), BATCH, rows, blocks))
                .zip(split(cells.view_mut(), BATCH, rows, blocks))
                .zip(split(by_step(hn.view_mut(), t_len), BATCH, rows, blocks))
                .zip(split(out, BATCH, rows, blocks))
                .enumerate()
                .map(|(i, ((((gates, states), cells), hn), out))| ForwardBlock {
                    b0: i * rows,
                    gates,
                    states,
                    cells,
                    hn,
                    out,
                })
                .collect();
        if blocks == 1 {
            for block in work {
                self.forward_block(kind, block, w_hh_t, lengths, reverse, true);
            }
        } else {
            rayon::scope(|scope| {
                for block in work {
                    scope.spawn(move |_| {
                        self.forward_block(kind, block, w_hh_t, lengths, reverse, false)
                    });
                }
            });
        }
        DirectionCache {
            gates,
            states,
            cells,
            hn,
        }
    }

    /// The forward time loop of one block of batch rows: per step
    /// `gates_t += h_{t−1}·W_hhᵀ`, then the gate math of every row in place. `threaded_gemm`:
    /// whether the recurrent product may use the pool (the only block), or runs on this thread.
    fn forward_block(
        &self,
        kind: CellKind,
        mut blk: ForwardBlock<'_, F>,
        w_hh_t: &PackedRhs<F>,
        lengths: Option<&[usize]>,
        reverse: bool,
        threaded_gemm: bool,
    ) {
        let (t_len, rows, gh) = blk.gates.dim();
        let h = gh / kind.gates();
        // GRU: (Bb, 3H) ← h_{t−1}·W_hhᵀ + b_hh, apart from the input side.
        let mut recurrent = if kind == CellKind::Gru {
            Array2::<F>::zeros((rows, gh))
        } else {
            Array2::zeros((0, 0))
        };
        for step in 0..t_len {
            let t = if reverse { t_len - 1 - step } else { step };
            let (prev, next) = prev_next(t, reverse);
            let (h_prev, mut h_next) = blk
                .states
                .multi_slice_mut((s![prev, .., ..], s![next, .., ..]));
            let mut gates_t = blk.gates.index_axis_mut(Axis(0), t);
            if kind == CellKind::Gru {
                recurrent.assign(&self.bias_hh.value.broadcast((rows, gh)).expect("bias fits"));
                w_hh_t.add_product(h_prev.view(), recurrent.view_mut(), threaded_gemm);
            } else {
                w_hh_t.add_product(h_prev.view(), gates_t.view_mut(), threaded_gemm);
            }
            let (c_prev, c_next) = if kind.has_cell_state() {
                let (p, n) = blk
                    .cells
                    .multi_slice_mut((s![prev, .., ..], s![next, .., ..]));
                (&*values_mut(p), values_mut(n))
            } else {
                (&[][..], &mut [][..])
            };
            let gates_t = values_mut(gates_t);
            let h_prev: &[F] = values_mut(h_prev);
            let h_next_s = values_mut(h_next.view_mut());
            let rec = recurrent.as_slice().expect("standard layout");
            let hn_t = if kind == CellKind::Gru {
                values_mut(blk.hn.index_axis_mut(Axis(0), t))
            } else {
                &mut [][..]
            };
            let vanilla = matches!(kind, CellKind::Tanh | CellKind::Relu);
            if vanilla && (0..rows).all(|i| is_active(lengths, t, blk.b0 + i)) {
                // One call for the block (G = 1: the gate rows are as wide as the states), not
                // one per row: for a small H the call would cost more than the arithmetic.
                math::rnn_forward(kind, gates_t, h_next_s);
            } else {
                for i in 0..rows {
                    let row = i * h..(i + 1) * h;
                    if !is_active(lengths, t, blk.b0 + i) {
                        h_next_s[row.clone()].copy_from_slice(&h_prev[row.clone()]);
                        if kind.has_cell_state() {
                            c_next[row.clone()].copy_from_slice(&c_prev[row]);
                        }
                        continue;
                    }
                    let g_row = &mut gates_t[i * gh..(i + 1) * gh];
                    match kind {
                        CellKind::Tanh | CellKind::Relu => {
                            math::rnn_forward(kind, g_row, &mut h_next_s[row])
                        }
                        CellKind::Lstm => math::lstm_forward(
                            g_row,
                            &c_prev[row.clone()],
                            &mut c_next[row.clone()],
                            &mut h_next_s[row],
                        ),
                        CellKind::Gru => {
                            let r_row = &rec[i * gh..(i + 1) * gh];
                            math::gru_forward(
                                g_row,
                                r_row,
                                &h_prev[row.clone()],
                                &mut h_next_s[row.clone()],
                            );
                            hn_t[row].copy_from_slice(&r_row[2 * h..]);
                        }
                    }
                }
            }
            let mut out_t = blk.out.index_axis_mut(Axis(0), t);
            out_t.assign(&h_next);
            for i in 0..rows {
                if !is_active(lengths, t, blk.b0 + i) {
                    out_t.row_mut(i).fill(F::zero());
                }
            }
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
        dx: ArrayViewMut2<'_, F>,
        step_norms: &mut [f64],
    ) -> (Array2<F>, Option<Array2<F>>) {
        let (t_len, batch, h) = d_out.dim();
        let gh = kind.gates() * h;
        let mut dh = dh_n.to_owned(); // (B, H): ∂L/∂h at the step being processed
        let mut dc = if kind.has_cell_state() {
            dc_n.map_or_else(|| Array2::zeros((batch, h)), |d| d.to_owned())
        } else {
            Array2::zeros((0, 0))
        };
        let mut d_gates: Array2<F> = pooled_zeros((t_len * batch, gh)); // (T·B, G·H) ∂L/∂(input-side pre-activations)
        // GRU: ∂L/∂(W_hh h + b_hh) differs from d_gates in the n block; other cells share d_gates.
        let mut d_recurrent = if kind == CellKind::Gru {
            pooled_zeros((t_len * batch, gh))
        } else {
            Array2::zeros((0, 0))
        };
        let mut sq_norms = Array2::<f64>::zeros((t_len, batch));

        let blocks = batch_blocks(batch, gh);
        let rows = batch.div_ceil(blocks);
        let mut dh_blocks = split(dh.view_mut(), Axis(0), rows, blocks).into_iter();
        let mut dc_blocks = split(dc.view_mut(), Axis(0), rows, blocks).into_iter();
        let mut norm_blocks = split(sq_norms.view_mut(), Axis(1), rows, blocks).into_iter();
        let mut acts =
            split_ref(by_step_ref(cache.gates.view(), t_len), BATCH, rows, blocks).into_iter();
        let mut states = split_ref(cache.states.view(), BATCH, rows, blocks).into_iter();
        let mut cells = split_ref(cache.cells.view(), BATCH, rows, blocks).into_iter();
        let mut hn =
            split_ref(by_step_ref(cache.hn.view(), t_len), BATCH, rows, blocks).into_iter();
        let mut d_recurrent_blocks =
            split(by_step(d_recurrent.view_mut(), t_len), BATCH, rows, blocks).into_iter();
        let work: Vec<BackwardBlock<'_, F>> =
            split(by_step(d_gates.view_mut(), t_len), BATCH, rows, blocks)
                .into_iter()
                .zip(split_ref(d_out, BATCH, rows, blocks))
                .enumerate()
                .map(|(i, (d_gates, d_out))| BackwardBlock {
                    b0: i * rows,
                    acts: acts.next().expect("one per block"),
                    states: states.next().expect("one per block"),
                    cells: cells.next().expect("one per block"),
                    hn: hn.next().expect("one per block"),
                    d_out,
                    dh: dh_blocks.next().expect("one per block"),
                    dc: dc_blocks.next().expect("one per block"),
                    d_gates,
                    d_recurrent: d_recurrent_blocks.next().expect("one per block"),
                    sq_norms: norm_blocks.next().expect("one per block"),
                })
                .collect();
        // W_hh (G·H, H), packed once for all steps and blocks.
        let w_hh = &PackedRhs::new(self.weight_hh.value.view());
        let this = &*self;
        if blocks == 1 {
            for block in work {
                this.backward_block(kind, block, w_hh, lengths, reverse, true);
            }
        } else {
            rayon::scope(|scope| {
                for block in work {
                    scope.spawn(move |_| {
                        this.backward_block(kind, block, w_hh, lengths, reverse, false)
                    });
                }
            });
        }
        for (norm, row) in step_norms.iter_mut().zip(sq_norms.rows()) {
            *norm = row.sum().sqrt();
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

        scratch::recycle(d_gates);
        scratch::recycle(d_recurrent);
        let dc0 = kind.has_cell_state().then_some(dc);
        (dh, dc0)
    }

    /// The backward time loop of one block of batch rows: per step (last to first) add
    /// ∂L/∂output_t to the carried `dh`, record its squared norm, turn it into gate gradients,
    /// and carry `dh_{t−1} = dG_t·W_hh` (plus `dc` for the LSTM).
    fn backward_block(
        &self,
        kind: CellKind,
        mut blk: BackwardBlock<'_, F>,
        w_hh: &PackedRhs<F>,
        lengths: Option<&[usize]>,
        reverse: bool,
        threaded_gemm: bool,
    ) {
        let (t_len, rows, gh) = blk.d_gates.dim();
        let h = gh / kind.gates();
        for step in 0..t_len {
            let t = if reverse { step } else { t_len - 1 - step };
            let (prev, next) = prev_next(t, reverse);
            let d_out_t = blk.d_out.index_axis(Axis(0), t);
            for i in 0..rows {
                if is_active(lengths, t, blk.b0 + i) {
                    let mut row = blk.dh.row_mut(i);
                    row += &d_out_t.row(i);
                }
                blk.sq_norms[[t, i]] = blk.dh.row(i).iter().map(|v| v.f64() * v.f64()).sum();
            }

            let acts_t = values(blk.acts.index_axis(Axis(0), t));
            let h_prev_t = values(blk.states.index_axis(Axis(0), prev));
            let (c_prev_t, c_t) = if kind.has_cell_state() {
                (
                    values(blk.cells.index_axis(Axis(0), prev)),
                    values(blk.cells.index_axis(Axis(0), next)),
                )
            } else {
                (&[][..], &[][..])
            };
            let hn_t = if kind == CellKind::Gru {
                values(blk.hn.index_axis(Axis(0), t))
            } else {
                &[][..]
            };
            let dh_s = blk.dh.as_slice_mut().expect("contiguous rows");
            let dc_s = blk.dc.as_slice_mut().expect("contiguous rows");
            let dg_t = values_mut(blk.d_gates.index_axis_mut(Axis(0), t));
            let dr_t = if kind == CellKind::Gru {
                values_mut(blk.d_recurrent.index_axis_mut(Axis(0), t))
            } else {
                &mut [][..]
            };
            let vanilla = matches!(kind, CellKind::Tanh | CellKind::Relu);
            if vanilla && (0..rows).all(|i| is_active(lengths, t, blk.b0 + i)) {
                // One call for the block, as in the forward pass.
                math::rnn_backward(kind, acts_t, dh_s, dg_t);
            } else {
                for i in 0..rows {
                    if !is_active(lengths, t, blk.b0 + i) {
                        continue; // the state was carried: dh, dc pass through unchanged
                    }
                    let row = i * h..(i + 1) * h;
                    let gate_row = i * gh..(i + 1) * gh;
                    let acts = &acts_t[gate_row.clone()];
                    let dg_row = &mut dg_t[gate_row.clone()];
                    match kind {
                        CellKind::Tanh | CellKind::Relu => {
                            math::rnn_backward(kind, acts, &mut dh_s[row], dg_row)
                        }
                        CellKind::Lstm => math::lstm_backward(
                            acts,
                            &c_prev_t[row.clone()],
                            &c_t[row.clone()],
                            &mut dh_s[row.clone()],
                            &mut dc_s[row],
                            dg_row,
                        ),
                        CellKind::Gru => math::gru_backward(
                            acts,
                            &hn_t[row.clone()],
                            &h_prev_t[row.clone()],
                            &mut dh_s[row],
                            dg_row,
                            &mut dr_t[gate_row],
                        ),
                    }
                }
            }
            // dh_{t−1} = (direct part left in dh) + dG_t·W_hh   (Bb, G·H)·(G·H, H)
            let d_rec_t = if kind == CellKind::Gru {
                blk.d_recurrent.index_axis(Axis(0), t)
            } else {
                blk.d_gates.index_axis(Axis(0), t)
            };
            w_hh.add_product(d_rec_t, blk.dh.view_mut(), threaded_gemm);
        }
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
