//! The only module that multiplies matrices ([`PackedRhs`], in `packed`, is its variant for a
//! right-hand operand used many times over: the recurrent weights of a time loop).
//!
//! Every layer calls [`gemm`] (or the `matmul` helpers built on it), so the kernel behind it can be
//! swapped for a faster one in one place. Two kernels sit behind it: for f32 on a CPU with
//! AVX-512, the crate's own (`packed`: `B` packed into panels, an `8 × 32` register block, fused
//! multiply-adds) whenever `A`'s rows are contiguous or `A` is small enough to copy; otherwise the
//! `matrixmultiply` crate, which takes arbitrary row and column strides, so transposed views
//! (`w.t()`) cost nothing.
//!
//! Threads: a product large enough to pay for it is split into blocks of rows of `C` (or, when
//! `C` has few rows and many columns, blocks of columns), one per thread of the current rayon
//! pool (`--threads`, or `RAYON_NUM_THREADS`). Each block is the same sequential kernel on a
//! slice, and every entry of `C` is the same sum in the same order whichever block holds it, so
//! the result does not depend on the thread count.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::Scalar;

mod packed;
pub use packed::PackedRhs;

/// `C ← α·A·B + β·C` with `A: (m, k)`, `B: (k, n)`, `C: (m, n)`.
///
/// When `β = 0`, `C` is overwritten without being read (it may hold garbage or NaN).
///
/// # Panics
/// If the shapes do not agree. Layers check user-facing shapes before they get here, so a panic
/// in this function is a bug in skipgate, not bad input.
pub fn gemm<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    c: ArrayViewMut2<'_, F>,
) {
    gemm_with(alpha, a, b, beta, c, true);
}

/// [`gemm`] on the calling thread only: for callers that already run one task per thread
/// (such as the blocks of batch rows of a recurrent layer's time loop). Same results as [`gemm`].
///
/// # Panics
/// As [`gemm`].
pub fn gemm_one_thread<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    c: ArrayViewMut2<'_, F>,
) {
    gemm_with(alpha, a, b, beta, c, false);
}

fn gemm_with<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
    threaded: bool,
) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_fits("gemm", a.dim(), (k2, n), c.dim());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // A·B is the zero matrix; only the β·C part remains.
        if beta == F::zero() {
            c.fill(F::zero());
        } else {
            c *= beta;
        }
        return;
    }
    let threads = if threaded {
        rayon::current_num_threads()
    } else {
        1
    };
    if threads > 1 && m * n * k >= PARALLEL_MIN_MACS {
        if m >= 2 * MIN_ROWS_PER_THREAD {
            // Tall: blocks of rows of A and C, B shared.
            let blocks = threads.min(m / MIN_ROWS_PER_THREAD);
            let rows = m.div_ceil(blocks);
            let a_blocks: Vec<_> = a.axis_chunks_iter(Axis(0), rows).collect();
            let c_blocks: Vec<_> = c.axis_chunks_iter_mut(Axis(0), rows).collect();
            rayon::scope(|scope| {
                for (a_block, c_block) in a_blocks.into_iter().zip(c_blocks) {
                    scope.spawn(move |_| kernel(alpha, a_block, b, beta, c_block));
                }
            });
            return;
        }
        if n >= 2 * MIN_COLS_PER_THREAD {
            // Short and wide (a small batch times a weight matrix, as in every recurrent step):
            // blocks of columns of B and C, A shared. Column blocks are multiples of 64 wide.
            let blocks = threads.min(n / MIN_COLS_PER_THREAD);
            let cols = n.div_ceil(blocks).next_multiple_of(64);
            let b_blocks: Vec<_> = b.axis_chunks_iter(Axis(1), cols).collect();
            let c_blocks: Vec<_> = c.axis_chunks_iter_mut(Axis(1), cols).collect();
            rayon::scope(|scope| {
                for (b_block, c_block) in b_blocks.into_iter().zip(c_blocks) {
                    scope.spawn(move |_| kernel(alpha, a, b_block, beta, c_block));
                }
            });
            return;
        }
    }
    kernel(alpha, a, b, beta, c);
}

/// A transposed left operand of at most this many values is copied for the AVX-512 kernel.
const SMALL_A_COPY: usize = 1 << 16;
/// Products with fewer multiply-adds than this run on one thread (the split does not pay).
pub(crate) const PARALLEL_MIN_MACS: usize = 1 << 20;
/// Each thread gets at least this many rows of `C` when rows are split.
const MIN_ROWS_PER_THREAD: usize = 64;
/// Each thread gets at least this many columns of `C` when columns are split.
const MIN_COLS_PER_THREAD: usize = 128;

/// The sequential kernel: `C ← α·A·B + β·C` on views whose shapes were checked.
fn kernel<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
) {
    if alpha == F::one() && takes_packed_kernel(&a) {
        packed::gemm_f32(a, b, beta, c);
        return;
    }
    let (m, k) = a.dim();
    let n = b.ncols();
    let (rsa, csa) = strides(a.strides());
    let (rsb, csb) = strides(b.strides());
    let (rsc, csc) = strides(c.strides());
    // SAFETY: the pointers come from live ndarray views whose shapes were checked above, and the
    // strides are the views' own (in elements), which is what matrixmultiply expects.
    unsafe {
        if let Some((alpha, beta)) = as_f32(alpha, beta) {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                alpha,
                a.as_ptr() as *const f32,
                rsa,
                csa,
                b.as_ptr() as *const f32,
                rsb,
                csb,
                beta,
                c.as_mut_ptr() as *mut f32,
                rsc,
                csc,
            );
        } else {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                alpha.f64(),
                a.as_ptr() as *const f64,
                rsa,
                csa,
                b.as_ptr() as *const f64,
                rsb,
                csb,
                beta.f64(),
                c.as_mut_ptr() as *mut f64,
                rsc,
                csc,
            );
        }
    }
}

/// Panics unless `A: a`, `B: b` and `C: c` (shapes) fit `C = A·B`: the message names `op` and
/// the three shapes (a mismatch here is a bug in skipgate; layers check user-facing shapes).
pub(crate) fn assert_fits(op: &str, a: (usize, usize), b: (usize, usize), c: (usize, usize)) {
    assert!(
        a.1 == b.0 && c == (a.0, b.1),
        "{op}: A {a:?} · B {b:?} does not fit C {c:?}"
    );
}

/// Whether a product with left operand `a` runs on the crate's AVX-512 kernel: for f32 where
/// the CPU has it, when `a`'s rows are contiguous or `a` is small enough to copy (a weight
/// matrix used transposed). A large transposed `a` (the weight gradients of a recurrent layer)
/// is read in place by the general kernel instead.
fn takes_packed_kernel<F: Scalar>(a: &ArrayView2<'_, F>) -> bool {
    F::BYTES == 4 && (packed::rows_contiguous(a) || a.len() <= SMALL_A_COPY) && packed::avx512()
}

/// `C ← A·B + β·C` on the calling thread, with `B: (k, n)` given row by row: `row(p, out)`
/// writes the `n` values of row `p` of `B` into `out`.
///
/// For a `B` computed on the fly, such as the column matrix of a convolution (im2col): on the
/// AVX-512 path each row goes straight into the kernel's packed panels, so `B` is never stored
/// whole and is copied once instead of twice. The result has the same bits as [`gemm`] on the
/// stored `B`.
///
/// # Panics
/// If `A` is not `(m, k)` or `C` not `(m, n)`, as [`gemm`].
pub fn gemm_rows<F: Scalar>(
    a: ArrayView2<'_, F>,
    (k, n): (usize, usize),
    beta: F,
    c: ArrayViewMut2<'_, F>,
    mut row: impl FnMut(usize, &mut [F]),
) {
    assert_fits("gemm_rows", a.dim(), (k, n), c.dim());
    if takes_packed_kernel(&a) {
        packed::gemm_rows_f32(a, (k, n), beta, c, row);
        return;
    }
    let mut b = crate::layers::scratch::Scratch::<F>::take(k * n);
    if n > 0 {
        for (p, out) in b.chunks_exact_mut(n).enumerate() {
            row(p, out);
        }
    }
    let b = ArrayView2::from_shape((k, n), &b[..]).expect("k·n values");
    gemm_one_thread(F::one(), a, b, beta, c);
}

/// `C ← A·B + β·C` on the calling thread, with `B: (k, n)` read in place from `base`: row `p`
/// of `B` is `base[offsets[p] .. offsets[p] + n]` (`k = offsets.len()`). Rows may overlap, as
/// the shifted copies of an image that a stride-1 convolution multiplies by: on the AVX-512 path
/// the kernel reads them where they are, and the column matrix is never written.
///
/// `base` must hold [`ROW_SLACK`] more values past the end of every row: the kernel reads rows
/// in whole panels of 32 values (what it reads past `n` reaches no entry of `C`). The result
/// has the same bits as [`gemm`] on the stored `B`.
///
/// # Panics
/// If `A` is not `(m, k)`, `C` not `(m, n)`, or a row and its slack run past the end of `base`.
pub fn gemm_offset_rows<F: Scalar>(
    a: ArrayView2<'_, F>,
    base: &[F],
    offsets: &[usize],
    n: usize,
    beta: F,
    c: ArrayViewMut2<'_, F>,
) {
    let k = offsets.len();
    assert_fits("gemm_offset_rows", a.dim(), (k, n), c.dim());
    assert!(
        offsets.iter().all(|&o| o + n + ROW_SLACK <= base.len()),
        "gemm_offset_rows: a row of B and its slack run past the end of its {} values",
        base.len()
    );
    if takes_packed_kernel(&a) {
        packed::gemm_offset_rows_f32(a, base, offsets, n, beta, c);
        return;
    }
    gemm_rows(a, (k, n), beta, c, |p, out| {
        out.copy_from_slice(&base[offsets[p]..offsets[p] + n]);
    });
}

/// Values that [`gemm_offset_rows`] may read past the end of a row of `B`.
pub const ROW_SLACK: usize = packed::NR;

/// `C ← A·B + β·C` on the calling thread, with `B: (k, n)` read in place in blocks of
/// [`COLUMN_BLOCK`] columns: block `h` of row `p` (columns `16·h .. 16·h + 16`) is the 16 values
/// of `base` from `p·stride + blocks[h]`, and `blocks` has one entry per block, `⌈n/16⌉` (`n`
/// a multiple of 16). For the transposed column matrix of a convolution, read from the image
/// stored channels last: a block is 16 channels of one kernel tap. Same bits as [`gemm`] on the
/// stored `B`.
///
/// # Panics
/// If `A` is not `(m, k)`, `C` not `(m, n)`, `n` is not a multiple of 16, `blocks` does not have
/// `n/16` entries, or a block of a row runs past the end of `base`.
pub fn gemm_column_blocks<F: Scalar>(
    a: ArrayView2<'_, F>,
    (base, stride): (&[F], usize),
    blocks: &[usize],
    n: usize,
    beta: F,
    c: ArrayViewMut2<'_, F>,
) {
    let k = a.ncols();
    assert_fits("gemm_column_blocks", a.dim(), (k, n), c.dim());
    assert!(
        n.is_multiple_of(COLUMN_BLOCK) && blocks.len() == n / COLUMN_BLOCK,
        "gemm_column_blocks: B with {n} columns is not read in {} blocks of {COLUMN_BLOCK}",
        blocks.len()
    );
    let last_row = k.saturating_sub(1) * stride;
    assert!(
        k == 0
            || blocks
                .iter()
                .all(|&b| last_row + b + COLUMN_BLOCK <= base.len()),
        "gemm_column_blocks: a block of B runs past the end of its {} values",
        base.len()
    );
    if takes_packed_kernel(&a) {
        // Whole panels: a last odd block is paired with the first, whose sums are not stored.
        let mut paired = blocks.to_vec();
        if paired.len() % 2 == 1 {
            paired.push(blocks[0]);
        }
        packed::gemm_column_blocks_f32(a, (base, stride), &paired, n, beta, c);
        return;
    }
    gemm_rows(a, (k, n), beta, c, |p, out| {
        for (block, &offset) in out.chunks_exact_mut(COLUMN_BLOCK).zip(blocks) {
            let start = p * stride + offset;
            block.copy_from_slice(&base[start..start + COLUMN_BLOCK]);
        }
    });
}

/// Columns per block of [`gemm_column_blocks`]: half a panel of the AVX-512 kernel.
pub const COLUMN_BLOCK: usize = packed::NR / 2;

/// `dst (cols, rows) ← srcᵀ` for a row-major `src: (rows, cols)`, in square tiles that stay in
/// the L1 cache.
pub(crate) fn transpose<F: Copy>(src: &[F], rows: usize, cols: usize, dst: &mut [F]) {
    const T: usize = 16;
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    for r0 in (0..rows).step_by(T) {
        let r1 = (r0 + T).min(rows);
        for c0 in (0..cols).step_by(T) {
            let c1 = (c0 + T).min(cols);
            for r in r0..r1 {
                let s = &src[r * cols + c0..r * cols + c1];
                for (c, &v) in (c0..c1).zip(s) {
                    dst[c * rows + r] = v;
                }
            }
        }
    }
}

/// `A·B` as a new matrix.
pub fn matmul<F: Scalar>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>) -> Array2<F> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    gemm(F::one(), a, b, F::zero(), c.view_mut());
    c
}

fn strides(s: &[isize]) -> (isize, isize) {
    (s[0], s[1])
}

/// `Some` when `F` is `f32` (the two branches of [`gemm`] are chosen by type, not by value).
fn as_f32<F: Scalar>(alpha: F, beta: F) -> Option<(f32, f32)> {
    if F::BYTES == 4 {
        Some((alpha.f64() as f32, beta.f64() as f32))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gemm_matches_hand_computed_product_with_transposes_and_beta() {
        let a = array![[1.0f64, 2.0], [3.0, 4.0], [5.0, 6.0]]; // (3, 2)
        let b = array![[1.0f64, 0.0, 2.0], [0.0, 1.0, 3.0]]; // (2, 3)
        let mut c = Array2::from_elem((3, 3), 1.0f64);
        gemm(2.0, a.view(), b.view(), 0.5, c.view_mut());
        let want = array![[2.5, 4.5, 16.5], [6.5, 8.5, 36.5], [10.5, 12.5, 56.5]];
        assert_eq!(c, want);
        // Transposed operands: (Bᵀ Aᵀ) = (A B)ᵀ.
        let ct = matmul(b.t(), a.t());
        assert_eq!(ct, matmul(a.view(), b.view()).t());
    }

    #[test]
    fn gemm_f32_agrees_with_f64() {
        let a = Array2::from_shape_fn((5, 7), |(i, j)| (i * 7 + j) as f32 * 0.1 - 1.0);
        let b = Array2::from_shape_fn((7, 4), |(i, j)| (i as f32 - j as f32) * 0.3);
        let c32 = matmul(a.view(), b.view());
        let c64 = matmul(a.mapv(|v| v as f64).view(), b.mapv(|v| v as f64).view());
        for (x, y) in c32.iter().zip(c64.iter()) {
            assert!((*x as f64 - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn threaded_product_is_bitwise_equal_to_one_thread() {
        let a = Array2::from_shape_fn((300, 200), |(i, j)| {
            ((i * 31 + j * 17) % 97) as f32 / 97.0 - 0.5
        });
        let b = Array2::from_shape_fn((200, 100), |(i, j)| {
            ((i * 13 + j * 7) % 89) as f32 / 89.0 - 0.5
        });
        let run = |threads: usize| {
            crate::on_threads(threads, || {
                let mut c = Array2::from_elem((300, 100), 1.0f32);
                gemm(1.0, a.view(), b.t().t(), 2.0, c.view_mut());
                c
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
        let want = matmul(a.mapv(f64::from).view(), b.mapv(f64::from).view());
        for (x, y) in one.iter().zip(want.iter()) {
            assert!((*x as f64 - (y + 2.0)).abs() < 1e-4);
        }
    }

    #[test]
    fn short_wide_product_split_by_columns_is_bitwise_equal_to_one_thread() {
        // (64, 256)·(256, 1000): an LSTM step's shape (with a width that is no multiple of 64),
        // B a transposed view as the recurrent layers pass it.
        let a = Array2::from_shape_fn((64, 256), |(i, j)| ((i * 31 + j * 17) % 97) as f32 / 97.0);
        let w = Array2::from_shape_fn((1000, 256), |(i, j)| {
            ((i * 13 + j * 7) % 89) as f32 / 89.0 - 0.5
        });
        let run = |threads: usize| {
            crate::on_threads(threads, || {
                let mut c = Array2::from_elem((64, 1000), 1.0f32);
                gemm(1.0, a.view(), w.t(), 1.0, c.view_mut());
                c
            })
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
        let want = matmul(a.mapv(f64::from).view(), w.t().mapv(f64::from).view());
        for (x, y) in one.iter().zip(want.iter()) {
            assert!((*x as f64 - (y + 1.0)).abs() < 1e-3 * y.abs().max(1.0));
        }
    }

    /// `B` given row by row, or read in place from overlapping rows of one buffer, gives the
    /// bits of `gemm` on the stored `B`: f32 (the AVX-512 kernel where the CPU has it) and f64,
    /// β = 0 (C not read), 1 and ½, an inner dimension over two kernel passes, odd widths.
    #[test]
    fn rows_given_or_read_in_place_give_the_bits_of_the_stored_product() {
        fn check<F: Scalar + std::fmt::Debug>() {
            for (m, n, stride) in [(11, 45, 3), (3, 70, 1), (9, 32, 40), (1, 1, 2)] {
                let k = 300;
                // B's rows overlap: row p is base[p·stride .. p·stride + n].
                let base: Vec<F> = (0..k * stride + n + ROW_SLACK)
                    .map(|i| F::of(((i * 29) % 83) as f64 / 41.0 - 1.0))
                    .collect();
                let offsets: Vec<usize> = (0..k).map(|p| p * stride).collect();
                let b = Array2::from_shape_fn((k, n), |(p, j)| base[offsets[p] + j]);
                let a = Array2::from_shape_fn((m, k), |(i, p)| {
                    F::of(((i * 13 + p * 7) % 61) as f64 / 30.0 - 1.0)
                });
                for beta in [0.0, 1.0, 0.5] {
                    let beta = F::of(beta);
                    let c0 = Array2::from_elem(
                        (m, n),
                        F::of(if beta == F::zero() { f64::NAN } else { 2.0 }),
                    );
                    let mut want = c0.clone();
                    gemm(F::one(), a.view(), b.view(), beta, want.view_mut());
                    let mut by_rows = c0.clone();
                    gemm_rows(a.view(), (k, n), beta, by_rows.view_mut(), |p, out| {
                        out.copy_from_slice(b.row(p).as_slice().unwrap())
                    });
                    assert_eq!(by_rows, want, "rows {m}x{k}x{n}");
                    let mut in_place = c0.clone();
                    gemm_offset_rows(a.view(), &base, &offsets, n, beta, in_place.view_mut());
                    assert_eq!(in_place, want, "in place {m}x{k}x{n}");
                }
            }
            // Column blocks: block h of row p at base[p·stride + blocks[h]], blocks overlapping
            // and out of order; an odd number of blocks (half a panel left over).
            for (m, n, stride) in [(11, 48, 5), (3, 32, 16), (9, 16, 1)] {
                let k = 300;
                let blocks: Vec<usize> = (0..n / 16).map(|h| (h * 7 + 3) % 20).collect();
                let base: Vec<F> = (0..(k - 1) * stride + 20 + 16)
                    .map(|i| F::of(((i * 29) % 83) as f64 / 41.0 - 1.0))
                    .collect();
                let b = Array2::from_shape_fn((k, n), |(p, j)| {
                    base[p * stride + blocks[j / 16] + j % 16]
                });
                let a = Array2::from_shape_fn((m, k), |(i, p)| {
                    F::of(((i * 13 + p * 7) % 61) as f64 / 30.0 - 1.0)
                });
                let mut want = Array2::from_elem((m, n), F::of(2.0));
                gemm(F::one(), a.view(), b.view(), F::one(), want.view_mut());
                let mut got = Array2::from_elem((m, n), F::of(2.0));
                gemm_column_blocks(
                    a.view(),
                    (&base, stride),
                    &blocks,
                    n,
                    F::one(),
                    got.view_mut(),
                );
                assert_eq!(got, want, "column blocks {m}x{k}x{n}");
            }
        }
        check::<f32>();
        check::<f64>();
    }

    #[test]
    #[should_panic(expected = "run past the end")]
    fn rows_read_in_place_must_leave_the_slack() {
        let base = vec![0f32; 40];
        let a = Array2::<f32>::zeros((2, 1));
        let mut c = Array2::<f32>::zeros((2, 10));
        gemm_offset_rows(a.view(), &base, &[0], 10, 0.0, c.view_mut());
    }

    #[test]
    fn gemm_with_empty_inner_dimension_scales_c() {
        let a = Array2::<f32>::zeros((2, 0));
        let b = Array2::<f32>::zeros((0, 3));
        let mut c = Array2::from_elem((2, 3), 4.0f32);
        gemm(1.0, a.view(), b.view(), 0.5, c.view_mut());
        assert!(c.iter().all(|&v| v == 2.0));
    }
}
