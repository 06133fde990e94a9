//! Lookup table from token ids to learned vectors (PyTorch `nn.Embedding`).

use ndarray::{Array2, ArrayView2, Ix2};

use crate::error::{Error, Result, fmt_shape};
use crate::init;
use crate::module::{Module, ParamVisitor};
use crate::{Mode, Param, Rng, Scalar};

/// `y[i] = W[ids[i]]`; `ids: (L) → y: (L, embedding_dim)`.
///
/// Parameter (PyTorch name): `weight: (num_embeddings, embedding_dim)`. With a `padding_idx`, that
/// row never receives a gradient (it stays at its value, zero after [`Embedding::new`]).
#[derive(Clone, Debug)]
pub struct Embedding<F: Scalar> {
    /// `W: (V, D)` with `V = num_embeddings`, `D = embedding_dim`.
    pub weight: Param<F, Ix2>,
    padding_idx: Option<usize>,
    /// The ids of the last train-mode forward. // (L)
    ids: Option<Vec<usize>>,
}

impl<F: Scalar> Embedding<F> {
    /// A `(num_embeddings, embedding_dim)` table with entries ~ N(0, 1) drawn from `rng` in
    /// row-major order (PyTorch's default); row `padding_idx`, if given, is set to zero.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `padding_idx ≥ num_embeddings`.
    pub fn new(
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: Option<usize>,
        rng: &mut Rng,
    ) -> Result<Self> {
        check_padding("Embedding::new", padding_idx, num_embeddings)?;
        let mut weight: Array2<F> = init::normal((num_embeddings, embedding_dim), 0.0, 1.0, rng);
        if let Some(p) = padding_idx {
            weight.row_mut(p).fill(F::zero());
        }
        Ok(Embedding {
            weight: Param::new(weight),
            padding_idx,
            ids: None,
        })
    }

    /// A table with the given `weight: (num_embeddings, embedding_dim)`, used as is (the
    /// `padding_idx` row is not zeroed, as `nn.Embedding.from_pretrained`).
    ///
    /// # Errors
    /// [`Error::Invalid`] if `padding_idx ≥ num_embeddings`.
    pub fn from_weights(weight: Array2<F>, padding_idx: Option<usize>) -> Result<Self> {
        check_padding("Embedding::from_weights", padding_idx, weight.nrows())?;
        Ok(Embedding {
            weight: Param::new(weight),
            padding_idx,
            ids: None,
        })
    }

    /// `V`, the number of rows of the table.
    pub fn num_embeddings(&self) -> usize {
        self.weight.value.nrows()
    }

    /// `D`, the length of each vector.
    pub fn embedding_dim(&self) -> usize {
        self.weight.value.ncols()
    }

    /// The id whose row gets no gradient, if any.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    /// `y[i] = W[ids[i]]`; `ids: (L) → y: (L, D)`. Keeps a copy of `ids` in [`Mode::Train`].
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the id, its position and `V` if some `ids[i] ≥ V`.
    pub fn forward(&mut self, ids: &[usize], mode: Mode) -> Result<Array2<F>> {
        self.ids = None;
        let v = self.num_embeddings();
        if let Some((pos, &id)) = ids.iter().enumerate().find(|&(_, &id)| id >= v) {
            return Err(Error::invalid(
                "Embedding::forward",
                "id",
                format!("ids[{pos}] = {id} is out of range: expected < num_embeddings = {v}"),
            ));
        }
        let mut y = Array2::zeros((ids.len(), self.embedding_dim())); // (L, D)
        for (mut row, &id) in y.rows_mut().into_iter().zip(ids) {
            row.assign(&self.weight.value.row(id));
        }
        if mode.is_train() {
            self.ids = Some(ids.to_vec());
        }
        Ok(y)
    }

    /// Given `dy = ∂L/∂y: (L, D)`, accumulates `∂L/∂W[ids[i]] += dy[i]` for every position `i`
    /// (repeated ids add up; the `padding_idx` row gets nothing). Releases the kept ids.
    ///
    /// # Errors
    /// [`Error::NoForwardCache`] without a train-mode forward before it; [`Error::Shape`] if `dy`
    /// is not `(L, D)`.
    pub fn backward(&mut self, dy: ArrayView2<'_, F>) -> Result<()> {
        let ids = self.ids.as_ref().ok_or(Error::NoForwardCache {
            op: "Embedding::backward",
        })?;
        let want = [ids.len(), self.embedding_dim()];
        if dy.shape() != want {
            return Err(Error::shape(
                "Embedding::backward",
                "dy (L, embedding_dim)",
                fmt_shape(&want),
                dy.shape(),
            ));
        }
        let ids = self.ids.take().expect("checked above");
        for (g, &id) in dy.rows().into_iter().zip(&ids) {
            if Some(id) != self.padding_idx {
                let mut row = self.weight.grad.row_mut(id);
                row += &g;
            }
        }
        Ok(())
    }
}

fn check_padding(op: &'static str, padding_idx: Option<usize>, v: usize) -> Result<()> {
    match padding_idx {
        Some(p) if p >= v => Err(Error::invalid(
            op,
            "padding_idx",
            format!("padding_idx = {p} is out of range: expected < num_embeddings = {v}"),
        )),
        _ => Ok(()),
    }
}

impl<F: Scalar> Module<F> for Embedding<F> {
    fn visit_params(&mut self, f: &mut ParamVisitor<'_, F>) {
        f("weight", self.weight.as_mut());
    }
}
