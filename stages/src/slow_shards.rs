//! `slow_shards` (test builds only): writes N deterministic shards slowly, saving resume state
//! after each, so tests can kill it with SIGKILL mid-way and check that a rerun skips committed
//! shards and produces byte-identical files.

use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::Result;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{describe_file, parquet_files, write_id_text, IdText};
use crate::rng::splitmix64;

/// The test-only sharded stage kind.
pub struct SlowShards;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::with_default("shards", ParamType::Int, "8", "number of shards"),
    ParamSpec::with_default("rows_per_shard", ParamType::Int, "1000", "rows per shard"),
    ParamSpec::with_default("delay_ms", ParamType::Int, "100", "sleep after each shard"),
    ParamSpec::with_default("seed", ParamType::Int, "1", "content seed"),
    ParamSpec::with_default(
        "input",
        ParamType::Artifact,
        "null",
        "optional upstream output",
    ),
    ParamSpec::with_default(
        "fail_at",
        ParamType::Int,
        "-1",
        "fail (error) at this shard",
    ),
];

impl Stage for SlowShards {
    fn kind(&self) -> &'static str {
        "slow_shards"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "test only: writes deterministic shards slowly, resumable per shard"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["shards".into()]
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let shards: i64 = ctx.param("shards")?;
        let rows: i64 = ctx.param("rows_per_shard")?;
        let delay: u64 = ctx.param::<i64>("delay_ms")?.max(0) as u64;
        let seed: i64 = ctx.param("seed")?;
        let fail_at: i64 = ctx.param("fail_at")?;
        let mut upstream_rows = 0u64;
        if let Ok(input) = ctx.input("input") {
            for f in parquet_files(input.path())? {
                upstream_rows += describe_file(&f)?.0;
            }
        }
        let dir = ctx.output_dir("shards")?;
        let done = ctx.committed_shards(&dir, shards.max(0) as usize) as i64;
        if done > 0 {
            tracing::info!(stage = %ctx.name, done, "resuming after committed shards");
        }
        let bar = ctx.progress(shards as u64, "shards");
        bar.set_position(done as u64);
        for i in done..shards {
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
            write_id_text(&crate::contract::shard_file(&dir, i as usize), &table)?;
            ctx.save_resume_state(&json!({ "done": i + 1 }))?;
            bar.inc(1);
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        bar.finish_and_clear();
        let mut stats = Map::new();
        stats.insert("resumed_from".into(), json!(done));
        stats.insert("shards_computed".into(), json!(shards - done));
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
