//! Finite-difference checks (f64) of the sequence models end to end, loss included.

use ndarray::{Array2, Array3};
use skipgate::gradcheck::check_params;
use skipgate::loss::{cross_entropy, mse_loss};
use skipgate::models::{SeqRegressor, TokenRnn, TokenRnnConfig};
use skipgate::rnn::{CellKind, RecurrentConfig, RecurrentInit};
use skipgate::{Mode, Module, Rng, init};

#[test]
fn seq_regressor_with_lengths_and_mse() {
    for kind in CellKind::ALL {
        let mut rng = Rng::seed(1);
        let cfg = RecurrentConfig::new(kind, 2, 3).bidirectional(true);
        let mut m = SeqRegressor::<f64>::new(cfg, &RecurrentInit::default(), 2, &mut rng).unwrap();
        let x: Array3<f64> = init::normal((3, 4, 2), 0.0, 1.0, &mut rng);
        let y: Array2<f64> = init::normal((3, 2), 0.0, 1.0, &mut rng);
        let lengths = [4, 1, 3];
        check_params(&mut m, 1e-6, 1e-8, |m| {
            m.zero_grad();
            let pred = m
                .forward(x.view(), Some(&lengths), Mode::Train, &mut Rng::seed(0))
                .unwrap();
            let (loss, d) = mse_loss(pred.view(), y.view()).unwrap();
            m.backward(d.view()).unwrap();
            loss
        });
    }
}

#[test]
fn token_rnn_with_cross_entropy_and_ignored_targets() {
    for kind in CellKind::ALL {
        let mut rng = Rng::seed(2);
        let mut cfg = TokenRnnConfig::language_model(kind, 5, 3, 4);
        cfg.rnn = cfg.rnn.layers(2);
        let mut m = TokenRnn::<f64>::new(cfg, &mut rng).unwrap();
        let ids = Array2::from_shape_fn((2, 4), |(b, t)| (b * 3 + t * 2) % 5);
        let targets: Vec<usize> = (0..8)
            .map(|i| if i == 3 { usize::MAX } else { (i * 7) % 5 })
            .collect();
        check_params(&mut m, 1e-6, 1e-8, |m| {
            m.zero_grad();
            let out = m
                .forward(ids.view(), None, Mode::Train, &mut Rng::seed(0))
                .unwrap();
            let (loss, d) = cross_entropy(out.logits.view(), &targets, Some(usize::MAX)).unwrap();
            m.backward(d.view()).unwrap();
            loss
        });
    }
}

#[test]
fn token_rnn_names_sampling_and_stream_state() {
    let mut rng = Rng::seed(3);
    let mut m = TokenRnn::<f32>::new(
        TokenRnnConfig::language_model(CellKind::Lstm, 7, 4, 6),
        &mut rng,
    )
    .unwrap();
    let names: Vec<String> = m.param_shapes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "emb.weight",
            "rnn.weight_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.bias_hh_l0",
            "head.weight",
            "head.bias"
        ]
    );
    // Sampling is reproducible for a seed and stays in the vocabulary.
    let a = m.sample(&[1, 2], 20, 0.8, &mut Rng::seed(5)).unwrap();
    let b = m.sample(&[1, 2], 20, 0.8, &mut Rng::seed(5)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 20);
    assert!(a.iter().all(|&t| t < 7));
    // Two chunks with the state carried give the logits of one long call.
    let ids = Array2::from_shape_fn((2, 6), |(b, t)| (b + 2 * t) % 7);
    let whole = m.forward(ids.view(), None, Mode::Eval, &mut rng).unwrap();
    let first = m
        .forward(ids.slice(ndarray::s![.., ..4]), None, Mode::Eval, &mut rng)
        .unwrap();
    let second = m
        .forward(
            ids.slice(ndarray::s![.., 4..]),
            Some(&first.state),
            Mode::Eval,
            &mut rng,
        )
        .unwrap();
    for b in 0..2 {
        for t in 0..2 {
            let w = whole.logits.row(b * 6 + 4 + t);
            let s = second.logits.row(b * 2 + t);
            assert!(w.iter().zip(s.iter()).all(|(x, y)| (x - y).abs() < 1e-6));
        }
    }
    let e = m.sample(&[], 3, 1.0, &mut rng).unwrap_err().to_string();
    assert!(
        e.contains("prime") && e.contains("at least one token"),
        "{e}"
    );
    let e = m.sample(&[9], 3, 1.0, &mut rng).unwrap_err().to_string();
    assert!(e.contains('9') && e.contains('7'), "{e}");
}
