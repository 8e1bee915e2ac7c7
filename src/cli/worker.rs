//! `splade worker JOBDIR`: the process a Slurm job runs (see `splade::executor::worker`).

use std::path::PathBuf;

use anyhow::Result;

/// Arguments of `splade worker`.
#[derive(clap::Args)]
pub struct Args {
    /// The stage's job directory (`<artifacts>/.jobs/<fingerprint>`), written by the driver.
    pub job_dir: PathBuf,
    /// The job description to run (default: JOB_DIR/job.json).
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

/// Runs the stage and exits with the worker's status (0 done, 3 cancelled at a checkpoint,
/// 1 failed).
pub fn exec(args: Args) -> Result<()> {
    splade::interrupt::install(None);
    let code = splade::executor::worker::run(&args.job_dir, args.spec.as_deref())?;
    std::process::exit(code);
}
