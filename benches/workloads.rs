//! The workloads of `bench/WORKLOADS.md` as a cargo benchmark: the same JSON lines as
//! `skipgate bench` (see `skipgate::bench`), one per workload, on stdout.
//!
//! ```sh
//! cargo bench --bench workloads                                   # all nine, 2 threads, 10 iters
//! cargo bench --bench workloads -- --only lstm_train,resnet20_infer --threads 1 --iters 20
//! ```
//!
//! Threads: `--threads N`, else `RAYON_NUM_THREADS`, else 2 (the PyTorch reference's default).

use std::process::ExitCode;

use skipgate::bench::{DEFAULT_ITERS, Size, Workload, measure};
use skipgate::{Error, Result};

struct Options {
    only: Vec<Workload>,
    threads: usize,
    iters: usize,
}

fn count(flag: &str, value: Option<String>) -> Result<usize> {
    let v = value.ok_or_else(|| Error::invalid("bench", flag, "needs a value"))?;
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid(
            "bench",
            flag,
            format!("expected a positive count, got '{v}'"),
        )),
    }
}

fn parse_args() -> Result<Options> {
    let mut opts = Options {
        only: Workload::ALL.to_vec(),
        threads: match std::env::var("RAYON_NUM_THREADS") {
            Ok(v) => count("RAYON_NUM_THREADS", Some(v))?,
            Err(_) => 2,
        },
        iters: DEFAULT_ITERS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--only" => {
                let names = args
                    .next()
                    .ok_or_else(|| Error::invalid("bench", "--only", "needs a value"))?;
                opts.only = names.split(',').map(str::parse).collect::<Result<_>>()?;
            }
            "--threads" => opts.threads = count("--threads", args.next())?,
            "--iters" => opts.iters = count("--iters", args.next())?,
            other => {
                return Err(Error::invalid(
                    "bench",
                    format!("argument '{other}'"),
                    "expected --only NAMES, --threads N or --iters N",
                ));
            }
        }
    }
    Ok(opts)
}

fn run() -> Result<()> {
    let opts = parse_args()?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build_global()
        .map_err(|e| Error::invalid("bench", "--threads", e.to_string()))?;
    for w in opts.only {
        println!("{}", measure(w, Size::Full, opts.iters)?.json());
    }
    Ok(())
}

fn main() -> ExitCode {
    skipgate::alloc::keep_freed_memory(); // as the skipgate binary does
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
