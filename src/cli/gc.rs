//! `splade gc`: remove artifacts no pipeline references, abandoned staging dirs and trash.

use std::path::Path;

use anyhow::Result;
use splade::maintenance;
use splade::store::Store;

/// Arguments of `splade gc`.
#[derive(clap::Args)]
pub struct Args {
    /// Only print what would be removed.
    #[arg(long)]
    dry_run: bool,
}

/// Collects garbage.
pub fn exec(root: &Path, args: Args) -> Result<()> {
    maintenance::gc(root, &Store::open(root)?, args.dry_run)
}
