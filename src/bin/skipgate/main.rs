//! `skipgate`: train, run and inspect residual and gated recurrent networks from the command line.

/// `println!` that ignores a closed stdout (`skipgate … | head`) instead of panicking.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr instead of panicking.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod bench;
mod eval;
mod forward;
mod gradients;
mod lab;
mod sample;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Residual and gated recurrent networks from scratch: train, evaluate, sample, run PyTorch weights.
#[derive(Parser)]
#[command(name = "skipgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: the course module's experiments on embedded data, with a summary table.
    Lab(lab::LabArgs),
    /// Train a model: recurrent on sum, adding, copy, charlm; residual on fashion-mnist, mnist, cifar10, digits.
    Train(Box<train::TrainArgs>),
    /// Generate text from a character-language-model checkpoint.
    Sample(sample::SampleArgs),
    /// Accuracy and confusion matrix of a trained image classifier.
    Eval(eval::EvalArgs),
    /// Run a PyTorch RNN/LSTM/GRU or ResNet state_dict (safetensors) on inputs from a safetensors file.
    Forward(forward::ForwardArgs),
    /// Gradient flow: ‖∂L/∂h_t‖ through time (RNN, LSTM, GRU) or ‖∂L/∂x‖ through depth (residual vs plain), over seeds.
    Gradients(gradients::GradientsArgs),
    /// Time the benchmark workloads (RNN/LSTM/GRU, char-LSTM, ResNet-20/18) and print JSON lines, as the PyTorch reference does.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    skipgate::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lab(a) => lab::run(a),
        Command::Train(a) => train::run(*a),
        Command::Sample(a) => sample::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Gradients(a) => gradients::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            note!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sets the size of the worker pool that large matrix products use.
pub fn set_threads(threads: Option<usize>) -> skipgate::Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(skipgate::Error::invalid(
                "--threads",
                "count",
                "must be at least 1",
            ));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| skipgate::Error::invalid("--threads", n.to_string(), e.to_string()))?;
    }
    Ok(())
}

/// This process's command line as a shell would take it: the program's file name (`skipgate`),
/// then the arguments, quoted where needed.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .and_then(|p| {
            std::path::Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "skipgate".to_string());
    std::iter::once(program)
        .chain(args.map(|a| shell_quote(&a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `arg` as it is if it has only characters a POSIX shell leaves alone, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+%@".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}
