//! Shared helpers for the tests, mostly the PyTorch parity tests: loading a fixture from
//! `tests/fixtures/`, reading its tensors and `config`, an elementwise comparison that reports the
//! worst element (index, both values) of every tensor that fails, and a fresh thread pool.
//!
//! Pass criterion per element (f32 values compared in f64): `|ours − torch| ≤ atol + rtol·|torch|`.

#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::fmt;
use std::path::PathBuf;

use ndarray::{ArrayD, ArrayViewD, Dimension};
use serde_json::Value;
use skipgate::io::TensorFile;

/// `tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The case names (file stems) of `tests/fixtures/<group>/*.safetensors`, sorted.
pub fn cases_in(group: &str) -> Vec<String> {
    let dir = fixtures_dir().join(group);
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

/// One fixture file: its tensors and its parsed `config` metadata.
pub struct Fixture {
    /// `<group>/<case>`, used in every message.
    pub name: String,
    pub file: TensorFile,
    pub config: Value,
}

impl Fixture {
    /// Reads `tests/fixtures/<group>/<case>.safetensors` and parses its `config` JSON.
    pub fn load(group: &str, case: &str) -> Fixture {
        let name = format!("{group}/{case}");
        let path = fixtures_dir()
            .join(group)
            .join(format!("{case}.safetensors"));
        let file = TensorFile::read(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = file
            .metadata
            .get("config")
            .unwrap_or_else(|| panic!("{name}: no `config` in the metadata"));
        let config = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{name}: config is not JSON ({e}): {text}"));
        Fixture { name, file, config }
    }

    /// Whether the file has a tensor `key`.
    pub fn has(&self, key: &str) -> bool {
        self.file.contains(key)
    }

    /// Float tensor `key` as f32.
    pub fn f32(&self, key: &str) -> ArrayD<f32> {
        self.file
            .get_array::<f32>(key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Float tensor `key` with a fixed number of dimensions.
    pub fn f32_nd<D: Dimension>(&self, key: &str) -> ndarray::Array<f32, D> {
        let a = self.f32(key);
        let shape = a.shape().to_vec();
        a.into_dimensionality::<D>().unwrap_or_else(|_| {
            panic!(
                "{}: tensor {key} has shape {shape:?}, expected {} dimensions",
                self.name,
                D::NDIM.map_or("some".to_string(), |n| n.to_string())
            )
        })
    }

    /// A 0-d float tensor as a number.
    pub fn scalar(&self, key: &str) -> f32 {
        let a = self.f32(key);
        assert!(
            a.ndim() == 0,
            "{}: {key} has shape {:?}, expected a 0-d scalar",
            self.name,
            a.shape()
        );
        a[[]]
    }

    /// Integer tensor `key`.
    pub fn i64(&self, key: &str) -> ArrayD<i64> {
        self.file
            .get_i64(key)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Integer tensor `key` as indices; negative values (PyTorch's `ignore_index = -100`) map
    /// to `negative`.
    pub fn indices(&self, key: &str, negative: usize) -> Vec<usize> {
        self.i64(key)
            .iter()
            .map(|&v| usize::try_from(v).unwrap_or(negative))
            .collect()
    }

    /// `config[key]`, which must exist.
    pub fn cfg(&self, key: &str) -> &Value {
        self.config
            .get(key)
            .unwrap_or_else(|| panic!("{}: config has no {key:?}: {}", self.name, self.config))
    }

    pub fn cfg_usize(&self, key: &str) -> usize {
        let v = self.cfg(key);
        v.as_u64().unwrap_or_else(|| {
            panic!(
                "{}: config {key} = {v} is not an unsigned integer",
                self.name
            )
        }) as usize
    }

    pub fn cfg_f64(&self, key: &str) -> f64 {
        let v = self.cfg(key);
        v.as_f64()
            .unwrap_or_else(|| panic!("{}: config {key} = {v} is not a number", self.name))
    }

    pub fn cfg_bool(&self, key: &str) -> bool {
        let v = self.cfg(key);
        v.as_bool()
            .unwrap_or_else(|| panic!("{}: config {key} = {v} is not a boolean", self.name))
    }

    pub fn cfg_str(&self, key: &str) -> &str {
        let v = self.cfg(key);
        v.as_str()
            .unwrap_or_else(|| panic!("{}: config {key} = {v} is not a string", self.name))
    }
}

/// Which quantity a tolerance is for (kept apart in the summaries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Outputs, states, losses, parameters after an optimizer step.
    Forward,
    /// Gradients (and gradient norms).
    Grad,
}

/// `|ours − torch| ≤ atol + rtol·|torch|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub kind: Kind,
    pub atol: f64,
    pub rtol: f64,
}

impl fmt::Display for Tol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "atol {:.0e} + rtol {:.0e}·|torch|", self.atol, self.rtol)
    }
}

/// Forward values: f32 results of the same float32 arithmetic in a different order agree to a few
/// ulps (ulp ≈ 1.2e-7 relative); 1e-5 relative leaves room for sums over a few dozen terms and
/// for rounding carried through the 60 steps of `lstm_long` / `gru_long`. The worst forward
/// element of the layer and RNN fixtures uses a tenth of this tolerance; with atol 1e-7 it would
/// use 80 %, too little headroom for another CPU's summation order.
pub const FORWARD: Tol = Tol {
    kind: Kind::Forward,
    atol: 1e-6,
    rtol: 1e-5,
};

/// Gradients: longer chains of f32 operations (BPTT through all steps and layers) and
/// cancellation in sums of mixed-sign terms, hence rtol 1e-4 (the fixtures' README vouches for
/// rtol 1e-4 against a float64 re-implementation). The absolute part is 1e-6, tighter than the
/// README's 1e-5: the largest absolute gradient error seen (6.7e-6, `gru_long`) sits on an entry
/// large enough for the relative part to cover, and the worst element of the layer and RNN
/// fixtures uses under a fifth of this tolerance (`-- --nocapture` prints the usage).
pub const GRAD: Tol = Tol {
    kind: Kind::Grad,
    atol: 1e-6,
    rtol: 1e-4,
};

/// Elements with `|torch|` below this are left out of the reported maximum relative error
/// (their relative error says nothing; the absolute tolerance covers them).
pub const REL_FLOOR: f64 = 1e-3;

/// How one tensor compares.
#[derive(Clone, Debug)]
pub struct Diff {
    /// The element that uses most of its tolerance: index, ours, torch.
    pub worst_index: Vec<usize>,
    pub worst_ours: f32,
    pub worst_torch: f32,
    /// `max |ours − torch| / (atol + rtol·|torch|)`; ≤ 1 passes.
    pub usage: f64,
    /// `max |ours − torch|`.
    pub max_abs: f64,
    /// `max |ours − torch| / |torch|` over the elements with `|torch| ≥ REL_FLOOR`.
    pub max_rel: f64,
    pub len: usize,
}

/// Compares `ours` with `torch` elementwise. `Err` if the shapes differ.
pub fn diff(
    ours: ArrayViewD<'_, f32>,
    torch: ArrayViewD<'_, f32>,
    tol: Tol,
) -> Result<Diff, String> {
    if ours.shape() != torch.shape() {
        return Err(format!(
            "shape mismatch: ours {:?}, torch {:?}",
            ours.shape(),
            torch.shape()
        ));
    }
    let mut d = Diff {
        worst_index: vec![0; ours.ndim()],
        worst_ours: f32::NAN,
        worst_torch: f32::NAN,
        usage: -1.0,
        max_abs: 0.0,
        max_rel: 0.0,
        len: ours.len(),
    };
    for ((idx, &o), &t) in ours.indexed_iter().zip(torch.iter()) {
        let (o64, t64) = (o as f64, t as f64);
        let err = (o64 - t64).abs();
        // NaN in ours must fail: treat it as an infinite error.
        let err = if err.is_nan() { f64::INFINITY } else { err };
        let usage = err / (tol.atol + tol.rtol * t64.abs());
        if usage > d.usage {
            d.usage = usage;
            d.worst_index = idx.slice().to_vec();
            d.worst_ours = o;
            d.worst_torch = t;
        }
        d.max_abs = d.max_abs.max(err);
        if t64.abs() >= REL_FLOOR {
            d.max_rel = d.max_rel.max(err / t64.abs());
        }
    }
    if d.len == 0 {
        d.usage = 0.0;
    }
    Ok(d)
}

/// Collects comparisons of many tensors (of one test or one whole group), then fails once with
/// every mismatch listed by case and tensor.
pub struct Checker {
    pub group: String,
    /// `(case, tensor, tol, diff)` of every comparison made.
    pub results: Vec<(String, String, Tol, Diff)>,
    pub failures: Vec<String>,
}

impl Checker {
    pub fn new(group: &str) -> Checker {
        Checker {
            group: group.to_string(),
            results: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Compares one tensor of one case.
    pub fn check<D1: Dimension, D2: Dimension>(
        &mut self,
        case: &str,
        tensor: &str,
        ours: ndarray::ArrayView<'_, f32, D1>,
        torch: ndarray::ArrayView<'_, f32, D2>,
        tol: Tol,
    ) {
        match diff(ours.into_dyn(), torch.into_dyn(), tol) {
            Err(msg) => self.failures.push(format!("{case}: {tensor}: {msg}")),
            Ok(d) => {
                if d.usage > 1.0 {
                    self.failures.push(format!(
                        "{case}: {tensor}: worst element {:?}: ours {:e}, torch {:e}, |diff| {:.3e} > {} \
                         ({:.1}× the tolerance; max |diff| {:.3e}, max rel {:.3e})",
                        d.worst_index,
                        d.worst_ours,
                        d.worst_torch,
                        (d.worst_ours as f64 - d.worst_torch as f64).abs(),
                        tol,
                        d.usage,
                        d.max_abs,
                        d.max_rel,
                    ));
                }
                self.results
                    .push((case.to_string(), tensor.to_string(), tol, d));
            }
        }
    }

    /// Compares a scalar.
    pub fn check_scalar(&mut self, case: &str, tensor: &str, ours: f32, torch: f32, tol: Tol) {
        let o = ndarray::arr0(ours);
        let t = ndarray::arr0(torch);
        self.check(case, tensor, o.view(), t.view(), tol);
    }

    /// Records a failure that is not a numeric comparison (e.g. an error returned by the library).
    pub fn fail(&mut self, case: &str, what: impl fmt::Display) {
        self.failures.push(format!("{case}: {what}"));
    }

    /// Merges another checker's results into this one.
    pub fn absorb(&mut self, other: Checker) {
        self.results.extend(other.results);
        self.failures.extend(other.failures);
    }

    /// Prints the worst tensor per case and kind, then the group maxima (visible with
    /// `--nocapture`).
    pub fn print_summary(&self) {
        println!(
            "== parity[{}]: {} tensors compared",
            self.group,
            self.results.len()
        );
        let mut cases: Vec<&str> = self.results.iter().map(|r| r.0.as_str()).collect();
        cases.dedup();
        for case in &cases {
            for kind in [Kind::Forward, Kind::Grad] {
                if let Some(line) = self.worst_line(|c, k| c == *case && k == kind) {
                    println!("  {case:<28} {:<7} {line}", format!("{kind:?}"));
                }
            }
        }
        for kind in [Kind::Forward, Kind::Grad] {
            if let Some(line) = self.worst_line(|_, k| k == kind) {
                println!(
                    "  GROUP {:<22} {:<7} {line}",
                    self.group,
                    format!("{kind:?}")
                );
            }
        }
    }

    /// The maxima over the selected results: max rel, max abs, max tolerance usage, each with
    /// the tensor where it occurs.
    fn worst_line(&self, select: impl Fn(&str, Kind) -> bool) -> Option<String> {
        let sel: Vec<_> = self
            .results
            .iter()
            .filter(|r| select(&r.0, r.2.kind))
            .collect();
        let tol = sel.first()?.2;
        let by = |f: &dyn Fn(&Diff) -> f64| {
            sel.iter()
                .max_by(|a, b| f(&a.3).total_cmp(&f(&b.3)))
                .map(|r| (f(&r.3), format!("{}:{}", r.0, r.1)))
                .expect("non-empty")
        };
        let (rel, rel_at) = by(&|d| d.max_rel);
        let (abs, abs_at) = by(&|d| d.max_abs);
        let (usage, usage_at) = by(&|d| d.usage);
        Some(format!(
            "max rel {rel:.2e} ({rel_at}), max abs {abs:.2e} ({abs_at}), \
             tolerance used {:.1}% ({usage_at}) of {tol}",
            usage * 100.0
        ))
    }

    /// Panics listing every failure (if any).
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "parity[{}]: {} mismatch(es):\n  {}",
                self.group,
                self.failures.len(),
                self.failures.join("\n  ")
            );
        }
        assert!(
            !self.results.is_empty(),
            "parity[{}]: nothing was compared",
            self.group
        );
    }
}

/// `f` run inside a fresh rayon pool of `threads` threads: how the tests check that a result
/// does not depend on the thread count.
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
}
