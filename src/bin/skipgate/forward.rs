//! `skipgate forward`: run PyTorch weights (a recurrent layer's, or a ResNet's) on inputs, as
//! the module would.

use std::path::PathBuf;

use clap::Args;
use ndarray::{Array3, Array4, ArrayD, Axis, Slice};
use skipgate::io::{TensorData, TensorFile, load_state_dict};
use skipgate::models::resnet::{ResNet, ResNetConfig};
use skipgate::rnn::{CellKind, Recurrent, SeqInput, config_from_state_dict};
use skipgate::{Error, Mode, Result, Rng, Scalar};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct ForwardArgs {
    /// The state_dict as safetensors, with PyTorch's names: a recurrent layer's (weight_ih_l0, …;
    /// a common prefix such as `rnn.` is allowed) or a ResNet's (conv1.weight, layer1.0.…, fc.weight).
    #[arg(long)]
    pub weights: PathBuf,
    /// Inputs. Recurrent: `input` (T, B, I) or (B, T, I) with --batch-first, optional `h0`, `c0`
    /// (L·D, B, H) and `lengths` (B). ResNet: `input` (N, C, H, W).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the outputs. Recurrent: `output`, `h_n` and (LSTM) `c_n`; with `lengths`,
    /// `output` is padded to the longest sequence, as `pad_packed_sequence` returns it. ResNet:
    /// `output`, the logits (N, classes), in eval mode (BatchNorm uses its running statistics).
    #[arg(long)]
    pub output: PathBuf,
    /// A cell type (rnn, rnn-relu, lstm, gru) or a network (resnet18, resnet34, resnet50,
    /// resnet20, plain20, preact-resnet56, …). Sizes, input channels and classes are read from the
    /// weights.
    #[arg(long)]
    pub arch: String,
    /// `input` and `output` are (B, T, ·), as with PyTorch's batch_first=True.
    #[arg(long)]
    pub batch_first: bool,
}

pub fn run(args: ForwardArgs) -> Result<()> {
    let kind: CellKind = match args.arch.parse() {
        Ok(kind) => kind,
        Err(_) => {
            let net: ResNetConfig = args.arch.parse().map_err(|_| {
                Error::invalid(
                    "forward",
                    format!("--arch {}", args.arch),
                    "expected a cell type (rnn, rnn-relu, lstm, gru) or a network such as resnet18, resnet20, plain56",
                )
            })?;
            return run_resnet(&args, net);
        }
    };
    let weights = TensorFile::read(&args.weights)?;
    let inputs = TensorFile::read(&args.input)?;
    let (config, prefix) = config_from_state_dict(&weights, kind)?;
    let config = config.batch_first(args.batch_first);
    let mut own = TensorFile::new();
    let mut ignored = 0;
    for (name, tensor) in &weights.tensors {
        match name.strip_prefix(&prefix) {
            Some(rest) => own.insert(rest.to_string(), tensor.clone()),
            None => ignored += 1,
        }
    }
    if ignored > 0 {
        crate::note!(
            "note: running the layer under prefix {prefix:?}; {ignored} other tensors ignored"
        );
    }
    let is_f64 = matches!(
        weights.get(&format!("{prefix}weight_ih_l0"))?.data(),
        TensorData::F64(_)
    );
    let out = if is_f64 {
        run_layer::<f64>(&config, &own, &inputs, &args.weights.display().to_string())?
    } else {
        run_layer::<f32>(&config, &own, &inputs, &args.weights.display().to_string())?
    };
    out.write(&args.output)?;
    crate::note!(
        "{} {}×{}{}: wrote {} to {}",
        kind,
        config.num_layers,
        config.hidden_size,
        if config.bidirectional {
            " bidirectional"
        } else {
            ""
        },
        out.names().join(", "),
        args.output.display()
    );
    Ok(())
}

fn run_layer<F: Scalar>(
    config: &skipgate::rnn::RecurrentConfig,
    weights: &TensorFile,
    inputs: &TensorFile,
    source: &str,
) -> Result<TensorFile> {
    let mut layer = Recurrent::<F>::new(config.clone(), &mut Rng::seed(0))?;
    load_state_dict(&mut layer, weights, source)?;
    const KNOWN: [&str; 4] = ["input", "h0", "c0", "lengths"];
    if let Some(unknown) = inputs.names().into_iter().find(|n| !KNOWN.contains(n)) {
        return Err(Error::Checkpoint {
            path: inputs.source.clone(),
            msg: format!(
                "unknown tensor {unknown:?}: the inputs are `input` and optionally `h0`, `c0`, `lengths`"
            ),
        });
    }
    let x = to3::<F>(inputs, "input")?;
    let h0 = inputs
        .contains("h0")
        .then(|| to3::<F>(inputs, "h0"))
        .transpose()?;
    let c0 = inputs
        .contains("c0")
        .then(|| to3::<F>(inputs, "c0"))
        .transpose()?;
    let lengths = if inputs.contains("lengths") {
        let raw = inputs.get_i64("lengths")?;
        if raw.ndim() != 1 {
            return Err(Error::shape("forward", "lengths", "(B)", raw.shape()));
        }
        let mut out = Vec::with_capacity(raw.len());
        for (b, &v) in raw.iter().enumerate() {
            if v < 0 {
                return Err(Error::invalid(
                    "forward",
                    "lengths",
                    format!("lengths[{b}] = {v} is negative"),
                ));
            }
            out.push(v as usize);
        }
        Some(out)
    } else {
        None
    };
    let mut inp = SeqInput::new(x.view());
    if let Some(h0) = &h0 {
        inp = inp.h0(h0.view());
    }
    if let Some(c0) = &c0 {
        inp = inp.c0(c0.view());
    }
    if let Some(l) = &lengths {
        inp = inp.lengths(l);
    }
    let out = layer.forward(inp, Mode::Eval, &mut Rng::seed(0))?;
    // As `pad_packed_sequence` returns it: padded to the longest sequence, not to the input's T.
    let output = match lengths.as_ref().and_then(|l| l.iter().max()) {
        Some(&longest) => {
            let axis = if config.batch_first { Axis(1) } else { Axis(0) };
            out.output
                .slice_axis(axis, Slice::from(..longest))
                .to_owned()
        }
        None => out.output,
    };
    let mut file = TensorFile::new();
    file.insert_array("output", output.view());
    file.insert_array("h_n", out.h_n.view());
    if let Some(c) = &out.c_n {
        file.insert_array("c_n", c.view());
    }
    Ok(file)
}

fn to3<F: Scalar>(file: &TensorFile, name: &str) -> Result<Array3<F>> {
    let a: ArrayD<F> = file.get_array(name)?;
    let shape = a.shape().to_vec();
    a.into_dimensionality().map_err(|_| {
        Error::shape(
            "forward",
            format!("{}: {name}", file.source),
            "a 3-D tensor",
            &shape,
        )
    })
}

/// Runs a ResNet state_dict on `input` (N, C, H, W); writes the logits as `output`.
fn run_resnet(args: &ForwardArgs, config: ResNetConfig) -> Result<()> {
    if args.batch_first {
        return Err(Error::invalid(
            "forward",
            "--batch-first",
            "applies to recurrent layers only",
        ));
    }
    let weights = TensorFile::read(&args.weights)?;
    let inputs = TensorFile::read(&args.input)?;
    let source = args.weights.display().to_string();
    // The input channels and classes come from the weights' shapes.
    let conv1 = weights.get("conv1.weight")?.shape().to_vec();
    let fc = weights.get("fc.weight")?.shape().to_vec();
    if conv1.len() != 4 || fc.len() != 2 {
        return Err(Error::Checkpoint {
            path: source,
            msg: format!("conv1.weight {conv1:?} and fc.weight {fc:?} should be 4-D and 2-D"),
        });
    }
    let config = config.io(conv1[1], fc[0]);
    let mut net = ResNet::<f32>::new(config.clone(), &mut Rng::seed(0))?;
    load_state_dict(&mut net, &weights, &source)?;
    if let Some(unknown) = inputs.names().into_iter().find(|n| *n != "input") {
        return Err(Error::Checkpoint {
            path: inputs.source.clone(),
            msg: format!("unknown tensor {unknown:?}: a network's input is `input` (N, C, H, W)"),
        });
    }
    let x: ArrayD<f32> = inputs.get_array("input")?;
    let shape = x.shape().to_vec();
    let x: Array4<f32> = x
        .into_dimensionality()
        .map_err(|_| Error::shape("forward", "input (N, C, H, W)", "a 4-D tensor", &shape))?;
    let logits = net.forward(x.view(), Mode::Eval)?;
    let mut out = TensorFile::new();
    out.insert_array("output", logits.view());
    out.write(&args.output)?;
    crate::note!(
        "{config} ({} input channels, {} classes): wrote output {:?} to {}",
        config.in_channels,
        config.num_classes,
        logits.shape(),
        args.output.display()
    );
    Ok(())
}
