//! The course's example, written out by hand: a tanh RNN (input 1, hidden 10) learns to predict
//! the sum of each sequence of X ~ U(0,1), shape (100, 5, 1), with backpropagation through time.
//!
//! Run with `cargo run --release --example course_sum`.

use ndarray::{Array2, Array3, s};
use skipgate::data::tasks::sum_task;
use skipgate::layers::{Linear, LinearConfig};
use skipgate::loss::mse_loss;
use skipgate::optim::{Adam, AdamConfig, Optimizer};
use skipgate::rnn::{CellKind, Recurrent, RecurrentConfig, SeqInput};
use skipgate::{Mode, Module, Result, Rng};

/// h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh);  ŷ = W_out h_T + b_out.
struct SumRnn {
    rnn: Recurrent<f32>,
    head: Linear<f32>,
}

impl Module<f32> for SumRnn {
    fn visit_params(&mut self, f: &mut skipgate::module::ParamVisitor<'_, f32>) {
        skipgate::module::visit_child_params("rnn", &mut self.rnn, f);
        skipgate::module::visit_child_params("head", &mut self.head, f);
    }
}

fn main() -> Result<()> {
    let mut rng = Rng::seed(0);
    let train = sum_task::<f32>(100, 5, &mut rng)?; // x (100, 5, 1), y (100, 1)
    let test = sum_task::<f32>(1000, 5, &mut rng)?;
    let config = RecurrentConfig::new(CellKind::Tanh, 1, 10).batch_first(true);
    let mut model = SumRnn {
        rnn: Recurrent::new(config, &mut rng)?,
        head: Linear::new(LinearConfig::new(10, 1), &mut rng),
    };
    let mut adam = Adam::new(AdamConfig {
        lr: 0.005,
        ..AdamConfig::default()
    })?;

    for step in 1..=3000 {
        model.zero_grad();
        // Forward: the RNN over all 5 steps, the head on the last hidden state.
        let out = model
            .rnn
            .forward(SeqInput::new(train.x.view()), Mode::Train, &mut rng)?;
        let h_last = out.output.slice(s![.., 4, ..]).to_owned(); // (100, 10)
        let pred = model.head.forward(h_last.view(), Mode::Train)?; // (100, 1)
        let (loss, d_pred) = mse_loss(pred.view(), train.y.view())?;
        // Backward: the head, then BPTT from the last step.
        let d_h_last: Array2<f32> = model.head.backward(d_pred.view())?;
        let mut d_output = Array3::<f32>::zeros(out.output.raw_dim());
        d_output.slice_mut(s![.., 4, ..]).assign(&d_h_last);
        let grads = model.rnn.backward(d_output.view(), None, None)?;
        adam.step(&mut model)?;
        if step % 500 == 0 {
            let norms = grads.step_grad_norms.row(0);
            let shown: Vec<String> = norms.iter().map(|n| format!("{n:.2e}")).collect();
            println!(
                "step {step:4}: train MSE {loss:.2e}, ‖∂L/∂h_t‖ for t = 1..5: [{}]",
                shown.join(", ")
            );
        }
    }

    let out = model
        .rnn
        .forward(SeqInput::new(test.x.view()), Mode::Eval, &mut rng)?;
    let pred = model
        .head
        .forward(out.output.slice(s![.., 4, ..]), Mode::Eval)?;
    let (test_mse, _) = mse_loss(pred.view(), test.y.view())?;
    println!("test MSE {test_mse:.2e} (predicting the mean scores about 5/12 = 0.42)");
    Ok(())
}
