//! Finite-difference gradient checks (f64) and hand-computed values for the basic layers and losses.
//!
//! Every layer is checked with the scalar `L = Σ y ⊙ g` for a random upstream gradient `g`, so that
//! every output element contributes to the loss and `∂L/∂y = g` is what backward receives.

use ndarray::{Array, Array1, Array2, ArrayD, Dimension, IxDyn, array};
use skipgate::gradcheck::{
    EPS, assert_close, check_params, numeric_grad, numeric_param_grads, param_grads,
};
use skipgate::layers::{
    Dropout, Embedding, Linear, LinearConfig, Relu, Sigmoid, Tanh, dropout_mask,
};
use skipgate::loss::{cross_entropy, mse_loss, softmax, softmax_rows};
use skipgate::{Mode, Module, Rng, init};

const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-8;

fn rand<D: Dimension>(shape: D, seed: u64) -> Array<f64, D> {
    init::uniform(shape, 1.0, &mut Rng::seed(seed))
}

fn dot<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------- Linear

fn check_linear(bias: bool) {
    let (n, i, o) = (4, 5, 3);
    let mut lin = Linear::<f64>::new(LinearConfig::new(i, o).with_bias(bias), &mut Rng::seed(1));
    let x = rand(ndarray::Ix2(n, i), 2);
    let g = rand(ndarray::Ix2(n, o), 3);

    // Input gradient.
    let y = lin.forward(x.view(), Mode::Train).unwrap();
    assert_eq!(y.dim(), (n, o));
    let dx = lin.backward(g.view()).unwrap();
    let num = numeric_grad(&x.clone().into_dyn(), EPS, |xp| {
        let xp = xp.view().into_dimensionality().unwrap();
        dot(&lin.forward(xp, Mode::Eval).unwrap(), &g)
    });
    assert_close("∂L/∂x", dx.view().into_dyn(), num.view(), RTOL, ATOL);

    // Parameter gradients.
    check_params(&mut lin, RTOL, ATOL, |m| {
        m.zero_grad();
        let y = m.forward(x.view(), Mode::Train).unwrap();
        m.backward(g.view()).unwrap();
        dot(&y, &g)
    });
}

#[test]
fn linear_gradients_match_finite_differences_with_bias() {
    check_linear(true);
}

#[test]
fn linear_gradients_match_finite_differences_without_bias() {
    check_linear(false);
}

#[test]
fn linear_forward_and_backward_match_hand_computation() {
    // W = [[1,2,3],[4,5,6]], b = [0.5, −1], x = [[1,0,−1],[2,1,0]].
    let w = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let mut lin = Linear::from_weights(w.clone(), Some(array![0.5, -1.0])).unwrap();
    let x = array![[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]];
    let y = lin.forward(x.view(), Mode::Train).unwrap();
    // Row 0: (1−3, 4−6) + b = (−1.5, −3); row 1: (2+2, 8+5) + b = (4.5, 12).
    assert_eq!(y, array![[-1.5, -3.0], [4.5, 12.0]]);
    let dy = array![[1.0, 0.0], [0.0, 2.0]];
    let dx = lin.backward(dy.view()).unwrap();
    // dx = dy·W: row 0 = W[0], row 1 = 2·W[1].
    assert_eq!(dx, array![[1.0, 2.0, 3.0], [8.0, 10.0, 12.0]]);
    // dW = dyᵀ·x: row 0 = x[0], row 1 = 2·x[1]; db = column sums of dy.
    assert_eq!(lin.weight.grad, array![[1.0, 0.0, -1.0], [4.0, 2.0, 0.0]]);
    assert_eq!(lin.bias.as_ref().unwrap().grad, array![1.0, 2.0]);

    // A second forward/backward accumulates (+=) into the same gradients.
    lin.forward(x.view(), Mode::Train).unwrap();
    lin.backward(dy.view()).unwrap();
    assert_eq!(lin.weight.grad, array![[2.0, 0.0, -2.0], [8.0, 4.0, 0.0]]);
    assert_eq!(lin.bias.as_ref().unwrap().grad, array![2.0, 4.0]);

    // Without bias, the same product without the offset.
    let mut nob = Linear::from_weights(w, None).unwrap();
    assert_eq!(
        nob.forward(x.view(), Mode::Eval).unwrap(),
        array![[-2.0, -2.0], [4.0, 13.0]]
    );
}

#[test]
fn linear_default_init_names_shapes_and_bound() {
    let mut lin = Linear::<f32>::new(LinearConfig::new(16, 8), &mut Rng::seed(5));
    assert_eq!(
        lin.param_shapes(),
        vec![
            ("weight".to_string(), vec![8, 16]),
            ("bias".to_string(), vec![8])
        ]
    );
    assert_eq!(lin.num_params(), 8 * 16 + 8);
    // Bound 1/√16 = 0.25 for both weight and bias.
    assert!(lin.weight.value.iter().all(|v| v.abs() <= 0.25));
    assert!(
        lin.bias
            .as_ref()
            .unwrap()
            .value
            .iter()
            .all(|v| v.abs() <= 0.25)
    );
    let max = lin.weight.value.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        max > 0.2,
        "128 draws of U(−0.25, 0.25) reach past 0.2, max {max}"
    );
    // Same seed → same parameters; weight is drawn first, then the bias, from the same stream.
    let again = Linear::<f32>::new(LinearConfig::new(16, 8), &mut Rng::seed(5));
    assert_eq!(again.weight.value, lin.weight.value);
    let mut rng = Rng::seed(5);
    let w: Array2<f32> = init::uniform((8, 16), 0.25, &mut rng);
    let b: Array1<f32> = init::uniform(8, 0.25, &mut rng);
    assert_eq!(w, lin.weight.value);
    assert_eq!(b, lin.bias.as_ref().unwrap().value);

    let mut nob = Linear::<f32>::new(LinearConfig::new(16, 8).with_bias(false), &mut Rng::seed(5));
    assert_eq!(
        nob.param_shapes(),
        vec![("weight".to_string(), vec![8, 16])]
    );
    assert_eq!(
        nob.config(),
        LinearConfig {
            in_features: 16,
            out_features: 8,
            bias: false
        }
    );
}

#[test]
fn linear_f32_agrees_with_f64() {
    let mut l64 = Linear::<f64>::new(LinearConfig::new(7, 5), &mut Rng::seed(9));
    let mut l32 = Linear::<f32>::from_weights(
        l64.weight.value.mapv(|v| v as f32),
        Some(l64.bias.as_ref().unwrap().value.mapv(|v| v as f32)),
    )
    .unwrap();
    let x = rand(ndarray::Ix2(6, 7), 10);
    let y64 = l64.forward(x.view(), Mode::Eval).unwrap();
    let y32 = l32
        .forward(x.mapv(|v| v as f32).view(), Mode::Eval)
        .unwrap();
    for (a, b) in y32.iter().zip(y64.iter()) {
        assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
    }
}

// ---------------------------------------------------------------- Embedding

fn check_embedding(padding_idx: Option<usize>) {
    let (v, d) = (6, 3);
    let mut emb = Embedding::<f64>::new(v, d, padding_idx, &mut Rng::seed(11)).unwrap();
    let ids = [2usize, 0, 2, 4, 5, 2, 4];
    let g = rand(ndarray::Ix2(ids.len(), d), 12);
    let run = |m: &mut Embedding<f64>| {
        m.zero_grad();
        let y = m.forward(&ids, Mode::Train).unwrap();
        m.backward(g.view()).unwrap();
        dot(&y, &g)
    };
    run(&mut emb);
    let analytic = param_grads(&mut emb);
    let mut numeric = numeric_param_grads(&mut emb, EPS, run);
    if let Some(p) = padding_idx {
        // PyTorch gives the padding row no gradient even though the forward reads it.
        let fd_row = numeric[0].1.index_axis(ndarray::Axis(0), p).to_owned();
        assert!(
            fd_row.iter().any(|x| x.abs() > 1e-3),
            "the test must look up the padding row"
        );
        assert!(
            analytic[0]
                .1
                .index_axis(ndarray::Axis(0), p)
                .iter()
                .all(|&x| x == 0.0)
        );
        numeric[0].1.index_axis_mut(ndarray::Axis(0), p).fill(0.0);
    }
    assert_close(
        "∂L/∂weight",
        analytic[0].1.view(),
        numeric[0].1.view(),
        RTOL,
        ATOL,
    );
    // Repeated id 2 (three times) receives the sum of its three upstream rows.
    let want = &g.row(0) + &g.row(2) + g.row(5);
    let got = analytic[0]
        .1
        .clone()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    for (a, b) in got.row(2).iter().zip(want.iter()) {
        assert!((a - b).abs() < 1e-12);
    }
    // Unused rows (1, and 3) get nothing.
    assert!(
        got.row(1)
            .iter()
            .chain(got.row(3).iter())
            .all(|&x| x == 0.0)
    );
}

#[test]
fn embedding_gradient_matches_finite_differences_with_repeated_ids() {
    check_embedding(None);
}

#[test]
fn embedding_padding_row_gets_no_gradient() {
    check_embedding(Some(4));
}

#[test]
fn embedding_forward_looks_up_rows_and_init_is_standard_normal() {
    let w = array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let mut emb = Embedding::from_weights(w, Some(1)).unwrap();
    // from_weights keeps the padding row as given.
    assert_eq!(
        emb.forward(&[2, 1, 2, 0], Mode::Eval).unwrap(),
        array![[5.0, 6.0], [3.0, 4.0], [5.0, 6.0], [1.0, 2.0]]
    );
    assert_eq!(emb.forward(&[], Mode::Eval).unwrap().dim(), (0, 2));
    assert_eq!(emb.param_shapes(), vec![("weight".to_string(), vec![3, 2])]);
    assert_eq!(
        (emb.num_embeddings(), emb.embedding_dim(), emb.padding_idx()),
        (3, 2, Some(1))
    );

    let emb = Embedding::<f64>::new(200, 100, Some(7), &mut Rng::seed(3)).unwrap();
    assert!(emb.weight.value.row(7).iter().all(|&x| x == 0.0));
    let n = emb.weight.value.len() as f64;
    let mean = emb.weight.value.sum() / n;
    let var = emb
        .weight
        .value
        .iter()
        .map(|x| (x - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 0.02, "mean {mean}");
    // 199 of 200 rows are N(0, 1), one row is zero.
    assert!((var - 199.0 / 200.0).abs() < 0.03, "variance {var}");
}

// ---------------------------------------------------------------- activations

/// Values in ±[0.1, 1.1], shape (2, 3, 4): never near the ReLU kink.
fn away_from_zero(seed: u64) -> Array<f64, ndarray::Ix3> {
    rand(ndarray::Ix3(2, 3, 4), seed).mapv(|u| u.signum() * (0.1 + u.abs()))
}

macro_rules! check_activation {
    ($name:ident, $layer:ident, $f:expr) => {
        #[test]
        fn $name() {
            let f: fn(f64) -> f64 = $f;
            let x = away_from_zero(21);
            let g = rand(ndarray::Ix3(2, 3, 4), 22);
            let mut act = $layer::<f64>::new();
            let y = act.forward(x.view(), Mode::Train);
            // Values against the textbook formula.
            for (a, b) in y.iter().zip(x.iter()) {
                assert!((a - f(*b)).abs() < 1e-15, "{a} vs f({b}) = {}", f(*b));
            }
            let dx = act.backward(g.view()).unwrap();
            assert_eq!(dx.dim(), x.dim());
            let num = numeric_grad(&x.clone().into_dyn(), EPS, |xp| {
                dot(&act.forward(xp.view(), Mode::Eval), &g.clone().into_dyn())
            });
            assert_close("∂L/∂x", dx.view().into_dyn(), num.view(), RTOL, ATOL);
            // Dynamic-dimension arrays go through the same code.
            let yd = act.forward(x.view().into_dyn(), Mode::Train);
            let dxd = act.backward(g.view().into_dyn()).unwrap();
            assert_eq!(yd, y.into_dyn());
            assert_eq!(dxd, dx.into_dyn());
        }
    };
}

check_activation!(tanh_gradient_matches_finite_differences, Tanh, |x| x.tanh());
check_activation!(
    sigmoid_gradient_matches_finite_differences,
    Sigmoid,
    |x| 1.0 / (1.0 + (-x).exp())
);
check_activation!(
    relu_gradient_matches_finite_differences,
    Relu,
    |x| if x > 0.0 { x } else { 0.0 }
);

#[test]
fn relu_derivative_at_zero_is_zero_and_sigmoid_saturates_in_f32() {
    let mut relu = Relu::<f64>::new();
    relu.forward(array![-1.0, 0.0, 2.0].view(), Mode::Train);
    assert_eq!(
        relu.backward(array![5.0, 5.0, 5.0].view()).unwrap(),
        array![0.0, 0.0, 5.0]
    );
    let mut s = Sigmoid::<f32>::new();
    assert_eq!(
        s.forward(array![-1e4f32, 0.0, 1e4].view(), Mode::Train),
        array![0.0, 0.5, 1.0]
    );
    // σ′ = y(1 − y): 0, 1/4, 0.
    assert_eq!(
        s.backward(array![1.0f32, 1.0, 1.0].view()).unwrap(),
        array![0.0, 0.25, 0.0]
    );
}

// ---------------------------------------------------------------- dropout

#[test]
fn dropout_gradient_matches_finite_differences_with_a_fixed_mask() {
    let x = rand(ndarray::Ix2(6, 7), 31);
    let g = rand(ndarray::Ix2(6, 7), 32);
    let mut drop = Dropout::<f64>::new(0.4).unwrap();
    let y = drop.forward(x.view(), Mode::Train, &mut Rng::seed(33));
    let dx = drop.backward(g.view()).unwrap();
    // Re-running forward with the same seed draws the same mask, so L(x) is a fixed linear map.
    let num = numeric_grad(&x.clone().into_dyn(), EPS, |xp| {
        let xp = xp.view().into_dimensionality::<ndarray::Ix2>().unwrap();
        dot(&drop.forward(xp, Mode::Train, &mut Rng::seed(33)), &g)
    });
    assert_close("∂L/∂x", dx.view().into_dyn(), num.view(), RTOL, ATOL);
    // Kept elements are scaled by 1/(1 − p), dropped ones are 0, and dx uses the same mask.
    let mut kept = 0;
    for ((yv, xv), (dv, gv)) in y.iter().zip(x.iter()).zip(dx.iter().zip(g.iter())) {
        if *yv == 0.0 {
            assert_eq!(*dv, 0.0);
        } else {
            kept += 1;
            assert!((yv - xv / 0.6).abs() < 1e-15);
            assert!((dv - gv / 0.6).abs() < 1e-15);
        }
    }
    assert!(
        kept > 0 && kept < 42,
        "a 42-element mask with p = 0.4 has both kinds, kept {kept}"
    );
}

#[test]
fn dropout_mask_follows_the_documented_draws() {
    // Element k (row-major) is dropped iff the k-th uniform draw is < p.
    let p = 0.3;
    let mask = dropout_mask::<f64>(&[3, 4, 5], p, &mut Rng::seed(41));
    let mut rng = Rng::seed(41);
    assert_eq!(mask.shape(), &[3, 4, 5]);
    for m in mask.iter() {
        let want = if rng.uniform() < p {
            0.0
        } else {
            1.0 / (1.0 - p)
        };
        assert_eq!(*m, want);
    }
    // Extremes draw nothing.
    let mut rng = Rng::seed(42);
    let before = rng.state();
    assert_eq!(
        dropout_mask::<f32>(&[2, 2], 0.0, &mut rng),
        ArrayD::<f32>::ones(IxDyn(&[2, 2]))
    );
    assert_eq!(
        dropout_mask::<f32>(&[2, 2], 1.0, &mut rng),
        ArrayD::<f32>::zeros(IxDyn(&[2, 2]))
    );
    assert_eq!(rng.state(), before);
}

#[test]
fn dropout_statistics_eval_identity_and_seeding() {
    let n = 100_000;
    let x = Array1::<f64>::ones(n);
    let mut drop = Dropout::<f64>::new(0.3).unwrap();
    let y = drop.forward(x.view(), Mode::Train, &mut Rng::seed(51));
    let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
    assert!((zeros - 0.3).abs() < 0.01, "fraction zeroed {zeros}");
    let mean = y.sum() / n as f64;
    assert!((mean - 1.0).abs() < 0.01, "mean {mean} (input mean 1)");

    // Same seed → same mask; another seed → another mask.
    let y2 = drop.forward(x.view(), Mode::Train, &mut Rng::seed(51));
    assert_eq!(y, y2);
    let y3 = drop.forward(x.view(), Mode::Train, &mut Rng::seed(52));
    assert_ne!(y, y3);

    // Eval: identity, and the generator is not advanced.
    let z = rand(ndarray::Ix3(2, 3, 4), 53);
    let mut rng = Rng::seed(54);
    let before = rng.state();
    assert_eq!(drop.forward(z.view(), Mode::Eval, &mut rng), z);
    assert_eq!(rng.state(), before);

    // p = 0 is the identity in training too; p = 1 zeroes everything, forward and backward.
    let mut keep = Dropout::<f64>::new(0.0).unwrap();
    assert_eq!(keep.forward(z.view(), Mode::Train, &mut rng), z);
    let mut all = Dropout::<f64>::new(1.0).unwrap();
    assert_eq!(
        all.forward(z.view(), Mode::Train, &mut rng),
        Array::<f64, _>::zeros(z.raw_dim())
    );
    assert_eq!(
        all.backward(z.view()).unwrap(),
        Array::<f64, _>::zeros(z.raw_dim())
    );
    assert_eq!(all.p(), 1.0);
}

// ---------------------------------------------------------------- losses

#[test]
fn mse_gradient_matches_finite_differences() {
    let pred = rand(ndarray::Ix3(2, 3, 4), 61);
    let target = rand(ndarray::Ix3(2, 3, 4), 62);
    let (loss, grad) = mse_loss(pred.view(), target.view()).unwrap();
    let want = pred
        .iter()
        .zip(target.iter())
        .map(|(p, t)| (p - t).powi(2))
        .sum::<f64>()
        / 24.0;
    assert!((loss - want).abs() < 1e-15);
    let num = numeric_grad(&pred.clone().into_dyn(), EPS, |p| {
        mse_loss(p.view(), target.view().into_dyn()).unwrap().0
    });
    assert_close("∂L/∂pred", grad.view().into_dyn(), num.view(), RTOL, ATOL);
}

#[test]
fn mse_matches_hand_computation() {
    // Differences (1, 0, −2): L = (1 + 0 + 4)/3, ∂L/∂pred = 2·(1, 0, −2)/3.
    let (loss, grad) = mse_loss(
        array![1.0f64, 2.0, 3.0].view(),
        array![0.0, 2.0, 5.0].view(),
    )
    .unwrap();
    assert!((loss - 5.0 / 3.0).abs() < 1e-15);
    let want = array![2.0 / 3.0, 0.0, -4.0 / 3.0];
    assert!(
        grad.iter()
            .zip(want.iter())
            .all(|(a, b)| (a - b).abs() < 1e-15)
    );
    let (l32, _) = mse_loss(array![[0.5f32]].view(), array![[0.0f32]].view()).unwrap();
    assert_eq!(l32, 0.25);
}

fn check_cross_entropy(ignore_index: Option<usize>) {
    let logits = rand(ndarray::Ix2(6, 4), 71).mapv(|v| 3.0 * v);
    let targets = [0usize, 3, 1, 1, 2, 3];
    let (_, grad) = cross_entropy(logits.view(), &targets, ignore_index).unwrap();
    let num = numeric_grad(&logits.clone().into_dyn(), EPS, |z| {
        let z = z.view().into_dimensionality::<ndarray::Ix2>().unwrap();
        cross_entropy(z, &targets, ignore_index).unwrap().0
    });
    assert_close("∂L/∂logits", grad.view().into_dyn(), num.view(), RTOL, ATOL);
    for (row, &t) in targets.iter().enumerate() {
        let s: f64 = grad.row(row).sum();
        assert!(s.abs() < 1e-15, "softmax − onehot sums to 0 on every row");
        if Some(t) == ignore_index {
            assert!(grad.row(row).iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    check_cross_entropy(None);
}

#[test]
fn cross_entropy_gradient_matches_finite_differences_with_ignore_index() {
    check_cross_entropy(Some(1));
}

#[test]
fn cross_entropy_two_classes_by_hand() {
    // Row 0: logits (0, ln 3), target 0 → p = (1/4, 3/4), ℓ = ln 4.
    // Row 1: logits (2, 2), target 1 → p = (1/2, 1/2), ℓ = ln 2.
    let logits = array![[0.0, 3f64.ln()], [2.0, 2.0]];
    let (loss, grad) = cross_entropy(logits.view(), &[0, 1], None).unwrap();
    assert!((loss - 1.5 * 2f64.ln()).abs() < 1e-15, "{loss}");
    let want = array![[-0.75, 0.75], [0.5, -0.5]] / 2.0;
    assert!(
        grad.iter()
            .zip(want.iter())
            .all(|(a, b)| (a - b).abs() < 1e-15),
        "{grad}"
    );

    // Ignoring class 1 leaves only row 0 in the mean.
    let (loss, grad) = cross_entropy(logits.view(), &[0, 1], Some(1)).unwrap();
    assert!((loss - 4f64.ln()).abs() < 1e-15);
    let want = array![[-0.75, 0.75], [0.0, 0.0]];
    assert!(
        grad.iter()
            .zip(want.iter())
            .all(|(a, b)| (a - b).abs() < 1e-15),
        "{grad}"
    );
}

#[test]
fn cross_entropy_is_exact_for_huge_logits_in_f32() {
    let logits = array![[1e4f32, -1e4, 0.0]];
    let (loss, grad) = cross_entropy(logits.view(), &[0], None).unwrap();
    assert_eq!(loss, 0.0);
    assert_eq!(grad, array![[0.0f32, 0.0, 0.0]]);
    let (loss, grad) = cross_entropy(logits.view(), &[1], None).unwrap();
    assert_eq!(loss, 2e4);
    assert_eq!(grad, array![[1.0f32, -1.0, 0.0]]);
}

#[test]
fn softmax_with_temperature_and_rows() {
    let z = array![0.0, 3f64.ln()];
    let p = softmax(z.view(), 1.0).unwrap();
    assert!((p[0] - 0.25).abs() < 1e-15 && (p[1] - 0.75).abs() < 1e-15);
    // τ = 1/2 doubles the logits: (0, 2 ln 3) → (1/10, 9/10).
    let p = softmax(z.view(), 0.5).unwrap();
    assert!((p[0] - 0.1).abs() < 1e-15 && (p[1] - 0.9).abs() < 1e-15);
    assert_eq!(
        softmax(array![1e4f32, 0.0].view(), 1.0).unwrap(),
        array![1.0f32, 0.0]
    );
    let rows = softmax_rows(array![[0.0, 3f64.ln()], [5.0, 5.0]].view());
    let want = array![[0.25, 0.75], [0.5, 0.5]];
    assert!(
        rows.iter()
            .zip(want.iter())
            .all(|(a, b)| (a - b).abs() < 1e-15)
    );
}
