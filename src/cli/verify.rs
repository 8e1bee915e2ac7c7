//! `splade verify`: rehash artifact files against their manifests and report corruption.

use std::path::Path;

use anyhow::{bail, Result};
use splade::artifact::ArtifactRoot;
use splade::maintenance;

use super::OptionalPipelineArgs;

/// Arguments of `splade verify`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    p: OptionalPipelineArgs,
}

/// Verifies; fails when anything is corrupt.
pub fn exec(root: &Path, args: Args) -> Result<()> {
    let engine = args.p.open_for_reading(root)?;
    if !maintenance::verify(&ArtifactRoot::new(root), engine.as_ref())? {
        bail!("corruption found (see above); `splade run PIPELINE --force STAGE` recomputes an artifact");
    }
    Ok(())
}
