//! End-to-end tests of the `skipgate` binary: every command, its outputs and its error messages.

use std::path::Path;
use std::process::{Command, Output};

use skipgate::io::TensorFile;

fn skipgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skipgate"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and requires success, returning stdout.
fn ok(args: &[&str]) -> String {
    let o = skipgate(args);
    assert!(
        o.status.success(),
        "skipgate {args:?} failed:\n{}",
        stderr(&o)
    );
    stdout(&o)
}

/// Runs and requires failure, returning stderr (which must start with `error:`).
fn fails(args: &[&str]) -> String {
    let o = skipgate(args);
    assert!(
        !o.status.success(),
        "skipgate {args:?} should fail; stdout:\n{}",
        stdout(&o)
    );
    let e = stderr(&o);
    assert!(e.contains("error"), "{e}");
    e
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn train_sum_writes_a_run_directory_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sum");
    let s = ok(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "300",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(s.contains("steps            300 (from 0)"), "{s}");
    assert!(s.contains("test_mse") && s.contains("baseline_mse"), "{s}");
    for f in [
        "model.safetensors",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "summary.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The model file has PyTorch names and the run's description.
    let m = TensorFile::read(out.join("model.safetensors")).unwrap();
    assert_eq!(
        m.names(),
        [
            "head.bias",
            "head.weight",
            "rnn.bias_hh_l0",
            "rnn.bias_ih_l0",
            "rnn.weight_hh_l0",
            "rnn.weight_ih_l0"
        ]
    );
    assert_eq!(m.get("rnn.weight_hh_l0").unwrap().shape(), &[10, 10]);
    assert!(m.metadata["skipgate.task"].contains("\"task\":\"sum\""));
    // summary.json: the settings as JSON values.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let opt = &summary["settings"]["optimizer"];
    assert_eq!(opt["kind"], "adam");
    assert_eq!(opt["lr"], 0.01);
    assert_eq!(opt["betas"], serde_json::json!([0.9, 0.999]));
    assert_eq!(summary["settings"]["seed"], 0);
    // Resume to more steps continues from 300.
    let s = ok(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "400",
        "--quiet",
        "--resume",
        "--out",
        p(&out),
    ]);
    assert!(s.contains("steps            400 (from 300)"), "{s}");
    // report.html: four figures, captioned with the command line of the resumed invocation,
    // covering all 400 steps.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    let command = format!(
        "<code>skipgate train --task sum --steps 400 --quiet --resume --out {}</code>; seed 0.",
        p(&out)
    );
    assert_eq!(html.matches(&command).count(), 4, "{command}\n{html}");
    let loss = std::fs::read_to_string(out.join("report-loss.csv")).unwrap();
    assert_eq!(
        loss.lines().filter(|l| l.starts_with("loss of")).count(),
        400
    );
}

#[test]
fn charlm_train_then_sample_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("tiny.txt");
    std::fs::write(
        &text,
        "to be or not to be, that is the question.\n".repeat(40),
    )
    .unwrap();
    let out = dir.path().join("lm");
    ok(&[
        "train",
        "--task",
        "charlm",
        "--text",
        p(&text),
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--seq-len",
        "16",
        "--batch",
        "4",
        "--steps",
        "20",
        "--quiet",
        "--out",
        p(&out),
    ]);
    let s = ok(&[
        "sample",
        "--checkpoint",
        p(&out),
        "--prime",
        "to be",
        "--len",
        "40",
        "--seed",
        "3",
    ]);
    let line = s.trim_end_matches('\n');
    assert!(line.starts_with("to be"), "{s}");
    assert_eq!(line.chars().count(), 45, "prime + 40 characters: {s:?}");
    let vocab: std::collections::BTreeSet<char> = "to be or not to be, that is the question.\n"
        .chars()
        .collect();
    assert!(line.chars().all(|c| vocab.contains(&c)), "{s:?}");
    assert_eq!(
        s,
        ok(&[
            "sample",
            "--checkpoint",
            p(&out),
            "--prime",
            "to be",
            "--len",
            "40",
            "--seed",
            "3"
        ])
    );

    let e = fails(&["sample", "--checkpoint", p(&out), "--prime", "Zebra"]);
    assert!(e.contains("'Z'"), "{e}");
    let sum = dir.path().join("sum");
    ok(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "2",
        "--quiet",
        "--out",
        p(&sum),
    ]);
    let e = fails(&["sample", "--checkpoint", p(&sum)]);
    assert!(
        e.contains("trained on the sum task, not a character language model"),
        "{e}"
    );
}

/// Splits a fixture into the two files `forward` reads: the state_dict, and the inputs.
fn split_fixture(case: &str, dir: &Path) -> (TensorFile, std::path::PathBuf, std::path::PathBuf) {
    let fx = TensorFile::read(format!(
        "{}/tests/fixtures/rnn/{case}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut weights = TensorFile::new();
    let mut inputs = TensorFile::new();
    for (name, t) in &fx.tensors {
        if ["input", "h0", "c0", "lengths"].contains(&name.as_str()) {
            inputs.insert(name.clone(), t.clone());
        } else if name.starts_with("weight_") || name.starts_with("bias_") {
            weights.insert(format!("rnn.{name}"), t.clone());
        }
    }
    let (w, i) = (
        dir.join(format!("{case}-w.safetensors")),
        dir.join(format!("{case}-in.safetensors")),
    );
    weights.write(&w).unwrap();
    inputs.write(&i).unwrap();
    (fx, w, i)
}

#[test]
fn forward_runs_pytorch_weights_like_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    // Both matrix-product paths: the AVX-512 kernel (where the CPU has it) and the general one
    // that CPUs without it take (forced with SKIPGATE_NO_AVX512).
    for ((case, arch, batch_first), general_path) in [
        ("lstm_lengths", "lstm", false),
        ("gru_deep_bidir_h0", "gru", false),
        ("rnn_relu_batch_first", "rnn-relu", true),
        ("rnn_tanh_basic", "rnn", false),
    ]
    .into_iter()
    .flat_map(|c| [(c, false), (c, true)])
    {
        let (fx, w, i) = split_fixture(case, dir.path());
        let out = dir.path().join(format!("{case}-out.safetensors"));
        let mut args = vec![
            "forward",
            "--weights",
            p(&w),
            "--input",
            p(&i),
            "--output",
            p(&out),
            "--arch",
            arch,
        ];
        if batch_first {
            args.push("--batch-first");
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_skipgate"));
        if general_path {
            command.env("SKIPGATE_NO_AVX512", "1");
        }
        let o = command.args(&args).output().unwrap();
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let got = TensorFile::read(&out).unwrap();
        let want_names: Vec<&str> = if arch == "lstm" {
            vec!["c_n", "h_n", "output"]
        } else {
            vec!["h_n", "output"]
        };
        assert_eq!(got.names(), want_names, "{case}");
        for name in want_names {
            let a = got.get_array::<f32>(name).unwrap();
            let b = fx.get_array::<f32>(name).unwrap();
            assert_eq!(a.shape(), b.shape(), "{case} {name}");
            for (x, y) in a.iter().zip(b.iter()) {
                assert!(
                    (x - y).abs() <= 1e-6 + 1e-5 * y.abs(),
                    "{case} {name}: {x} vs {y}"
                );
            }
        }
    }
}

#[test]
fn forward_errors_name_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let (_, w, i) = split_fixture("lstm_basic", dir.path());
    let out = dir.path().join("out.safetensors");
    let e = fails(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&i),
        "--output",
        p(&out),
        "--arch",
        "gru",
    ]);
    assert!(
        e.contains("--arch gru expects weight_ih_l0 with 3·hidden = 18 rows, found 24")
            && e.contains("LSTM"),
        "{e}"
    );
    let e = fails(&[
        "forward",
        "--weights",
        p(&i),
        "--input",
        p(&i),
        "--output",
        p(&out),
        "--arch",
        "lstm",
    ]);
    assert!(
        e.contains("no recurrent layer found") && e.contains("input"),
        "{e}"
    );
    let bytes = std::fs::read(&w).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let e = fails(&[
        "forward",
        "--weights",
        p(&truncated),
        "--input",
        p(&i),
        "--output",
        p(&out),
        "--arch",
        "lstm",
    ]);
    assert!(
        e.contains("truncated") && e.contains("truncated.safetensors"),
        "{e}"
    );
    let text = dir.path().join("not.safetensors");
    std::fs::write(&text, "hello, this is not a tensor file").unwrap();
    let e = fails(&[
        "forward",
        "--weights",
        p(&text),
        "--input",
        p(&i),
        "--output",
        p(&out),
        "--arch",
        "lstm",
    ]);
    assert!(e.contains("not a valid safetensors file"), "{e}");
    // Inputs of the wrong width, and an initial state of the wrong shape.
    let mut wide = TensorFile::new();
    wide.insert_array("input", ndarray::Array3::<f32>::zeros((5, 3, 7)).view());
    let wide_path = dir.path().join("wide.safetensors");
    wide.write(&wide_path).unwrap();
    let e = fails(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&wide_path),
        "--output",
        p(&out),
        "--arch",
        "lstm",
    ]);
    assert!(
        e.contains("LSTM::forward") && e.contains("expected (_, _, 4), got (5, 3, 7)"),
        "{e}"
    );
    let mut bad_h0 = TensorFile::new();
    bad_h0.insert_array("input", ndarray::Array3::<f32>::zeros((5, 3, 4)).view());
    bad_h0.insert_array("h0", ndarray::Array3::<f32>::zeros((2, 3, 6)).view());
    let bad_h0_path = dir.path().join("bad_h0.safetensors");
    bad_h0.write(&bad_h0_path).unwrap();
    let e = fails(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&bad_h0_path),
        "--output",
        p(&out),
        "--arch",
        "lstm",
    ]);
    assert!(
        e.contains("h0") && e.contains("expected (1, 3, 6), got (2, 3, 6)"),
        "{e}"
    );
    assert!(!out.exists(), "no output is written on error");
}

#[test]
fn train_rejects_bad_options_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--model",
        "transformer",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("rnn, rnn-relu, lstm, gru") && e.contains("transformer"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--task",
        "adding",
        "--epochs",
        "3",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("fresh data every step"), "{e}");
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--optimizer",
        "rmsprop",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("sgd, adam, adamw"), "{e}");
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--forget-bias",
        "1",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("only the LSTM has a forget gate"), "{e}");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = fails(&[
        "train",
        "--task",
        "charlm",
        "--text",
        p(&empty),
        "--out",
        p(&out),
    ]);
    assert!(e.contains("text is empty"), "{e}");
    let e = fails(&[
        "train",
        "--task",
        "charlm",
        "--text",
        "/no/such/file.txt",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("/no/such/file.txt"), "{e}");
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--resume",
        "--out",
        p(&dir.path().join("never")),
    ]);
    assert!(e.contains("checkpoint.safetensors"), "{e}");
}

#[test]
fn lab_quick_prints_every_experiment_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let s = ok(&["lab", "--quick", "--quiet", "--out", p(dir.path())]);
    for needle in [
        "1. The course's example",
        "2. The adding problem",
        "3. The gradient through time",
        "4. A character-level LSTM",
        "sample (temperature 0.8)",
        "5. The degradation problem",
        "Summary",
        "sum of a sequence (T=5)",
        "lstm 64 (forget bias 1)",
        "gradient reach, T=100, init",
        "char LM, tiny Shakespeare",
        "degradation, 8×8 digits",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
    for model in ["plain8", "plain14", "resnet8", "resnet14"] {
        assert!(
            s.lines()
                .any(|l| l.contains("degradation, 8×8 digits") && l.contains(model)),
            "no summary row for {model}:\n{s}"
        );
        assert!(
            dir.path()
                .join(format!("digits-{model}/model.safetensors"))
                .exists()
        );
    }
    assert!(dir.path().join("charlm-lstm/model.safetensors").exists());

    // The lab's own page: every figure inline, each with its CSV beside the page.
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    let ids = [
        "sum-mse",
        "adding-val-mse",
        "gradient-time-init",
        "gradient-time-adding-trained",
        "charlm-loss",
        "degradation-train-loss",
        "gradient-depth-init",
        "gradient-depth-trained",
    ];
    assert_eq!(page.matches("<figure").count(), ids.len(), "{page}");
    assert_eq!(page.matches("<svg").count(), ids.len());
    for id in ids {
        assert!(
            page.contains(&format!("<figure id=\"{id}\">")),
            "no figure {id}"
        );
        let csv = std::fs::read_to_string(dir.path().join(format!("{id}.csv"))).unwrap();
        assert!(csv.lines().count() > 2, "{id}.csv:\n{csv}");
    }
    assert!(page.contains("Command: <code>skipgate lab --quick --quiet --out"));
    assert!(page.contains("ROMEO:"), "the sample is on the page");

    // The T = 100 probe at initialisation: the printed medians are the figure's values at t = 1.
    let csv = std::fs::read_to_string(dir.path().join("gradient-time-init.csv")).unwrap();
    let first = |model: &str| -> f64 {
        let line = csv
            .lines()
            .find(|l| l.starts_with(&format!("{model},1,")))
            .unwrap_or_else(|| panic!("no t = 1 row for {model}:\n{csv}"));
        line.rsplit(',').next().unwrap().parse().unwrap()
    };
    let (rnn, lstm) = (first("rnn"), first("lstm"));
    assert!(rnn < lstm / 100.0, "rnn {rnn:e} vs lstm {lstm:e}");
    let printed = format!("{rnn:.3e}");
    assert!(s.contains(&printed), "{printed} not printed:\n{s}");

    // The page renders in a real browser with every figure's SVG (Debian's chromium; .ci/run
    // installs it, elsewhere the check runs where it is installed).
    if Path::new("/usr/bin/chromium").exists() {
        let shot = dir.path().join("lab.png");
        let o = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tools/render_report.sh"
        ))
        .args([p(&dir.path().join("report.html")), p(&shot)])
        .output()
        .unwrap();
        let out = stdout(&o);
        assert!(o.status.success(), "{out}{}", stderr(&o));
        assert!(
            out.contains("figures in the page: 8; rendered: 8, with an SVG: 8"),
            "{out}"
        );
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "a screenshot of the page"
        );
    } else {
        eprintln!("note: /usr/bin/chromium not installed; the lab report was not rendered");
    }
}

#[test]
fn runs_are_not_overwritten_by_accident_and_negative_values_parse() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    ok(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "3",
        "--quiet",
        "--out",
        p(&out),
    ]);
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "3",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("already holds a training run")
            && e.contains("--resume")
            && e.contains("--overwrite"),
        "{e}"
    );
    // Overwriting removes the old run's files, including a log of the other format.
    ok(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "3",
        "--quiet",
        "--log-format",
        "csv",
        "--overwrite",
        "--out",
        p(&out),
    ]);
    assert!(out.join("metrics.csv").exists() && !out.join("metrics.jsonl").exists());
    // A negative value is a value, not an unknown flag.
    let lstm = dir.path().join("lstm");
    ok(&[
        "train",
        "--task",
        "adding",
        "--model",
        "lstm",
        "--hidden",
        "4",
        "--seq-len",
        "6",
        "--forget-bias",
        "-1",
        "--steps",
        "2",
        "--quiet",
        "--out",
        p(&lstm),
    ]);
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--lr",
        "-1",
        "--out",
        p(&dir.path().join("neg")),
    ]);
    assert!(e.contains("lr") && e.contains("-1"), "{e}");
}

#[test]
fn charlm_refuses_a_bidirectional_model_and_options_of_other_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let e = fails(&[
        "train",
        "--task",
        "charlm",
        "--bidirectional",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("--bidirectional") && e.contains("read the very character"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--task",
        "adding",
        "--copy-len",
        "4",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("--copy-len") && e.contains("--task copy only"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--embedding",
        "4",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("--embedding") && e.contains("copy or charlm"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--train-size",
        "0",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("--train-size") && e.contains("at least 1"),
        "{e}"
    );
    let e = fails(&["train", "--task", "sum", "--epochs", "0", "--out", p(&out)]);
    assert!(e.contains("--epochs"), "{e}");
    let text = dir.path().join("short.txt");
    std::fs::write(
        &text,
        "a short text that leaves too little for validation ".repeat(2),
    )
    .unwrap();
    let e = fails(&[
        "train",
        "--task",
        "charlm",
        "--text",
        p(&text),
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("held out for validation") && e.contains("10%"),
        "{e}"
    );
}

#[test]
fn sample_reads_a_training_checkpoint_too_and_survives_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "abcabcabd\n".repeat(60)).unwrap();
    let out = dir.path().join("lm");
    ok(&[
        "train",
        "--task",
        "charlm",
        "--text",
        p(&text),
        "--hidden",
        "8",
        "--embedding",
        "4",
        "--seq-len",
        "8",
        "--batch",
        "2",
        "--steps",
        "3",
        "--quiet",
        "--out",
        p(&out),
    ]);
    let a = ok(&[
        "sample",
        "--checkpoint",
        p(&out.join("checkpoint.safetensors")),
        "--prime",
        "a",
        "--len",
        "30",
    ]);
    let b = ok(&[
        "sample",
        "--checkpoint",
        p(&out.join("model.safetensors")),
        "--prime",
        "a",
        "--len",
        "30",
    ]);
    assert_eq!(a, b);
    // A reader that stops early (`| head -c 5`) must not make skipgate panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_skipgate"))
        .args(["sample", "--checkpoint", p(&out), "--len", "20000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 5];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.status.success(), "exit {:?}: {err}", o.status);
}

#[test]
fn forward_pads_to_the_longest_sequence_and_rejects_unknown_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (fx, w, _) = split_fixture("gru_basic", dir.path());
    let x = fx.get_array::<f32>("input").unwrap(); // (5, 3, 4)
    let mut inputs = TensorFile::new();
    inputs.insert_array("input", x.view());
    inputs.insert_i64("lengths", ndarray::arr1(&[3i64, 1, 2]).view());
    let i = dir.path().join("in.safetensors");
    inputs.write(&i).unwrap();
    let out = dir.path().join("out.safetensors");
    ok(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&i),
        "--output",
        p(&out),
        "--arch",
        "gru",
    ]);
    let got = TensorFile::read(&out)
        .unwrap()
        .get_array::<f32>("output")
        .unwrap();
    assert_eq!(got.shape(), &[3, 3, 6], "padded to the longest length, 3");
    let full = fx.get_array::<f32>("output").unwrap();
    for t in 0..3 {
        for h in 0..6 {
            let (a, b) = (got[[t, 0, h]], full[[t, 0, h]]);
            assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "{a} vs {b}");
        }
    }
    assert!(got.slice(ndarray::s![1.., 1, ..]).iter().all(|&v| v == 0.0));

    inputs.insert_array("hx", ndarray::Array3::<f32>::zeros((1, 3, 6)).view());
    inputs.write(&i).unwrap();
    let e = fails(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&i),
        "--output",
        p(&out),
        "--arch",
        "gru",
    ]);
    assert!(
        e.contains("unknown tensor \"hx\"") && e.contains("h0"),
        "{e}"
    );
}

#[test]
fn image_training_eval_and_forward_on_the_embedded_digits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digits");
    let s = ok(&[
        "train",
        "--task",
        "digits",
        "--model",
        "resnet8",
        "--epochs",
        "2",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(s.contains("test_accuracy"), "{s}");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.contains("\"eval\"")).count(),
        2,
        "one evaluation per epoch"
    );
    assert!(
        log.lines().next().unwrap().contains("\"accuracy\""),
        "train records carry the batch accuracy"
    );
    // eval agrees with the accuracy training reported.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let evals = summary["report"]["evals"].as_array().unwrap();
    let metrics = evals.last().unwrap()["metrics"].as_array().unwrap();
    let acc = metrics[0][1].as_f64().unwrap();
    let csv = dir.path().join("confusion.csv");
    let e = ok(&["eval", "--checkpoint", p(&out), "--csv", p(&csv)]);
    assert!(
        e.contains(&format!("accuracy {:.2}%", 100.0 * acc)),
        "{e} vs {acc}"
    );
    let table = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 11);
    let total: usize = rows[1..]
        .iter()
        .flat_map(|r| r.split(',').skip(1))
        .map(|c| c.parse::<usize>().unwrap())
        .sum();
    assert_eq!(total, 360, "every test image counted once");

    // forward runs the trained weights (with their BatchNorm statistics) on new images.
    let model = TensorFile::read(out.join("model.safetensors")).unwrap();
    let mut weights = TensorFile::new();
    for (name, t) in &model.tensors {
        weights.insert(name.clone(), t.clone());
    }
    let w = dir.path().join("w.safetensors");
    weights.write(&w).unwrap();
    let mut inputs = TensorFile::new();
    inputs.insert_array("input", ndarray::Array4::<f32>::zeros((3, 1, 8, 8)).view());
    let i = dir.path().join("x.safetensors");
    inputs.write(&i).unwrap();
    let o = dir.path().join("y.safetensors");
    ok(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&i),
        "--output",
        p(&o),
        "--arch",
        "resnet8",
    ]);
    let logits = TensorFile::read(&o)
        .unwrap()
        .get_array::<f32>("output")
        .unwrap();
    assert_eq!(logits.shape(), &[3, 10]);
    let e = fails(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&i),
        "--output",
        p(&o),
        "--arch",
        "resnet20",
    ]);
    assert!(
        e.contains("missing keys") && e.contains("layer1.1.conv1.weight"),
        "{e}"
    );
    inputs.insert_array("input", ndarray::Array4::<f32>::zeros((3, 3, 8, 8)).view());
    inputs.write(&i).unwrap();
    let e = fails(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&i),
        "--output",
        p(&o),
        "--arch",
        "resnet8",
    ]);
    assert!(
        e.contains("(N, 1, H, W)") && e.contains("(3, 3, 8, 8)"),
        "{e}"
    );
    let e = fails(&[
        "forward",
        "--weights",
        p(&w),
        "--input",
        p(&i),
        "--output",
        p(&o),
        "--arch",
        "vgg16",
    ]);
    assert!(e.contains("resnet18") && e.contains("lstm"), "{e}");
}

#[test]
fn image_tasks_refuse_sequence_options_and_missing_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let e = fails(&[
        "train",
        "--task",
        "digits",
        "--hidden",
        "10",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("--hidden") && e.contains("sum or adding"), "{e}");
    let e = fails(&[
        "train",
        "--task",
        "digits",
        "--model",
        "lstm",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("lstm") && e.contains("resnet"), "{e}");
    let e = fails(&["train", "--task", "cifar10", "--out", p(&out)]);
    assert!(
        e.contains("--data-dir") && e.contains("data_batch_1.bin"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--task",
        "mnist",
        "--data-dir",
        p(&dir.path().join("nowhere")),
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("nowhere") && e.contains("train-images-idx3-ubyte"),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--task",
        "adding",
        "--data-dir",
        "/tmp",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("--data-dir") && e.contains("fashion-mnist"),
        "{e}"
    );
}

/// The command in the report's captions is the one to paste into a shell: arguments with
/// spaces or quotes come out quoted.
#[test]
fn train_records_its_command_line_quoted_for_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("it's a run");
    ok(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "3",
        "--quiet",
        "--out",
        p(&out),
    ]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let quoted = format!("'{}/it'\\''s a run'", p(dir.path()));
    let want = format!(
        "<code>skipgate train --task sum --steps 3 --quiet --out {}</code>",
        skipgate::report::escape(&quoted)
    );
    assert_eq!(html.matches(&want).count(), 4, "{want}");
}

#[test]
fn gradients_measures_rnn_cells_reproducibly_and_writes_csv_and_report() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = |out: &Path| {
        [
            "gradients",
            "--model",
            "rnn,gru",
            "--seq-len",
            "12",
            "--hidden",
            "8",
            "--batch",
            "8",
            "--seeds",
            "2",
            "--train-steps",
            "3",
            "--quiet",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([p(out).to_string()])
        .collect::<Vec<_>>()
    };
    let run = |out: &Path| {
        let args = args(out);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let s = run(a.path());
    run(b.path());
    assert!(s.contains("median over 2 seeds (0–1)"), "{s}");
    for needle in [
        "rnn",
        "gru",
        "init",
        "3 steps",
        "‖∂L/∂h_1‖/‖∂L/∂h_12‖",
        "hh ",
        "r ",
        "z ",
    ] {
        assert!(s.contains(needle), "missing {needle:?}:\n{s}");
    }
    for file in [
        "gradients-time.csv",
        "gradients-summary.csv",
        "gradient-time-init.csv",
    ] {
        let (x, y) = (
            std::fs::read(a.path().join(file)).unwrap(),
            std::fs::read(b.path().join(file)).unwrap(),
        );
        assert_eq!(x, y, "{file} differs between two runs of the same command");
    }
    let csv = std::fs::read_to_string(a.path().join("gradients-time.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        rows.len(),
        2 * 2 * 2 * 12,
        "models × seeds × phases × steps"
    );
    for r in rows.iter().filter(|r| r[3] == "12") {
        assert_eq!(
            r[5].parse::<f64>().unwrap(),
            1.0,
            "relative to the last step: {r:?}"
        );
    }
    let summary = std::fs::read_to_string(a.path().join("gradients-summary.csv")).unwrap();
    for r in summary
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
    {
        let first = rows
            .iter()
            .find(|x| x[0] == r[0] && x[1] == r[1] && x[2] == r[2] && x[3] == "1")
            .unwrap();
        assert_eq!(r[3], first[5], "reach = relative value at t = 1: {r:?}");
    }
    let page = std::fs::read_to_string(a.path().join("report.html")).unwrap();
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(
        page.contains("id=\"gradient-time-init\"") && page.contains("id=\"gradient-time-trained\"")
    );
    assert!(page.contains("skipgate gradients --model rnn,gru"));
}

#[test]
fn gradients_measures_residual_and_plain_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let s = ok(&[
        "gradients",
        "--model",
        "resnet8,plain8",
        "--batch",
        "16",
        "--seeds",
        "1",
        "--train-steps",
        "2",
        "--quiet",
        "--out",
        p(dir.path()),
    ]);
    assert!(
        s.contains("resnet8") && s.contains("plain8") && s.contains("2 steps"),
        "{s}"
    );
    let csv = std::fs::read_to_string(dir.path().join("gradients-depth.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "model,seed,phase,block,grad_norm,relative_to_output"
    );
    assert_eq!(
        rows.len() - 1,
        2 * 2 * 4,
        "models × phases × (3 blocks + output)"
    );
    assert!(
        rows.iter()
            .filter(|r| r.contains(",4,"))
            .all(|r| r.ends_with(",1e0")),
        "{csv}"
    );
}

#[test]
fn gradients_rejects_bad_requests_naming_the_problem() {
    let e = fails(&["gradients", "--model", "rnn,resnet20"]);
    assert!(e.contains("one family per call"), "{e}");
    let e = fails(&["gradients", "--model", "resnet7"]);
    assert!(
        e.contains("resnet7") && e.contains("rnn, rnn-relu, lstm, gru"),
        "{e}"
    );
    let e = fails(&["gradients", "--seeds", "0"]);
    assert!(e.contains("--seeds") && e.contains("at least 1"), "{e}");
    let e = fails(&["gradients", "--model", "lstm", "--task", "digits"]);
    assert!(e.contains("adding or sum"), "{e}");
    let e = fails(&["gradients", "--model", "resnet8", "--task", "adding"]);
    assert!(e.contains("digits, mnist, fashion-mnist or cifar10"), "{e}");
    let e = fails(&["gradients", "--seq-len", "1"]);
    assert!(e.contains("T ≥ 2") && e.contains("T = 1"), "{e}");
    // A training run's directory is refused (its report.html would be replaced), before any work.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&[
        "train",
        "--task",
        "sum",
        "--steps",
        "3",
        "--quiet",
        "--out",
        p(&run),
    ]);
    let page = std::fs::read_to_string(run.join("report.html")).unwrap();
    let e = fails(&["gradients", "--model", "rnn", "--quiet", "--out", p(&run)]);
    assert!(
        e.contains("holds a training run") && e.contains(p(&run)),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("report.html")).unwrap(),
        page
    );
}

#[test]
fn train_names_the_model_family_a_task_needs_and_an_empty_resume() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--model",
        "resnet20",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("task sum trains a recurrent model (rnn, rnn-relu, lstm, gru)")
            && e.contains("\"resnet20\""),
        "{e}"
    );
    let e = fails(&[
        "train",
        "--task",
        "digits",
        "--model",
        "lstm",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("task digits trains an image network") && e.contains("\"lstm\""),
        "{e}"
    );
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "not a run").unwrap();
    let e = fails(&["train", "--task", "sum", "--quiet", "--out", p(&file)]);
    assert!(e.contains("exists and is not a directory"), "{e}");
    let e = fails(&[
        "train",
        "--task",
        "sum",
        "--resume",
        "--quiet",
        "--out",
        p(&out),
    ]);
    assert!(
        e.contains("nothing to resume") && e.contains("checkpoint.safetensors"),
        "{e}"
    );
}

#[test]
fn bench_prints_one_json_line_per_workload_with_the_reference_fields() {
    let o = Command::new(env!("CARGO_BIN_EXE_skipgate"))
        .args(["bench", "--only", "seed_sum_train", "--iters", "1"])
        .env_remove("RAYON_NUM_THREADS")
        .output()
        .expect("the binary runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 1, "{s}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["workload"], "seed_sum_train");
    assert_eq!(
        v["impl"],
        format!("skipgate-{}", env!("CARGO_PKG_VERSION")).as_str()
    );
    assert_eq!(v["threads"], 2, "the reference's default: {s}");
    let (median, min) = (
        v["median_ms"].as_f64().unwrap(),
        v["min_ms"].as_f64().unwrap(),
    );
    assert!(median > 0.0 && min > 0.0 && min <= median, "{s}");
    // One step is 100 SGD steps: items per second = 100 / median seconds.
    let rate = v["items_per_s"].as_f64().unwrap();
    assert!((rate - 100.0 / (median / 1e3)).abs() <= 0.05 * rate, "{s}");
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 0.0, "{s}");

    // --threads and RAYON_NUM_THREADS are honoured, --threads first.
    let o = Command::new(env!("CARGO_BIN_EXE_skipgate"))
        .args(["bench", "--only", "seed_sum_train", "--iters", "1"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("the binary runs");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["threads"], 1);
    let s = ok(&[
        "bench",
        "--only",
        "seed_sum_train",
        "--iters",
        "1",
        "--threads",
        "3",
    ]);
    let v: serde_json::Value = serde_json::from_str(s.trim()).unwrap();
    assert_eq!(v["threads"], 3);
}

#[test]
fn bench_rejects_unknown_workloads_naming_the_known_ones() {
    let e = fails(&["bench", "--only", "seed_sum_train,nope"]);
    assert!(e.contains("'nope'"), "{e}");
    for w in [
        "rnn_train",
        "lstm_train",
        "gru_train",
        "lstm_infer",
        "charlstm_train",
        "seed_sum_train",
        "resnet20_train",
        "resnet20_infer",
        "resnet18_infer",
    ] {
        assert!(e.contains(w), "{w} missing from: {e}");
    }
    let e = fails(&["bench", "--only", "seed_sum_train", "--iters", "0"]);
    assert!(e.contains("--iters"), "{e}");
    let e = fails(&["bench", "--threads", "0"]);
    assert!(e.contains("--threads"), "{e}");
    let help = ok(&["bench", "--help"]);
    for field in [
        "median_ms",
        "min_ms",
        "items_per_s",
        "peak_rss_mb",
        "resnet18_infer",
    ] {
        assert!(help.contains(field), "{field} missing from the help");
    }
}
