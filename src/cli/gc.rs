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
    let store = match args.dry_run {
        true => Store::open_for_reading(root)?,
        false => Store::open(root)?,
    };
    maintenance::gc(root, &store, args.dry_run)
}
