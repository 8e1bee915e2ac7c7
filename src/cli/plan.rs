//! `splade plan`: every stage as cached / partial / stale, and why, without running anything.

use std::path::Path;

use anyhow::Result;

use super::PipelineArgs;

/// Arguments of `splade plan`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PipelineArgs,
    /// Print one JSON object per stage (stage, kind, state, reason, fingerprint, seconds).
    #[arg(long)]
    json: bool,
    /// Rehash every file of each cached artifact (default: check sizes only).
    #[arg(long)]
    verify: bool,
}

/// Prints the plan as a table (or JSON lines).
pub fn exec(root: &Path, args: Args) -> Result<()> {
    let engine = args.p.open_for_reading(root)?;
    let plan = engine.plan_checked(args.verify)?;
    if args.json {
        for entry in &plan {
            println!("{}", entry.to_json(&engine.root));
        }
        return Ok(());
    }
    println!(
        "pipeline `{}` ({})",
        engine.pipeline.name,
        args.p.pipeline.display()
    );
    let width = super::run::name_width(plan.iter().map(|e| e.name.as_str()));
    println!(
        "  {:<width$} {:<9} {:<8} {:<12} detail",
        "stage", "kind", "status", "fingerprint"
    );
    for entry in &plan {
        let fp = entry
            .state
            .fingerprint()
            .map(|f| f.short().to_string())
            .unwrap_or_else(|| "?".into());
        println!(
            "  {:<width$} {:<9} {:<8} {:<12} {}",
            entry.name,
            entry.kind,
            entry.state.label(),
            fp,
            entry.detail(&engine.root)
        );
    }
    Ok(())
}
