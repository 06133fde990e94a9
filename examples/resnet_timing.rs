//! Times one training step of CIFAR ResNet-20 (B = 128, 3×32×32): forward, loss, backward, SGD.
//! `cargo run --release --example resnet_timing`

use std::time::Instant;

use ndarray::Array4;
use skipgate::loss::cross_entropy;
use skipgate::models::resnet::ResNet;
use skipgate::optim::{Optimizer, Sgd, SgdConfig};
use skipgate::{Mode, Module, Rng, init};

fn main() -> skipgate::Result<()> {
    let mut rng = Rng::seed(0);
    let mut net = ResNet::<f32>::new("resnet20".parse()?, &mut rng)?;
    let x: Array4<f32> = init::normal((128, 3, 32, 32), 0.0, 1.0, &mut rng);
    let y: Vec<usize> = (0..128).map(|i| i % 10).collect();
    let mut sgd = Sgd::new(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        ..SgdConfig::default()
    })?;
    for i in 0..6 {
        let t = Instant::now();
        net.zero_grad();
        let logits = net.forward(x.view(), Mode::Train)?;
        let t_fwd = t.elapsed();
        let (_, d) = cross_entropy(logits.view(), &y, None)?;
        net.backward(d.view())?;
        sgd.step(&mut net)?;
        println!(
            "step {i}: forward {:.1} ms, total {:.1} ms",
            t_fwd.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    net.forward(x.view(), Mode::Eval)?;
    println!("eval forward {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    Ok(())
}
