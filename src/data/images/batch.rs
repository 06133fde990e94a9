//! From raw bytes to training batches: per-channel normalisation, random crop and flip, and the
//! order of the images in an epoch.

use ndarray::{Array3, Array4, ArrayView3};

use super::{ImageSet, check_indices};
use crate::{Error, Result, Rng};

/// Per-channel normalisation of pixels scaled to `[0, 1]`:
/// `x = (p / max_value − mean[c]) / std[c]` for a pixel `p` of channel `c`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalize {
    /// Mean of the scaled pixels of each channel, `(C,)`.
    pub mean: Vec<f32>,
    /// Standard deviation of the scaled pixels of each channel, `(C,)`; every entry `> 0`.
    pub std: Vec<f32>,
}

impl Normalize {
    /// A normalisation with the given per-channel statistics (e.g. published ones).
    ///
    /// # Errors
    /// [`Error::Invalid`] if the lengths differ or are 0, a mean is not finite, or a std is not
    /// finite and positive.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        let n = Normalize { mean, std };
        n.check("Normalize::new")?;
        Ok(n)
    }

    /// `mean = 0, std = 1` for `channels` channels: batches hold the scaled pixels `p / max_value`.
    pub fn identity(channels: usize) -> Self {
        Normalize {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The mean and the population standard deviation (divided by the pixel count, not by one
    /// less) of each channel of `set`, over all images and positions, with pixels scaled to
    /// `[0, 1]` by [`ImageSet::max_value`]. Sums are exact integer sums, so the result does not
    /// depend on the order of the images.
    ///
    /// # Errors
    /// [`Error::Data`] if the set is empty or a channel is constant (its std is 0, so normalising
    /// would divide by zero).
    pub fn from_data(set: &ImageSet) -> Result<Self> {
        let what = format!("Normalize::from_data on {}", set.name());
        if set.is_empty() {
            return Err(Error::Data {
                what,
                msg: "the set has no images".into(),
            });
        }
        let (n, c, h, w) = set.shape();
        let mut s1 = vec![0u128; c];
        let mut s2 = vec![0u128; c];
        for img in set.images().outer_iter() {
            for (ch, plane) in img.outer_iter().enumerate() {
                for &p in plane.iter() {
                    let p = u128::from(p);
                    s1[ch] += p;
                    s2[ch] += p * p;
                }
            }
        }
        let count = (n * h * w) as u128;
        let max = f64::from(set.max_value());
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for ch in 0..c {
            // Var = (count·S2 − S1²) / count², exact in integers.
            let num = count * s2[ch] - s1[ch] * s1[ch];
            if num == 0 {
                return Err(Error::Data {
                    what,
                    msg: format!(
                        "channel {ch} is constant (every pixel is {}); its std is 0 and normalising would divide by zero",
                        s1[ch] / count
                    ),
                });
            }
            let m = s1[ch] as f64 / count as f64 / max;
            let var = num as f64 / (count as f64 * count as f64) / (max * max);
            mean.push(m as f32);
            std.push(var.sqrt() as f32);
        }
        Ok(Normalize { mean, std })
    }

    /// Number of channels `C`.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.mean.len() != self.std.len() || self.mean.is_empty() {
            return Err(Error::invalid(
                op,
                "normalisation",
                format!(
                    "mean and std need one entry per channel (at least one), got {} means and {} stds",
                    self.mean.len(),
                    self.std.len()
                ),
            ));
        }
        if let Some(c) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(Error::invalid(
                op,
                "normalisation mean",
                format!(
                    "channel {c} has mean {}, expected a finite number",
                    self.mean[c]
                ),
            ));
        }
        if let Some(c) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::invalid(
                op,
                "normalisation std",
                format!(
                    "channel {c} has std {}, expected a finite number > 0",
                    self.std[c]
                ),
            ));
        }
        Ok(())
    }

    /// `lut[c·256 + p]` = the normalised value of pixel `p` in channel `c`, computed in f64.
    fn table(&self, max_value: u8) -> Vec<f32> {
        let max = f64::from(max_value);
        let mut lut = Vec::with_capacity(self.channels() * 256);
        for (&m, &s) in self.mean.iter().zip(&self.std) {
            for p in 0..256u32 {
                lut.push(((f64::from(p) / max - f64::from(m)) / f64::from(s)) as f32);
            }
        }
        lut
    }
}

/// Random augmentation of training images, chosen per dataset by the caller.
///
/// * `crop_padding: Some(p)`: the image is padded with `p` pixels of value 0 (black, before
///   normalisation) on every side and a window of the original size is cut at a uniformly random
///   offset `(dy, dx) ∈ {0..=2p}²`; `dy = dx = p` is the original image.
/// * `hflip`: with probability ½ the (cropped) image is mirrored left–right.
///
/// Typical choices: [`Augment::cifar10`] (pad 4 + flip) for CIFAR-10; [`Augment::mnist`] (pad 2,
/// no flip: a mirrored digit is not the same digit) for 28×28 digits; none for the 8×8 digits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding of the random crop, or `None` for no crop.
    pub crop_padding: Option<usize>,
    /// Random horizontal flip.
    pub hflip: bool,
}

/// One drawn augmentation: the crop window's offset `(dy, dx)` in the padded image (each in
/// `0..=2p`; both 0 when there is no crop) and whether to mirror.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AugmentDraw {
    /// Row offset of the crop window in the padded image.
    pub dy: usize,
    /// Column offset of the crop window in the padded image.
    pub dx: usize,
    /// Mirror left–right after cropping.
    pub flip: bool,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment::default()
    }

    /// Random crop with zero padding 4 and random horizontal flip (the usual CIFAR-10 recipe).
    pub fn cifar10() -> Self {
        Augment {
            crop_padding: Some(4),
            hflip: true,
        }
    }

    /// Random crop with zero padding 2, no flip (for 28×28 digits and clothing).
    pub fn mnist() -> Self {
        Augment {
            crop_padding: Some(2),
            hflip: false,
        }
    }

    fn pad(&self) -> usize {
        self.crop_padding.unwrap_or(0)
    }

    /// Draws one augmentation: with a crop, `dy = rng.below(2p + 1)` then `dx = rng.below(2p + 1)`;
    /// with flipping, then `flip = rng.uniform() < 0.5`. Draws nothing for a disabled part.
    pub fn draw(&self, rng: &mut Rng) -> AugmentDraw {
        let mut d = AugmentDraw::default();
        if let Some(p) = self.crop_padding {
            d.dy = rng.below(2 * p + 1);
            d.dx = rng.below(2 * p + 1);
        }
        if self.hflip {
            d.flip = rng.uniform() < 0.5;
        }
        d
    }

    /// Applies a drawn augmentation to one image `(C, H, W)`: with `p` the crop padding (0 without
    /// crop), `out[c, y, x] = image[c, y + dy − p, x' + dx − p]` where `x' = W − 1 − x` if
    /// `flip` else `x`, and 0 where that position falls outside the image.
    pub fn apply(&self, image: ArrayView3<'_, u8>, draw: AugmentDraw) -> Array3<u8> {
        let (c, h, w) = image.dim();
        let map = SourceMap::new(self.pad(), draw, h, w);
        let mut out = Array3::<u8>::zeros((c, h, w));
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    if let Some((sy, sx)) = map.source(y, x) {
                        out[[ch, y, x]] = image[[ch, sy, sx]];
                    }
                }
            }
        }
        out
    }
}

/// Where output pixel `(y, x)` of an augmented `H × W` image comes from.
struct SourceMap {
    pad: usize,
    draw: AugmentDraw,
    h: usize,
    w: usize,
}

impl SourceMap {
    fn new(pad: usize, draw: AugmentDraw, h: usize, w: usize) -> Self {
        SourceMap { pad, draw, h, w }
    }

    /// Source row of output row `y`, if inside the image.
    fn row(&self, y: usize) -> Option<usize> {
        (y + self.draw.dy)
            .checked_sub(self.pad)
            .filter(|&s| s < self.h)
    }

    /// Source column of output column `x`, if inside the image.
    fn col(&self, x: usize) -> Option<usize> {
        let x = if self.draw.flip { self.w - 1 - x } else { x };
        (x + self.draw.dx)
            .checked_sub(self.pad)
            .filter(|&s| s < self.w)
    }

    fn source(&self, y: usize, x: usize) -> Option<(usize, usize)> {
        Some((self.row(y)?, self.col(x)?))
    }
}

/// The images `indices` of `set` as a float batch `(B, C, H, W)` with their labels `(B,)`,
/// `B = indices.len()`. Each image is augmented (if `augment` is given, drawing one
/// [`Augment::draw`] per image in batch order from `rng`), then every pixel `p` of channel `c`
/// becomes `(p / max_value − mean[c]) / std[c]`; padding pixels are `p = 0`. Without `augment`
/// the generator is not used.
///
/// # Errors
/// [`Error::Invalid`] if `indices` is empty or holds an index `≥ N`, or if `normalize` is invalid
/// or has a channel count other than the set's.
pub fn batch(
    set: &ImageSet,
    indices: &[usize],
    normalize: &Normalize,
    augment: Option<&Augment>,
    rng: &mut Rng,
) -> Result<(Array4<f32>, Vec<usize>)> {
    const OP: &str = "images::batch";
    if indices.is_empty() {
        return Err(Error::invalid(
            OP,
            "indices",
            "a batch needs at least one image, got 0 indices",
        ));
    }
    check_indices(OP, indices, set.len())?;
    normalize.check(OP)?;
    let (c, h, w) = set.image_shape();
    if normalize.channels() != c {
        return Err(Error::invalid(
            OP,
            "normalisation",
            format!(
                "{} has {c} channels but the normalisation has {}",
                set.name(),
                normalize.channels()
            ),
        ));
    }
    let lut = normalize.table(set.max_value());
    let b = indices.len();
    let mut out = vec![0f32; b * c * h * w]; // (B, C, H, W)
    let images = set.images();
    for (bi, &i) in indices.iter().enumerate() {
        let (pad, draw) = match augment {
            Some(a) => (a.pad(), a.draw(rng)),
            None => (0, AugmentDraw::default()),
        };
        let map = SourceMap::new(pad, draw, h, w);
        let cols: Vec<Option<usize>> = (0..w).map(|x| map.col(x)).collect();
        for ch in 0..c {
            let table = &lut[ch * 256..(ch + 1) * 256];
            let base = ((bi * c + ch) * h) * w;
            for y in 0..h {
                let row = &mut out[base + y * w..base + (y + 1) * w];
                match map.row(y) {
                    None => row.fill(table[0]),
                    Some(sy) => {
                        for (o, sx) in row.iter_mut().zip(&cols) {
                            let p = sx.map_or(0, |sx| images[[i, ch, sy, sx]]);
                            *o = table[usize::from(p)];
                        }
                    }
                }
            }
        }
    }
    let labels = indices.iter().map(|&i| set.labels()[i]).collect();
    let x = Array4::from_shape_vec((b, c, h, w), out).expect("B·C·H·W values");
    Ok((x, labels))
}

/// The index batches of one epoch over `0..n`: the indices in a random order (or in order), cut
/// into batches of `batch_size`; the last batch holds the `n mod batch_size` leftovers unless
/// [`EpochBatches::drop_last`] is set. Every index appears exactly once per epoch (minus the
/// dropped leftovers). Iterate it for `Vec<usize>` batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochBatches {
    order: Vec<usize>, // (n,)
    batch_size: usize,
    pos: usize,
    drop_last: bool,
}

impl EpochBatches {
    /// With `shuffle`, the order is `rng.permutation(n)` (drawn now, so the same generator state
    /// gives the same epoch); without, it is `0..n` and `rng` is not used.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `batch_size` is 0.
    pub fn new(n: usize, batch_size: usize, shuffle: bool, rng: &mut Rng) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid(
                "EpochBatches::new",
                "batch_size",
                "must be at least 1, got 0",
            ));
        }
        let order = if shuffle {
            rng.permutation(n)
        } else {
            (0..n).collect()
        };
        Ok(EpochBatches {
            order,
            batch_size,
            pos: 0,
            drop_last: false,
        })
    }

    /// Whether to leave out a last batch smaller than `batch_size`.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// The order of the whole epoch, `(n,)`.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Number of batches in the epoch: `⌈n / batch_size⌉`, or `⌊n / batch_size⌋` with
    /// `drop_last`.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.order.len() / self.batch_size
        } else {
            self.order.len().div_ceil(self.batch_size)
        }
    }

    fn remaining(&self) -> usize {
        let done = self.pos.div_ceil(self.batch_size);
        self.num_batches().saturating_sub(done)
    }
}

impl Iterator for EpochBatches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.remaining() == 0 {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let out = self.order[self.pos..end].to_vec();
        self.pos = end;
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = self.remaining();
        (r, Some(r))
    }
}

impl ExactSizeIterator for EpochBatches {}
