//! Character-level text: a vocabulary of characters, a corpus of ids, and the three ways of
//! cutting it into batches — random windows for training, fixed non-overlapping windows for a
//! validation loss, and contiguous streams for truncated backpropagation through time.
//!
//! Batches are batch-first: `inputs, targets: (B, T)` with `targets[b, t]` the id that follows
//! `inputs[b, t]` in the text.

use std::path::Path;

use ndarray::{Array2, s};

use crate::{Error, Result, Rng};

/// Tiny Shakespeare (40,000 lines, 1,115,394 ASCII bytes, 65 distinct characters), embedded in
/// the binary. Origin, licence and hash: `data/PROVENANCE.md`.
pub const SHAKESPEARE: &str = include_str!("../../data/tinyshakespeare/input.txt");

/// A pair of `(inputs, targets)` id batches, both `(B, T)`.
pub type TokenBatch = (Array2<usize>, Array2<usize>);

/// The sorted set of distinct characters of a text; a character's id is its rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>, // sorted, unique
}

/// `'a'`, `'\n'`, `'\u{e9}'`: a character quoted and escaped so it prints on one ASCII line.
fn quote(c: char) -> String {
    format!("'{}'", c.escape_default())
}

impl CharVocab {
    /// The sorted distinct characters of `text` (ids `0..len()` in Unicode scalar order).
    ///
    /// # Errors
    /// [`Error::Data`] "text is empty" for an empty text.
    pub fn from_text(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(Error::Data {
                what: "CharVocab::from_text".into(),
                msg: "text is empty".into(),
            });
        }
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Ok(CharVocab { chars })
    }

    /// Restores a vocabulary saved with [`CharVocab::chars`]: the characters must be strictly
    /// increasing, so every id keeps the meaning it had when the model was trained.
    ///
    /// # Errors
    /// [`Error::Data`] if `chars` is empty or not strictly increasing (naming the position).
    pub fn from_chars(chars: String) -> Result<Self> {
        const WHAT: &str = "CharVocab::from_chars";
        let chars: Vec<char> = chars.chars().collect();
        if chars.is_empty() {
            return Err(Error::Data {
                what: WHAT.into(),
                msg: "vocabulary is empty".into(),
            });
        }
        if let Some(i) = chars.windows(2).position(|w| w[0] >= w[1]) {
            return Err(Error::Data {
                what: WHAT.into(),
                msg: format!(
                    "characters must be sorted and unique, but {} at position {} is followed by {}",
                    quote(chars[i]),
                    i,
                    quote(chars[i + 1])
                ),
            });
        }
        Ok(CharVocab { chars })
    }

    /// The vocabulary as a string of its characters in id order (what [`CharVocab::from_chars`]
    /// reads back), e.g. for checkpoint metadata.
    pub fn chars(&self) -> String {
        self.chars.iter().collect()
    }

    /// Number of characters (the embedding rows and the number of classes of a char model).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Always `false`: a vocabulary has at least one character.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    /// The character with id `id`, if `id < len()`.
    pub fn char(&self, id: usize) -> Option<char> {
        self.chars.get(id).copied()
    }

    /// The ids of the characters of `text`, one per character.
    ///
    /// # Errors
    /// [`Error::Data`] naming the first unknown character (escaped, e.g. `'\u{e9}'`) and its
    /// position (counted in characters from 0).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                self.id(c).ok_or_else(|| Error::Data {
                    what: "CharVocab::encode".into(),
                    msg: format!(
                        "character {} at position {i} is not in the vocabulary of {} characters",
                        quote(c),
                        self.len()
                    ),
                })
            })
            .collect()
    }

    /// The text of `ids`.
    ///
    /// # Errors
    /// [`Error::Data`] naming the first id `≥ len()` and its position.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| {
                self.char(id).ok_or_else(|| Error::Data {
                    what: "CharVocab::decode".into(),
                    msg: format!(
                        "id {id} at position {i} is not below the vocabulary size {}",
                        self.len()
                    ),
                })
            })
            .collect()
    }
}

/// A text as character ids, with its vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextCorpus {
    /// The distinct characters of the text.
    pub vocab: CharVocab,
    /// The text, one id per character.
    pub ids: Vec<usize>,
}

impl TextCorpus {
    /// Builds the vocabulary of `text` and encodes it.
    ///
    /// # Errors
    /// [`Error::Data`] "text is empty" for an empty text.
    pub fn from_text(text: &str) -> Result<Self> {
        let vocab = CharVocab::from_text(text)?;
        let ids = vocab.encode(text)?;
        Ok(TextCorpus { vocab, ids })
    }

    /// Reads a UTF-8 text file and builds its corpus.
    ///
    /// # Errors
    /// [`Error::Io`] with the path if the file cannot be read; [`Error::Data`] with the path if
    /// it is not valid UTF-8 (naming the byte offset of the first bad byte) or is empty.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| Error::Data {
            what: path.display().to_string(),
            msg: format!(
                "not valid UTF-8 text: invalid byte sequence at byte offset {}",
                e.utf8_error().valid_up_to()
            ),
        })?;
        if text.is_empty() {
            return Err(Error::Data {
                what: path.display().to_string(),
                msg: "text is empty".into(),
            });
        }
        Self::from_text(&text)
    }

    /// The embedded tiny Shakespeare ([`SHAKESPEARE`]): 1,115,394 ids over 65 characters.
    pub fn shakespeare() -> TextCorpus {
        Self::from_text(SHAKESPEARE).expect("the embedded Shakespeare text is not empty")
    }

    /// Number of characters in the text.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always `false`: a corpus has at least one character.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Splits the ids into a training part (the first `⌊len · train_fraction⌋` ids) and a
    /// validation part (the rest). Both are contiguous, so no window straddles the two.
    ///
    /// # Errors
    /// [`Error::Invalid`] unless `0 < train_fraction < 1` and both parts are non-empty.
    pub fn split(&self, train_fraction: f64) -> Result<(Vec<usize>, Vec<usize>)> {
        const OP: &str = "TextCorpus::split";
        if !(train_fraction > 0.0 && train_fraction < 1.0) {
            return Err(Error::invalid(
                OP,
                "train_fraction",
                format!("must be strictly between 0 and 1, got {train_fraction}"),
            ));
        }
        let n = self.ids.len();
        let n_train = (n as f64 * train_fraction).floor() as usize;
        if n_train == 0 || n_train >= n {
            return Err(Error::invalid(
                OP,
                "train_fraction",
                format!(
                    "{train_fraction} of {n} ids leaves {n_train} for training and {} for validation; both must be non-empty",
                    n - n_train.min(n)
                ),
            ));
        }
        Ok((self.ids[..n_train].to_vec(), self.ids[n_train..].to_vec()))
    }

    /// `batch` windows at random offsets: for each row `b` (in order) a start `s_b` is drawn
    /// uniformly from `0..=len − seq_len − 1`, and
    /// `inputs[b, t] = ids[s_b + t]`, `targets[b, t] = ids[s_b + t + 1]`. Both `(batch, seq_len)`.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `batch` or `seq_len` is 0, or if `ids` is shorter than
    /// `seq_len + 1` (naming both numbers).
    pub fn random_batch(
        ids: &[usize],
        batch: usize,
        seq_len: usize,
        rng: &mut Rng,
    ) -> Result<TokenBatch> {
        const OP: &str = "TextCorpus::random_batch";
        check_sizes(OP, ids, batch, seq_len)?;
        let mut inputs = Array2::<usize>::zeros((batch, seq_len)); // (B, T)
        let mut targets = Array2::<usize>::zeros((batch, seq_len)); // (B, T)
        let n_starts = ids.len() - seq_len;
        for b in 0..batch {
            let s = rng.below(n_starts);
            for t in 0..seq_len {
                inputs[[b, t]] = ids[s + t];
                targets[[b, t]] = ids[s + t + 1];
            }
        }
        Ok((inputs, targets))
    }

    /// Fixed, non-overlapping windows over `ids` for a validation loss that does not depend on
    /// a seed. Window `w` has `inputs = ids[w·T .. (w+1)·T]` and targets shifted by one; there are
    /// `W = ⌊(len − 1) / T⌋` windows (the last `(len − 1) mod T` targets are not scored), taken in
    /// order, `batch` per batch, the last batch holding the remaining `W mod batch` rows if that
    /// is not 0. Every scored window has `T` targets, so the mean loss over all windows is the
    /// row-weighted mean of the per-batch mean losses.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `batch` or `seq_len` is 0 or `ids` is shorter than `seq_len + 1`.
    pub fn eval_batches(ids: &[usize], batch: usize, seq_len: usize) -> Result<Vec<TokenBatch>> {
        const OP: &str = "TextCorpus::eval_batches";
        check_sizes(OP, ids, batch, seq_len)?;
        let windows = (ids.len() - 1) / seq_len;
        let mut out = Vec::with_capacity(windows.div_ceil(batch));
        let mut w = 0;
        while w < windows {
            let rows = batch.min(windows - w);
            let mut inputs = Array2::<usize>::zeros((rows, seq_len)); // (B, T)
            let mut targets = Array2::<usize>::zeros((rows, seq_len)); // (B, T)
            for b in 0..rows {
                let s = (w + b) * seq_len;
                for t in 0..seq_len {
                    inputs[[b, t]] = ids[s + t];
                    targets[[b, t]] = ids[s + t + 1];
                }
            }
            out.push((inputs, targets));
            w += rows;
        }
        Ok(out)
    }
}

fn check_sizes(op: &'static str, ids: &[usize], batch: usize, seq_len: usize) -> Result<()> {
    if batch == 0 {
        return Err(Error::invalid(op, "batch", "must be at least 1, got 0"));
    }
    if seq_len == 0 {
        return Err(Error::invalid(op, "seq_len", "must be at least 1, got 0"));
    }
    if ids.len() < seq_len + 1 {
        return Err(Error::invalid(
            op,
            "text length",
            format!(
                "the text has {} ids, too short for seq_len {seq_len}: a window needs seq_len + 1 = {} ids",
                ids.len(),
                seq_len + 1
            ),
        ));
    }
    Ok(())
}

/// Contiguous streams for truncated backpropagation through time.
///
/// The ids are cut into `B` streams of `L = ⌊len / B⌋` ids each (the last `len mod B` ids are
/// dropped): stream `b` is `ids[b·L .. (b+1)·L]`. [`StreamBatches::next_chunk`] walks all streams
/// in lockstep, so row `b` of chunk `k + 1` starts exactly where row `b` of chunk `k` ended and the
/// hidden state of row `b` can be carried from one chunk to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamBatches {
    streams: Array2<usize>, // (B, L)
    pos: usize,
}

impl StreamBatches {
    /// Cuts `ids` into `batch` streams.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `batch` is 0 or a stream would hold fewer than 2 ids (one input and
    /// its target).
    pub fn new(ids: &[usize], batch: usize) -> Result<Self> {
        const OP: &str = "StreamBatches::new";
        if batch == 0 {
            return Err(Error::invalid(OP, "batch", "must be at least 1, got 0"));
        }
        let l = ids.len() / batch;
        if l < 2 {
            return Err(Error::invalid(
                OP,
                "text length",
                format!(
                    "{} ids cut into {batch} streams give {l} ids per stream; each stream needs at least 2",
                    ids.len()
                ),
            ));
        }
        let streams = Array2::from_shape_vec((batch, l), ids[..batch * l].to_vec())
            .expect("batch * l ids fill a (batch, l) array");
        Ok(StreamBatches { streams, pos: 0 })
    }

    /// Number of streams `B` (rows of every chunk).
    pub fn batch_size(&self) -> usize {
        self.streams.nrows()
    }

    /// Ids per stream `L`.
    pub fn stream_len(&self) -> usize {
        self.streams.ncols()
    }

    /// Offset within each stream where the next chunk's inputs start.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Number of chunks one pass yields for `seq_len`: `⌈(L − 1) / seq_len⌉`.
    pub fn num_chunks(&self, seq_len: usize) -> usize {
        if seq_len == 0 {
            0
        } else {
            (self.stream_len() - 1).div_ceil(seq_len)
        }
    }

    /// The next chunk: with `p` = [`StreamBatches::position`] and `t = min(seq_len, L − 1 − p)`,
    /// `inputs[b, j] = stream_b[p + j]`, `targets[b, j] = stream_b[p + j + 1]`, both `(B, t)`; then
    /// the position advances by `t`. The last chunk of a pass may be shorter than `seq_len`.
    /// Returns `Ok(None)` once every target has been served (call [`StreamBatches::reset`] to
    /// start the next pass).
    ///
    /// # Errors
    /// [`Error::Invalid`] if `seq_len` is 0.
    pub fn next_chunk(&mut self, seq_len: usize) -> Result<Option<TokenBatch>> {
        if seq_len == 0 {
            return Err(Error::invalid(
                "StreamBatches::next_chunk",
                "seq_len",
                "must be at least 1, got 0",
            ));
        }
        let l = self.stream_len();
        if self.pos + 1 >= l {
            return Ok(None);
        }
        let t = seq_len.min(l - 1 - self.pos);
        let p = self.pos;
        let inputs = self.streams.slice(s![.., p..p + t]).to_owned(); // (B, t)
        let targets = self.streams.slice(s![.., p + 1..=p + t]).to_owned(); // (B, t)
        self.pos += t;
        Ok(Some((inputs, targets)))
    }

    /// Starts a new pass from the beginning of every stream.
    pub fn reset(&mut self) {
        self.pos = 0;
    }
}
