//! `skipgate bench`: time the workloads of the shared `bench/WORKLOADS.md` (listed in
//! `docs/performance.md`) and print one JSON line each, in
//! the format of the PyTorch reference (`bench/torch_baseline.py`) plus the peak memory.

use clap::Args;
use skipgate::bench::{DEFAULT_ITERS, Size, Workload, measure, reset_peak_rss};
use skipgate::{Error, Result};

/// Threads when neither `--threads` nor `RAYON_NUM_THREADS` says: the reference's default.
const DEFAULT_THREADS: usize = 2;

#[derive(Args, Debug)]
#[command(after_help = workloads_help())]
pub struct BenchArgs {
    /// Run only these workloads, comma-separated, in the order given (e.g. lstm_train,resnet20_infer).
    /// [default: all nine]
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub only: Vec<String>,
    /// Worker threads. [default: RAYON_NUM_THREADS if set, else 2, as the PyTorch reference]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed steps per workload (after 3 warm-up steps).
    #[arg(long, default_value_t = DEFAULT_ITERS)]
    pub iters: usize,
}

/// The help text after the options: every workload and every output field.
fn workloads_help() -> String {
    let mut s = String::from(
        "Workloads (all f32; a training step is: zero grads, forward, loss, backward, optimizer step):\n",
    );
    for w in Workload::ALL {
        s += &format!("  {:<15}", w.name());
        let mut width = 0;
        for word in w.description().split(' ') {
            if width > 0 && width + 1 + word.chars().count() > 80 {
                s += "\n                 ";
                width = 0;
            }
            s += " ";
            s += word;
            width += 1 + word.chars().count();
        }
        s += "\n";
    }
    s += concat!(
        "\n",
        "Each workload runs 3 untimed warm-up steps, then --iters timed steps, and prints one JSON line:\n",
        "  workload     the name above\n",
        "  impl         skipgate-<version>\n",
        "  threads      threads of the worker pool it ran on\n",
        "  median_ms    median step time in milliseconds\n",
        "  min_ms       fastest step in milliseconds\n",
        "  items_per_s  items per step / median step time\n",
        "  peak_rss_mb  peak resident memory of the process in MiB (VmHWM of /proc/self/status), reset\n",
        "               before each workload by writing 5 to /proc/self/clear_refs, so it covers building\n",
        "               and running that workload (memory the allocator kept from an earlier workload of\n",
        "               the same run still counts: run one workload per process for clean figures);\n",
        "               null where the system does not report it\n",
        "\n",
        "Compare with PyTorch (the reference scripts are not in this repository: they are in the\n",
        "shared benchmark folder beside it, ../shared/bench/; tools/bench/side_by_side.sh does all\n",
        "of it, for 2 threads and for 1):\n",
        "  python3 ../shared/bench/torch_baseline.py --threads 2 > torch.jsonl\n",
        "  skipgate bench --threads 2 > ours.jsonl\n",
        "  python3 ../shared/bench/compare.py ours.jsonl torch.jsonl",
    );
    s
}

pub fn run(args: BenchArgs) -> Result<()> {
    let workloads: Vec<Workload> = if args.only.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.only.iter().map(|s| s.parse()).collect::<Result<_>>()?
    };
    if args.iters == 0 {
        return Err(Error::invalid(
            "bench",
            "--iters",
            "must be at least 1, got 0",
        ));
    }
    let threads = match args.threads {
        Some(n) => n,
        None => match std::env::var("RAYON_NUM_THREADS") {
            Ok(v) => v.trim().parse().map_err(|_| {
                Error::invalid(
                    "bench",
                    "RAYON_NUM_THREADS",
                    format!("expected a positive thread count, got '{v}'"),
                )
            })?,
            Err(_) => DEFAULT_THREADS,
        },
    };
    crate::set_threads(Some(threads))?;
    if !reset_peak_rss() {
        crate::note!(
            "note: cannot reset the peak memory (/proc/self/clear_refs): peak_rss_mb is the peak since the process started"
        );
    }
    for w in workloads {
        let m = measure(w, Size::Full, args.iters)?;
        crate::say!("{}", m.json());
    }
    Ok(())
}
