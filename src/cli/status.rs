//! `splade status`: recent runs, interrupted work and artifacts (of one pipeline, if given).

use std::path::Path;

use anyhow::Result;
use splade::maintenance;
use splade::store::Store;

use super::OptionalPipelineArgs;

/// Arguments of `splade status`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: OptionalPipelineArgs,
}

/// Prints the status.
pub fn exec(root: &Path, args: Args) -> Result<()> {
    match args.p.open_for_reading(root)? {
        Some(engine) => maintenance::status(root, &engine.store, Some(&engine)),
        None => maintenance::status(root, &Store::open_for_reading(root)?, None),
    }
}
