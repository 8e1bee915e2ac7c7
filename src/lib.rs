//! The `splade` engine: pipeline files, the stage DAG, fingerprints, the sled store, artifacts,
//! the executor that runs stages, and inspection. It knows how work runs and nothing about BERT,
//! losses or postings: stages come from `splade-stages` through its contract.
//!
//! The `splade` binary (`src/main.rs`, `src/cli/`) is a thin layer over this library; tests and
//! other tools can drive the same engine in-process.

pub mod artifact;
pub mod dag;
pub mod engine;
pub mod executor;
pub mod fingerprint;
pub mod hub;
pub mod inspect;
pub mod interrupt;
pub mod maintenance;
pub mod pipeline;
pub mod records;
pub mod store;

use std::path::Path;
use std::sync::Arc;

pub use engine::{Engine, Outcome, PlanEntry, RunOptions, StageReport, StageState};
pub use splade_stages::Registry;

/// Loads the pipeline at `path` (with `--set` overrides), opens the store under `root` for
/// writing and binds them: what `splade run` starts with.
pub fn open_engine(root: &Path, path: &Path, sets: &[String]) -> anyhow::Result<Engine> {
    bind(root, path, sets, store::Store::open)
}

/// Like [`open_engine`] for commands that only look (`plan`, `status`, `inspect`, `path`,
/// `verify`): works while another process runs, from a view of what is on disk.
pub fn open_engine_for_reading(
    root: &Path,
    path: &Path,
    sets: &[String],
) -> anyhow::Result<Engine> {
    bind(root, path, sets, store::Store::open_for_reading)
}

/// The pipeline, loaded before the store is opened (a broken pipeline file needs no lock).
fn bind(
    root: &Path,
    path: &Path,
    sets: &[String],
    open_store: fn(&Path) -> Result<store::Store, store::StoreError>,
) -> anyhow::Result<Engine> {
    let registry = Registry::builtin();
    let pipeline = pipeline::load(path, sets, &registry)?;
    let store = Arc::new(open_store(root)?);
    Engine::new(registry, artifact::ArtifactRoot::new(root), store, pipeline)
}
