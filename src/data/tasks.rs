//! Synthetic sequence tasks generated in process: the sum of a sequence, the adding problem and
//! the copy task.
//!
//! All batches are batch-first: dense inputs `(N, T, I)`, regression targets `(N, 1)`, token ids
//! `(N, T)`. Every generator draws from the [`Rng`] it is given, in a documented order, so the same
//! seed gives the same data on every machine.

use ndarray::{Array2, Array3, Axis};

use crate::{Error, Result, Rng, Scalar};

/// Target id meaning "no loss at this position": the `ignore_index` of the cross-entropy.
pub const IGNORE: usize = usize::MAX;

/// A sequence-regression data set: `x: (N, T, I)` inputs, `y: (N, 1)` targets.
#[derive(Clone, Debug, PartialEq)]
pub struct SeqRegression<F> {
    /// Inputs, `(N, T, I)`.
    pub x: Array3<F>,
    /// Targets, `(N, 1)`.
    pub y: Array2<F>,
}

impl<F: Scalar> SeqRegression<F> {
    /// Number of samples `N`.
    pub fn len(&self) -> usize {
        self.x.len_of(Axis(0))
    }

    /// `true` when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `indices` (in that order, repeats allowed): `x: (B, T, I)`, `y: (B, 1)` with
    /// `B = indices.len()`.
    ///
    /// # Errors
    /// [`Error::Invalid`] if an index is `≥ N`.
    pub fn batch(&self, indices: &[usize]) -> Result<SeqRegression<F>> {
        check_rows("SeqRegression::batch", indices, self.len())?;
        Ok(SeqRegression {
            x: self.x.select(Axis(0), indices),
            y: self.y.select(Axis(0), indices),
        })
    }
}

/// A token-sequence data set: `inputs: (N, T)` ids in `0..vocab_size`, `targets: (N, T)` class
/// ids in `0..num_classes` or [`IGNORE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqTokens {
    /// Input ids, `(N, T)`.
    pub inputs: Array2<usize>,
    /// Target ids, `(N, T)`; [`IGNORE`] where no prediction is scored.
    pub targets: Array2<usize>,
    /// Number of distinct input ids (embedding rows / one-hot width).
    pub vocab_size: usize,
    /// Number of output classes (logit width); every target that is not [`IGNORE`] is below it.
    pub num_classes: usize,
}

impl SeqTokens {
    /// Number of sequences `N`.
    pub fn len(&self) -> usize {
        self.inputs.nrows()
    }

    /// `true` when there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows `indices` (in that order, repeats allowed), `(B, T)` each.
    ///
    /// # Errors
    /// [`Error::Invalid`] if an index is `≥ N`.
    pub fn batch(&self, indices: &[usize]) -> Result<SeqTokens> {
        check_rows("SeqTokens::batch", indices, self.len())?;
        Ok(SeqTokens {
            inputs: self.inputs.select(Axis(0), indices),
            targets: self.targets.select(Axis(0), indices),
            vocab_size: self.vocab_size,
            num_classes: self.num_classes,
        })
    }
}

fn check_rows(op: &'static str, indices: &[usize], n: usize) -> Result<()> {
    match indices.iter().position(|&i| i >= n) {
        Some(k) => Err(Error::invalid(
            op,
            "row index",
            format!("indices[{k}] = {} but there are only {n} rows", indices[k]),
        )),
        None => Ok(()),
    }
}

fn check_positive(op: &'static str, what: &str, v: usize) -> Result<()> {
    if v == 0 {
        Err(Error::invalid(op, what, "must be at least 1, got 0"))
    } else {
        Ok(())
    }
}

/// The sum-of-sequence task: `x_{n,t} ~ U(0, 1)` i.i.d., `y_n = Σ_t x_{n,t}`.
///
/// Shapes: `x: (n, seq_len, 1)`, `y: (n, 1)`. The sum is accumulated in `F` over `t = 0, 1, …`, so
/// `y` equals the row sum of the stored `x` exactly. Values are drawn row by row, step by step.
///
/// Baseline: `y` has mean `T/2` and variance `T/12`, so predicting the mean gives MSE `T/12`
/// (≈ 0.417 for `T = 5`, the course setting with `N = 100` and a tanh RNN of hidden size 10).
///
/// # Errors
/// [`Error::Invalid`] if `n` or `seq_len` is 0.
pub fn sum_task<F: Scalar>(n: usize, seq_len: usize, rng: &mut Rng) -> Result<SeqRegression<F>> {
    const OP: &str = "sum_task";
    check_positive(OP, "n", n)?;
    check_positive(OP, "seq_len", seq_len)?;
    let mut x = Array3::<F>::zeros((n, seq_len, 1)); // (N, T, 1)
    let mut y = Array2::<F>::zeros((n, 1)); // (N, 1)
    for i in 0..n {
        let mut s = F::zero();
        for t in 0..seq_len {
            let v = F::of(rng.uniform());
            x[[i, t, 0]] = v;
            s += v;
        }
        y[[i, 0]] = s;
    }
    Ok(SeqRegression { x, y })
}

/// The adding problem (Hochreiter & Schmidhuber, 1997).
///
/// `x: (n, seq_len, 2)`. Channel 0 holds values `~ U(0, 1)`; channel 1 is a marker that is 1 at
/// exactly two positions — `a` uniform in the first half `[0, ⌊T/2⌋)` and `b` uniform in the
/// second half `[⌊T/2⌋, T)` — and 0 elsewhere. `y: (n, 1)` with `y_n = x_{n,a,0} + x_{n,b,0}`
/// (added in `F`).
///
/// Baseline: `y` is the sum of two independent `U(0, 1)`, mean 1 and variance `2/12`, so
/// predicting the constant 1 gives MSE `1/6 ≈ 0.167`; a model that has learnt the task goes
/// far below it. Per row the draws are: `T` values, then `a`, then `b`.
///
/// # Errors
/// [`Error::Invalid`] if `n` is 0 or `seq_len < 2`.
pub fn adding_problem<F: Scalar>(
    n: usize,
    seq_len: usize,
    rng: &mut Rng,
) -> Result<SeqRegression<F>> {
    const OP: &str = "adding_problem";
    check_positive(OP, "n", n)?;
    if seq_len < 2 {
        return Err(Error::invalid(
            OP,
            "seq_len",
            format!("must be at least 2 (one marker per half), got {seq_len}"),
        ));
    }
    let half = seq_len / 2;
    let mut x = Array3::<F>::zeros((n, seq_len, 2)); // (N, T, 2)
    let mut y = Array2::<F>::zeros((n, 1)); // (N, 1)
    for i in 0..n {
        for t in 0..seq_len {
            x[[i, t, 0]] = F::of(rng.uniform());
        }
        let a = rng.below(half);
        let b = half + rng.below(seq_len - half);
        x[[i, a, 1]] = F::one();
        x[[i, b, 1]] = F::one();
        y[[i, 0]] = x[[i, a, 0]] + x[[i, b, 0]];
    }
    Ok(SeqRegression { x, y })
}

/// Layout of a copy-task sequence; see [`copy_task`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyLayout {
    /// Alphabet size `K`: symbols are the ids `1..=K`.
    pub num_symbols: usize,
    /// Number of symbols to remember, `S`.
    pub len: usize,
    /// Number of blank steps between the symbols and the delimiter, `D`.
    pub delay: usize,
}

impl CopyLayout {
    /// The blank id.
    pub const BLANK: usize = 0;

    /// The delimiter ("go") id, `K + 1`.
    pub fn delimiter(&self) -> usize {
        self.num_symbols + 1
    }

    /// Sequence length `T = S + D + 1 + S`.
    pub fn seq_len(&self) -> usize {
        2 * self.len + self.delay + 1
    }

    /// Position of the delimiter, `S + D`.
    pub fn delimiter_pos(&self) -> usize {
        self.len + self.delay
    }

    /// First step at which the model must answer, `S + D + 1`; the answers fill `T − S .. T`.
    pub fn answer_start(&self) -> usize {
        self.len + self.delay + 1
    }
}

/// The copy task: remember `S` symbols over a delay and repeat them after a delimiter.
///
/// With alphabet size `K` (`num_symbols`), `S` (`len`) and `D` (`delay`), every input row of
/// length `T = S + D + 1 + S` is
///
/// ```text
/// step:    0 … S−1 | S … S+D−1 | S+D   | S+D+1 … T−1
/// input:   s_1…s_S | 0 … 0     | K+1   | 0 … 0
/// target:  IGNORE  | IGNORE    | IGNORE| s_1 … s_S
/// ```
///
/// Symbols `s_j` are uniform in `1..=K`, 0 is the blank and `K + 1` the delimiter, so
/// `vocab_size = K + 2`. Targets are the symbol ids themselves (`num_classes = K + 1`; class 0 is
/// never a target) and [`IGNORE`] on every step that is not scored. `inputs, targets: (n, T)`.
///
/// Baseline: a model without memory can do no better than a uniform guess on the `S` answer
/// steps, cross-entropy `ln K` per scored step. Symbols are drawn row by row.
///
/// # Errors
/// [`Error::Invalid`] if `n`, `num_symbols` (K) or `len` (S) is 0.
pub fn copy_task(
    n: usize,
    num_symbols: usize,
    len: usize,
    delay: usize,
    rng: &mut Rng,
) -> Result<SeqTokens> {
    const OP: &str = "copy_task";
    check_positive(OP, "n", n)?;
    check_positive(OP, "num_symbols (alphabet size K)", num_symbols)?;
    check_positive(OP, "len (number of symbols to copy S)", len)?;
    let layout = CopyLayout {
        num_symbols,
        len,
        delay,
    };
    let t_len = layout.seq_len();
    let mut inputs = Array2::<usize>::from_elem((n, t_len), CopyLayout::BLANK); // (N, T)
    let mut targets = Array2::<usize>::from_elem((n, t_len), IGNORE); // (N, T)
    let start = layout.answer_start();
    for i in 0..n {
        for j in 0..len {
            let s = 1 + rng.below(num_symbols);
            inputs[[i, j]] = s;
            targets[[i, start + j]] = s;
        }
        inputs[[i, layout.delimiter_pos()]] = layout.delimiter();
    }
    Ok(SeqTokens {
        inputs,
        targets,
        vocab_size: num_symbols + 2,
        num_classes: num_symbols + 1,
    })
}

/// One-hot encoding of token ids: `out[n, t, ids[n, t]] = 1`, all else 0.
/// `ids: (N, T)` → `(N, T, depth)`.
///
/// # Errors
/// [`Error::Invalid`] if an id is `≥ depth` (which includes [`IGNORE`]).
pub fn one_hot<F: Scalar>(ids: &Array2<usize>, depth: usize) -> Result<Array3<F>> {
    let (n, t_len) = ids.dim();
    let mut out = Array3::<F>::zeros((n, t_len, depth)); // (N, T, depth)
    for ((i, t), &id) in ids.indexed_iter() {
        if id >= depth {
            return Err(Error::invalid(
                "one_hot",
                "token id",
                format!("ids[{i}, {t}] = {id} is not below depth {depth}"),
            ));
        }
        out[[i, t, id]] = F::one();
    }
    Ok(out)
}
