//! A right-hand operand packed once for many products `C += A·B` with few rows in `A`: the
//! recurrent weights of an RNN, LSTM or GRU, multiplied by the hidden states of every time step.
//!
//! A general GEMM repacks `B` into cache-friendly panels on every call; for a time loop that
//! is the same matrix a hundred times over, and the copy costs as much as the multiplication
//! (`B` is `256 × 1024` floats for an LSTM of 256 units, `A` only `B_batch × 256`). Here `B` is
//! packed once per sequence: columns in panels of [`NR`], each panel `k × NR` contiguous, so
//! the kernel streams it with unit stride.
//!
//! The kernel (f32, AVX-512) keeps an `MR × NR` block of `C` in 16 vector registers and runs
//! over `k` with one fused multiply-add per register and step. Each entry of `C` is
//! `C[i,j] + Σ_p A[i,p]·B[p,j]`, the sum formed from zero in order of `p` with fused
//! multiply-adds, then added to `C`: the same bits whichever rows, panels or threads a call is
//! split into. Without AVX-512, and for f64, the product is the crate's [`super::gemm`] on a
//! copy of `B` (so one machine always takes the same path).

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::Scalar;
use crate::layers::scratch;

/// Columns of `B` per panel: two AVX-512 vectors of f32.
pub const NR: usize = 32;
/// Rows of `A` per kernel call.
const MR: usize = 8;
/// Steps of the inner dimension per pass over `C`: an `MR × KC` block of `A` and a `KC × NR`
/// piece of a panel (32 KiB) stay in the first-level cache.
const KC: usize = 256;

/// `B (k, n)`, packed for [`PackedRhs::add_product`].
#[derive(Clone, Debug)]
pub struct PackedRhs<F> {
    k: usize,
    n: usize,
    kind: Packing<F>,
}

#[derive(Clone, Debug)]
enum Packing<F> {
    /// f32 panels for the AVX-512 kernel: panel `q` holds rows `p = 0..k` of columns
    /// `q·NR .. q·NR + NR`, zero-padded past `n`.
    Panels(Vec<f32>),
    /// A standard-layout copy of `B` for the general GEMM.
    Plain(Array2<F>),
}

impl<F: Scalar> PackedRhs<F> {
    /// Packs `b: (k, n)` (any strides; a transposed view such as `w.t()` is fine).
    pub fn new(b: ArrayView2<'_, F>) -> PackedRhs<F> {
        let (k, n) = b.dim();
        let kind = if F::BYTES == 4 && avx512() {
            let mut packed = vec![0f32; n.div_ceil(NR) * k * NR];
            pack_panels(b, &mut packed);
            Packing::Panels(packed)
        } else {
            Packing::Plain(b.to_owned())
        };
        PackedRhs { k, n, kind }
    }

    /// `(k, n)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `C += A·B` with `A: (m, k)`, `C: (m, n)`. `threaded`: the columns may be split over the
    /// pool's threads (large products only); the result is the same either way.
    ///
    /// # Panics
    /// If the shapes do not agree (a bug in the caller, as for [`super::gemm`]).
    pub fn add_product(&self, a: ArrayView2<'_, F>, mut c: ArrayViewMut2<'_, F>, threaded: bool) {
        let (m, k) = a.dim();
        super::assert_fits("packed product", a.dim(), (self.k, self.n), c.dim());
        let panels = match &self.kind {
            Packing::Plain(b) => {
                let product = if threaded {
                    super::gemm
                } else {
                    super::gemm_one_thread
                };
                product(F::one(), a, b.view(), F::one(), c);
                return;
            }
            Packing::Panels(p) => p,
        };
        if m == 0 || self.n == 0 || k == 0 {
            return;
        }
        let threads = if threaded {
            rayon::current_num_threads()
        } else {
            1
        };
        let blocks = if m * self.n * k >= super::PARALLEL_MIN_MACS {
            threads.min(self.n.div_ceil(NR))
        } else {
            1
        };
        if blocks == 1 {
            add_panels(panels, a, c, 0, false);
            return;
        }
        let cols = self.n.div_ceil(NR).div_ceil(blocks) * NR;
        let pieces: Vec<_> = c.axis_chunks_iter_mut(Axis(1), cols).collect();
        rayon::scope(|scope| {
            for (i, piece) in pieces.into_iter().enumerate() {
                scope.spawn(move |_| add_panels(panels, a, piece, i * cols / NR, false));
            }
        });
    }
}

/// `b: (k, n)` into `out` (at least `⌈n/NR⌉·k·NR` values) as panels of [`NR`] columns: panel
/// `q` holds rows `p = 0..k` of columns `q·NR .. q·NR + NR`, zero-padded past `n`. `F` is f32.
fn pack_panels<F: Scalar>(b: ArrayView2<'_, F>, out: &mut [f32]) {
    let (k, n) = b.dim();
    zero_panel_tail(k, n, out);
    for (p, row) in b.rows().into_iter().enumerate() {
        match row.as_slice() {
            Some(src) => put_row(src, p, k, out),
            None => {
                for (col, &v) in row.iter().enumerate() {
                    out[((col / NR) * k + p) * NR + col % NR] = v.f64() as f32;
                }
            }
        }
    }
}

/// Zeros in the columns past `n` of the last panel (of `k` rows), which no row of `B` writes.
fn zero_panel_tail(k: usize, n: usize, out: &mut [f32]) {
    let panels = n.div_ceil(NR);
    if !n.is_multiple_of(NR) {
        let last = &mut out[(panels - 1) * k * NR..panels * k * NR];
        for row in last.chunks_exact_mut(NR) {
            row[n % NR..].fill(0.0);
        }
    }
}

/// Row `p` of `B` (`src`, its `n` values; `F` is f32) into the panels of a `k`-row `B`: `NR`
/// values to row `p` of each panel.
fn put_row<F: Scalar>(src: &[F], p: usize, k: usize, out: &mut [f32]) {
    let src = as_f32(src);
    let whole = src.len() / NR * NR;
    for (q, chunk) in src[..whole].chunks_exact(NR).enumerate() {
        // A fixed-size copy: inlined as a few vector moves, not a call per panel.
        let dst: &mut [f32; NR] = (&mut out[(q * k + p) * NR..][..NR]).try_into().expect("NR");
        *dst = chunk.try_into().expect("NR values");
    }
    let rest = &src[whole..];
    if !rest.is_empty() {
        let q = whole / NR;
        out[(q * k + p) * NR..][..rest.len()].copy_from_slice(rest);
    }
}

/// `v` as f32 values: `F` is f32 wherever panels are packed.
fn as_f32<F: Scalar>(v: &[F]) -> &[f32] {
    assert_eq!(F::BYTES, 4, "panels are packed for f32 only");
    // SAFETY: F is a float type of 4 bytes, i.e. f32: same size, alignment and bit validity.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const f32, v.len()) }
}

/// `C ← A·B + β·C` for f32 on a CPU with AVX-512 (the caller checks both): `B` packed into
/// panels in a pooled buffer, then the same kernel as [`PackedRhs`].
pub(super) fn gemm_f32<F: Scalar>(
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    c: ArrayViewMut2<'_, F>,
) {
    let (k, n) = b.dim();
    with_panels(a, k, n, beta, c, |panels| pack_panels(b, panels));
}

/// [`gemm_f32`] with `B: (k, n)` given row by row: `row(p, out)` writes the `n` values of row
/// `p` into `out`, and they go straight into the panels (through one row-sized buffer).
pub(super) fn gemm_rows_f32<F: Scalar>(
    a: ArrayView2<'_, F>,
    (k, n): (usize, usize),
    beta: F,
    c: ArrayViewMut2<'_, F>,
    mut row: impl FnMut(usize, &mut [F]),
) {
    with_panels(a, k, n, beta, c, |panels| {
        zero_panel_tail(k, n, panels);
        let mut line = scratch::Scratch::<F>::take(n);
        for p in 0..k {
            row(p, &mut line);
            put_row(&line, p, k, panels);
        }
    });
}

/// `C ← A·B + β·C` with `B: (k, n)` written into a pooled panel buffer by `pack`.
fn with_panels<F: Scalar>(
    a: ArrayView2<'_, F>,
    k: usize,
    n: usize,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
    pack: impl FnOnce(&mut [f32]),
) {
    let overwrite = prepare_c(beta, k, &mut c);
    if a.nrows() == 0 || n == 0 || k == 0 {
        return;
    }
    let mut panels = scratch::Scratch::<f32>::take(n.div_ceil(NR) * k * NR);
    pack(&mut panels);
    add_panels(&panels, a, c, 0, overwrite);
}

/// Whether the rows of `v` are runs of contiguous values in memory order (one column, or unit
/// column stride), with a non-negative row stride: what the kernel reads and writes.
pub(super) fn rows_contiguous<S: ndarray::Data>(v: &ndarray::ArrayBase<S, ndarray::Ix2>) -> bool {
    (v.ncols() <= 1 || v.strides()[1] == 1) && v.strides()[0] >= 0
}

/// `C += A·B[:, first·NR ..]` (or `C ← …` if `overwrite`) for the panels that `c`'s columns
/// cover.
fn add_panels<F: Scalar>(
    panels: &[f32],
    a: ArrayView2<'_, F>,
    c: ArrayViewMut2<'_, F>,
    first: usize,
    overwrite: bool,
) {
    let k = a.ncols();
    let panels = &panels[first * k * NR..];
    debug_assert!(panels.len() >= c.ncols().div_ceil(NR) * k * NR);
    // SAFETY: the slice holds the k·NR values of every panel that c's columns cover.
    let rhs = Packed {
        ptr: panels.as_ptr(),
        k,
    };
    with_contiguous_rows(a, c, overwrite, rhs);
}

/// `C ← A·B + β·C` for f32 on a CPU with AVX-512 (the caller checks both), where row `p` of
/// `B: (k, n)` is read in place: the `n` values of `base` from `offsets[p]`. The caller checks
/// that `base` holds `offsets[p] + ⌈n/NR⌉·NR` values for every `p` (the kernel reads rows in
/// whole panels; the values past `n` reach no entry of `C`).
pub(super) fn gemm_offset_rows_f32<F: Scalar>(
    a: ArrayView2<'_, F>,
    base: &[F],
    offsets: &[usize],
    n: usize,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
) {
    debug_assert!(
        offsets
            .iter()
            .all(|&o| o + n.div_ceil(NR) * NR <= base.len())
    );
    let overwrite = prepare_c(beta, offsets.len(), &mut c);
    if a.nrows() == 0 || n == 0 || offsets.is_empty() {
        return;
    }
    // SAFETY: F is f32, and every row's panels lie inside `base` (both checked by the caller).
    let rhs = InPlace {
        base: base.as_ptr() as *const f32,
        offsets: offsets.as_ptr(),
    };
    with_contiguous_rows(a, c, overwrite, rhs);
}

/// Scales `C` by `β` ahead of `C += A·B` with an inner dimension `k`; returns whether the
/// kernel should overwrite `C` instead (β = 0: the kernel's first pass stores `A·B` without
/// reading `C`, which may hold anything).
fn prepare_c<F: Scalar>(beta: F, k: usize, c: &mut ArrayViewMut2<'_, F>) -> bool {
    let overwrite = beta == F::zero();
    if k == 0 && overwrite {
        c.fill(F::zero());
    } else if !overwrite && beta != F::one() {
        c.mapv_inplace(|v| v * beta);
    }
    overwrite
}

/// Runs the kernel on `A` and `C` with contiguous rows: a view whose rows are not contiguous
/// goes through a standard-layout copy.
fn with_contiguous_rows<F: Scalar, B: PanelRows>(
    a: ArrayView2<'_, F>,
    mut c: ArrayViewMut2<'_, F>,
    overwrite: bool,
    rhs: B,
) {
    if !rows_contiguous(&a) {
        // A copy with contiguous rows: by tiles when `a` is a transposed standard matrix (a
        // weight used transposed), element by element otherwise.
        let (m, k) = a.dim();
        let mut copy = scratch::Scratch::<F>::take(m * k);
        match a.reversed_axes().to_slice() {
            Some(at) => super::transpose(at, k, m, &mut copy),
            None => copy.iter_mut().zip(&a).for_each(|(d, &v)| *d = v),
        }
        let a = ArrayView2::from_shape((m, k), &copy[..]).expect("m·k values");
        return with_contiguous_rows(a, c, overwrite, rhs);
    }
    if !rows_contiguous(&c) {
        let mut tmp = c.as_standard_layout().into_owned();
        with_contiguous_rows(a, tmp.view_mut(), overwrite, rhs);
        c.assign(&tmp);
        return;
    }
    let (m, k) = a.dim();
    let n = c.ncols();
    let lda = a.strides()[0] as usize;
    let ldc = c.strides()[0] as usize;
    debug_assert_eq!(F::BYTES, 4, "the kernel is for f32 only");
    // SAFETY: F is f32 (the callers take this path only then), AVX-512 was detected, `rhs`
    // covers k rows of every panel of n columns (its constructors' contracts), and the
    // pointers and strides come from views whose shapes were checked: `a` has `m` rows of `k`
    // contiguous values, `c` `m` rows of `n` contiguous values.
    unsafe {
        kernel_avx512(
            m,
            k,
            n,
            a.as_ptr() as *const f32,
            lda,
            rhs,
            c.as_mut_ptr() as *mut f32,
            ldc,
            overwrite,
        );
    }
}

/// Where the kernel finds row `p` of panel `q` of `B`: two runs of 16 consecutive f32 values,
/// the panel's first and second half.
trait PanelRows: Copy {
    /// # Safety
    /// `q` and `p` within the operand the value was made for.
    unsafe fn at(self, q: usize, p: usize) -> (*const f32, *const f32);
}

/// Packed panels: panel `q` is `k × NR` contiguous values.
#[derive(Clone, Copy)]
struct Packed {
    ptr: *const f32,
    k: usize,
}

impl PanelRows for Packed {
    #[inline(always)]
    unsafe fn at(self, q: usize, p: usize) -> (*const f32, *const f32) {
        // SAFETY: the caller keeps q and p within the packed panels.
        unsafe {
            let row = self.ptr.add((q * self.k + p) * NR);
            (row, row.add(NR / 2))
        }
    }
}

/// Rows of `B` read in place: row `p` starts at `base + offsets[p]`.
#[derive(Clone, Copy)]
struct InPlace {
    base: *const f32,
    offsets: *const usize,
}

impl PanelRows for InPlace {
    #[inline(always)]
    unsafe fn at(self, q: usize, p: usize) -> (*const f32, *const f32) {
        // SAFETY: the caller keeps p below the number of offsets and q within the row's panels.
        unsafe {
            let row = self.base.add(*self.offsets.add(p) + q * NR);
            (row, row.add(NR / 2))
        }
    }
}

/// Columns of `B` read in place in blocks of 16: block `h` of row `p` starts at
/// `base + p·stride + blocks[h]`.
#[derive(Clone, Copy)]
struct ColumnBlocks {
    base: *const f32,
    stride: usize,
    blocks: *const usize,
}

impl PanelRows for ColumnBlocks {
    #[inline(always)]
    unsafe fn at(self, q: usize, p: usize) -> (*const f32, *const f32) {
        // SAFETY: the caller keeps p within B's rows and q within its panels (two blocks each).
        unsafe {
            let row = self.base.add(p * self.stride);
            (
                row.add(*self.blocks.add(2 * q)),
                row.add(*self.blocks.add(2 * q + 1)),
            )
        }
    }
}

/// `C ← A·B + β·C` for f32 on a CPU with AVX-512 (the caller checks both), where `B: (k, n)`
/// is read in place in column blocks of 16: block `h` (columns `16·h ..`) of row `p` is the 16
/// values of `base` from `p·stride + blocks[h]`. The caller gives `2·⌈n/NR⌉` blocks (those past
/// `n` may point anywhere inside `base`: they reach no entry of `C`) and checks that every block
/// of every row lies inside `base`.
pub(super) fn gemm_column_blocks_f32<F: Scalar>(
    a: ArrayView2<'_, F>,
    (base, stride): (&[F], usize),
    blocks: &[usize],
    n: usize,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
) {
    let k = a.ncols();
    debug_assert!(blocks.len() >= 2 * n.div_ceil(NR));
    let overwrite = prepare_c(beta, k, &mut c);
    if a.nrows() == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: F is f32, and every block of every row lies inside `base` (checked by the caller).
    let rhs = ColumnBlocks {
        base: base.as_ptr() as *const f32,
        stride,
        blocks: blocks.as_ptr(),
    };
    with_contiguous_rows(a, c, overwrite, rhs);
}

/// Whether this CPU runs the AVX-512 kernel: detected once. Setting `SKIPGATE_NO_AVX512` in
/// the environment turns it off (everything then takes the general path, as on a CPU without
/// AVX-512: how that path is tested on machines that have it).
pub(super) fn avx512() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let detected = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let detected = false;
        detected && std::env::var_os("SKIPGATE_NO_AVX512").is_none()
    })
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512<B: PanelRows>(
    _m: usize,
    _k: usize,
    _n: usize,
    _a: *const f32,
    _lda: usize,
    _rhs: B,
    _c: *mut f32,
    _ldc: usize,
    _overwrite: bool,
) {
    unreachable!("panels are packed only where AVX-512 was detected")
}

/// `C (m, n) += A (m, k) · B`, panel after panel of `B` (read through `rhs`), `MR` rows at a
/// time, the inner dimension in passes of `KC`; with `overwrite`, the first pass stores instead
/// of adding (C not read).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512<B: PanelRows>(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    rhs: B,
    c: *mut f32,
    ldc: usize,
    overwrite: bool,
) {
    for k0 in (0..k).step_by(KC) {
        let ks = k0..KC.min(k - k0) + k0;
        let store = overwrite && k0 == 0;
        for q in 0..n.div_ceil(NR) {
            let cols = NR.min(n - q * NR);
            let mut i = 0;
            while i < m {
                let rows = MR.min(m - i);
                // SAFETY: rows i..i+rows of A (columns k0..k0+kc) and C exist, columns
                // q·NR..q·NR+cols of C, and rows ks of panel q of B.
                unsafe {
                    let (a_i, c_i, ks) = (a.add(i * lda), c.add(i * ldc + q * NR), ks.clone());
                    let panel = (rhs, q);
                    match rows {
                        8 => block::<8, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                        7 => block::<7, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                        6 => block::<6, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                        5 => block::<5, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                        4 => block::<4, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                        3 => block::<3, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                        2 => block::<2, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                        _ => block::<1, B>(a_i, lda, ks, panel, c_i, ldc, cols, store),
                    }
                }
                i += rows;
            }
        }
    }
}

/// The mask of the first `n` of 16 lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn half_mask(n: usize) -> u16 {
    if n >= 16 { u16::MAX } else { (1 << n) - 1 }
}

/// `C[0..R, 0..cols] += A[0..R, ks] · B[ks, panel]` (`←` if `store`), `panel = (rhs, q)`:
/// `R × NR` accumulators in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const R: usize, B: PanelRows>(
    a: *const f32,
    lda: usize,
    ks: std::ops::Range<usize>,
    (rhs, q): (B, usize),
    c: *mut f32,
    ldc: usize,
    cols: usize,
    store: bool,
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    // SAFETY (whole body): the caller guarantees R rows of A with the columns `ks`, rows `ks`
    // of panel q of B, and R rows of C with `cols` values.
    unsafe {
        for p in ks {
            let (lo_half, hi_half) = rhs.at(q, p);
            let b_lo = _mm512_loadu_ps(lo_half);
            let b_hi = _mm512_loadu_ps(hi_half);
            for r in 0..R {
                let a_rp = _mm512_set1_ps(*a.add(r * lda + p));
                lo[r] = _mm512_fmadd_ps(a_rp, b_lo, lo[r]);
                hi[r] = _mm512_fmadd_ps(a_rp, b_hi, hi[r]);
            }
        }
        for r in 0..R {
            let row = c.add(r * ldc);
            if cols == NR && store {
                _mm512_storeu_ps(row, lo[r]);
                _mm512_storeu_ps(row.add(16), hi[r]);
            } else if cols == NR {
                _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), lo[r]));
                _mm512_storeu_ps(
                    row.add(16),
                    _mm512_add_ps(_mm512_loadu_ps(row.add(16)), hi[r]),
                );
            } else {
                // A partial last panel: only its first `cols` columns exist in C.
                let (lo_mask, hi_mask) = (half_mask(cols), half_mask(cols.saturating_sub(16)));
                let (mut lo_r, mut hi_r) = (lo[r], hi[r]);
                if !store {
                    lo_r = _mm512_add_ps(_mm512_maskz_loadu_ps(lo_mask, row), lo_r);
                    hi_r = _mm512_add_ps(_mm512_maskz_loadu_ps(hi_mask, row.add(16)), hi_r);
                }
                _mm512_mask_storeu_ps(row, lo_mask, lo_r);
                _mm512_mask_storeu_ps(row.add(16), hi_mask, hi_r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(i, j)| {
            ((i * 31 + j * 17 + seed * 7) % 101) as f32 / 50.0 - 1.0
        })
    }

    /// Odd shapes (rows not a multiple of MR, columns not of NR), B a transposed view: the
    /// packed product equals the f64 product to f32 rounding, and splitting rows, columns or
    /// threads changes no bit.
    #[test]
    fn packed_product_matches_f64_and_any_split_gives_the_same_bits() {
        for (m, k, n) in [(13, 100, 77), (64, 256, 1024), (1, 5, 3), (9, 1, 40)] {
            let a = matrix(m, k, 1);
            let w = matrix(n, k, 2); // B = wᵀ
            let c0 = matrix(m, n, 3);
            let packed = PackedRhs::new(w.t());
            assert_eq!(packed.dim(), (k, n));
            let run = |threads: usize| {
                crate::on_threads(threads, || {
                    let mut c = c0.clone();
                    packed.add_product(a.view(), c.view_mut(), true);
                    c
                })
            };
            let one = run(1);
            assert_eq!(one, run(2), "{m}x{k}x{n}");
            assert_eq!(one, run(3), "{m}x{k}x{n}");
            // Row blocks computed apart give the same bits.
            let mut halves = c0.clone();
            let split = m / 2;
            let (top, bottom) = halves.view_mut().split_at(Axis(0), split);
            packed.add_product(a.slice(ndarray::s![..split, ..]), top, false);
            packed.add_product(a.slice(ndarray::s![split.., ..]), bottom, false);
            assert_eq!(one, halves, "{m}x{k}x{n} by rows");

            let exact = c0.mapv(f64::from) + a.mapv(f64::from).dot(&w.t().mapv(f64::from));
            for (got, want) in one.iter().zip(exact.iter()) {
                let tol = 1e-5 * (k as f64).sqrt() * want.abs().max(1.0);
                assert!((f64::from(*got) - want).abs() < tol, "{got} vs {want}");
            }
        }
    }

    /// The one-shot f32 product behind `gemm` (α = 1): β = 0 (C not read, even if NaN), 1 and
    /// ½; C and B as transposed views; A with contiguous rows.
    #[test]
    fn one_shot_product_handles_beta_and_strided_operands() {
        let (m, k, n) = (11, 300, 45); // k spans two KC passes
        let a = matrix(m, k, 6);
        let b = matrix(n, k, 7); // used as bᵀ: (k, n)
        let exact = a.mapv(f64::from).dot(&b.t().mapv(f64::from));
        for beta in [0.0f32, 1.0, 0.5] {
            let mut c_t = Array2::<f32>::from_elem((n, m), 2.0); // C = c_tᵀ, column-major
            if beta == 0.0 {
                c_t.fill(f32::NAN);
            }
            super::super::gemm(1.0, a.view(), b.t(), beta, c_t.view_mut().reversed_axes());
            for ((i, j), want) in exact.indexed_iter() {
                let want = want
                    + if beta == 0.0 {
                        0.0
                    } else {
                        2.0 * f64::from(beta)
                    };
                let got = f64::from(c_t[[j, i]]);
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1.0),
                    "β {beta}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn f64_takes_the_general_path_with_the_same_result_as_gemm() {
        let a = matrix(7, 9, 4).mapv(f64::from);
        let b = matrix(9, 11, 5).mapv(f64::from);
        let mut c = Array2::<f64>::ones((7, 11));
        PackedRhs::new(b.view()).add_product(a.view(), c.view_mut(), true);
        let mut want = Array2::<f64>::ones((7, 11));
        super::super::gemm(1.0, a.view(), b.view(), 1.0, want.view_mut());
        assert_eq!(c, want);
    }
}
