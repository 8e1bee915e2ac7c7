//! `splade run`: run what is stale, skip what is cached, resume what was interrupted.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use splade::{Outcome, RunOptions, StageReport};

use super::PipelineArgs;

/// Arguments of `splade run`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PipelineArgs,
    /// Run only this stage and what it depends on.
    #[arg(long)]
    until: Option<String>,
    /// Recompute this stage's artifact even if it is cached (repeatable).
    #[arg(long)]
    force: Vec<String>,
    /// Run up to N independent stages at once (default: 1 locally, 64 under Slurm).
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Where stages run: `local` (this process) or `slurm` (one job per stage); overrides
    /// `[executor] kind`.
    #[arg(long, value_parser = ["local", "slurm"])]
    executor: Option<String>,
    /// Never draw progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Print one JSON object per stage as it ends (stage, kind, state, reason, fingerprint,
    /// seconds) instead of the table and summaries.
    #[arg(long)]
    json: bool,
}

/// Runs the pipeline and prints each stage as it ends, then the summaries and the counts.
pub fn exec(root: &Path, mut args: Args) -> Result<()> {
    let t0 = Instant::now();
    if let Some(executor) = &args.executor {
        args.p.sets.push(format!("executor.kind=\"{executor}\""));
    }
    splade::interrupt::install(Some(rerun_command(root, &args.p)));
    let engine = args.p.open(root)?;
    let on_slurm = engine.pipeline.executor.kind == splade::executor::ExecutorKind::Slurm;
    if !args.json {
        println!(
            "pipeline `{}` ({} stages, artifacts in {})",
            engine.pipeline.name,
            engine.pipeline.stages.len(),
            root.display()
        );
    }
    let opts = RunOptions {
        until: args.until,
        force: args.force,
        jobs: args.jobs.unwrap_or(if on_slurm { 64 } else { 1 }),
        show_progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    let width = name_width(engine.pipeline.stages.iter().map(|s| s.name.as_str()));
    let print_line = move |r: &StageReport| print_report(r, width);
    let print: &(dyn Fn(&StageReport) + Sync) = if args.json {
        &|r: &StageReport| println!("{}", r.to_json())
    } else {
        &print_line
    };
    let reports = engine.run(&opts, print);
    splade::interrupt::exit_if_interrupted();
    let reports = reports?;
    if !args.json {
        print_summaries(&reports, t0.elapsed().as_secs_f64());
    }
    if let Some(first) = reports.iter().find_map(|r| match &r.outcome {
        Outcome::Failed(e) => Some(format!("stage `{}`: {e}", r.name)),
        _ => None,
    }) {
        let executed = reports
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Executed { .. }));
        if executed {
            bail!(
                "{first}\n(the stages that finished are kept; fix the error and rerun to continue)"
            );
        }
        bail!("{first}");
    }
    Ok(())
}

/// The command that continues this run (shown when it is interrupted).
fn rerun_command(root: &Path, p: &PipelineArgs) -> String {
    let mut cmd = format!(
        "splade --artifacts {} run {}",
        root.display(),
        p.pipeline.display()
    );
    for s in &p.sets {
        cmd += &format!(" --set '{s}'");
    }
    cmd
}

/// The width of the stage-name column: 22, or the longest name (matrix instances run long).
pub fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(0).max(22)
}

/// One line of the run table.
fn print_report(r: &StageReport, width: usize) {
    let fp = r.fp.as_ref().map(|f| f.short()).unwrap_or_default();
    let (what, detail) = match &r.outcome {
        Outcome::Executed { seconds, .. } => (r.outcome.label(), format!("{seconds:.2}s")),
        Outcome::Cached => ("cached", String::new()),
        Outcome::Failed(e) => ("FAILED", e.clone()),
        Outcome::Stopped(at) => ("stopped", format!("{at}; resumes on the next run")),
        Outcome::Skipped(why) => ("skipped", why.clone()),
    };
    println!(
        "  {:<width$} {:<9} {:<9} {:<12} {}",
        r.name, r.kind, what, fp, detail
    );
}

/// The stages' summaries, then the counts line.
fn print_summaries(reports: &[StageReport], seconds: f64) {
    for s in reports.iter().filter_map(|r| r.summary.as_ref()) {
        println!();
        print!("{s}");
    }
    let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
    println!(
        "\n{} stages: {} executed, {} cached, {} failed, {} skipped in {seconds:.2}s",
        reports.len(),
        count(|o| matches!(o, Outcome::Executed { .. })),
        count(|o| matches!(o, Outcome::Cached)),
        count(|o| matches!(o, Outcome::Failed(_) | Outcome::Stopped(_))),
        count(|o| matches!(o, Outcome::Skipped(_))),
    );
}
