//! One module per subcommand, cargo-style: each has its clap `Args` and an `exec`.

pub mod bench;
pub mod expand;
pub mod gc;
pub mod inspect;
pub mod kinds;
pub mod path;
pub mod plan;
pub mod run;
pub mod status;
pub mod store;
pub mod verify;
pub mod worker;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use splade::artifact::Manifest;
use splade::Engine;

/// The pipeline file and `--set` overrides most subcommands take.
#[derive(clap::Args, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (TOML).
    pub pipeline: PathBuf,
    /// Override a key: `stage.key=value` (value read as TOML: 10, [10,100], true, "x").
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    pub sets: Vec<String>,
}

impl PipelineArgs {
    /// The engine for this pipeline over the artifact root `root`, to run it.
    pub fn open(&self, root: &Path) -> Result<Engine> {
        splade::open_engine(root, &self.pipeline, &self.sets)
    }

    /// The engine for this pipeline, to look at it (works while another process runs).
    pub fn open_for_reading(&self, root: &Path) -> Result<Engine> {
        splade::open_engine_for_reading(root, &self.pipeline, &self.sets)
    }
}

/// An optional pipeline (for commands that also work on the whole artifact root).
#[derive(clap::Args, Clone)]
pub struct OptionalPipelineArgs {
    /// The pipeline file (TOML); default: every artifact under the root.
    pub pipeline: Option<PathBuf>,
    /// Override a key: `stage.key=value` (value read as TOML: 10, [10,100], true, "x").
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    pub sets: Vec<String>,
}

impl OptionalPipelineArgs {
    /// The engine for the pipeline, if one was given, to look at it.
    pub fn open_for_reading(&self, root: &Path) -> Result<Option<Engine>> {
        self.pipeline
            .as_ref()
            .map(|p| splade::open_engine_for_reading(root, p, &self.sets))
            .transpose()
    }
}

/// An output named `STAGE.OUTPUT` (or `STAGE` when it has one output) of the pipeline as it is
/// now: its path, output name, artifact directory and manifest.
pub fn output_path(engine: &Engine, target: &str) -> Result<(PathBuf, String, PathBuf, Manifest)> {
    let (stage, output) = match target.split_once('.') {
        Some((s, o)) => (s, Some(o)),
        None => (target, None),
    };
    let (dir, manifest) = engine.artifact_of(stage)?;
    let names = |sep_stage: bool| {
        manifest
            .outputs
            .keys()
            .map(|o| {
                if sep_stage {
                    format!("{stage}.{o}")
                } else {
                    o.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let output = match output {
        Some(o) => o.to_string(),
        None if manifest.outputs.len() == 1 => {
            manifest.outputs.keys().next().cloned().unwrap_or_default()
        }
        None => bail!(
            "stage `{stage}` has several outputs; name one: {}",
            names(true)
        ),
    };
    let entry = manifest.outputs.get(&output).with_context(|| {
        format!(
            "stage `{stage}` has no output `{output}` (outputs: {})",
            names(false)
        )
    })?;
    let path = dir.join(&entry.path);
    Ok((path, output, dir, manifest))
}
