//! `slow_shards` (test builds only): writes N deterministic shards slowly, saving resume state
//! after each, so tests can kill it with SIGKILL mid-way and check that a rerun skips committed
//! shards and produces byte-identical files.

use serde_json::{json, Map};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::Result;
use crate::parquet_io::{describe_file, parquet_files, write_id_text, IdText};
use crate::rng::splitmix64;
use crate::sharded::ShardedOutput;

/// The test-only sharded stage kind.
pub struct SlowShards;

crate::stage_params! {
    /// Params of [`SlowShards`].
    pub struct SlowShardsParams {
        /// number of shards
        shards: i64 [Int] = "8",
        /// rows per shard
        rows_per_shard: i64 [Int] = "1000",
        /// sleep after each shard
        delay_ms: i64 [Int] = "100",
        /// content seed
        seed: i64 [Int] = "1",
        /// optional upstream output
        input: Option<String> [Artifact] = "null",
        /// fail (error) at this shard
        fail_at: i64 [Int] = "-1",
        /// panic (a simulated bug) at this shard
        panic_at: i64 [Int] = "-1",
    }
}

impl TypedStage for SlowShards {
    type Params = SlowShardsParams;
    const KIND: &'static str = "slow_shards";
    const SPLITS_INTO_TASKS: bool = true;
    const VERSION: u32 = 1;
    const STOPS_AT_CHECKPOINTS: bool = true;
    const DOC: &'static str = "test only: writes deterministic shards slowly, resumable per shard";

    fn outputs(&self, _params: &SlowShardsParams) -> Vec<String> {
        vec!["shards".into()]
    }

    fn run(&self, p: SlowShardsParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let (shards, rows, seed, fail_at) = (p.shards, p.rows_per_shard, p.seed, p.fail_at);
        let delay = p.delay_ms.max(0) as u64;
        let mut upstream_rows = 0u64;
        if let Ok(input) = ctx.input("input") {
            for f in parquet_files(input.path())? {
                upstream_rows += describe_file(&f)?.0;
            }
        }
        let mut out = ShardedOutput::open(ctx, "shards", shards.max(0) as usize)?;
        let todo = out.missing(ctx);
        let done = shards - todo.len() as i64;
        let bar = ctx.progress(shards as u64, "shards");
        bar.set_position(done as u64);
        let started = std::time::Instant::now();
        for i in todo.into_iter().map(|i| i as i64) {
            if i == p.panic_at {
                panic!("simulated bug at shard {i}");
            }
            if i == fail_at {
                return Err(crate::StageError::Other(format!(
                    "failing at shard {i} as asked"
                )));
            }
            let mut state = (seed as u64) ^ ((i as u64) << 32) ^ upstream_rows;
            let mut table = IdText::default();
            for j in 0..rows {
                table.ids.push(format!("s{i}-r{j}"));
                table.texts.push(format!("{:016x}", splitmix64(&mut state)));
            }
            write_id_text(&out.path(i as usize), &table)?;
            out.commit(ctx, i as usize, Map::new())?;
            bar.inc(1);
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        bar.finish_and_clear();
        if let Some(slice) = ctx.shard_slice {
            let rows = (shards - done).max(0) as usize;
            let secs = started.elapsed().as_secs_f64();
            return Ok(crate::sharded::task_outcome(slice, rows, secs));
        }
        let mut stats = Map::new();
        stats.insert("resumed_from".into(), json!(done));
        stats.insert("shards_computed".into(), json!(shards - done));
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
