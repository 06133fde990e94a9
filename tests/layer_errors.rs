//! Every error of the basic layers and losses: the right variant, and a message that names the
//! operation, what was expected and what was found.

use ndarray::{Array1, Array2, Array3, array};
use skipgate::layers::{Dropout, Embedding, Linear, LinearConfig, Relu, Sigmoid, Tanh};
use skipgate::loss::{cross_entropy, mse_loss, softmax};
use skipgate::{Error, Mode, Rng};

/// Asserts that `err` is a `NoForwardCache` for `op`.
fn assert_no_cache(err: Error, op: &str) {
    match &err {
        Error::NoForwardCache { op: got } => assert_eq!(*got, op),
        other => panic!("expected NoForwardCache for {op}, got {other:?}"),
    }
    assert!(err.to_string().starts_with(op), "{err}");
}

/// Asserts that the message contains every piece.
fn assert_msg(err: &Error, pieces: &[&str]) {
    let msg = err.to_string();
    for p in pieces {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

// ---------------------------------------------------------------- Linear

#[test]
fn linear_forward_names_expected_and_actual_input_width() {
    let mut lin = Linear::<f32>::new(LinearConfig::new(32, 8), &mut Rng::seed(0));
    let err = lin
        .forward(Array2::zeros((4, 16)).view(), Mode::Train)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    assert_eq!(
        err.to_string(),
        "Linear::forward: input (N, in_features) expected (_, 32), got (4, 16)"
    );
}

#[test]
fn linear_backward_checks_dy_shape_and_keeps_the_cache() {
    let mut lin = Linear::<f64>::new(LinearConfig::new(3, 8), &mut Rng::seed(0));
    lin.forward(Array2::zeros((4, 3)).view(), Mode::Train)
        .unwrap();
    let err = lin.backward(Array2::zeros((4, 7)).view()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    assert_msg(
        &err,
        &[
            "Linear::backward",
            "dy (N, out_features)",
            "expected (4, 8)",
            "got (4, 7)",
        ],
    );
    let err = lin.backward(Array2::zeros((5, 8)).view()).unwrap_err();
    assert_msg(&err, &["expected (4, 8)", "got (5, 8)"]);
    // A rejected dy does not consume the forward cache.
    assert_eq!(
        lin.backward(Array2::zeros((4, 8)).view()).unwrap().dim(),
        (4, 3)
    );
}

#[test]
fn linear_from_weights_checks_bias_length() {
    let err =
        Linear::from_weights(Array2::<f32>::zeros((5, 3)), Some(Array1::zeros(4))).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    assert_msg(
        &err,
        &[
            "Linear::from_weights",
            "bias",
            "expected (5)",
            "(5, 3)",
            "got (4)",
        ],
    );
}

#[test]
fn linear_backward_needs_a_train_forward() {
    let mut lin = Linear::<f32>::new(LinearConfig::new(3, 2), &mut Rng::seed(0));
    let dy = Array2::zeros((1, 2));
    assert_no_cache(lin.backward(dy.view()).unwrap_err(), "Linear::backward");
    // Eval keeps nothing.
    lin.forward(Array2::zeros((1, 3)).view(), Mode::Eval)
        .unwrap();
    assert_no_cache(lin.backward(dy.view()).unwrap_err(), "Linear::backward");
    // An Eval forward after a Train forward drops the earlier cache.
    lin.forward(Array2::zeros((1, 3)).view(), Mode::Train)
        .unwrap();
    lin.forward(Array2::zeros((1, 3)).view(), Mode::Eval)
        .unwrap();
    assert_no_cache(lin.backward(dy.view()).unwrap_err(), "Linear::backward");
    // A rejected forward drops the earlier cache too.
    lin.forward(Array2::zeros((1, 3)).view(), Mode::Train)
        .unwrap();
    lin.forward(Array2::zeros((1, 4)).view(), Mode::Train)
        .unwrap_err();
    assert_no_cache(lin.backward(dy.view()).unwrap_err(), "Linear::backward");
    // Backward releases the cache: a second backward needs a new forward.
    lin.forward(Array2::zeros((1, 3)).view(), Mode::Train)
        .unwrap();
    lin.backward(dy.view()).unwrap();
    assert_no_cache(lin.backward(dy.view()).unwrap_err(), "Linear::backward");
}

// ---------------------------------------------------------------- Embedding

#[test]
fn embedding_out_of_range_id_names_id_position_and_vocabulary() {
    let mut emb = Embedding::<f32>::new(7, 4, None, &mut Rng::seed(0)).unwrap();
    let err = emb.forward(&[1, 6, 9, 2], Mode::Train).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert_msg(
        &err,
        &["Embedding::forward", "ids[2] = 9", "num_embeddings = 7"],
    );
    // The failed forward leaves no cache behind.
    assert_no_cache(
        emb.backward(Array2::zeros((4, 4)).view()).unwrap_err(),
        "Embedding::backward",
    );
}

#[test]
fn embedding_padding_idx_must_be_a_row() {
    let err = Embedding::<f32>::new(5, 2, Some(5), &mut Rng::seed(0)).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert_msg(
        &err,
        &["Embedding::new", "padding_idx = 5", "num_embeddings = 5"],
    );
    let err = Embedding::from_weights(Array2::<f64>::zeros((3, 2)), Some(8)).unwrap_err();
    assert_msg(
        &err,
        &[
            "Embedding::from_weights",
            "padding_idx = 8",
            "num_embeddings = 3",
        ],
    );
}

#[test]
fn embedding_backward_checks_shape_and_needs_a_train_forward() {
    let mut emb = Embedding::<f64>::new(7, 4, Some(0), &mut Rng::seed(0)).unwrap();
    assert_no_cache(
        emb.backward(Array2::zeros((2, 4)).view()).unwrap_err(),
        "Embedding::backward",
    );
    emb.forward(&[1, 2], Mode::Eval).unwrap();
    assert_no_cache(
        emb.backward(Array2::zeros((2, 4)).view()).unwrap_err(),
        "Embedding::backward",
    );
    emb.forward(&[1, 2], Mode::Train).unwrap();
    let err = emb.backward(Array2::zeros((2, 3)).view()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    assert_msg(
        &err,
        &["Embedding::backward", "expected (2, 4)", "got (2, 3)"],
    );
    emb.backward(Array2::zeros((2, 4)).view()).unwrap();
}

// ---------------------------------------------------------------- activations

macro_rules! activation_errors {
    ($name:ident, $layer:ident, $op:literal) => {
        #[test]
        fn $name() {
            let mut act = $layer::<f64>::new();
            let x = Array2::<f64>::ones((2, 3));
            assert_no_cache(act.backward(x.view()).unwrap_err(), $op);
            act.forward(x.view(), Mode::Eval);
            assert_no_cache(act.backward(x.view()).unwrap_err(), $op);
            act.forward(x.view(), Mode::Train);
            let err = act
                .backward(Array2::<f64>::ones((3, 2)).view())
                .unwrap_err();
            assert!(matches!(err, Error::Shape { .. }));
            assert_msg(&err, &[$op, "expected (2, 3)", "got (3, 2)"]);
            // Another dimension with the same number of elements is also rejected.
            let err = act
                .backward(Array3::<f64>::ones((2, 3, 1)).view())
                .unwrap_err();
            assert_msg(&err, &["expected (2, 3)", "got (2, 3, 1)"]);
            assert_eq!(act.backward(x.view()).unwrap().dim(), (2, 3));
            assert_no_cache(act.backward(x.view()).unwrap_err(), $op);
        }
    };
}

activation_errors!(tanh_errors, Tanh, "Tanh::backward");
activation_errors!(sigmoid_errors, Sigmoid, "Sigmoid::backward");
activation_errors!(relu_errors, Relu, "Relu::backward");

// ---------------------------------------------------------------- Dropout

#[test]
fn dropout_probability_must_be_in_unit_interval() {
    for (p, shown) in [(-0.1, "p = -0.1"), (1.5, "p = 1.5"), (f64::NAN, "p = NaN")] {
        let err = Dropout::<f32>::new(p).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }));
        assert_msg(&err, &["Dropout::new", shown, "expected 0 ≤ p ≤ 1"]);
    }
    assert!(Dropout::<f32>::new(0.0).is_ok() && Dropout::<f32>::new(1.0).is_ok());
}

#[test]
fn dropout_backward_checks_shape_and_needs_a_train_forward() {
    let mut drop = Dropout::<f64>::new(0.5).unwrap();
    let mut rng = Rng::seed(0);
    let x = Array2::<f64>::ones((2, 3));
    assert_no_cache(drop.backward(x.view()).unwrap_err(), "Dropout::backward");
    drop.forward(x.view(), Mode::Eval, &mut rng);
    assert_no_cache(drop.backward(x.view()).unwrap_err(), "Dropout::backward");
    drop.forward(x.view(), Mode::Train, &mut rng);
    let err = drop
        .backward(Array2::<f64>::ones((2, 4)).view())
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    assert_msg(
        &err,
        &["Dropout::backward", "expected (2, 3)", "got (2, 4)"],
    );
    drop.backward(x.view()).unwrap();
    assert_no_cache(drop.backward(x.view()).unwrap_err(), "Dropout::backward");
}

// ---------------------------------------------------------------- losses

#[test]
fn mse_names_both_shapes_and_rejects_empty_input() {
    let err = mse_loss(
        Array2::<f32>::zeros((2, 3)).view(),
        Array2::zeros((3, 2)).view(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    assert_msg(&err, &["mse_loss", "expected (2, 3)", "got (3, 2)"]);
    let err = mse_loss(
        Array2::<f32>::zeros((0, 3)).view(),
        Array2::zeros((0, 3)).view(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert_msg(&err, &["mse_loss", "(0, 3)", "no elements"]);
}

#[test]
fn cross_entropy_checks_targets_length() {
    let logits = Array2::<f32>::zeros((4, 3));
    let err = cross_entropy(logits.view(), &[0, 1, 2, 0, 1], None).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    assert_msg(
        &err,
        &[
            "cross_entropy",
            "targets",
            "expected (4)",
            "(4, 3)",
            "got (5)",
        ],
    );
}

#[test]
fn cross_entropy_names_row_value_and_classes_of_a_bad_target() {
    let logits = Array2::<f64>::zeros((4, 3));
    let err = cross_entropy(logits.view(), &[0, 2, 1, 3], None).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert_msg(&err, &["cross_entropy", "targets[3] = 3", "C = 3"]);
    // An out-of-range value is fine when it is the ignore_index …
    let (loss, _) = cross_entropy(logits.view(), &[0, 2, 1, 100], Some(100)).unwrap();
    assert!(
        (loss - 3f64.ln()).abs() < 1e-15,
        "uniform logits over 3 classes give ln 3"
    );
    // … and still an error when it is not.
    let err = cross_entropy(logits.view(), &[0, 7, 1, 100], Some(100)).unwrap_err();
    assert_msg(&err, &["targets[1] = 7", "C = 3"]);
}

#[test]
fn cross_entropy_rejects_all_ignored_and_empty_batches() {
    let err = cross_entropy(Array2::<f32>::zeros((3, 2)).view(), &[1, 1, 1], Some(1)).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert_msg(&err, &["cross_entropy", "all 3 rows", "ignore_index = 1"]);
    let err = cross_entropy(Array2::<f32>::zeros((0, 5)).view(), &[], None).unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }));
    assert_msg(&err, &["cross_entropy", "empty batch", "(0, 5)"]);
}

#[test]
fn softmax_rejects_bad_temperature_and_empty_logits() {
    for t in [0.0f32, -1.0, f32::INFINITY, f32::NAN] {
        let err = softmax(array![1.0f32, 2.0].view(), t).unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }));
        assert_msg(
            &err,
            &[
                "softmax",
                &format!("temperature = {t}"),
                "expected a finite number > 0",
            ],
        );
    }
    let err = softmax(Array1::<f32>::zeros(0).view(), 1.0).unwrap_err();
    assert_msg(&err, &["softmax", "at least one class"]);
}
