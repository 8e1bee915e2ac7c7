//! Step-level checkpoints: model, optimizer state and the run's position, written atomically
//! (a `*.tmp` directory, fsync, rename) so a kill at any moment leaves either the previous
//! checkpoint or the new one. Sampling, dropout, learning rate and λ are pure functions of the
//! step and the seed, so the step is the whole data cursor and RNG state.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use serde::{Deserialize, Serialize};

use super::encoders::EncoderPair;
use crate::error::{Result, StageError};

/// Where a run stands at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Length of the train-log file at this step (later lines are dropped on resume).
    pub log_bytes: u64,
    /// Length of the validation-log file at this step.
    pub validation_bytes: u64,
    /// Best validation metric so far and its step.
    pub best: Option<(f64, u64)>,
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StageError::io(path, e))
}

/// The directory of the checkpoint at `step` under `root`.
pub fn checkpoint_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:09}"))
}

/// Writes a checkpoint of `state.step` under `root` and removes older ones; returns its directory.
pub fn save(
    root: &Path,
    state: &TrainState,
    model: &EncoderPair,
    optim: &ModuleOptimizer,
) -> Result<PathBuf> {
    let done = checkpoint_dir(root, state.step);
    let tmp = done.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| StageError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| StageError::io(&tmp, e))?;
    let model_file = tmp.join("model.bpk");
    model
        .clone()
        .into_record()
        .save(&model_file)
        .map_err(|e| StageError::Other(format!("{}: {e:?}", model_file.display())))?;
    let optim_file = tmp.join("optimizer.bpk");
    optim
        .save(&optim_file)
        .map_err(|e| StageError::Other(format!("{}: {e:?}", optim_file.display())))?;
    let state_file = tmp.join("state.json");
    let json = serde_json::to_vec_pretty(state).map_err(|e| StageError::Other(e.to_string()))?;
    std::fs::write(&state_file, json).map_err(|e| StageError::io(&state_file, e))?;
    for f in [&model_file, &optim_file, &state_file] {
        sync(f)?;
    }
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(|e| StageError::io(&done, e))?;
    }
    std::fs::rename(&tmp, &done).map_err(|e| StageError::io(&done, e))?;
    sync(root)?;
    Ok(done)
}

/// Removes every checkpoint under `root` except `keep`.
pub fn prune(root: &Path, keep: &Path) -> Result<()> {
    let entries = std::fs::read_dir(root).map_err(|e| StageError::io(root, e))?;
    for entry in entries.flatten() {
        let p = entry.path();
        if p != keep
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        {
            std::fs::remove_dir_all(&p).map_err(|e| StageError::io(&p, e))?;
        }
    }
    Ok(())
}

/// Loads the checkpoint in `dir` into `model` and `optim`.
pub fn load(
    dir: &Path,
    model: EncoderPair,
    optim: ModuleOptimizer,
) -> Result<(TrainState, EncoderPair, ModuleOptimizer)> {
    let state_file = dir.join("state.json");
    let text = std::fs::read(&state_file).map_err(|e| StageError::io(&state_file, e))?;
    let state: TrainState = serde_json::from_slice(&text)
        .map_err(|e| StageError::malformed(&state_file, e.line(), e.to_string()))?;
    let model_file = dir.join("model.bpk");
    let record = ModuleRecord::load(&model_file)
        .map_err(|e| StageError::Other(format!("{}: {e:?}", model_file.display())))?;
    let model = model
        .try_load_record(record)
        .map_err(|e| StageError::Other(format!("{}: {e:?}", model_file.display())))?;
    let optim_file = dir.join("optimizer.bpk");
    let optim = optim
        .load(&optim_file)
        .map_err(|e| StageError::Other(format!("{}: {e:?}", optim_file.display())))?;
    Ok((state, model, optim))
}
