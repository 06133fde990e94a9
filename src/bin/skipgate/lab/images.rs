//! The lab's residual half: the degradation problem on the embedded 8×8 digits, with the gradient
//! reaching each block.

use skipgate::models::resnet::ResNetConfig;
use skipgate::report::{Figure, Plot, Scale, Section, Series};
use skipgate::train::tasks::{ImageDataset, ImageTask};
use skipgate::train::{TaskSpec, TrainOptions, TrainTask, fmt_value, train};
use skipgate::{Result, Rng};

use super::sequences::running_mean;
use super::{Lab, Row, metric};
use crate::gradients::{self, DepthProbe, Phase};

/// Images per batch.
const BATCH: usize = 64;
/// SGD's learning rate (0.1 trains the 56-layer residual network more slowly on these 1437 images).
const LR: f64 = 0.05;

/// One trained network's results.
struct Trained {
    name: String,
    /// Cross-entropy and accuracy over the whole training set, in eval mode, after training.
    train_loss: f64,
    train_accuracy: f64,
    test_accuracy: f64,
}

/// Section 5: plain and residual networks at each depth of the level. The deeper plain network
/// trains worse than the shallower one (the degradation problem); the residual one does not.
pub fn degradation(lab: &mut Lab) -> Result<()> {
    let depths = lab.level.depths.clone();
    let epochs = lab.level.epochs;
    let seed = lab.args.seed;
    let list = depths
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    crate::say!(
        "5. The degradation problem: plain and residual networks of {list} layers on the 8×8 digits\n   \
         (1437 training images, {epochs} epoch{} of SGD with momentum, warm-up and cosine decay).",
        if epochs == 1 { "" } else { "s" }
    );
    let names: Vec<String> = ["plain", "resnet"]
        .iter()
        .flat_map(|family| depths.iter().map(move |d| format!("{family}{d}")))
        .collect();
    let mut results = Vec::new();
    let mut curves = Vec::new();
    let mut probes = Vec::new();
    let mut steps_per_epoch = 1;
    let mut window_used = 1;
    for name in &names {
        let config: ResNetConfig = name.parse()?;
        let spec = TaskSpec::Images {
            dataset: ImageDataset::Digits,
            data_dir: None,
            augment: false,
            train_limit: None,
        };
        let mut task = ImageTask::new(spec, config, BATCH)?;
        steps_per_epoch = task.steps_per_epoch();
        let steps = epochs * steps_per_epoch as u64;
        let (optimizer, schedule) = gradients::image_sgd(LR, steps);
        let run = format!("digits-{name}");
        let o = TrainOptions {
            schedule,
            eval_every: steps_per_epoch as u64,
            ..lab.options(&run, steps, optimizer)
        };
        let probe = DepthProbe::new(&task, BATCH)?;
        let mut at_init = task.build_model(&mut Rng::seed(seed))?; // what `train` starts from
        probes.push(probe.run(&mut at_init, name, seed, Phase::Init)?);
        let (mut net, r) = train(&mut task, &o)?;
        probes.push(probe.run(&mut net, name, seed, Phase::Trained(steps))?);
        let (train_set, _) = task.data();
        let (predictions, loss_sum) = task.predict(&mut net, train_set)?;
        let correct = predictions
            .iter()
            .zip(train_set.labels())
            .filter(|(p, t)| p == t)
            .count();
        let t = Trained {
            name: name.clone(),
            train_loss: loss_sum / train_set.len() as f64,
            train_accuracy: correct as f64 / train_set.len() as f64,
            test_accuracy: metric(&r, "test_accuracy"),
        };
        crate::say!(
            "   {:>9}: training loss {} (training accuracy {:.1}%), test accuracy {:.1}%",
            t.name,
            fmt_value(t.train_loss),
            100.0 * t.train_accuracy,
            100.0 * t.test_accuracy,
        );
        lab.rows.push(Row {
            experiment: "degradation, 8×8 digits".into(),
            model: name.clone(),
            metric: "training loss".into(),
            result: t.train_loss,
            baseline: Some(10f64.ln()),
            seconds: r.seconds,
        });
        let losses: Vec<(f64, f64)> = lab
            .train_records(&run)?
            .iter()
            .filter_map(|rec| Some((rec.step as f64 / steps_per_epoch as f64, rec.loss?)))
            .collect();
        // One epoch's mean, or a fifth of the run for runs of a few epochs only.
        let window = steps_per_epoch.min(losses.len() / 5).max(1);
        curves.push((name.clone(), running_mean(&losses, window)));
        window_used = window;
        results.push(t);
    }
    let loss_of = |name: &str| {
        results
            .iter()
            .find(|t| t.name == name)
            .map_or(f64::NAN, |t| t.train_loss)
    };
    let (shallow, deep) = (depths[0], depths[depths.len() - 1]);
    // Worse: clearly above the shallow network's loss, not within noise of a near-zero one.
    let degrades = |family: &str| {
        let (a, b) = (
            loss_of(&format!("{family}{shallow}")),
            loss_of(&format!("{family}{deep}")),
        );
        (b > a * 1.5 + 0.05, a, b)
    };
    let plain_degrades = degrades("plain").0;
    let verdict = |family: &str| {
        let (worse, a, b) = degrades(family);
        let kind = if family == "plain" {
            "plain"
        } else {
            "residual"
        };
        if worse {
            format!(
                "the {deep}-layer {kind} network trains worse than the {shallow}-layer one ({} vs {})",
                fmt_value(b),
                fmt_value(a)
            )
        } else {
            let how = if b <= a {
                format!("as well as the {shallow}-layer one or better")
            } else {
                format!("about as well as the {shallow}-layer one")
            };
            format!(
                "the {deep}-layer {kind} network trains {how} ({} vs {})",
                fmt_value(b),
                fmt_value(a)
            )
        }
    };
    let (plain_verdict, residual_verdict) = (verdict("plain"), verdict("resnet"));
    crate::say!("   Plain: {plain_verdict}.\n   Residual: {residual_verdict}.");
    let what = format!("8×8 digits, the first {BATCH} training images");
    let depth = gradients::depth_results(&probes, &what, &lab.command, &[seed], "gradient-depth");
    gradients::print_table(&depth.table);
    crate::say!();

    lab.heading("5. The degradation problem: plain and residual networks");
    lab.paragraph(format!(
        "CIFAR-style networks (three stages of 16, 32 and 64 channels, BatchNorm, option-A \
         shortcuts) of {list} layers and their plain twins, the same layers without the \
         shortcuts, trained on the 1437 training images of the 8×8 digits for {epochs} epoch{} \
         (SGD lr {LR}, momentum 0.9, weight decay 5e-4, batch {BATCH}, 20 warm-up steps and cosine decay). \
         Plain: {plain_verdict}. Residual: {residual_verdict}.{}",
        if epochs == 1 { "" } else { "s" },
        if plain_degrades {
            " The deeper plain network is not over-fitting: it is its training loss that is higher."
        } else {
            ""
        }
    ));
    let mut plot = Plot::new(
        "epoch",
        "training loss (cross-entropy, nats), mean over one epoch",
    )
    .y_scale(Scale::Log);
    for (name, points) in curves {
        plot = plot.series(Series::new(name, points));
    }
    lab.figure(
        Figure::new(
            "degradation-train-loss",
            "Training loss: plain vs residual",
            plot,
        )
        .caption(format!(
            "The training loss of every batch, as a running mean over {window_used} steps (an \
             epoch is {steps_per_epoch}), of the plain networks and the residual networks at \
             each depth. The degradation problem is the gap between the deep and the shallow \
             plain network."
        )),
    );
    let mut table = skipgate::report::Table::new(
        "After training (eval mode, whole sets)",
        &[
            "network",
            "training loss",
            "training accuracy",
            "test accuracy",
        ],
    );
    for t in &results {
        table = table.row([
            t.name.clone(),
            fmt_value(t.train_loss),
            format!("{:.1}%", 100.0 * t.train_accuracy),
            format!("{:.1}%", 100.0 * t.test_accuracy),
        ]);
    }
    lab.sections.push(Section::Table(table));
    let reach = |name: &str, trained: bool| {
        probes
            .iter()
            .find(|p| p.model == name && (p.phase != Phase::Init) == trained)
            .map_or(f64::NAN, |p| p.profile.reach())
    };
    let (plain_deep, resnet_deep) = (format!("plain{deep}"), format!("resnet{deep}"));
    lab.paragraph(format!(
        "The gradient reaching each block: ‖∂L/∂x‖ at its input relative to the last block's \
         output (train-mode BatchNorm, one batch). At initialisation BatchNorm keeps the plain \
         network's gradient from vanishing (He et al. 2016, §4.1, report healthy gradient norms \
         in their BatchNorm plain networks): at the first block of {plain_deep} it is {} times \
         the output's, of {resnet_deep} {} times. After training it is {} for {plain_deep} and {} \
         for {resnet_deep}: the residual network's identity shortcuts pass ∂L/∂y back unchanged, \
         the plain network's early blocks depend on the product of every later block's Jacobian.",
        fmt_value(reach(&plain_deep, false)),
        fmt_value(reach(&resnet_deep, false)),
        fmt_value(reach(&plain_deep, true)),
        fmt_value(reach(&resnet_deep, true)),
    ));
    lab.sections.push(Section::Table(depth.table));
    for f in depth.figures {
        lab.sections.push(Section::Figure(f));
    }
    Ok(())
}
