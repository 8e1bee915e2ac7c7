//! `splade`: SPLADE learned-sparse retrieval as a pipeline of resumable stages. A thin layer over
//! the `splade` library: parse the command line, run one `cli::<command>::exec`.

mod cli;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "splade",
    version,
    about = "SPLADE learned-sparse retrieval as a pipeline of resumable stages"
)]
struct Cli {
    /// Artifact root (artifacts, staging, the store).
    #[arg(
        long,
        global = true,
        env = "SPLADE_ARTIFACTS",
        default_value = "artifacts"
    )]
    artifacts: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run what is stale, skip what is cached, resume what was interrupted.
    Run(cli::run::Args),
    /// Show every stage as cached / partial / stale, and why.
    Plan(cli::plan::Args),
    /// Recent runs, interrupted work and artifacts (of one pipeline, if given).
    Status(cli::status::Args),
    /// Show an artifact through Polars (default: schema and first rows).
    Inspect(cli::inspect::Args),
    /// Print the path of an output, for pl.read_parquet / pyarrow / DuckDB.
    Path(cli::path::Args),
    /// Remove artifacts no pipeline references, abandoned staging dirs and trash.
    Gc(cli::gc::Args),
    /// Rehash artifact files against their manifests and report corruption.
    Verify(cli::verify::Args),
    /// The artifact store (`repair`: rebuild it from the artifacts on disk).
    #[command(subcommand)]
    Store(cli::store::Command),
    /// List stage kinds and their params.
    Kinds(cli::kinds::Args),
    /// Benchmarks (see docs/performance.md).
    #[command(subcommand)]
    Bench(cli::bench::Command),
    /// Print the bag of expanded words SPLADE gives each text, strongest first.
    Expand(cli::expand::Args),
    /// Run one stage of a Slurm job (submitted by `splade run` with the Slurm executor).
    #[command(hide = true)]
    Worker(cli::worker::Args),
}

fn main() {
    quit_quietly_on_closed_pipes();
    stop_cleanly_when_output_fails();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let root = cli.artifacts;
    let result = match cli.command {
        Command::Run(a) => cli::run::exec(&root, a),
        Command::Plan(a) => cli::plan::exec(&root, a),
        Command::Status(a) => cli::status::exec(&root, a),
        Command::Inspect(a) => cli::inspect::exec(&root, a),
        Command::Path(a) => cli::path::exec(&root, a),
        Command::Gc(a) => cli::gc::exec(&root, a),
        Command::Verify(a) => cli::verify::exec(&root, a),
        Command::Store(c) => cli::store::exec(&root, c),
        Command::Kinds(a) => cli::kinds::exec(a),
        Command::Bench(c) => cli::bench::exec(c),
        Command::Expand(a) => cli::expand::exec(a),
        Command::Worker(a) => cli::worker::exec(a),
    };
    if let Err(e) = result {
        // A full disk or closed stderr must not turn an error into a panic.
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(1);
    }
}

/// `splade run ... | head` ends the process the way it ends `cat`: SIGPIPE's default action
/// (exit status 141 in a shell) at the first write after the reader left, instead of Rust's
/// ignored SIGPIPE, which turns that write into a panic. A stage interrupted this way is left
/// resumable, as after any kill.
fn quit_quietly_on_closed_pipes() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Exit status for output that cannot be written (EX_IOERR).
const EXIT_OUTPUT_FAILED: i32 = 74;

/// stdout or stderr on a full disk (or any failing file): `println!` panics on a failed write.
/// This hook turns that panic into one line on stderr (if it still takes it) and exit status 74;
/// the running stage is left resumable, as after any kill.
fn stop_cleanly_when_output_fails() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") {
            let _ = writeln!(
                std::io::stderr(),
                "error: {message}; stopped (committed stages, shards and checkpoints are kept)"
            );
            std::process::exit(EXIT_OUTPUT_FAILED);
        }
        default(info);
    }));
}
