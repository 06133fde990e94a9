//! Synthetic sequence tasks, character-level text and image datasets.
//!
//! Layout: batch-first, as in the course material — dense inputs `(N, T, I)`, regression
//! targets `(N, 1)`, token ids `(N, T)`.
//!
//! | task | inputs | targets | trivial baseline |
//! |---|---|---|---|
//! | [`sum_task`] | `x ~ U(0,1)`, `(N, T, 1)` | `Σ_t x_t`, `(N, 1)` | predict `T/2`: MSE `T/12` |
//! | [`adding_problem`] | values + two markers, `(N, T, 2)` | sum of the marked values, `(N, 1)` | predict 1: MSE `1/6` |
//! | [`copy_task`] | ids `(N, S+D+1+S)` | the `S` symbols on the last `S` steps, else [`IGNORE`] | uniform guess: CE `ln K` |
//! | [`TextCorpus`] | char ids `(B, T)` | the next char ids `(B, T)` | unigram entropy |
//!
//! Images ([`images`]): IDX files (MNIST, Fashion-MNIST), CIFAR-10 binary batches and the 8×8
//! digits CSV, stored as raw bytes `(N, C, H, W)` in an [`ImageSet`] and turned into normalised,
//! optionally augmented `f32` batches.
//!
//! Every generator takes an explicit [`Rng`]: the same seed gives the same data.

pub mod images;
pub mod tasks;
pub mod text;

pub use images::{
    Augment, AugmentDraw, EpochBatches, ImageSet, Normalize, Split, load_cifar10_dir,
    load_fashion_mnist, load_idx_dir, read_cifar_batch, read_digits_csv, read_idx_images,
    read_idx_labels,
};
pub use tasks::{
    CopyLayout, IGNORE, SeqRegression, SeqTokens, adding_problem, copy_task, one_hot, sum_task,
};
pub use text::{CharVocab, SHAKESPEARE, StreamBatches, TextCorpus, TokenBatch};

use crate::{Error, Result, Rng};

/// The row indices `0..n` in a random order, cut into mini-batches of `batch_size` (the last one
/// holds the `n mod batch_size` leftovers if that is not 0) — one epoch of shuffled batches.
///
/// # Errors
/// [`Error::Invalid`] if `batch_size` is 0.
pub fn shuffled_batches(n: usize, batch_size: usize, rng: &mut Rng) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(Error::invalid(
            "shuffled_batches",
            "batch_size",
            "must be at least 1, got 0",
        ));
    }
    let perm = rng.permutation(n);
    Ok(perm.chunks(batch_size).map(<[usize]>::to_vec).collect())
}
