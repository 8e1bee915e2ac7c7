//! `splade path`: the path of an output, for pl.read_parquet / pyarrow / DuckDB.

use std::path::Path;

use anyhow::Result;

use super::{output_path, PipelineArgs};

/// Arguments of `splade path`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: PipelineArgs,
    /// `STAGE.OUTPUT` (or `STAGE` for the artifact directory).
    target: String,
}

/// Prints the path.
pub fn exec(root: &Path, args: Args) -> Result<()> {
    let engine = args.p.open_for_reading(root)?;
    if args.target.contains('.') {
        let (path, ..) = output_path(&engine, &args.target)?;
        println!("{}", path.display());
    } else {
        let (dir, _) = engine.artifact_of(&args.target)?;
        println!("{}", dir.display());
    }
    Ok(())
}
