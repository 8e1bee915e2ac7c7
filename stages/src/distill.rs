//! `distill`: teacher (cross-encoder) scores → `teacher_scores` Parquet (qid, did, score,
//! teacher), from the formats they come in: gzip'd pickle `{qid: {pid: score}}` (int or str keys),
//! TREC run, naver run JSON. NaN/inf scores, duplicate pairs, truncated gzip and pickles of an
//! unexpected shape are errors naming the file; nothing is written half.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float32Array, StringArray};
use serde_json::{json, Map, Value};
use serde_pickle::{HashableValue, Value as Pickle};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::ingest::formats::read_run;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_negatives, ParquetSink};

/// The distill stage kind.
pub struct Distill;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "scores",
        ParamType::File,
        "teacher scores: .pkl(.gz) {qid: {pid: score}}, TREC run, or run JSON",
    ),
    ParamSpec::with_default(
        "teacher",
        ParamType::Str,
        "\"teacher\"",
        "name stored in the `teacher` column",
    ),
    ParamSpec::with_default(
        "negatives",
        ParamType::Artifact,
        "null",
        "mined negatives, for the coverage report",
    ),
];

/// One teacher score.
pub type Score = (String, String, f32);

fn key(path: &Path, k: &HashableValue) -> Result<String> {
    match k {
        HashableValue::I64(i) => Ok(i.to_string()),
        HashableValue::Int(i) => Ok(i.to_string()),
        HashableValue::String(s) => Ok(s.clone()),
        HashableValue::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(StageError::malformed(
            path,
            0,
            format!("pickle key {other:?} is not an int or str id"),
        )),
    }
}

/// Reads a (gzip'd) pickle of `{qid: {pid: score}}`.
pub fn read_pickle(path: &Path) -> Result<Vec<Score>> {
    let reader = crate::text_input::open(path)?;
    let value =
        serde_pickle::value_from_reader(reader, serde_pickle::DeOptions::new()).map_err(|e| {
            StageError::malformed(
                path,
                0,
                format!("not a readable pickle (truncated gzip?): {e}"),
            )
        })?;
    let Pickle::Dict(outer) = value else {
        return Err(StageError::malformed(
            path,
            0,
            "expected a pickle of {qid: {pid: score}}",
        ));
    };
    let mut out = Vec::new();
    for (q, inner) in outer {
        let qid = key(path, &q)?;
        let Pickle::Dict(inner) = inner else {
            return Err(StageError::malformed(
                path,
                0,
                format!("qid {qid}: expected {{pid: score}}"),
            ));
        };
        for (d, s) in inner {
            let did = key(path, &d)?;
            let score = match s {
                Pickle::F64(f) => f,
                Pickle::I64(i) => i as f64,
                other => {
                    return Err(StageError::malformed(
                        path,
                        0,
                        format!("({qid}, {did}): score {other:?} is not a number"),
                    ))
                }
            };
            if !score.is_finite() {
                return Err(StageError::malformed(
                    path,
                    0,
                    format!("({qid}, {did}): score {score} is not finite"),
                ));
            }
            out.push((qid.clone(), did, score as f32));
        }
    }
    Ok(out)
}

impl Stage for Distill {
    fn kind(&self) -> &'static str {
        "distill"
    }
    fn version(&self) -> u32 {
        1
    }
    fn doc(&self) -> &'static str {
        "teacher scores (CE pickle, TREC, JSON) → teacher_scores Parquet + coverage of mined pairs"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["teacher_scores".into()]
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let teacher: String = ctx.param("teacher")?;
        let path = ctx.input("scores")?.path().to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let scores: Vec<Score> = if name.contains(".pkl") || name.contains(".pickle") {
            read_pickle(&path)?
        } else {
            read_run(&path)?
                .into_iter()
                .map(|r| (r.qid, r.did, r.score))
                .collect()
        };
        let mut seen = HashSet::with_capacity(scores.len());
        for (q, d, _) in &scores {
            if !seen.insert((q.as_str(), d.as_str())) {
                return Err(StageError::malformed(
                    &path,
                    0,
                    format!("duplicate pair ({q}, {d})"),
                ));
            }
        }
        let mut stats = Map::new();
        if let Some(neg) = ctx.inputs.get("negatives") {
            let rows = read_negatives(neg.path())?;
            let (mut pos_n, mut pos_hit, mut neg_n, mut neg_hit) = (0usize, 0usize, 0usize, 0usize);
            for r in &rows {
                for d in &r.pos {
                    pos_n += 1;
                    pos_hit += usize::from(seen.contains(&(r.qid.as_str(), d.as_str())));
                }
                for d in &r.neg {
                    neg_n += 1;
                    neg_hit += usize::from(seen.contains(&(r.qid.as_str(), d.as_str())));
                }
            }
            stats.insert(
                "coverage_positive_pairs".into(),
                json!(pos_hit as f64 / pos_n.max(1) as f64),
            );
            stats.insert(
                "coverage_negative_pairs".into(),
                json!(neg_hit as f64 / neg_n.max(1) as f64),
            );
        }
        let out = ctx.output_file("teacher_scores");
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("qid", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("did", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("score", arrow::datatypes::DataType::Float32, false),
            arrow::datatypes::Field::new("teacher", arrow::datatypes::DataType::Utf8, false),
        ]));
        let mut sink = ParquetSink::create(&out, schema)?;
        for chunk in scores.chunks(64 * 1024) {
            sink.write_columns(vec![
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|s| s.0.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|s| s.1.as_str()),
                )),
                Arc::new(Float32Array::from_iter_values(chunk.iter().map(|s| s.2))),
                Arc::new(StringArray::from_iter_values(
                    chunk.iter().map(|_| teacher.as_str()),
                )),
            ])?;
        }
        let rows = sink.finish()?;
        stats.insert("scores".into(), json!(rows));
        stats.insert(
            "scores_per_s".into(),
            json!(rows as f64 / started.elapsed().as_secs_f64().max(1e-9)),
        );
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
