//! Committed-shard resume for sharded outputs (`encode`, `retrieve`, `mine`, `slow_shards`).
//!
//! A sharded output is a directory of `part-NNNNN.parquet` files written in shard order. After
//! each shard's file is renamed into place, its number is recorded in the stage's resume state; a
//! rerun of the same fingerprint continues at the first shard that is not both recorded and on
//! disk, so the output is the same bytes whether or not the stage was interrupted.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::contract::{shard_file, StageContext};
use crate::error::{Result, StageError};

/// A sharded output of the running stage: where its shards go and which are already committed.
pub struct ShardedOutput {
    dir: PathBuf,
    shards: usize,
    committed: usize,
    /// The shard count the resume state recorded (trusted only as far as the files exist).
    recorded: usize,
    saved: Option<Value>,
}

impl ShardedOutput {
    /// Opens output `name` of `ctx` (creating its directory) for `shards` shards (`usize::MAX`
    /// when the count is not known up front) and finds the shards an interrupted run committed.
    pub fn open(ctx: &StageContext, name: &str, shards: usize) -> Result<Self> {
        let dir = ctx.output_dir(name)?;
        let saved = ctx.resume_state();
        let recorded = saved
            .as_ref()
            .and_then(|s| s.get("done").and_then(Value::as_u64))
            .unwrap_or(0) as usize;
        let committed = (0..recorded.min(shards))
            .take_while(|s| shard_file(&dir, *s).is_file())
            .count();
        if committed > 0 {
            tracing::info!(stage = %ctx.name, committed, shards, "resuming after committed shards");
        }
        Ok(ShardedOutput {
            dir,
            shards,
            committed,
            recorded,
            saved,
        })
    }

    /// Shards `0..committed()` are done; work continues at `committed()`.
    pub fn committed(&self) -> usize {
        self.committed
    }

    /// Whether the resume state recorded exactly the shards found on disk (so counters saved
    /// with them, see [`ShardedOutput::saved`], describe those shards).
    pub fn resumed_cleanly(&self) -> bool {
        self.committed > 0 && self.recorded == self.committed
    }

    /// A field the stage saved along with its last committed shard (see [`ShardedOutput::commit`]).
    pub fn saved(&self, key: &str) -> Option<&Value> {
        self.saved.as_ref().and_then(|s| s.get(key))
    }

    /// The shards still to write, in order: every shard whose file is not in place (a shard
    /// file only ever appears complete, by rename), and only this task's under a
    /// [`ShardSlice`](crate::contract::ShardSlice). For stages whose shards are independent.
    pub fn missing(&self, ctx: &StageContext) -> Vec<usize> {
        (0..self.shards)
            .filter(|s| ctx.shard_slice.is_none_or(|slice| slice.owns(*s)))
            .filter(|s| !self.path(*s).is_file())
            .collect()
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where shard `index` is written.
    pub fn path(&self, index: usize) -> PathBuf {
        shard_file(&self.dir, index)
    }

    /// Records shard `index` (already written to [`ShardedOutput::path`]) as committed, with
    /// `extra` fields the stage wants back when it resumes.
    pub fn commit(
        &mut self,
        ctx: &StageContext,
        index: usize,
        extra: Map<String, Value>,
    ) -> Result<()> {
        self.committed = self.committed.max(index + 1);
        if ctx.shard_slice.is_some() {
            // Tasks of an array share no resume state: their shard files are the record.
            return Ok(());
        }
        let mut state = Map::new();
        state.insert("done".into(), Value::from(index + 1));
        if self.shards != usize::MAX {
            state.insert("shards".into(), Value::from(self.shards));
        }
        state.extend(extra);
        ctx.save_resume_state(&Value::Object(state))?;
        self.stop_if_cancelled(ctx)
    }

    /// After a commit: when the run is asked to stop and shards remain, stops the stage at this
    /// shard boundary (DESIGN §5); the rerun resumes at the next shard.
    fn stop_if_cancelled(&self, ctx: &StageContext) -> Result<()> {
        if !ctx.cancelled() || self.committed >= self.shards {
            return Ok(());
        }
        let of = match self.shards {
            usize::MAX => String::new(),
            n => format!(" of {n}"),
        };
        Err(StageError::Cancelled(format!(
            "after shard {}{of}",
            self.committed
        )))
    }
}

/// What one array task of a sharded stage reports: its share, nothing that needs every shard.
pub fn task_outcome(
    slice: crate::contract::ShardSlice,
    rows: usize,
    seconds: f64,
) -> crate::contract::StageOutcome {
    let mut stats = Map::new();
    stats.insert("task".into(), Value::from(slice.task));
    stats.insert("tasks".into(), Value::from(slice.tasks));
    stats.insert("rows".into(), Value::from(rows));
    stats.insert("seconds".into(), Value::from(seconds));
    crate::contract::StageOutcome {
        stats,
        summary: None,
    }
}
