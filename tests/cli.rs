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
    for (case, arch, batch_first) in [
        ("lstm_lengths", "lstm", false),
        ("gru_deep_bidir_h0", "gru", false),
        ("rnn_relu_batch_first", "rnn-relu", true),
        ("rnn_tanh_basic", "rnn", false),
    ] {
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
        ok(&args);
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
fn lab_quick_prints_every_experiment_and_the_summary_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = ok(&["lab", "--quick", "--quiet", "--out", p(dir.path())]);
    for needle in [
        "1. The course's example",
        "2. The adding problem",
        "3. A character-level LSTM",
        "sample (temperature 0.8)",
        "| sum of a sequence (T=5)",
        "| adding problem (T=50)      | rnn 64",
        "| adding problem (T=50)      | lstm 64 (forget bias 1)",
        "| adding problem (T=50)      | gru 64",
        "| char LM, tiny Shakespeare",
        "4. The degradation problem",
        "| degradation, 8×8 digits    | plain14",
        "| degradation, 8×8 digits    | resnet14",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
    }
    assert!(dir.path().join("charlm-lstm/model.safetensors").exists());
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
    assert!(e.contains("already holds a training run"), "{e}");
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
