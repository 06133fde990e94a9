//! The gradient-flow probes: what they measure, that they leave the model as it was, and the
//! course's claims about the vanilla RNN, the LSTM and the residual shortcut at initialisation.

use ndarray::{Array2, Array3, Array4};
use skipgate::diag::{
    block_gradient_profile, recurrent_spectrum, singular_values, step_gradient_profile, widen,
};
use skipgate::models::SeqRegressor;
use skipgate::models::resnet::{ResNet, ResNetConfig};
use skipgate::rnn::{CellKind, RecurrentConfig, RecurrentInit};
use skipgate::{Mode, Module, Rng};

fn regressor(kind: CellKind, input: usize, hidden: usize, seed: u64) -> SeqRegressor<f32> {
    let config = RecurrentConfig::new(kind, input, hidden);
    SeqRegressor::new(config, &RecurrentInit::default(), 1, &mut Rng::seed(seed)).unwrap()
}

/// Inputs `(B, T, I)` ~ U(0, 1) and targets `(B, 1)` from `seed`.
fn data(b: usize, t: usize, i: usize, seed: u64) -> (Array3<f64>, Array2<f64>) {
    let mut rng = Rng::seed(seed);
    let x = Array3::from_shape_fn((b, t, i), |_| rng.uniform());
    let y = Array2::from_shape_fn((b, 1), |_| rng.uniform());
    (x, y)
}

#[test]
fn widen_keeps_every_weight_and_the_predictions() {
    let mut narrow = regressor(CellKind::Gru, 3, 8, 1);
    let mut wide = widen(&mut narrow).unwrap();
    assert_eq!(narrow.param_shapes(), wide.param_shapes());
    let (x, _) = data(4, 6, 3, 2);
    let mut rng = Rng::seed(0);
    let p32 = narrow
        .forward(x.mapv(|v| v as f32).view(), None, Mode::Eval, &mut rng)
        .unwrap();
    let p64 = wide
        .forward(
            x.mapv(|v| v as f32 as f64).view(),
            None,
            Mode::Eval,
            &mut rng,
        )
        .unwrap();
    for (a, b) in p32.iter().zip(p64.iter()) {
        assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn step_profile_is_the_backward_pass_norms_and_leaves_no_gradient() {
    let mut model = widen(&mut regressor(CellKind::Lstm, 2, 6, 3)).unwrap();
    let (x, y) = data(5, 7, 2, 4);
    let profile = step_gradient_profile(&mut model, x.view(), y.view(), &mut Rng::seed(0)).unwrap();
    assert_eq!(profile.len(), 7);
    let mut grads_left = 0.0;
    model.visit_params(&mut |_, p| grads_left += p.grad.iter().map(|g| g.abs()).sum::<f64>());
    assert_eq!(grads_left, 0.0, "the probe zeroes the gradients it made");

    // The same numbers as the layer's own backward pass, and the relative profile ends at 1.
    let pred = model
        .forward(x.view(), None, Mode::Train, &mut Rng::seed(0))
        .unwrap();
    let (_, d) = skipgate::loss::mse_loss(pred.view(), y.view()).unwrap();
    let grads = model.backward(d.view()).unwrap();
    assert_eq!(profile.norms, grads.step_grad_norms.row(0).to_vec());
    let rel = profile.relative();
    assert_eq!(rel[6], 1.0);
    assert_eq!(profile.reach(), rel[0]);

    // ∂L/∂h_T is the head's gradient: ‖W_head‖-scaled d_pred (one output per row).
    let w = model.head.weight.value.row(0).to_owned();
    let dh_t = (d.iter().map(|v| v * v).sum::<f64>() * w.dot(&w)).sqrt();
    assert!(
        (profile.norms[6] - dh_t).abs() < 1e-12 * dh_t,
        "{} vs {dh_t}",
        profile.norms[6]
    );
}

#[test]
fn spectrum_is_the_largest_singular_value_of_each_gate_block() {
    let model = regressor(CellKind::Gru, 3, 8, 5);
    let s = recurrent_spectrum(&model.rnn, 0).unwrap();
    let w = model.rnn.direction_params(0, 0).weight_hh.value.clone(); // (3·8, 8)
    assert_eq!(
        s.gates.iter().map(|g| g.0).collect::<Vec<_>>(),
        ["r", "z", "n"]
    );
    for (g, (_, sigma)) in s.gates.iter().enumerate() {
        let block = w.slice(ndarray::s![g * 8..(g + 1) * 8, ..]);
        // σ_max bounds ‖W v‖ for every unit v, and is reached by the top right singular vector.
        let mut rng = Rng::seed(g as u64);
        for _ in 0..20 {
            let v = ndarray::Array1::from_shape_fn(8, |_| rng.normal());
            let ratio = block
                .mapv(f64::from)
                .dot(&v)
                .dot(&block.mapv(f64::from).dot(&v))
                .sqrt()
                / v.dot(&v).sqrt();
            assert!(ratio <= sigma * (1.0 + 1e-9), "gate {g}: {ratio} > {sigma}");
        }
        assert_eq!(*sigma, singular_values(block).unwrap()[0]);
    }
    assert!(s.whole >= s.gates.iter().map(|g| g.1).fold(0.0, f64::max));
    let e = recurrent_spectrum(&model.rnn, 1).unwrap_err().to_string();
    assert!(e.contains("layer 1") && e.contains("1 layers"), "{e}");
}

/// The course's claim, measured: at PyTorch's default initialisation, T = 100, the tanh RNN keeps
/// orders of magnitude less of the gradient at the first step than the LSTM (median of 5 seeds).
#[test]
fn tanh_rnn_gradient_vanishes_orders_of_magnitude_faster_than_the_lstm_at_init() {
    let (x, y) = data(16, 100, 2, 7);
    let median_reach = |kind| {
        let mut r: Vec<f64> = (0..5)
            .map(|seed| {
                let mut m = widen(&mut regressor(kind, 2, 32, seed)).unwrap();
                step_gradient_profile(&mut m, x.view(), y.view(), &mut Rng::seed(0))
                    .unwrap()
                    .reach()
            })
            .collect();
        r.sort_by(f64::total_cmp);
        r[2]
    };
    let (rnn, lstm) = (median_reach(CellKind::Tanh), median_reach(CellKind::Lstm));
    assert!(
        rnn > 0.0,
        "measured in f64, the RNN's gradient does not underflow: {rnn:e}"
    );
    assert!(rnn < 1e-2 * lstm, "rnn {rnn:e}, lstm {lstm:e}");
}

#[test]
fn block_profile_leaves_running_statistics_and_gradients_as_they_were() {
    let config: ResNetConfig = "resnet8".parse().unwrap();
    let mut net = ResNet::<f32>::new(config.io(1, 10), &mut Rng::seed(0)).unwrap();
    let mut rng = Rng::seed(1);
    let x = Array4::from_shape_fn((4, 1, 8, 8), |_| rng.normal() as f32);
    let labels = [0, 3, 9, 3];
    let before = net.state_dict_values();
    let profile = block_gradient_profile(&mut net, x.view(), &labels).unwrap();
    assert_eq!(profile.norms.len(), net.num_blocks() + 1);
    assert_eq!(
        net.state_dict_values(),
        before,
        "running statistics restored"
    );
    let mut grads_left = 0.0;
    net.visit_params(&mut |_, p| grads_left += p.grad.iter().map(|g| g.abs()).sum::<f32>());
    assert_eq!(grads_left, 0.0);

    // The same as the network's own backward pass.
    let logits = net.forward(x.view(), Mode::Train).unwrap();
    let (_, d) = skipgate::loss::cross_entropy(logits.view(), &labels, None).unwrap();
    assert_eq!(
        profile.norms,
        net.backward(d.view()).unwrap().block_grad_norms
    );
}

/// Every buffer value of a module, in visiting order.
trait BufferValues {
    fn state_dict_values(&mut self) -> Vec<f64>;
}

impl<M: Module<f32>> BufferValues for M {
    fn state_dict_values(&mut self) -> Vec<f64> {
        let mut v = Vec::new();
        self.visit_buffers(&mut |_, b| match b {
            skipgate::module::BufferMut::Values(a) => v.extend(a.iter().map(|x| *x as f64)),
            skipgate::module::BufferMut::Count(c) => v.push(*c as f64),
        });
        v
    }
}
