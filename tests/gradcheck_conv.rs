//! Finite-difference gradient checks (f64), hand-computed values, thread-count independence and
//! error messages for `Conv2d`, `MaxPool2d`, `AvgPool2d`, `GlobalAvgPool` and `Flatten`.
//!
//! Every layer is checked with the scalar `L = Σ y ⊙ g` for a random upstream gradient `g`, so that
//! every output element contributes to the loss and `∂L/∂y = g` is what backward receives.

mod common;

use ndarray::{Array, Array1, Array2, Array4, Dimension, Ix4, array};
use skipgate::gradcheck::{EPS, assert_close, check_params, numeric_grad};
use skipgate::layers::{AvgPool2d, Conv2d, Conv2dConfig, Flatten, GlobalAvgPool, MaxPool2d};
use skipgate::{Error, Mode, Module, Rng, init};

const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-8;

fn rand<D: Dimension>(shape: D, seed: u64) -> Array<f64, D> {
    init::uniform(shape, 1.0, &mut Rng::seed(seed))
}

fn dot<D: Dimension>(a: &Array<f64, D>, b: &Array<f64, D>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| x * y).sum()
}

/// PyTorch's output size, written out independently of the library.
fn out_len(len: usize, k: usize, s: usize, p: usize, d: usize) -> usize {
    (len + 2 * p - d * (k - 1) - 1) / s + 1
}

// ---------------------------------------------------------------- Conv2d gradients

/// Checks ∂L/∂x, ∂L/∂W and ∂L/∂b of a freshly initialised layer against central differences.
fn check_conv(cfg: Conv2dConfig, shape: (usize, usize, usize, usize), seed: u64) {
    let mut conv = Conv2d::<f64>::new(cfg, &mut Rng::seed(seed)).unwrap();
    let x = rand(Ix4(shape.0, shape.1, shape.2, shape.3), seed + 1);
    let y = conv.forward(x.view(), Mode::Train).unwrap();
    let oh = out_len(
        shape.2,
        cfg.kernel_size.0,
        cfg.stride.0,
        cfg.padding.0,
        cfg.dilation.0,
    );
    let ow = out_len(
        shape.3,
        cfg.kernel_size.1,
        cfg.stride.1,
        cfg.padding.1,
        cfg.dilation.1,
    );
    assert_eq!(y.dim(), (shape.0, cfg.out_channels, oh, ow), "{cfg:?}");
    let g = rand(y.raw_dim(), seed + 2);

    let dx = conv.backward(g.view()).unwrap();
    let num = numeric_grad(&x.clone().into_dyn(), EPS, |xp| {
        let xp = xp.view().into_dimensionality::<Ix4>().unwrap();
        dot(&conv.forward(xp, Mode::Eval).unwrap(), &g)
    });
    assert_close("∂L/∂x", dx.view().into_dyn(), num.view(), RTOL, ATOL);

    check_params(&mut conv, RTOL, ATOL, |m| {
        m.zero_grad();
        let y = m.forward(x.view(), Mode::Train).unwrap();
        m.backward(g.view()).unwrap();
        dot(&y, &g)
    });
}

#[test]
fn conv_3x3_stride2_pad1_nonsquare_input_batch() {
    check_conv(
        Conv2dConfig::new(3, 4, 3).stride(2).padding(1),
        (2, 3, 7, 6),
        10,
    );
}

#[test]
fn conv_3x3_stride1_pad1() {
    check_conv(Conv2dConfig::new(2, 3, 3).padding(1), (2, 2, 5, 6), 20);
}

#[test]
fn conv_dilation2() {
    check_conv(
        Conv2dConfig::new(2, 3, 3).dilation(2).padding(1),
        (2, 2, 7, 8),
        30,
    );
}

#[test]
fn conv_groups2() {
    check_conv(
        Conv2dConfig::new(4, 6, 3).padding(1).groups(2),
        (2, 4, 5, 6),
        40,
    );
}

#[test]
fn conv_depthwise_stride2() {
    check_conv(
        Conv2dConfig::new(3, 3, 3).groups(3).padding(1).stride(2),
        (2, 3, 6, 5),
        50,
    );
}

#[test]
fn conv_without_bias() {
    check_conv(Conv2dConfig::new(2, 3, 3).bias(false), (3, 2, 5, 5), 60);
}

#[test]
fn conv_1x1_pointwise_and_1x1_stride2_downsample() {
    check_conv(Conv2dConfig::new(3, 5, 1), (2, 3, 4, 5), 70);
    check_conv(
        Conv2dConfig::new(3, 4, 1).stride(2).bias(false),
        (2, 3, 5, 6),
        71,
    );
}

#[test]
fn conv_rectangular_kernel_stride_and_padding() {
    check_conv(
        Conv2dConfig::new(2, 3, 1)
            .kernel_size_hw((2, 3))
            .stride_hw((2, 1))
            .padding_hw((1, 0))
            .dilation_hw((1, 2)),
        (2, 2, 5, 7),
        80,
    );
}

#[test]
fn conv_stride_larger_than_kernel_leaves_pixels_unused() {
    // Stride 3 with a 2×2 kernel skips every third row and column: their ∂x must be exactly 0.
    let cfg = Conv2dConfig::new(1, 2, 2).stride(3);
    check_conv(cfg, (1, 1, 7, 8), 90);
    let mut conv = Conv2d::<f64>::new(cfg, &mut Rng::seed(91)).unwrap();
    let x = rand(Ix4(1, 1, 7, 8), 92);
    let y = conv.forward(x.view(), Mode::Train).unwrap();
    let dx = conv.backward(Array4::ones(y.raw_dim()).view()).unwrap();
    for ((_, _, h, w), &v) in dx.indexed_iter() {
        if h % 3 == 2 || w % 3 == 2 || h == 6 {
            assert_eq!(v, 0.0, "pixel ({h}, {w}) is in no window");
        }
    }
}

// ---------------------------------------------------------------- Conv2d values

#[test]
fn conv_forward_and_backward_match_hand_computation() {
    // x = [[1,2,3],[4,5,6],[7,8,9]], W = [[1,2],[3,4]], b = −1.
    let x = Array4::from_shape_vec((1, 1, 3, 3), (1..=9).map(f64::from).collect()).unwrap();
    let w = Array4::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut conv =
        Conv2d::from_weights(Conv2dConfig::new(1, 1, 2), w.clone(), Some(array![-1.0])).unwrap();
    let y = conv.forward(x.view(), Mode::Train).unwrap();
    // y[0,0] = 1·1 + 2·2 + 3·4 + 4·5 − 1 = 36, then 46, 66, 76.
    assert_eq!(
        y.into_shape_with_order(4).unwrap(),
        array![36.0, 46.0, 66.0, 76.0]
    );
    let dx = conv.backward(Array4::ones((1, 1, 2, 2)).view()).unwrap();
    // Each input pixel receives the sum of the taps that read it.
    let want_dx = array![[1.0, 3.0, 2.0], [4.0, 10.0, 6.0], [3.0, 7.0, 4.0]];
    assert_eq!(dx.into_shape_with_order((3, 3)).unwrap(), want_dx);
    // ∂W[a,b] = Σ of the 2×2 block of x starting at (a, b); ∂b = number of outputs.
    let want_dw = array![12.0, 16.0, 24.0, 28.0];
    assert_eq!(
        conv.weight.grad.clone().into_shape_with_order(4).unwrap(),
        want_dw
    );
    assert_eq!(conv.bias.as_ref().unwrap().grad, array![4.0]);

    // Gradients accumulate: a second forward/backward doubles them.
    conv.forward(x.view(), Mode::Train).unwrap();
    conv.backward(Array4::ones((1, 1, 2, 2)).view()).unwrap();
    assert_eq!(
        conv.weight.grad.clone().into_shape_with_order(4).unwrap(),
        want_dw * 2.0
    );
    assert_eq!(conv.bias.as_ref().unwrap().grad, array![8.0]);

    // Stride 2, padding 1, no bias: the windows are the four corners of the padded 5×5 input.
    let cfg = Conv2dConfig::new(1, 1, 2).stride(2).padding(1).bias(false);
    let mut conv = Conv2d::from_weights(cfg, w, None).unwrap();
    let y = conv.forward(x.view(), Mode::Eval).unwrap();
    // y[0,0] = 4·x[0,0]; y[0,1] = 3·x[0,1] + 4·x[0,2]; y[1,0] = 2·x[1,0] + 4·x[2,0];
    // y[1,1] = 1·5 + 2·6 + 3·8 + 4·9.
    assert_eq!(
        y.into_shape_with_order(4).unwrap(),
        array![4.0, 18.0, 36.0, 77.0]
    );
}

#[test]
fn conv_groups_do_not_mix_channels() {
    // Two groups of 1×1 convolutions: y0 = 2·x0, y1 = −3·x1 (+ biases 1 and 0).
    let cfg = Conv2dConfig::new(2, 2, 1).groups(2);
    let w = Array4::from_shape_vec((2, 1, 1, 1), vec![2.0, -3.0]).unwrap();
    let mut conv = Conv2d::from_weights(cfg, w, Some(array![1.0, 0.0])).unwrap();
    let x = Array4::from_shape_vec((1, 2, 1, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let y = conv.forward(x.view(), Mode::Train).unwrap();
    assert_eq!(
        y.into_shape_with_order(4).unwrap(),
        array![3.0, 5.0, -9.0, -12.0]
    );
    let dx = conv
        .backward(
            Array4::from_shape_vec((1, 2, 1, 2), vec![1.0, 1.0, 1.0, 0.0])
                .unwrap()
                .view(),
        )
        .unwrap();
    assert_eq!(
        dx.into_shape_with_order(4).unwrap(),
        array![2.0, 2.0, -3.0, 0.0]
    );
    // ∂W0 = Σ dy0·x0 = 1 + 2, ∂W1 = Σ dy1·x1 = 3.
    assert_eq!(
        conv.weight.grad.clone().into_shape_with_order(2).unwrap(),
        array![3.0, 3.0]
    );
}

#[test]
fn conv_default_init_names_shapes_and_bound() {
    let cfg = Conv2dConfig::new(16, 8, 3).groups(2);
    let mut conv = Conv2d::<f32>::new(cfg, &mut Rng::seed(5)).unwrap();
    assert_eq!(
        conv.param_shapes(),
        vec![
            ("weight".to_string(), vec![8, 8, 3, 3]),
            ("bias".to_string(), vec![8])
        ]
    );
    assert_eq!(conv.num_params(), 8 * 8 * 9 + 8);
    // fan_in = 16/2 · 3 · 3 = 72: U(±1/√72) for weight and bias.
    let bound = 1.0 / 72f32.sqrt();
    assert!(conv.weight.value.iter().all(|v| v.abs() <= bound));
    let b = &conv.bias.as_ref().unwrap().value;
    assert!(b.iter().all(|v| v.abs() <= bound));
    let max = conv.weight.value.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        max > 0.95 * bound,
        "576 draws come close to the bound, max {max}"
    );
    // Same seed, same weights.
    let again = Conv2d::<f32>::new(cfg, &mut Rng::seed(5)).unwrap();
    assert_eq!(conv.weight.value, again.weight.value);
    let nob = Conv2d::<f32>::new(cfg.bias(false), &mut Rng::seed(5)).unwrap();
    assert!(nob.bias.is_none());
}

#[test]
fn conv_eval_forward_keeps_nothing() {
    let mut conv = Conv2d::<f64>::new(Conv2dConfig::new(1, 1, 3), &mut Rng::seed(1)).unwrap();
    let x = rand(Ix4(1, 1, 4, 4), 2);
    conv.forward(x.view(), Mode::Train).unwrap();
    conv.forward(x.view(), Mode::Eval).unwrap();
    let err = conv
        .backward(Array4::zeros((1, 1, 2, 2)).view())
        .unwrap_err();
    assert!(matches!(err, Error::NoForwardCache { .. }), "{err}");
}

#[test]
fn conv_accepts_non_standard_layout_views() {
    // The same input and upstream gradient, once contiguous and once as permuted views.
    let cfg = Conv2dConfig::new(2, 3, 3).stride(2).padding(1);
    let x = rand(Ix4(2, 2, 5, 6), 101);
    let g = rand(Ix4(2, 3, 3, 3), 102);
    let x_perm = x
        .clone()
        .permuted_axes([0, 1, 3, 2])
        .as_standard_layout()
        .into_owned(); // (N, C, W, H)
    let g_perm = g
        .clone()
        .permuted_axes([3, 1, 2, 0])
        .as_standard_layout()
        .into_owned();
    let x_view = x_perm.view().permuted_axes([0, 1, 3, 2]);
    let g_view = g_perm.view().permuted_axes([3, 1, 2, 0]);
    assert!(!x_view.is_standard_layout() && !g_view.is_standard_layout());
    let mut a = Conv2d::<f64>::new(cfg, &mut Rng::seed(103)).unwrap();
    let mut b = a.clone();
    assert_eq!(
        a.forward(x.view(), Mode::Train).unwrap(),
        b.forward(x_view, Mode::Train).unwrap()
    );
    assert_eq!(a.backward(g.view()).unwrap(), b.backward(g_view).unwrap());
    assert_eq!(a.weight.grad, b.weight.grad);
}

// ---------------------------------------------------------------- threads

/// Forward + backward of an f32 layer inside a rayon pool of `threads` threads.
fn run_in_pool(
    threads: usize,
    cfg: Conv2dConfig,
    x: &Array4<f32>,
    g: &Array4<f32>,
) -> (Array4<f32>, Array4<f32>, Array4<f32>, Array1<f32>) {
    common::on_threads(threads, || {
        let mut conv = Conv2d::<f32>::new(cfg, &mut Rng::seed(3)).unwrap();
        let y = conv.forward(x.view(), Mode::Train).unwrap();
        let dx = conv.backward(g.view()).unwrap();
        let db = conv.bias.as_ref().unwrap().grad.clone();
        (y, dx, conv.weight.grad.clone(), db)
    })
}

#[test]
fn conv_results_are_bitwise_identical_for_1_2_and_3_threads() {
    for cfg in [
        Conv2dConfig::new(5, 6, 3).padding(1),
        Conv2dConfig::new(4, 6, 1),
        Conv2dConfig::new(4, 4, 3).stride(2).padding(1).groups(2),
    ] {
        // 37 images: several weight-gradient chunks, the last one shorter.
        let x: Array4<f32> = init::uniform((37, cfg.in_channels, 9, 10), 1.0, &mut Rng::seed(1));
        let (oh, ow) = cfg.output_size(9, 10).unwrap();
        let g: Array4<f32> = init::uniform((37, cfg.out_channels, oh, ow), 1.0, &mut Rng::seed(2));
        let one = run_in_pool(1, cfg, &x, &g);
        for threads in [2, 3] {
            let other = run_in_pool(threads, cfg, &x, &g);
            assert_eq!(one.0, other.0, "{cfg:?}: y with {threads} threads");
            assert_eq!(one.1, other.1, "{cfg:?}: dx with {threads} threads");
            assert_eq!(one.2, other.2, "{cfg:?}: dW with {threads} threads");
            assert_eq!(one.3, other.3, "{cfg:?}: db with {threads} threads");
        }
        // And the f32 batch sums agree with the same computation in f64.
        let mut c64 = Conv2d::<f64>::new(cfg, &mut Rng::seed(3)).unwrap();
        let y64 = c64.forward(x.mapv(f64::from).view(), Mode::Train).unwrap();
        c64.backward(g.mapv(f64::from).view()).unwrap();
        let close = |a: &[f32], b: &[f64], what: &str| {
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (*x as f64 - y).abs() <= 1e-5 * scale,
                    "{cfg:?} {what}: {x} vs {y}"
                );
            }
        };
        close(one.0.as_slice().unwrap(), y64.as_slice().unwrap(), "y");
        close(
            one.2.as_slice().unwrap(),
            c64.weight.grad.as_slice().unwrap(),
            "dW",
        );
        close(
            one.3.as_slice().unwrap(),
            c64.bias.as_ref().unwrap().grad.as_slice().unwrap(),
            "db",
        );
    }
}

// ---------------------------------------------------------------- pooling gradients

/// Distinct values, at least 1/len apart, in a random order: no ties, and a step of 1e-6 never
/// changes which element is a window's maximum.
fn distinct(shape: Ix4, seed: u64) -> Array4<f64> {
    let len = shape.size();
    let perm = Rng::seed(seed).permutation(len);
    Array4::from_shape_vec(
        shape,
        perm.iter().map(|&p| p as f64 / len as f64 - 0.5).collect(),
    )
    .unwrap()
}

/// ∂L/∂x of a pooling layer (through `run(x, mode)` / `back(g)`) against central differences.
fn check_input_grad<D: Dimension>(
    x: &Array4<f64>,
    mut fwd: impl FnMut(&Array4<f64>, Mode) -> Array<f64, D>,
    mut back: impl FnMut(&Array<f64, D>) -> Array4<f64>,
    seed: u64,
) {
    let y = fwd(x, Mode::Train);
    let g = rand(y.raw_dim(), seed);
    let dx = back(&g);
    let num = numeric_grad(&x.clone().into_dyn(), EPS, |xp| {
        let xp = xp.clone().into_dimensionality::<Ix4>().unwrap();
        dot(&fwd(&xp, Mode::Eval), &g)
    });
    assert_close("∂L/∂x", dx.view().into_dyn(), num.view(), RTOL, ATOL);
}

#[test]
fn maxpool_gradients_match_finite_differences() {
    for (mut pool, shape) in [
        (MaxPool2d::new(3).stride(2).padding(1), Ix4(2, 2, 7, 6)),
        (MaxPool2d::new(2), Ix4(2, 3, 4, 6)),
        (
            MaxPool2d::new_hw((2, 3))
                .stride_hw((1, 2))
                .padding_hw((1, 1)),
            Ix4(1, 2, 5, 5),
        ),
    ] {
        let x = distinct(shape, 7);
        let mut p2 = pool.clone();
        check_input_grad(
            &x,
            |x, m| pool.forward(x.view(), m).unwrap(),
            |g| p2_backward(&mut p2, &x, g),
            8,
        );
    }
}

/// Runs a train forward on a copy of the layer, then its backward (the closures of
/// `check_input_grad` cannot both borrow one layer mutably).
fn p2_backward(pool: &mut MaxPool2d, x: &Array4<f64>, g: &Array4<f64>) -> Array4<f64> {
    pool.forward(x.view(), Mode::Train).unwrap();
    pool.backward(g.view()).unwrap()
}

#[test]
fn maxpool_pads_with_minus_infinity_and_breaks_ties_at_the_first_maximum() {
    // All-negative 2×2 input, 3×3 windows with padding 1: every window sees all four pixels;
    // zero padding would give 0, −∞ padding gives the true maximum −1.
    let x = Array4::from_shape_vec((1, 1, 2, 2), vec![-1.0, -2.0, -3.0, -4.0]).unwrap();
    let mut pool = MaxPool2d::new(3).stride(1).padding(1);
    let y = pool.forward(x.view(), Mode::Train).unwrap();
    assert_eq!(y, Array4::from_elem((1, 1, 2, 2), -1.0));
    let dx = pool
        .backward(Array4::<f64>::ones((1, 1, 2, 2)).view())
        .unwrap();
    assert_eq!(
        dx.into_shape_with_order(4).unwrap(),
        array![4.0, 0.0, 0.0, 0.0]
    );

    // Ties: a window of equal values sends its gradient to the first one in scan order.
    let x =
        Array4::from_shape_vec((1, 1, 2, 4), vec![5.0, 5.0, 1.0, 7.0, 5.0, 5.0, 7.0, 7.0]).unwrap();
    let mut pool = MaxPool2d::new(2);
    let y = pool.forward(x.view(), Mode::Train).unwrap();
    assert_eq!(y.into_shape_with_order(2).unwrap(), array![5.0, 7.0]);
    let dx = pool
        .backward(
            Array4::from_shape_vec((1, 1, 1, 2), vec![2.0, 3.0])
                .unwrap()
                .view(),
        )
        .unwrap();
    assert_eq!(
        dx.into_shape_with_order(8).unwrap(),
        array![2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn avgpool_gradients_match_finite_differences() {
    for (pool, shape) in [
        (AvgPool2d::new(3).stride(2).padding(1), Ix4(2, 2, 7, 6)),
        (AvgPool2d::new(2), Ix4(2, 3, 4, 5)),
        (
            AvgPool2d::new_hw((3, 2))
                .stride_hw((1, 2))
                .padding_hw((1, 0)),
            Ix4(1, 2, 4, 5),
        ),
    ] {
        let x = rand(shape, 11);
        let (mut a, mut b) = (pool.clone(), pool);
        check_input_grad(
            &x,
            |x, m| a.forward(x.view(), m).unwrap(),
            |g| {
                b.forward(x.view(), Mode::Train).unwrap();
                b.backward(g.view()).unwrap()
            },
            12,
        );
    }
}

#[test]
fn avgpool_counts_padding_in_the_divisor() {
    // 2×2 ones, 3×3 windows, padding 1, stride 1: each window holds the 4 pixels and 5 padding
    // zeros, so every output is 4/9 (count_include_pad = True), and so is every ∂x.
    let mut pool = AvgPool2d::new(3).stride(1).padding(1);
    let y = pool
        .forward(Array4::<f64>::ones((1, 1, 2, 2)).view(), Mode::Train)
        .unwrap();
    assert_eq!(y, Array4::from_elem((1, 1, 2, 2), 4.0 / 9.0));
    let dx = pool
        .backward(Array4::<f64>::ones((1, 1, 2, 2)).view())
        .unwrap();
    assert_eq!(dx, Array4::from_elem((1, 1, 2, 2), 4.0 / 9.0));
    // Without padding: a plain 2×2 mean.
    let x =
        Array4::from_shape_vec((1, 1, 2, 4), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0]).unwrap();
    let y = AvgPool2d::new(2).forward(x.view(), Mode::Eval).unwrap();
    assert_eq!(y.into_shape_with_order(2).unwrap(), array![3.5, 5.75]);
}

#[test]
fn global_avg_pool_and_flatten_gradients_and_values() {
    let x = rand(Ix4(2, 3, 4, 5), 21);
    let (mut a, mut b) = (GlobalAvgPool::new(), GlobalAvgPool::new());
    check_input_grad(
        &x,
        |x, m| a.forward(x.view(), m).unwrap(),
        |g| {
            b.forward(x.view(), Mode::Train).unwrap();
            b.backward(g.view()).unwrap()
        },
        22,
    );
    let (mut a, mut b) = (Flatten::new(), Flatten::new());
    check_input_grad(
        &x,
        |x, m| a.forward(x.view(), m).unwrap(),
        |g| {
            b.forward(x.view(), Mode::Train).unwrap();
            b.backward(g.view()).unwrap()
        },
        23,
    );

    // Values: means per plane, and row-major flattening.
    let x = Array4::from_shape_vec((1, 2, 1, 2), vec![1.0, 2.0, 3.0, 5.0]).unwrap();
    let mut gap = GlobalAvgPool::new();
    assert_eq!(
        gap.forward(x.view(), Mode::Train).unwrap(),
        array![[1.5, 4.0]]
    );
    let dx = gap.backward(array![[2.0, -4.0]].view()).unwrap();
    assert_eq!(
        dx.into_shape_with_order(4).unwrap(),
        array![1.0, 1.0, -2.0, -2.0]
    );
    let mut flat = Flatten::new();
    let y: Array2<f64> = flat.forward(x.view(), Mode::Train).unwrap();
    assert_eq!(y, array![[1.0, 2.0, 3.0, 5.0]]);
    assert_eq!(flat.backward(y.view()).unwrap(), x);
    // Transposed (non-standard-layout) input flattens in logical order.
    let xt = x.clone().permuted_axes([0, 1, 3, 2]); // (1, 2, 2, 1)
    assert_eq!(
        Flatten::new().forward(xt.view(), Mode::Eval).unwrap(),
        array![[1.0, 2.0, 3.0, 5.0]]
    );
}

// ---------------------------------------------------------------- errors

fn msg<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn conv_config_errors_name_the_field() {
    let mut rng = Rng::seed(0);
    let e = msg(Conv2d::<f32>::new(
        Conv2dConfig::new(3, 4, 3).groups(2),
        &mut rng,
    ));
    assert!(
        e.contains("in_channels = 3 is not divisible by groups = 2"),
        "{e}"
    );
    let e = msg(Conv2d::<f32>::new(
        Conv2dConfig::new(4, 3, 3).groups(2),
        &mut rng,
    ));
    assert!(
        e.contains("out_channels = 3 is not divisible by groups = 2"),
        "{e}"
    );
    let e = msg(Conv2d::<f32>::new(Conv2dConfig::new(4, 4, 0), &mut rng));
    assert!(
        e.contains("invalid kernel_size: must be positive, got 0"),
        "{e}"
    );
    let e = msg(Conv2d::<f32>::new(
        Conv2dConfig::new(4, 4, 3).stride_hw((1, 0)),
        &mut rng,
    ));
    assert!(
        e.contains("invalid stride: must be positive, got (1, 0)"),
        "{e}"
    );
    let e = msg(Conv2d::<f32>::new(Conv2dConfig::new(0, 4, 3), &mut rng));
    assert!(e.contains("invalid in_channels"), "{e}");
    let e = msg(Conv2d::<f32>::new(
        Conv2dConfig::new(4, 4, 3).groups(0),
        &mut rng,
    ));
    assert!(e.contains("invalid groups: must be positive"), "{e}");
    let e = msg(Conv2d::<f32>::new(
        Conv2dConfig::new(4, 4, 3).dilation(0),
        &mut rng,
    ));
    assert!(e.contains("invalid dilation"), "{e}");
}

#[test]
fn conv_from_weights_errors() {
    let cfg = Conv2dConfig::new(6, 4, 3).groups(2);
    let e = msg(Conv2d::<f32>::from_weights(
        cfg,
        Array4::zeros((4, 6, 3, 3)),
        Some(Array1::zeros(4)),
    ));
    assert!(
        e.contains("Conv2d::from_weights: weight (C_out, C_in/groups, kh, kw) expected (4, 3, 3, 3), got (4, 6, 3, 3)"),
        "{e}"
    );
    let e = msg(Conv2d::<f32>::from_weights(
        cfg,
        Array4::zeros((4, 3, 3, 3)),
        Some(Array1::zeros(5)),
    ));
    assert!(e.contains("bias (C_out) expected (4), got (5)"), "{e}");
    let e = msg(Conv2d::<f32>::from_weights(
        cfg,
        Array4::zeros((4, 3, 3, 3)),
        None,
    ));
    assert!(e.contains("bias = true but no bias was given"), "{e}");
    let e = msg(Conv2d::<f32>::from_weights(
        cfg.bias(false),
        Array4::zeros((4, 3, 3, 3)),
        Some(Array1::zeros(4)),
    ));
    assert!(e.contains("bias = false"), "{e}");
}

#[test]
fn conv_forward_and_backward_shape_errors() {
    let mut conv = Conv2d::<f32>::new(Conv2dConfig::new(3, 4, 3), &mut Rng::seed(0)).unwrap();
    let e = msg(conv.forward(Array4::zeros((2, 4, 8, 8)).view(), Mode::Train));
    assert!(
        e.contains(
            "Conv2d::forward: input (N, C_in, H, W) expected (_, 3, _, _), got (2, 4, 8, 8)"
        ),
        "{e}"
    );
    let e = msg(conv.forward(Array4::zeros((1, 3, 2, 5)).view(), Mode::Train));
    assert!(e.contains("H + 2·0 ≥ 3"), "{e}");
    assert!(e.contains("got (1, 3, 2, 5)"), "{e}");
    let e = msg(conv.forward(Array4::zeros((1, 3, 0, 5)).view(), Mode::Train));
    assert!(e.contains("H ≥ 1"), "{e}");

    // Dilation 2 makes the 3×3 kernel span 5 pixels; padding 1 brings a 2×2 input only to 4×4.
    let cfg = Conv2dConfig::new(1, 1, 3).dilation(2).padding(1);
    let mut dil = Conv2d::<f32>::new(cfg, &mut Rng::seed(0)).unwrap();
    let e = msg(dil.forward(Array4::zeros((1, 1, 2, 2)).view(), Mode::Eval));
    assert!(e.contains("H + 2·1 ≥ 5 and W + 2·1 ≥ 5"), "{e}");
    assert_eq!(
        dil.forward(Array4::zeros((1, 1, 3, 3)).view(), Mode::Eval)
            .unwrap()
            .dim(),
        (1, 1, 1, 1)
    );

    let e = msg(conv.backward(Array4::zeros((2, 4, 6, 6)).view()));
    assert_eq!(
        e,
        "Conv2d::backward: backward called without a train-mode forward before it"
    );
    conv.forward(Array4::zeros((2, 3, 8, 8)).view(), Mode::Train)
        .unwrap();
    let e = msg(conv.backward(Array4::zeros((2, 4, 8, 8)).view()));
    assert!(
        e.contains("dy (N, C_out, OH, OW) expected (2, 4, 6, 6), got (2, 4, 8, 8)"),
        "{e}"
    );
    // A failed backward keeps the cache: the right dy still works.
    assert!(conv.backward(Array4::zeros((2, 4, 6, 6)).view()).is_ok());
    // A weight replaced by one of another shape is caught, not a panic.
    conv.weight.value = Array4::zeros((4, 3, 2, 2));
    let e = msg(conv.forward(Array4::zeros((2, 3, 8, 8)).view(), Mode::Eval));
    assert!(
        e.contains("weight (C_out, C_in/groups, kh, kw) expected (4, 3, 3, 3)"),
        "{e}"
    );
}

#[test]
fn pooling_errors() {
    let x = Array4::<f32>::zeros((1, 2, 5, 5));
    let e = msg(MaxPool2d::new(3).padding(2).forward(x.view(), Mode::Eval));
    assert!(
        e.contains("MaxPool2d::forward: invalid padding: padding (2, 2) must be at most half the kernel (3, 3)"),
        "{e}"
    );
    let e = msg(AvgPool2d::new(0).forward(x.view(), Mode::Eval));
    assert!(
        e.contains("AvgPool2d::forward: invalid kernel: must be positive, got (0, 0)"),
        "{e}"
    );
    let e = msg(MaxPool2d::new(2).stride(0).forward(x.view(), Mode::Eval));
    assert!(e.contains("invalid stride"), "{e}");
    let e = msg(MaxPool2d::new(6).forward(x.view(), Mode::Eval));
    assert!(
        e.contains("H + 2·0 ≥ 6 and W + 2·0 ≥ 6, got (1, 2, 5, 5)"),
        "{e}"
    );

    let mut mp = MaxPool2d::new(2);
    let e = msg(mp.backward(Array4::<f32>::zeros((1, 2, 2, 2)).view()));
    assert!(
        e.contains("MaxPool2d::backward: backward called without"),
        "{e}"
    );
    mp.forward(x.view(), Mode::Train).unwrap();
    let e = msg(mp.backward(Array4::<f32>::zeros((1, 2, 3, 3)).view()));
    assert!(
        e.contains("dy (N, C, OH, OW) expected (1, 2, 2, 2), got (1, 2, 3, 3)"),
        "{e}"
    );
    let mut ap = AvgPool2d::new(2);
    ap.forward(x.view(), Mode::Train).unwrap();
    let e = msg(ap.backward(Array4::<f32>::zeros((1, 1, 2, 2)).view()));
    assert!(
        e.contains("AvgPool2d::backward: dy (N, C, OH, OW) expected (1, 2, 2, 2)"),
        "{e}"
    );
    ap.forward(x.view(), Mode::Eval).unwrap();
    let e = msg(ap.backward(Array4::<f32>::zeros((1, 2, 2, 2)).view()));
    assert!(e.contains("without a train-mode forward"), "{e}");

    let mut gap = GlobalAvgPool::new();
    let e = msg(gap.forward(Array4::<f32>::zeros((1, 2, 0, 3)).view(), Mode::Train));
    assert!(
        e.contains(
            "GlobalAvgPool::forward: input (N, C, H, W) expected H ≥ 1 and W ≥ 1, got (1, 2, 0, 3)"
        ),
        "{e}"
    );
    gap.forward(x.view(), Mode::Train).unwrap();
    let e = msg(gap.backward(Array2::<f32>::zeros((2, 1)).view()));
    assert!(e.contains("dy (N, C) expected (1, 2), got (2, 1)"), "{e}");

    let mut flat = Flatten::new();
    let e = msg(flat.backward(Array2::<f32>::zeros((1, 50)).view()));
    assert!(
        e.contains("Flatten::backward: backward called without"),
        "{e}"
    );
    flat.forward(x.view(), Mode::Train).unwrap();
    let e = msg(flat.backward(Array2::<f32>::zeros((1, 49)).view()));
    assert!(
        e.contains("dy (N, C·H·W) expected (1, 50), got (1, 49)"),
        "{e}"
    );
}
