//! Structural properties of the recurrent layers that must hold exactly: stepping a cell T times
//! equals one T-step call (forward and backward), variable lengths equal running each sequence
//! alone, truncated BPTT carries the state exactly, batch-first is a transpose, and the
//! initialisation options do what they say.

mod common;

use ndarray::{Array2, Array3, Axis, s};
use skipgate::rnn::{Cell, CellKind, Recurrent, RecurrentConfig, RecurrentInit, SeqInput};
use skipgate::{Error, Mode, Module, Rng, init};

fn max_diff(a: &ndarray::ArrayViewD<f64>, b: &ndarray::ArrayViewD<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Copies the layer's parameters into a cell (same names without the `_l0` suffix).
fn cell_like(layer: &mut Recurrent<f64>, kind: CellKind, i: usize, h: usize) -> Cell<f64> {
    let mut cell = Cell::new(kind, i, h, &mut Rng::seed(0)).unwrap();
    let mut values = Vec::new();
    layer.visit_params(&mut |_, p| values.push(p.value.to_owned()));
    let mut k = 0;
    cell.visit_params(&mut |_, mut p| {
        p.value.assign(&values[k]);
        k += 1;
    });
    cell
}

#[test]
fn t_cell_steps_equal_one_layer_call_forward_and_backward() {
    for kind in CellKind::ALL {
        let (t_len, batch, i, h) = (7, 3, 2, 5);
        let mut rng = Rng::seed(21);
        let mut layer = Recurrent::<f64>::new(RecurrentConfig::new(kind, i, h), &mut rng).unwrap();
        let mut cell = cell_like(&mut layer, kind, i, h);
        let x: Array3<f64> = init::normal((t_len, batch, i), 0.0, 1.0, &mut rng);
        let g: Array3<f64> = init::normal((t_len, batch, h), 0.0, 1.0, &mut rng);

        let out = layer
            .forward(SeqInput::new(x.view()), Mode::Train, &mut rng)
            .unwrap();
        let grads = layer.backward(g.view(), None, None).unwrap();

        let mut hs = Array2::<f64>::zeros((batch, h));
        let mut cs = Array2::<f64>::zeros((batch, h));
        let lstm = kind == CellKind::Lstm;
        for t in 0..t_len {
            let o = cell
                .forward(
                    x.index_axis(Axis(0), t),
                    hs.view(),
                    lstm.then(|| cs.view()),
                    Mode::Train,
                )
                .unwrap();
            let row = out.output.index_axis(Axis(0), t);
            assert!(
                max_diff(&o.h.view().into_dyn(), &row.into_dyn()) < 1e-14,
                "{kind} step {t}"
            );
            hs = o.h;
            if let Some(c) = o.c {
                cs = c;
            }
        }
        let mut dh = Array2::<f64>::zeros((batch, h));
        let mut dc = Array2::<f64>::zeros((batch, h));
        let mut dx = Array3::<f64>::zeros((t_len, batch, i));
        for t in (0..t_len).rev() {
            dh += &g.index_axis(Axis(0), t);
            let gr = cell.backward(dh.view(), lstm.then(|| dc.view())).unwrap();
            dx.index_axis_mut(Axis(0), t).assign(&gr.d_x);
            dh = gr.d_h;
            if let Some(c) = gr.d_c {
                dc = c;
            }
        }
        assert_eq!(cell.pending_steps(), 0);
        assert!(max_diff(&dx.view().into_dyn(), &grads.d_input.view().into_dyn()) < 1e-12);
        let mut layer_grads = Vec::new();
        layer.visit_params(&mut |_, p| layer_grads.push(p.grad.to_owned()));
        let mut k = 0;
        cell.visit_params(&mut |name, p| {
            let d = max_diff(&p.grad.view(), &layer_grads[k].view());
            assert!(d < 1e-12, "{kind} {name}: {d}");
            k += 1;
        });
    }
}

#[test]
fn variable_lengths_equal_running_each_sequence_alone() {
    for kind in CellKind::ALL {
        let (t_len, i, h) = (6, 2, 3);
        let lengths = [6usize, 2, 4];
        let mut rng = Rng::seed(8);
        let cfg = RecurrentConfig::new(kind, i, h)
            .layers(2)
            .bidirectional(true);
        let mut m = Recurrent::<f64>::new(cfg, &mut rng).unwrap();
        let x: Array3<f64> = init::normal((t_len, 3, i), 0.0, 1.0, &mut rng);
        let packed = m
            .forward(
                SeqInput::new(x.view()).lengths(&lengths),
                Mode::Eval,
                &mut rng,
            )
            .unwrap();
        for (b, &len) in lengths.iter().enumerate() {
            let alone = x.slice(s![..len, b..b + 1, ..]).to_owned();
            let one = m
                .forward(SeqInput::new(alone.view()), Mode::Eval, &mut rng)
                .unwrap();
            let got = packed.output.slice(s![..len, b..b + 1, ..]);
            assert!(
                max_diff(&got.into_dyn(), &one.output.view().into_dyn()) < 1e-14,
                "{kind} b={b}"
            );
            let past = packed.output.slice(s![len.., b, ..]);
            assert!(
                past.iter().all(|&v| v == 0.0),
                "{kind}: output past the length must be 0"
            );
            let hn = packed.h_n.slice(s![.., b..b + 1, ..]);
            assert!(
                max_diff(&hn.into_dyn(), &one.h_n.view().into_dyn()) < 1e-14,
                "{kind} h_n b={b}"
            );
            if let (Some(cp), Some(co)) = (&packed.c_n, &one.c_n) {
                let cn = cp.slice(s![.., b..b + 1, ..]);
                assert!(max_diff(&cn.into_dyn(), &co.view().into_dyn()) < 1e-14);
            }
        }
    }
}

#[test]
fn truncated_bptt_carries_the_state_exactly_and_cuts_the_gradient() {
    for kind in CellKind::ALL {
        let (t_len, batch, i, h) = (8, 2, 3, 4);
        let mut rng = Rng::seed(3);
        let mut m =
            Recurrent::<f64>::new(RecurrentConfig::new(kind, i, h).layers(2), &mut rng).unwrap();
        let x: Array3<f64> = init::normal((t_len, batch, i), 0.0, 1.0, &mut rng);
        let whole = m
            .forward(SeqInput::new(x.view()), Mode::Eval, &mut rng)
            .unwrap();
        let first = x.slice(s![..5, .., ..]).to_owned();
        let second = x.slice(s![5.., .., ..]).to_owned();
        let a = m
            .forward(SeqInput::new(first.view()), Mode::Eval, &mut rng)
            .unwrap();
        let mut inp = SeqInput::new(second.view()).h0(a.h_n.view());
        if let Some(c) = &a.c_n {
            inp = inp.c0(c.view());
        }
        let b = m.forward(inp, Mode::Train, &mut rng).unwrap();
        let tail = whole.output.slice(s![5.., .., ..]);
        assert!(
            max_diff(&tail.into_dyn(), &b.output.view().into_dyn()) < 1e-14,
            "{kind}"
        );
        assert!(max_diff(&whole.h_n.view().into_dyn(), &b.h_n.view().into_dyn()) < 1e-14);
        // The chunk's parameter gradients are those of the second chunk alone: the state that came
        // in is a constant. Compare with an untruncated backward, which must differ.
        m.zero_grad();
        let g: Array3<f64> = init::normal((3, batch, h), 0.0, 1.0, &mut rng);
        let gr = m.backward(g.view(), None, None).unwrap();
        assert_eq!(gr.d_h0.shape(), &[2, batch, h]);
        let mut chunk_grad = Vec::new();
        m.visit_params(&mut |_, p| chunk_grad.push(p.grad.to_owned()));
        m.zero_grad();
        m.forward(SeqInput::new(x.view()), Mode::Train, &mut rng)
            .unwrap();
        let mut g_full = Array3::<f64>::zeros((t_len, batch, h));
        g_full.slice_mut(s![5.., .., ..]).assign(&g);
        m.backward(g_full.view(), None, None).unwrap();
        let mut k = 0;
        let mut some_differ = false;
        m.visit_params(&mut |_, p| {
            some_differ |= max_diff(&p.grad.view(), &chunk_grad[k].view()) > 1e-6;
            k += 1;
        });
        assert!(
            some_differ,
            "{kind}: full BPTT reaches the first chunk; truncated must not"
        );
    }
}

#[test]
fn batch_first_is_the_transpose_of_seq_first() {
    for kind in CellKind::ALL {
        let mut rng = Rng::seed(4);
        let cfg = RecurrentConfig::new(kind, 3, 4).bidirectional(true);
        let mut a = Recurrent::<f64>::new(cfg.clone(), &mut Rng::seed(1)).unwrap();
        let mut b = Recurrent::<f64>::new(cfg.batch_first(true), &mut Rng::seed(1)).unwrap();
        let x: Array3<f64> = init::normal((5, 2, 3), 0.0, 1.0, &mut rng);
        let xb = x.view().permuted_axes([1, 0, 2]).to_owned();
        let oa = a
            .forward(SeqInput::new(x.view()), Mode::Eval, &mut rng)
            .unwrap();
        let ob = b
            .forward(SeqInput::new(xb.view()), Mode::Eval, &mut rng)
            .unwrap();
        assert_eq!(ob.output.shape(), &[2, 5, 8]);
        let oat = oa.output.view().permuted_axes([1, 0, 2]);
        assert!(max_diff(&oat.into_dyn(), &ob.output.view().into_dyn()) == 0.0);
        assert_eq!(oa.h_n, ob.h_n);
    }
}

#[test]
fn output_shapes_and_parameter_names_follow_pytorch() {
    let mut rng = Rng::seed(0);
    let cfg = RecurrentConfig::new(CellKind::Lstm, 10, 20)
        .layers(2)
        .bidirectional(true);
    let mut m = Recurrent::<f32>::new(cfg, &mut rng).unwrap();
    let shapes = m.param_shapes();
    let names: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_ih_l0_reverse",
            "weight_hh_l0_reverse",
            "bias_ih_l0_reverse",
            "bias_hh_l0_reverse",
            "weight_ih_l1",
            "weight_hh_l1",
            "bias_ih_l1",
            "bias_hh_l1",
            "weight_ih_l1_reverse",
            "weight_hh_l1_reverse",
            "bias_ih_l1_reverse",
            "bias_hh_l1_reverse",
        ]
    );
    assert_eq!(shapes[0].1, vec![80, 10]);
    assert_eq!(shapes[1].1, vec![80, 20]);
    assert_eq!(shapes[8].1, vec![80, 40]);
    assert_eq!(shapes[10].1, vec![80]);
    let x = Array3::<f32>::zeros((7, 3, 10));
    let out = m
        .forward(SeqInput::new(x.view()), Mode::Eval, &mut rng)
        .unwrap();
    assert_eq!(out.output.shape(), &[7, 3, 40]);
    assert_eq!(out.h_n.shape(), &[4, 3, 20]);
    assert_eq!(out.c_n.unwrap().shape(), &[4, 3, 20]);
}

#[test]
fn default_init_is_uniform_in_one_over_sqrt_hidden_and_options_apply() {
    let h = 64;
    let mut m = Recurrent::<f64>::new(RecurrentConfig::new(CellKind::Gru, 8, h), &mut Rng::seed(2))
        .unwrap();
    let bound = 1.0 / (h as f64).sqrt();
    m.visit_params(&mut |name, p| {
        let max = p.value.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(
            max <= bound && max > 0.9 * bound,
            "{name}: max |w| {max}, bound {bound}"
        );
    });
    let opts = RecurrentInit {
        forget_bias: Some(1.0),
        orthogonal_recurrent: true,
    };
    let mut lstm = Recurrent::<f64>::with_init(
        RecurrentConfig::new(CellKind::Lstm, 8, h),
        &opts,
        &mut Rng::seed(2),
    )
    .unwrap();
    let p = lstm.direction_params(0, 0);
    assert!(
        p.bias_ih
            .value
            .slice(s![h..2 * h])
            .iter()
            .all(|&v| v == 1.0)
    );
    assert!(
        p.bias_hh
            .value
            .slice(s![h..2 * h])
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(p.bias_ih.value.slice(s![..h]).iter().any(|&v| v != 1.0));
    for g in 0..4 {
        let w = p.weight_hh.value.slice(s![g * h..(g + 1) * h, ..]);
        let wtw = skipgate::gemm::matmul(w.t(), w);
        for ((r, c), v) in wtw.indexed_iter() {
            let want = if r == c { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-10, "gate {g}: WᵀW[{r},{c}] = {v}");
        }
    }
    let err = Recurrent::<f64>::with_init(
        RecurrentConfig::new(CellKind::Gru, 8, h),
        &opts,
        &mut Rng::seed(2),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("only the LSTM has a forget gate"),
        "{err}"
    );
    let _ = lstm.num_params();
}

fn err_of<T>(r: skipgate::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_name_what_was_expected_and_what_came() {
    let mut rng = Rng::seed(0);
    let cfg = RecurrentConfig::new(CellKind::Lstm, 4, 6).layers(2);
    let mut m = Recurrent::<f32>::new(cfg, &mut rng).unwrap();
    let x = Array3::<f32>::zeros((5, 3, 7));
    let e = err_of(m.forward(SeqInput::new(x.view()), Mode::Train, &mut rng));
    assert!(
        e.contains("LSTM::forward")
            && e.contains("expected (_, _, 4)")
            && e.contains("got (5, 3, 7)"),
        "{e}"
    );

    let x = Array3::<f32>::zeros((5, 3, 4));
    let h0 = Array3::<f32>::zeros((1, 3, 6));
    let e = err_of(m.forward(SeqInput::new(x.view()).h0(h0.view()), Mode::Train, &mut rng));
    assert!(
        e.contains("h0") && e.contains("expected (2, 3, 6)") && e.contains("got (1, 3, 6)"),
        "{e}"
    );

    let c0 = Array3::<f32>::zeros((2, 2, 6));
    let e = err_of(m.forward(SeqInput::new(x.view()).c0(c0.view()), Mode::Train, &mut rng));
    assert!(
        e.contains("c0") && e.contains("expected (2, 3, 6)") && e.contains("got (2, 2, 6)"),
        "{e}"
    );

    let e = err_of(m.forward(
        SeqInput::new(x.view()).lengths(&[5, 6, 1]),
        Mode::Train,
        &mut rng,
    ));
    assert!(e.contains("lengths[1] = 6") && e.contains("T = 5"), "{e}");
    let e = err_of(m.forward(
        SeqInput::new(x.view()).lengths(&[5, 0, 1]),
        Mode::Train,
        &mut rng,
    ));
    assert!(e.contains("lengths[1] = 0"), "{e}");
    let e = err_of(m.forward(
        SeqInput::new(x.view()).lengths(&[5, 1]),
        Mode::Train,
        &mut rng,
    ));
    assert!(e.contains("one length per sequence (3), got 2"), "{e}");

    let empty = Array3::<f32>::zeros((0, 3, 4));
    let e = err_of(m.forward(SeqInput::new(empty.view()), Mode::Train, &mut rng));
    assert!(e.contains("at least one time step"), "{e}");

    let mut gru =
        Recurrent::<f32>::new(RecurrentConfig::new(CellKind::Gru, 4, 6), &mut rng).unwrap();
    let c0 = Array3::<f32>::zeros((1, 3, 6));
    let e = err_of(gru.forward(SeqInput::new(x.view()).c0(c0.view()), Mode::Train, &mut rng));
    assert!(e.contains("gru has no cell state"), "{e}");

    // Backward before forward, after an eval forward, and with a wrong gradient shape.
    let g = Array3::<f32>::zeros((5, 3, 6));
    assert!(matches!(
        gru.backward(g.view(), None, None),
        Err(Error::NoForwardCache { .. })
    ));
    gru.forward(SeqInput::new(x.view()), Mode::Eval, &mut rng)
        .unwrap();
    assert!(matches!(
        gru.backward(g.view(), None, None),
        Err(Error::NoForwardCache { .. })
    ));
    gru.forward(SeqInput::new(x.view()), Mode::Train, &mut rng)
        .unwrap();
    let bad = Array3::<f32>::zeros((5, 3, 7));
    let e = err_of(gru.backward(bad.view(), None, None));
    assert!(
        e.contains("d_output") && e.contains("expected (5, 3, 6)"),
        "{e}"
    );
    // The cache survives a rejected call.
    gru.backward(g.view(), None, None).unwrap();

    let e = err_of(Recurrent::<f32>::new(
        RecurrentConfig::new(CellKind::Tanh, 4, 6).dropout(1.0),
        &mut rng,
    ));
    assert!(e.contains("dropout") && e.contains("got 1"), "{e}");
    let e = err_of(Recurrent::<f32>::new(
        RecurrentConfig::new(CellKind::Tanh, 0, 6),
        &mut rng,
    ));
    assert!(e.contains("must be positive"), "{e}");

    let mut cell = Cell::<f32>::new(CellKind::Gru, 4, 6, &mut rng).unwrap();
    let xs = Array2::<f32>::zeros((3, 5));
    let hs = Array2::<f32>::zeros((3, 6));
    let e = err_of(cell.forward(xs.view(), hs.view(), None, Mode::Train));
    assert!(
        e.contains("expected (3, 4)") && e.contains("got (3, 5)"),
        "{e}"
    );
    assert!(matches!(
        cell.backward(hs.view(), None),
        Err(Error::NoForwardCache { .. })
    ));
    let e = "rnn-sigmoid".parse::<CellKind>().unwrap_err().to_string();
    assert!(
        e.contains("rnn, rnn-relu, lstm, gru") && e.contains("rnn-sigmoid"),
        "{e}"
    );
}

/// The time loop splits large steps into blocks of batch rows (and the GEMM splits its columns)
/// over the pool's threads: outputs, final states, every gradient and the per-step gradient norms
/// are the same bits for 1, 2 and 3 threads, for every cell, with lengths, in both directions.
#[test]
fn results_are_bitwise_identical_for_1_2_and_3_threads() {
    for kind in CellKind::ALL {
        // B·G·H ≥ 8192 for every cell (the split time loop), and the LSTM and GRU steps are
        // products large enough for the GEMM to split their columns.
        let (t_len, batch, i, h) = (6, 37, 5, 224);
        let run = |threads: usize| {
            common::on_threads(threads, || {
                let mut rng = Rng::seed(5);
                let config = RecurrentConfig::new(kind, i, h).bidirectional(true);
                let mut layer = Recurrent::<f32>::new(config, &mut rng).unwrap();
                let x: Array3<f32> = init::normal((t_len, batch, i), 0.0, 1.0, &mut rng);
                let g: Array3<f32> = init::normal((t_len, batch, 2 * h), 0.0, 1.0, &mut rng);
                let lengths: Vec<usize> = (0..batch).map(|b| 1 + b % t_len).collect();
                let out = layer
                    .forward(
                        SeqInput::new(x.view()).lengths(&lengths),
                        Mode::Train,
                        &mut rng,
                    )
                    .unwrap();
                let grads = layer.backward(g.view(), None, None).unwrap();
                let mut params = Vec::new();
                layer.visit_params(&mut |_, p| params.push(p.grad.to_owned()));
                (
                    out.output,
                    out.h_n,
                    grads.d_input,
                    grads.step_grad_norms,
                    params,
                )
            })
        };
        let one = run(1);
        assert_eq!(one, run(2), "{kind:?}: 1 vs 2 threads");
        assert_eq!(one, run(3), "{kind:?}: 1 vs 3 threads");
    }
}
