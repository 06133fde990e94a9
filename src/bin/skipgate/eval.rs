//! `skipgate eval`: the accuracy and confusion matrix of a trained image classifier.

use std::path::PathBuf;

use clap::Args;
use skipgate::data::images::{CIFAR10_CLASSES, FASHION_MNIST_CLASSES, ImageSet, Split};
use skipgate::models::resnet::ResNet;
use skipgate::train::TaskSpec;
use skipgate::train::tasks::{ImageDataset, load_image_model};
use skipgate::{Error, Result};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct EvalArgs {
    /// The run directory (or its model.safetensors / checkpoint.safetensors) of an image run.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Read the dataset from here instead of where the run read it.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluate on the training set instead of the test set.
    #[arg(long)]
    pub train_set: bool,
    /// Also write the confusion matrix as CSV (rows: true class, columns: predicted class).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Worker threads. [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    crate::set_threads(args.threads)?;
    let path = if args.checkpoint.is_dir() {
        args.checkpoint.join("model.safetensors")
    } else {
        args.checkpoint.clone()
    };
    let (mut model, mut spec, normalize) = load_image_model(&path)?;
    let TaskSpec::Images {
        dataset,
        ref mut data_dir,
        ..
    } = spec
    else {
        unreachable!("load_image_model returns image runs only")
    };
    if args.data_dir.is_some() {
        *data_dir = args.data_dir.clone();
    }
    // Only the split evaluated is read; the normalisation is the model's, from training.
    let split = if args.train_set {
        Split::Train
    } else {
        Split::Test
    };
    let set = &dataset.load_split(data_dir.as_deref(), split)?;
    check_fits(&model, set)?;
    let (predictions, loss) = skipgate::train::tasks::predict_with(&mut model, set, &normalize)?;
    let k = set.num_classes();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&p, &t) in predictions.iter().zip(set.labels()) {
        confusion[t][p] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let names = class_names(dataset, k);
    crate::say!(
        "{} on the {} set of {} ({} images): accuracy {:.2}%, loss {:.4}",
        model.config(),
        if args.train_set { "training" } else { "test" },
        dataset.name(),
        set.len(),
        100.0 * correct as f64 / set.len() as f64,
        loss / set.len() as f64
    );
    crate::say!("\nconfusion matrix (rows: true class, columns: predicted)");
    let width = names.iter().map(|n| n.len() + 3).max().unwrap_or(1).max(5);
    let mut header = format!("{:>width$} ", "");
    for j in 0..k {
        header.push_str(&format!("{j:>6}"));
    }
    header.push_str("   recall");
    crate::say!("{header}");
    for (i, row) in confusion.iter().enumerate() {
        let total: usize = row.iter().sum();
        let label = if names[i] == i.to_string() {
            names[i].clone()
        } else {
            format!("{i} {}", names[i])
        };
        let mut line = format!("{label:>width$} ");
        for c in row {
            line.push_str(&format!("{c:>6}"));
        }
        line.push_str(&format!(
            "   {:>5.1}%",
            100.0 * row[i] as f64 / total.max(1) as f64
        ));
        crate::say!("{line}");
    }
    if let Some(csv) = &args.csv {
        let mut text = String::from("true\\predicted");
        for name in &names {
            text.push_str(&format!(",{name}"));
        }
        text.push('\n');
        for (i, row) in confusion.iter().enumerate() {
            text.push_str(&names[i]);
            for c in row {
                text.push_str(&format!(",{c}"));
            }
            text.push('\n');
        }
        skipgate::io::write_atomic(csv, text.as_bytes())?;
    }
    Ok(())
}

fn class_names(dataset: ImageDataset, k: usize) -> Vec<String> {
    let named: Option<&[&str]> = match dataset {
        ImageDataset::FashionMnist => Some(&FASHION_MNIST_CLASSES),
        ImageDataset::Cifar10 => Some(&CIFAR10_CLASSES),
        _ => None,
    };
    (0..k)
        .map(|i| {
            named
                .and_then(|n| n.get(i))
                .map_or_else(|| i.to_string(), |s| s.to_string())
        })
        .collect()
}

/// The images must be what the network was trained on: its input channels and class count.
fn check_fits(model: &ResNet<f32>, set: &ImageSet) -> Result<()> {
    let cfg = model.config();
    let (c, _, _) = set.image_shape();
    if c != cfg.in_channels || set.num_classes() != cfg.num_classes {
        return Err(Error::invalid(
            "eval",
            "data",
            format!(
                "the network takes {} channel(s) and {} classes; the data has {c} channel(s) and {} classes",
                cfg.in_channels,
                cfg.num_classes,
                set.num_classes()
            ),
        ));
    }
    Ok(())
}
