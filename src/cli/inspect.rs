//! `splade inspect`: an artifact's output through Polars (schema, rows, describe, SQL).

use std::path::Path;

use anyhow::{bail, Result};
use splade::inspect::{inspect, InspectRequest};

use super::{output_path, PipelineArgs};

/// Arguments of `splade inspect`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PipelineArgs,
    /// `STAGE` or `STAGE.OUTPUT`.
    target: String,
    /// Print the schema.
    #[arg(long)]
    schema: bool,
    /// Print the first N rows.
    #[arg(long, value_name = "N")]
    head: Option<usize>,
    /// Print summary statistics of every column.
    #[arg(long)]
    describe: bool,
    /// SQL over the output, which is table `t` (and also named after the output).
    #[arg(long, value_name = "QUERY")]
    sql: Option<String>,
    /// Rows to print for --sql.
    #[arg(long, default_value_t = 25)]
    rows: usize,
    /// Print the artifact's manifest.json.
    #[arg(long)]
    manifest: bool,
}

/// Checks the output against its manifest, then shows what was asked.
pub fn exec(root: &Path, args: Args) -> Result<()> {
    let engine = args.p.open_for_reading(root)?;
    let (path, output, dir, m) = output_path(&engine, &args.target)?;
    if args.manifest {
        println!("{}", std::fs::read_to_string(dir.join("manifest.json"))?);
        return Ok(());
    }
    if let Some(c) = engine.root.verify_output(&dir, &m, &output).first() {
        bail!(
            "{}: {} (artifact is corrupt; `splade run --force` recomputes it)",
            c.file.display(),
            c.problem
        );
    }
    inspect(
        &path,
        &output,
        &InspectRequest {
            schema: args.schema,
            head: args.head,
            describe: args.describe,
            sql: args.sql,
            rows: args.rows,
        },
    )
}
