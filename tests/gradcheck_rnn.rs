//! Finite-difference gradient checks (f64) of the recurrent layers and cells: every parameter,
//! the input and the initial states, for every cell type, multi-layer, bidirectional, with
//! initial states, with variable lengths, batch-first and with dropout between layers.

use ndarray::{Array2, Array3, ArrayD, Axis};
use skipgate::gradcheck::{EPS, assert_close, check_params, numeric_grad};
use skipgate::rnn::{Cell, CellKind, Recurrent, RecurrentConfig, RecurrentInit, SeqInput};
use skipgate::{Mode, Module, Rng, init};

const RTOL: f64 = 1e-6;
const ATOL: f64 = 1e-8;

struct Case {
    cfg: RecurrentConfig,
    t_len: usize,
    batch: usize,
    with_state: bool,
    lengths: Option<Vec<usize>>,
}

/// Random data of a case: input, h0, c0, and upstream gradients for output, h_n, c_n.
struct Data {
    x: Array3<f64>,
    h0: Array3<f64>,
    c0: Array3<f64>,
    g_out: Array3<f64>,
    g_h: Array3<f64>,
    g_c: Array3<f64>,
}

fn data(case: &Case, rng: &mut Rng) -> Data {
    let c = &case.cfg;
    let x_shape = if c.batch_first {
        (case.batch, case.t_len, c.input_size)
    } else {
        (case.t_len, case.batch, c.input_size)
    };
    let out_shape = (x_shape.0, x_shape.1, c.output_size());
    let st = (c.num_layers * c.directions(), case.batch, c.hidden_size);
    Data {
        x: init::normal(x_shape, 0.0, 1.0, rng),
        h0: init::normal(st, 0.0, 0.5, rng),
        c0: init::normal(st, 0.0, 0.5, rng),
        g_out: init::normal(out_shape, 0.0, 1.0, rng),
        g_h: init::normal(st, 0.0, 1.0, rng),
        g_c: init::normal(st, 0.0, 1.0, rng),
    }
}

/// L = Σ output ⊙ g_out + Σ h_n ⊙ g_h (+ Σ c_n ⊙ g_c); dropout masks come from a fixed seed, so
/// every evaluation sees the same mask.
fn loss(
    m: &mut Recurrent<f64>,
    case: &Case,
    d: &Data,
    x: &Array3<f64>,
    h0: &Array3<f64>,
    c0: &Array3<f64>,
    backward: bool,
) -> f64 {
    let mut inp = SeqInput::new(x.view());
    if case.with_state {
        inp = inp.h0(h0.view());
        if case.cfg.kind == CellKind::Lstm {
            inp = inp.c0(c0.view());
        }
    }
    if let Some(l) = &case.lengths {
        inp = inp.lengths(l);
    }
    let out = m.forward(inp, Mode::Train, &mut Rng::seed(99)).unwrap();
    let mut l = (&out.output * &d.g_out).sum() + (&out.h_n * &d.g_h).sum();
    if let Some(c_n) = &out.c_n {
        l += (c_n * &d.g_c).sum();
    }
    if backward {
        let gc = out.c_n.as_ref().map(|_| d.g_c.view());
        m.backward(d.g_out.view(), Some(d.g_h.view()), gc).unwrap();
    }
    l
}

fn check(case: Case) {
    let mut rng = Rng::seed(1234);
    let mut m = Recurrent::<f64>::with_init(
        case.cfg.clone(),
        &RecurrentInit {
            forget_bias: None,
            orthogonal_recurrent: false,
        },
        &mut rng,
    )
    .unwrap();
    // Larger weights than the default make the nonlinearities work harder.
    m.visit_params(&mut |_, mut p| p.value.mapv_inplace(|v| v * 2.0));
    let d = data(&case, &mut rng);
    let name = format!("{:?}", case.cfg);

    // Parameters.
    check_params(&mut m, RTOL, ATOL, |m| {
        m.zero_grad();
        loss(m, &case, &d, &d.x, &d.h0, &d.c0, true)
    });

    // Input and initial states.
    m.zero_grad();
    let mut inp = SeqInput::new(d.x.view());
    if case.with_state {
        inp = inp.h0(d.h0.view());
        if case.cfg.kind == CellKind::Lstm {
            inp = inp.c0(d.c0.view());
        }
    }
    if let Some(l) = &case.lengths {
        inp = inp.lengths(l);
    }
    let out = m.forward(inp, Mode::Train, &mut Rng::seed(99)).unwrap();
    let gc = out.c_n.as_ref().map(|_| d.g_c.view());
    let grads = m.backward(d.g_out.view(), Some(d.g_h.view()), gc).unwrap();

    let dx = numeric_grad(&d.x.clone().into_dyn(), EPS, |x| {
        let x = x.clone().into_dimensionality().unwrap();
        loss(&mut m, &case, &d, &x, &d.h0, &d.c0, false)
    });
    assert_close(
        &format!("{name}: ∂L/∂input"),
        grads.d_input.view().into_dyn(),
        dx.view(),
        RTOL,
        ATOL,
    );
    if case.with_state {
        let dh0 = numeric_grad(&d.h0.clone().into_dyn(), EPS, |h0| {
            let h0 = h0.clone().into_dimensionality().unwrap();
            loss(&mut m, &case, &d, &d.x, &h0, &d.c0, false)
        });
        assert_close(
            &format!("{name}: ∂L/∂h0"),
            grads.d_h0.view().into_dyn(),
            dh0.view(),
            RTOL,
            ATOL,
        );
        if case.cfg.kind == CellKind::Lstm {
            let dc0 = numeric_grad(&d.c0.clone().into_dyn(), EPS, |c0| {
                let c0 = c0.clone().into_dimensionality().unwrap();
                loss(&mut m, &case, &d, &d.x, &d.h0, &c0, false)
            });
            let a = grads.d_c0.as_ref().unwrap().view().into_dyn();
            assert_close(&format!("{name}: ∂L/∂c0"), a, dc0.view(), RTOL, ATOL);
        }
    }
}

fn all_kinds(f: impl Fn(CellKind)) {
    for kind in CellKind::ALL {
        f(kind);
    }
}

#[test]
fn single_layer() {
    all_kinds(|kind| {
        check(Case {
            cfg: RecurrentConfig::new(kind, 3, 4),
            t_len: 5,
            batch: 2,
            with_state: false,
            lengths: None,
        })
    });
}

#[test]
fn two_layers_bidirectional_with_initial_states() {
    all_kinds(|kind| {
        check(Case {
            cfg: RecurrentConfig::new(kind, 3, 4)
                .layers(2)
                .bidirectional(true),
            t_len: 4,
            batch: 2,
            with_state: true,
            lengths: None,
        })
    });
}

#[test]
fn variable_lengths_bidirectional() {
    all_kinds(|kind| {
        check(Case {
            cfg: RecurrentConfig::new(kind, 2, 3)
                .layers(2)
                .bidirectional(true),
            t_len: 5,
            batch: 3,
            with_state: true,
            lengths: Some(vec![5, 2, 4]),
        })
    });
}

#[test]
fn batch_first_with_lengths() {
    all_kinds(|kind| {
        check(Case {
            cfg: RecurrentConfig::new(kind, 3, 4).batch_first(true),
            t_len: 4,
            batch: 3,
            with_state: true,
            lengths: Some(vec![1, 4, 3]),
        })
    });
}

#[test]
fn dropout_between_layers() {
    all_kinds(|kind| {
        check(Case {
            cfg: RecurrentConfig::new(kind, 3, 4).layers(3).dropout(0.4),
            t_len: 3,
            batch: 2,
            with_state: false,
            lengths: None,
        })
    });
}

/// Cells: parameters, input and states, every kind.
#[test]
fn cells() {
    for kind in CellKind::ALL {
        let mut rng = Rng::seed(5);
        let mut cell = Cell::<f64>::new(kind, 3, 4, &mut rng).unwrap();
        cell.visit_params(&mut |_, mut p| p.value.mapv_inplace(|v| v * 2.0));
        let x: Array2<f64> = init::normal((2, 3), 0.0, 1.0, &mut rng);
        let h: Array2<f64> = init::normal((2, 4), 0.0, 0.5, &mut rng);
        let c: Array2<f64> = init::normal((2, 4), 0.0, 0.5, &mut rng);
        let gh: Array2<f64> = init::normal((2, 4), 0.0, 1.0, &mut rng);
        let gc: Array2<f64> = init::normal((2, 4), 0.0, 1.0, &mut rng);
        let lstm = kind == CellKind::Lstm;
        let run = |cell: &mut Cell<f64>,
                   x: &Array2<f64>,
                   h: &Array2<f64>,
                   c: &Array2<f64>,
                   mode: Mode| {
            let out = cell
                .forward(x.view(), h.view(), lstm.then(|| c.view()), mode)
                .unwrap();
            (&out.h * &gh).sum() + out.c.map_or(0.0, |cn| (&cn * &gc).sum())
        };
        check_params(&mut cell, RTOL, ATOL, |cell| {
            cell.zero_grad();
            let l = run(cell, &x, &h, &c, Mode::Train);
            cell.backward(gh.view(), lstm.then(|| gc.view())).unwrap();
            l
        });
        run(&mut cell, &x, &h, &c, Mode::Train);
        let g = cell.backward(gh.view(), lstm.then(|| gc.view())).unwrap();
        let as2 = |a: &ArrayD<f64>| a.clone().into_dimensionality::<ndarray::Ix2>().unwrap();
        let dx = numeric_grad(&x.clone().into_dyn(), EPS, |v| {
            run(&mut cell, &as2(v), &h, &c, Mode::Eval)
        });
        assert_close(
            &format!("{kind} cell ∂L/∂x"),
            g.d_x.view().into_dyn(),
            dx.view(),
            RTOL,
            ATOL,
        );
        let dh = numeric_grad(&h.clone().into_dyn(), EPS, |v| {
            run(&mut cell, &x, &as2(v), &c, Mode::Eval)
        });
        assert_close(
            &format!("{kind} cell ∂L/∂h"),
            g.d_h.view().into_dyn(),
            dh.view(),
            RTOL,
            ATOL,
        );
        if lstm {
            let dc = numeric_grad(&c.clone().into_dyn(), EPS, |v| {
                run(&mut cell, &x, &h, &as2(v), Mode::Eval)
            });
            assert_close(
                "lstm cell ∂L/∂c",
                g.d_c.unwrap().view().into_dyn(),
                dc.view(),
                RTOL,
                ATOL,
            );
        }
    }
}

/// The per-step norms reported by backward are the norms of ∂L/∂h_t, checked by finite
/// differences on a perturbation of h_t: for a one-layer RNN with the loss on the last output
/// only, ∂L/∂h_0-input of a chunk starting at step t equals the gradient at h_{t−1}.
#[test]
fn step_grad_norms_are_gradients_of_the_hidden_state() {
    for kind in CellKind::ALL {
        let mut rng = Rng::seed(11);
        let (t_len, batch, hid) = (6, 2, 3);
        let mut m = Recurrent::<f64>::new(RecurrentConfig::new(kind, 2, hid), &mut rng).unwrap();
        let x: Array3<f64> = init::normal((t_len, batch, 2), 0.0, 1.0, &mut rng);
        let mut g = Array3::<f64>::zeros((t_len, batch, hid));
        g.index_axis_mut(Axis(0), t_len - 1).fill(1.0);
        m.forward(SeqInput::new(x.view()), Mode::Train, &mut rng)
            .unwrap();
        let grads = m.backward(g.view(), None, None).unwrap();
        let norms = grads.step_grad_norms.row(0).to_owned();
        // Reference: split the sequence at step t; the gradient w.r.t. the state entering the
        // second part is ∂L/∂h_{t−1}, which the split run returns as d_h0 (d_c0 is not counted).
        for t in 1..t_len {
            let first = x.slice(ndarray::s![..t, .., ..]).to_owned();
            let rest = x.slice(ndarray::s![t.., .., ..]).to_owned();
            let a = m
                .forward(SeqInput::new(first.view()), Mode::Eval, &mut rng)
                .unwrap();
            let mut inp = SeqInput::new(rest.view()).h0(a.h_n.view());
            if let Some(c) = &a.c_n {
                inp = inp.c0(c.view());
            }
            m.forward(inp, Mode::Train, &mut rng).unwrap();
            let mut g2 = Array3::<f64>::zeros((t_len - t, batch, hid));
            g2.index_axis_mut(Axis(0), t_len - t - 1).fill(1.0);
            let gr = m.backward(g2.view(), None, None).unwrap();
            let want = gr.d_h0.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(
                (norms[t - 1] - want).abs() <= 1e-12 * want.max(1.0),
                "{kind} t={t}: {} vs {want}",
                norms[t - 1]
            );
        }
        let last = g
            .index_axis(Axis(0), t_len - 1)
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        assert!((norms[t_len - 1] - last).abs() < 1e-12);
    }
}
