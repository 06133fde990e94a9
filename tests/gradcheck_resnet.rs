//! Residual blocks and networks: finite-difference checks (f64) of every block type with every
//! shortcut, of small whole networks, the identity path of the backward pass, torchvision's
//! parameter names and counts.

use ndarray::{Array2, Array4, Axis};
use skipgate::gradcheck::{EPS, assert_close, check_params, numeric_grad};
use skipgate::models::resnet::{
    BasicBlock, Block, Bottleneck, PreActBlock, ResNet, ResNetConfig, ShortcutKind,
};
use skipgate::{Mode, Module, Rng, init};

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-7;

/// Checks parameter and input gradients of a block under L = Σ y ⊙ g.
fn check_block(name: &str, block: &mut dyn Block<f64>, x: &Array4<f64>, rng: &mut Rng) {
    // Train-mode BatchNorm: every evaluation uses the batch's statistics (running stats change,
    // but they do not affect the train-mode output).
    let y = block.forward(x.view(), Mode::Train).unwrap();
    let g: Array4<f64> = init::normal(y.raw_dim(), 0.0, 1.0, rng);
    struct Wrap<'a>(&'a mut dyn Block<f64>);
    impl Module<f64> for Wrap<'_> {
        fn visit_params(&mut self, f: &mut skipgate::module::ParamVisitor<'_, f64>) {
            self.0.visit_params(f)
        }
    }
    let mut w = Wrap(block);
    check_params(&mut w, RTOL, ATOL, |w| {
        w.zero_grad();
        let y = w.0.forward(x.view(), Mode::Train).unwrap();
        w.0.backward(g.view()).unwrap();
        (&y * &g).sum()
    });
    w.0.forward(x.view(), Mode::Train).unwrap();
    let dx = w.0.backward(g.view()).unwrap();
    let numeric = numeric_grad(&x.clone().into_dyn(), EPS, |xv| {
        let xv = xv.clone().into_dimensionality().unwrap();
        (&w.0.forward(xv.view(), Mode::Train).unwrap() * &g).sum()
    });
    assert_close(
        &format!("{name}: ∂L/∂x"),
        dx.view().into_dyn(),
        numeric.view(),
        RTOL,
        ATOL,
    );
}

fn input(n: usize, c: usize, hw: usize, rng: &mut Rng) -> Array4<f64> {
    init::normal((n, c, hw, hw), 0.0, 1.0, rng)
}

#[test]
fn basic_block_every_shortcut() {
    let mut rng = Rng::seed(1);
    for (cin, cout, stride, kind, plain, label) in [
        (3, 3, 1, ShortcutKind::A, false, "identity"),
        (
            2,
            4,
            2,
            ShortcutKind::A,
            false,
            "option A (stride 2, pad channels)",
        ),
        (
            2,
            3,
            2,
            ShortcutKind::A,
            false,
            "option A (odd channel pad)",
        ),
        (2, 4, 2, ShortcutKind::B, false, "option B (projection)"),
        (2, 4, 2, ShortcutKind::A, true, "plain (no shortcut)"),
    ] {
        let mut b = BasicBlock::<f64>::new(cin, cout, stride, kind, plain, &mut rng).unwrap();
        let x = input(3, cin, 4, &mut rng);
        check_block(&format!("basic {label}"), &mut b, &x, &mut rng);
    }
}

#[test]
fn bottleneck_and_preact_blocks() {
    let mut rng = Rng::seed(2);
    for (stride, cin, plain) in [(1, 8, false), (2, 4, false), (2, 4, true)] {
        let mut b =
            Bottleneck::<f64>::new(cin, 2, stride, ShortcutKind::B, plain, &mut rng).unwrap();
        let x = input(2, cin, 4, &mut rng);
        check_block(
            &format!("bottleneck s{stride} cin {cin} plain {plain}"),
            &mut b,
            &x,
            &mut rng,
        );
    }
    for (cin, cout, stride, kind, plain) in [
        (3, 3, 1, ShortcutKind::A, false),
        (2, 4, 2, ShortcutKind::A, false),
        (2, 4, 2, ShortcutKind::B, false),
        (2, 4, 2, ShortcutKind::A, true),
    ] {
        let mut b = PreActBlock::<f64>::new(cin, cout, stride, kind, plain, &mut rng).unwrap();
        let x = input(3, cin, 4, &mut rng);
        check_block(
            &format!("preact {kind:?} plain {plain}"),
            &mut b,
            &x,
            &mut rng,
        );
    }
}

/// A tiny network of each family: every parameter and the input, cross-entropy loss included.
#[test]
fn small_whole_networks() {
    let mut rng = Rng::seed(3);
    let tiny = |name: &str| {
        let mut cfg: ResNetConfig = name.parse().unwrap();
        let base = cfg.widths[0];
        cfg.widths = cfg.widths.iter().map(|w| w / base + 1).collect(); // 2, 3, 5 (and 9)
        cfg.blocks_per_stage = cfg.blocks_per_stage.iter().map(|_| 1).collect();
        cfg.io(2, 3)
    };
    for name in [
        "resnet20",
        "plain20",
        "preact-resnet20",
        "resnet20-b",
        "resnet18",
    ] {
        let cfg = tiny(name);
        let mut net = ResNet::<f64>::new(cfg, &mut rng).unwrap();
        let hw = if name == "resnet18" { 16 } else { 6 };
        let x = input(3, 2, hw, &mut rng);
        let targets = [0usize, 2, 1];
        let loss = |net: &mut ResNet<f64>, x: &Array4<f64>, backward: bool| {
            let logits = net.forward(x.view(), Mode::Train).unwrap();
            let (l, d) = skipgate::loss::cross_entropy(logits.view(), &targets, None).unwrap();
            if backward {
                net.backward(d.view()).unwrap();
            }
            l
        };
        check_params(&mut net, RTOL, ATOL, |n| {
            n.zero_grad();
            loss(n, &x, true)
        });
        let logits = net.forward(x.view(), Mode::Train).unwrap();
        let (_, d) = skipgate::loss::cross_entropy(logits.view(), &targets, None).unwrap();
        let grads = net.backward(d.view()).unwrap();
        assert_eq!(grads.block_grad_norms.len(), net.num_blocks() + 1);
        let numeric = numeric_grad(&x.clone().into_dyn(), EPS, |xv| {
            loss(&mut net, &xv.clone().into_dimensionality().unwrap(), false)
        });
        assert_close(
            &format!("{name}: ∂L/∂x"),
            grads.d_input.view().into_dyn(),
            numeric.view(),
            RTOL,
            ATOL,
        );
    }
}

/// With the residual branch silenced (γ of its last BatchNorm = 0, β = 0), a residual block is
/// `relu(x)` and its input gradient is the shortcut's alone, `dy ⊙ [x > 0]`; its plain twin
/// passes no gradient at all. This is the identity path of the backward pass, seen directly.
#[test]
fn the_identity_path_carries_the_gradient_when_the_branch_is_silent() {
    let mut rng = Rng::seed(4);
    for plain in [false, true] {
        let mut b = BasicBlock::<f64>::new(3, 3, 1, ShortcutKind::A, plain, &mut rng).unwrap();
        b.bn2.weight.as_mut().unwrap().value.fill(0.0);
        let x = input(2, 3, 4, &mut rng);
        let y = b.forward(x.view(), Mode::Train).unwrap();
        let dy: Array4<f64> = init::normal(y.raw_dim(), 0.0, 1.0, &mut rng);
        let dx = b.backward(dy.view()).unwrap();
        if plain {
            assert!(y.iter().all(|&v| v == 0.0) && dx.iter().all(|&v| v == 0.0));
        } else {
            let relu_x = x.mapv(|v| v.max(0.0));
            assert_eq!(y, relu_x);
            let want = &dy * &x.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
            assert_eq!(dx, want);
        }
    }
}

/// Option A: the shortcut subsamples with the stride and zero-pads channels (split evenly, the
/// odd one behind), as the PyTorch reference `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p//2, p − p//2))`.
#[test]
fn option_a_shortcut_subsamples_and_pads_channels() {
    use skipgate::models::resnet::Shortcut;
    let mut rng = Rng::seed(5);
    let mut sc = Shortcut::<f64>::build(ShortcutKind::A, false, 2, 5, 2, true, &mut rng).unwrap();
    let x = Array4::from_shape_fn((1, 2, 4, 4), |(_, c, h, w)| (c * 100 + h * 10 + w) as f64);
    let y = sc.forward(x.view(), Mode::Train).unwrap().unwrap();
    assert_eq!(y.shape(), &[1, 5, 2, 2]);
    assert!(y.index_axis(Axis(1), 0).iter().all(|&v| v == 0.0));
    assert_eq!(y[[0, 1, 1, 1]], 22.0); // channel 0 of x, position (2, 2)
    assert_eq!(y[[0, 2, 0, 1]], 102.0); // channel 1 of x, position (0, 2)
    assert!(y.index_axis(Axis(1), 3).iter().all(|&v| v == 0.0));
    assert!(y.index_axis(Axis(1), 4).iter().all(|&v| v == 0.0));
    let dx = sc.backward(y.view()).unwrap().unwrap();
    let mut want = Array4::zeros((1, 2, 4, 4));
    for c in 0..2 {
        for h in (0..4).step_by(2) {
            for w in (0..4).step_by(2) {
                want[[0, c, h, w]] = x[[0, c, h, w]];
            }
        }
    }
    assert_eq!(dx, want);
}

#[test]
fn torchvision_names_and_parameter_counts() {
    let mut rng = Rng::seed(0);
    // Parameter counts of torchvision's models (1000 classes) and of He et al.'s CIFAR ResNet-20
    // (0.27M) and ResNet-110 (1.7M).
    for (name, want) in [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
    ] {
        let mut net = ResNet::<f32>::new(name.parse().unwrap(), &mut rng).unwrap();
        assert_eq!(net.num_params(), want, "{name}");
    }
    let mut r20 = ResNet::<f32>::new("resnet20".parse().unwrap(), &mut rng).unwrap();
    assert_eq!(r20.num_params(), 269_722);
    let mut r110 = ResNet::<f32>::new("resnet110".parse().unwrap(), &mut rng).unwrap();
    assert!(
        (1_700_000..1_750_000).contains(&r110.num_params()),
        "{}",
        r110.num_params()
    );

    let mut r18 = ResNet::<f32>::new("resnet18".parse().unwrap(), &mut rng).unwrap();
    let names: Vec<String> = r18.param_shapes().into_iter().map(|(n, _)| n).collect();
    for key in [
        "conv1.weight",
        "bn1.weight",
        "layer1.0.conv1.weight",
        "layer1.1.bn2.bias",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.weight",
        "layer4.1.conv2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|n| n == key), "missing {key}");
    }
    assert!(!names.iter().any(|n| n.starts_with("layer1.0.downsample")));
    let mut buffers = Vec::new();
    r18.visit_buffers(&mut |name, _| buffers.push(name.to_string()));
    assert_eq!(
        &buffers[..3],
        [
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked"
        ]
    );
    assert_eq!(buffers.len(), 3 * 20, "20 BatchNorms in ResNet-18");
    let mut r50 = ResNet::<f32>::new("resnet50".parse().unwrap(), &mut rng).unwrap();
    let shapes = r50.param_shapes();
    let shape = |k: &str| shapes.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(shape("layer1.0.downsample.0.weight"), vec![256, 64, 1, 1]);
    assert_eq!(shape("layer2.0.conv2.weight"), vec![128, 128, 3, 3]);
    assert_eq!(shape("fc.weight"), vec![1000, 2048]);
}

#[test]
fn names_parse_and_print_back_and_bad_names_are_explained() {
    for name in [
        "resnet20",
        "plain56",
        "preact-resnet110",
        "preact-plain20",
        "resnet20-b",
        "resnet18",
        "plain50",
        "resnet50",
    ] {
        let cfg: ResNetConfig = name.parse().unwrap();
        assert_eq!(cfg.to_string(), name);
    }
    let cfg: ResNetConfig = "plain56".parse().unwrap();
    assert!(cfg.plain && cfg.blocks_per_stage == vec![9, 9, 9]);
    for bad in ["resnet21", "resnet", "vgg16", "resnet50-a", "resnet20-c"] {
        let e = bad.parse::<ResNetConfig>().unwrap_err().to_string();
        assert!(e.contains(bad) || e.contains("6n + 2"), "{bad}: {e}");
    }
    let e = "resnet21".parse::<ResNetConfig>().unwrap_err().to_string();
    assert!(e.contains("6n + 2") && e.contains("21"), "{e}");
}

#[test]
fn wrong_images_are_refused_with_the_expected_shape() {
    let mut rng = Rng::seed(0);
    let mut net = ResNet::<f32>::new(
        "resnet20".parse::<ResNetConfig>().unwrap().io(1, 10),
        &mut rng,
    )
    .unwrap();
    let x = Array4::<f32>::zeros((2, 3, 28, 28));
    let e = net.forward(x.view(), Mode::Eval).unwrap_err().to_string();
    assert!(
        e.contains("(N, 1, H, W)") && e.contains("(2, 3, 28, 28)") && e.contains("resnet20"),
        "{e}"
    );
    let ok = net
        .forward(Array4::<f32>::zeros((2, 1, 28, 28)).view(), Mode::Eval)
        .unwrap();
    assert_eq!(ok.shape(), &[2, 10]);
    let e = net
        .backward(Array2::<f32>::zeros((2, 10)).view())
        .unwrap_err();
    assert!(matches!(e, skipgate::Error::NoForwardCache { .. }), "{e}");
}
