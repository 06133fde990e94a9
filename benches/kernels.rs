//! Criterion benches of the kernels the workloads spend their time in: GEMM on the shapes the
//! layers multiply, Conv2d forward and backward on ResNet-20's shapes, and one LSTM layer forward
//! and backward on the `lstm_train` shape.
//!
//! **Throughput is FLOPs.** Every bench reports `Throughput::Elements(flops)`, so where criterion
//! prints `elem/s`, read FLOP/s (a multiply-add counts as 2 FLOPs; only the matrix products are
//! counted: im2col, col2im, the gate nonlinearities and the bias additions are not). The groups
//! say so in their names (`*_flops`).
//!
//! ```sh
//! cargo bench --bench kernels                          # everything (a few minutes)
//! cargo bench --bench kernels -- gemm_flops/lstm       # a filter: the LSTM GEMM shapes only
//! RAYON_NUM_THREADS=1 cargo bench --bench kernels      # threads: RAYON_NUM_THREADS, else all cores
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array2, Array3, Array4, ArrayView2};
use skipgate::gemm::gemm;
use skipgate::layers::{Conv2d, Conv2dConfig};
use skipgate::rnn::{CellKind, Recurrent, RecurrentConfig, SeqInput};
use skipgate::{Mode, Rng};

/// `C (m, n) ← A (m, k) · B (k, n) + C`, with the operand layouts the library uses.
struct GemmShape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    /// `A` is the transpose of a row-major `(k, m)` array (`dGᵀ` in the weight gradients).
    a_transposed: bool,
    /// `B` is the transpose of a row-major `(n, k)` array (`Wᵀ` of a PyTorch-layout weight).
    b_transposed: bool,
}

const fn shape(name: &'static str, m: usize, k: usize, n: usize, at: bool, bt: bool) -> GemmShape {
    GemmShape {
        name,
        m,
        k,
        n,
        a_transposed: at,
        b_transposed: bt,
    }
}

/// The named shape table.
const GEMM_SHAPES: [GemmShape; 11] = [
    // LSTM, B=64, T=100, I=32, H=256: the per-step recurrent product h_{t−1}·W_hhᵀ.
    shape("lstm_recurrent", 64, 256, 1024, false, true),
    // All input projections at once: X (T·B, I) · W_ihᵀ.
    shape("lstm_input_proj", 6400, 32, 1024, false, true),
    // Backward: ∂W_hh += dGᵀ (4H, T·B) · H_prev (T·B, H).
    shape("lstm_grad_w_hh", 1024, 6400, 256, true, false),
    // Char-LSTM layer 2 input projection: (B·T, H) · W_ihᵀ (H, 4H), B=32, T=128, H=512.
    shape("charlstm_input_proj", 4096, 512, 2048, false, true),
    // Char-LSTM per-step recurrent product, B=32, H=512.
    shape("charlstm_recurrent", 32, 512, 2048, false, true),
    // ResNet-20 convolutions as im2col products, per image: W (C_out, C_in·9) · cols (C_in·9, OH·OW).
    shape("resnet20_stem_conv", 16, 27, 1024, false, false),
    shape("resnet20_stage1_conv", 16, 144, 1024, false, false),
    shape("resnet20_stage2_conv", 32, 288, 256, false, false),
    shape("resnet20_stage3_conv", 64, 576, 64, false, false),
    // ResNet-18 layer1 3×3 convolution at 56×56, per image.
    shape("resnet18_layer1_conv", 64, 576, 3136, false, false),
    shape("square_1024", 1024, 1024, 1024, false, false),
];

fn random(rows: usize, cols: usize, rng: &mut Rng) -> Array2<f32> {
    let mut a = Array2::zeros((rows, cols));
    rng.fill_normal(a.as_slice_mut().unwrap(), 0.0, 1.0);
    a
}

fn bench_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_flops");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut rng = Rng::seed(0);
    for s in &GEMM_SHAPES {
        let a_store = if s.a_transposed {
            random(s.k, s.m, &mut rng)
        } else {
            random(s.m, s.k, &mut rng)
        };
        let b_store = if s.b_transposed {
            random(s.n, s.k, &mut rng)
        } else {
            random(s.k, s.n, &mut rng)
        };
        let a: ArrayView2<f32> = if s.a_transposed {
            a_store.t()
        } else {
            a_store.view()
        };
        let b: ArrayView2<f32> = if s.b_transposed {
            b_store.t()
        } else {
            b_store.view()
        };
        let mut out = Array2::<f32>::zeros((s.m, s.n));
        group.throughput(Throughput::Elements((2 * s.m * s.k * s.n) as u64));
        let id = format!(
            "{}_{}x{}x{}{}{}",
            s.name,
            s.m,
            s.k,
            s.n,
            if s.a_transposed { "_at" } else { "" },
            if s.b_transposed { "_bt" } else { "" }
        );
        group.bench_function(BenchmarkId::from_parameter(id), |bench| {
            bench.iter(|| gemm(1.0, black_box(a), black_box(b), 1.0, out.view_mut()))
        });
    }
    group.finish();
}

/// ResNet-20's convolutions at batch 128: (name, C_in, C_out, input size, stride).
const CONV_SHAPES: [(&str, usize, usize, usize, usize); 5] = [
    ("stem_3to16_32x32", 3, 16, 32, 1),
    ("stage1_16to16_32x32", 16, 16, 32, 1),
    ("stage2_down_16to32_32x32_s2", 16, 32, 32, 2),
    ("stage2_32to32_16x16", 32, 32, 16, 1),
    ("stage3_64to64_8x8", 64, 64, 8, 1),
];
const CONV_BATCH: usize = 128;

fn bench_conv(c: &mut Criterion) {
    let mut rng = Rng::seed(0);
    let mut layers = Vec::new();
    for &(name, cin, cout, size, stride) in &CONV_SHAPES {
        let cfg = Conv2dConfig::new(cin, cout, 3)
            .stride(stride)
            .padding(1)
            .bias(false);
        let conv = Conv2d::<f32>::new(cfg, &mut rng).unwrap();
        let mut x = Array4::<f32>::zeros((CONV_BATCH, cin, size, size));
        rng.fill_normal(x.as_slice_mut().unwrap(), 0.0, 1.0);
        let out = size.div_ceil(stride);
        // One image: C_out·OH·OW outputs, each C_in·9 multiply-adds.
        let flops = 2 * CONV_BATCH * cout * out * out * cin * 9;
        layers.push((name, conv, x, flops));
    }

    let mut group = c.benchmark_group("conv2d_forward_flops");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, conv, x, flops) in &mut layers {
        group.throughput(Throughput::Elements(*flops as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("b128_{name}")),
            |bench| bench.iter(|| conv.forward(black_box(x.view()), Mode::Eval).unwrap()),
        );
    }
    group.finish();

    // Backward: ∂x (Wᵀ·dy, col2im) and ∂W (dy·colsᵀ), twice the forward's products. The
    // train-mode forward before each backward is not timed.
    let mut group = c.benchmark_group("conv2d_backward_flops");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, conv, x, flops) in &mut layers {
        let y = conv.forward(x.view(), Mode::Train).unwrap();
        let mut dy = Array4::<f32>::zeros(y.raw_dim());
        rng.fill_normal(dy.as_slice_mut().unwrap(), 0.0, 1.0);
        group.throughput(Throughput::Elements(2 * *flops as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("b128_{name}")),
            |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        black_box(conv.forward(x.view(), Mode::Train).unwrap());
                        let t0 = Instant::now();
                        black_box(conv.backward(dy.view()).unwrap());
                        total += t0.elapsed();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

fn bench_lstm(c: &mut Criterion) {
    // The lstm_train shape, time-major: (T, B, I) = (100, 64, 32), H = 256.
    let (t_len, batch, input, hidden) = (100, 64, 32, 256);
    let mut rng = Rng::seed(0);
    let cfg = RecurrentConfig::new(CellKind::Lstm, input, hidden);
    let mut lstm = Recurrent::<f32>::new(cfg, &mut rng).unwrap();
    let mut x = Array3::<f32>::zeros((t_len, batch, input));
    rng.fill_normal(x.as_slice_mut().unwrap(), 0.0, 1.0);
    let mut d_out = Array3::<f32>::zeros((t_len, batch, hidden));
    rng.fill_normal(d_out.as_slice_mut().unwrap(), 0.0, 1.0);
    // Forward: X·W_ihᵀ over all steps plus h·W_hhᵀ per step.
    let forward_flops = 2 * t_len * batch * 4 * hidden * (input + hidden);

    let mut group = c.benchmark_group("lstm_layer_flops");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(forward_flops as u64));
    group.bench_function("forward_train_t100_b64_i32_h256", |bench| {
        bench.iter(|| {
            lstm.forward(SeqInput::new(x.view()), Mode::Train, &mut rng)
                .unwrap()
        })
    });
    group.bench_function("forward_eval_t100_b64_i32_h256", |bench| {
        bench.iter(|| {
            lstm.forward(SeqInput::new(x.view()), Mode::Eval, &mut rng)
                .unwrap()
        })
    });
    // Backward: dh·W_hh per step, and ∂W_ih, ∂W_hh, ∂X over all steps: twice the forward's
    // products. The train-mode forward before each backward is not timed.
    group.throughput(Throughput::Elements(2 * forward_flops as u64));
    group.bench_function("backward_t100_b64_i32_h256", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                black_box(
                    lstm.forward(SeqInput::new(x.view()), Mode::Train, &mut rng)
                        .unwrap(),
                );
                let t0 = Instant::now();
                black_box(lstm.backward(d_out.view(), None, None).unwrap());
                total += t0.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(kernels, bench_gemm, bench_conv, bench_lstm);
criterion_main!(kernels);
