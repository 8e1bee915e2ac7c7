//! `splade`: SPLADE learned-sparse retrieval as a pipeline of resumable stages.

mod artifact;
mod bench;
mod dag;
mod engine;
mod fingerprint;
mod inspect;
mod maintenance;
mod pipeline;
mod store;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use splade_stages::Registry;

use crate::artifact::ArtifactRoot;
use crate::engine::{Engine, Outcome, RunOptions, StageReport, StageState};
use crate::store::Store;

#[derive(Parser)]
#[command(
    name = "splade",
    version,
    about = "SPLADE learned-sparse retrieval as a pipeline of resumable stages"
)]
struct Cli {
    /// Artifact root (artifacts, staging, the store).
    #[arg(
        long,
        global = true,
        env = "SPLADE_ARTIFACTS",
        default_value = "artifacts"
    )]
    artifacts: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct PipelineArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Override a key: `stage.key=value` (value read as TOML: 10, [10,100], true, "x").
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run what is stale, skip what is cached, resume what was interrupted.
    Run {
        #[command(flatten)]
        p: PipelineArgs,
        /// Run only this stage and what it depends on.
        #[arg(long)]
        until: Option<String>,
        /// Recompute this stage's artifact even if it is cached (repeatable).
        #[arg(long)]
        force: Vec<String>,
        /// Run up to N independent stages at once.
        #[arg(long, short, default_value_t = 1)]
        jobs: usize,
        /// Never draw progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Show every stage as cached / partial / stale, and why.
    Plan {
        #[command(flatten)]
        p: PipelineArgs,
    },
    /// Recent runs, interrupted work and artifacts (of one pipeline, if given).
    Status {
        pipeline: Option<PathBuf>,
        #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
        sets: Vec<String>,
    },
    /// Show an artifact through Polars (default: schema and first rows).
    Inspect {
        #[command(flatten)]
        p: PipelineArgs,
        /// `STAGE` or `STAGE.OUTPUT`.
        target: String,
        #[arg(long)]
        schema: bool,
        #[arg(long, value_name = "N")]
        head: Option<usize>,
        #[arg(long)]
        describe: bool,
        /// SQL over the output, which is table `t` (and also named after the output).
        #[arg(long, value_name = "QUERY")]
        sql: Option<String>,
        /// Rows to print for --sql.
        #[arg(long, default_value_t = 25)]
        rows: usize,
        /// Print the artifact's manifest.json.
        #[arg(long)]
        manifest: bool,
    },
    /// Print the path of an output, for pl.read_parquet / pyarrow / DuckDB.
    Path {
        #[command(flatten)]
        p: PipelineArgs,
        /// `STAGE.OUTPUT` (or `STAGE` for the artifact directory).
        target: String,
    },
    /// Remove artifacts no pipeline references, abandoned staging dirs and trash.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
    /// Rehash artifact files against their manifests and report corruption.
    Verify {
        /// Verify this pipeline's current artifacts (default: every artifact under the root).
        pipeline: Option<PathBuf>,
        #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
        sets: Vec<String>,
    },
    /// List stage kinds and their params.
    Kinds,
    /// Benchmarks (see README "Performance").
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the bag of expanded words SPLADE gives each text, strongest first.
    Expand {
        /// Hugging Face BERT/DistilBERT masked-LM directory.
        #[arg(long, default_value = "conf/models/splade-tiny")]
        model: PathBuf,
        #[arg(long, default_value_t = 256)]
        max_length: usize,
        /// Terms to show per text (0 = all); --json always prints all.
        #[arg(long, default_value_t = 30)]
        top: usize,
        /// One JSON line per text: {"text", "weights": {"<term id>": weight}}.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        texts: Vec<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Write a deterministic SPLADE-shaped synthetic collection (docs.parquet, queries.parquet).
    Synth {
        #[arg(long, default_value_t = 100_000)]
        docs: usize,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Topics (0 = independent vectors): each vector draws half its terms from its topic's
        /// 300 terms, so queries match a few documents strongly, as real queries do.
        #[arg(long, default_value_t = 0)]
        topics: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Index build and retrieval speed (each algorithm, k = 10 and 1000) on a `bench synth` dir.
    Retrieve {
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Write MaxScore's top-1000 (query index, doc index, integer score) here, for comparisons.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Write the index's quantized postings as CIFF here (terms named by id, docs by index),
        /// so PISA (`ciff2pisa`) indexes exactly the same integers.
        #[arg(long)]
        ciff: Option<PathBuf>,
    },
    /// Exact float top-k against the quantized index's top-k: overlap@k and, with qrels, the
    /// metric difference.
    Quantization(bench::QuantizationBench),
    /// Encode throughput (docs/s) and peak memory of a model on the texts of a file.
    Encode(bench::EncodeBench),
    /// Training step throughput (examples/s) and peak memory of the train stage's SPLADE step.
    Train(bench::TrainBench),
    /// `mine` throughput (queries/s) and peak memory on a generated run + qrels.
    Mine(bench::MineBench),
    /// `distill` throughput (scores/s) and peak memory on a teacher-score file.
    Distill {
        /// A CE pickle, TREC run, run JSON or triplet TSV (e.g. from `bench/mining.py`).
        scores: PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn open_engine(root: &Path, p: &PipelineArgs) -> Result<Engine> {
    let registry = Registry::builtin();
    let pipeline = pipeline::load(&p.pipeline, &p.sets, &registry)?;
    let store = Arc::new(Store::open(root)?);
    Engine::new(registry, ArtifactRoot::new(root), store, pipeline)
}

fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('.') {
        Some((s, o)) => (s, Some(o)),
        None => (target, None),
    }
}

fn output_path(
    engine: &Engine,
    target: &str,
) -> Result<(PathBuf, String, PathBuf, artifact::Manifest)> {
    let (stage, output) = split_target(target);
    let (dir, manifest) = engine.artifact_of(stage)?;
    let output = match output {
        Some(o) => o.to_string(),
        None if manifest.outputs.len() == 1 => {
            manifest.outputs.keys().next().cloned().unwrap_or_default()
        }
        None => bail!(
            "stage `{stage}` has several outputs; name one: {}",
            manifest
                .outputs
                .keys()
                .map(|o| format!("{stage}.{o}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let entry = manifest.outputs.get(&output).with_context(|| {
        format!(
            "stage `{stage}` has no output `{output}` (outputs: {})",
            manifest
                .outputs
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    Ok((dir.join(&entry.path), output, dir, manifest))
}

fn print_report(r: &StageReport) {
    let fp =
        r.fp.as_ref()
            .map(|f| f.short().to_string())
            .unwrap_or_default();
    let (what, detail) = match &r.outcome {
        Outcome::Executed { seconds, resumed } => (
            if *resumed { "resumed" } else { "executed" }.to_string(),
            format!("{seconds:.2}s"),
        ),
        Outcome::Cached => ("cached".to_string(), String::new()),
        Outcome::Failed(e) => ("FAILED".to_string(), e.clone()),
        Outcome::Skipped(why) => ("skipped".to_string(), why.clone()),
    };
    println!(
        "  {:<22} {:<9} {:<9} {:<12} {}",
        r.name, r.kind, what, fp, detail
    );
}

fn dispatch(cli: Cli) -> Result<()> {
    let root = cli.artifacts.clone();
    match cli.command {
        Command::Run {
            p,
            until,
            force,
            jobs,
            no_progress,
        } => {
            let t0 = Instant::now();
            let engine = open_engine(&root, &p)?;
            println!(
                "pipeline `{}` ({} stages, artifacts in {})",
                engine.pipeline.name,
                engine.pipeline.stages.len(),
                root.display()
            );
            let opts = RunOptions {
                until,
                force,
                jobs,
                show_progress: !no_progress && std::io::stderr().is_terminal(),
            };
            let reports = engine.run(&opts, &print_report)?;
            for r in &reports {
                if let Some(s) = &r.summary {
                    println!();
                    print!("{s}");
                }
            }
            let count = |f: fn(&Outcome) -> bool| reports.iter().filter(|r| f(&r.outcome)).count();
            let failed = count(|o| matches!(o, Outcome::Failed(_)));
            println!(
                "\n{} stages: {} executed, {} cached, {} failed, {} skipped in {:.2}s",
                reports.len(),
                count(|o| matches!(o, Outcome::Executed { .. })),
                count(|o| matches!(o, Outcome::Cached)),
                failed,
                count(|o| matches!(o, Outcome::Skipped(_))),
                t0.elapsed().as_secs_f64()
            );
            if failed > 0 {
                let first = reports
                    .iter()
                    .find_map(|r| match &r.outcome {
                        Outcome::Failed(e) => Some(format!("stage `{}`: {e}", r.name)),
                        _ => None,
                    })
                    .unwrap_or_default();
                bail!("{first}\n(work already committed is kept; rerun to continue)");
            }
            Ok(())
        }
        Command::Plan { p } => {
            let engine = open_engine(&root, &p)?;
            println!(
                "pipeline `{}` ({})",
                engine.pipeline.name,
                p.pipeline.display()
            );
            println!(
                "  {:<22} {:<9} {:<8} {:<12} detail",
                "stage", "kind", "status", "fingerprint"
            );
            for (name, state) in engine.plan()? {
                let kind = &engine
                    .pipeline
                    .stage(&name)
                    .map(|s| s.kind.clone())
                    .unwrap_or_default();
                let (fp, detail) = match &state {
                    StageState::Cached { fp, note, .. } => (
                        fp.short().to_string(),
                        note.clone()
                            .unwrap_or_else(|| engine.root.dir(kind, fp).display().to_string()),
                    ),
                    StageState::Partial { fp, state, reasons } => (
                        fp.short().to_string(),
                        format!(
                            "interrupted, will resume from {state}; {}",
                            reasons.join("; ")
                        ),
                    ),
                    StageState::Stale { fp, reasons } => (
                        fp.as_ref()
                            .map(|f| f.short().to_string())
                            .unwrap_or_else(|| "?".into()),
                        reasons.join("; "),
                    ),
                };
                println!(
                    "  {:<22} {:<9} {:<8} {:<12} {}",
                    name,
                    kind,
                    state.label(),
                    fp,
                    detail
                );
            }
            Ok(())
        }
        Command::Status { pipeline, sets } => match pipeline {
            Some(path) => {
                let engine = open_engine(
                    &root,
                    &PipelineArgs {
                        pipeline: path,
                        sets,
                    },
                )?;
                maintenance::status(&root, &engine.store, Some(&engine))
            }
            None => maintenance::status(&root, &Store::open(&root)?, None),
        },
        Command::Inspect {
            p,
            target,
            schema,
            head,
            describe,
            sql,
            rows,
            manifest,
        } => {
            let engine = open_engine(&root, &p)?;
            let (path, output, dir, m) = output_path(&engine, &target)?;
            if manifest {
                println!("{}", std::fs::read_to_string(dir.join("manifest.json"))?);
                return Ok(());
            }
            let bad = engine.root.verify_output(&dir, &m, &output);
            if let Some(c) = bad.first() {
                bail!(
                    "{}: {} (artifact is corrupt; `splade run --force` recomputes it)",
                    c.file.display(),
                    c.problem
                );
            }
            inspect::inspect(
                &path,
                &output,
                &inspect::InspectRequest {
                    schema,
                    head,
                    describe,
                    sql,
                    rows,
                },
            )
        }
        Command::Path { p, target } => {
            let engine = open_engine(&root, &p)?;
            if !target.contains('.') {
                let (dir, _) = engine.artifact_of(&target)?;
                println!("{}", dir.display());
            } else {
                let (path, ..) = output_path(&engine, &target)?;
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Gc { dry_run } => {
            let store = Store::open(&root)?;
            maintenance::gc(&root, &store, dry_run)
        }
        Command::Verify { pipeline, sets } => {
            let registry = Registry::builtin();
            let engine = match pipeline {
                Some(path) => Some(open_engine(
                    &root,
                    &PipelineArgs {
                        pipeline: path,
                        sets,
                    },
                )?),
                None => None,
            };
            let ok = maintenance::verify(&ArtifactRoot::new(&root), engine.as_ref())?;
            drop(registry);
            if !ok {
                bail!("corruption found (see above); `splade run PIPELINE --force STAGE` recomputes an artifact");
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Synth {
            docs,
            queries,
            seed,
            topics,
            out,
        }) => bench::synth(&out, docs, queries, seed, topics),
        Command::Bench(BenchCommand::Retrieve {
            dir,
            queries,
            dump,
            ciff,
        }) => bench::retrieve(&dir, queries, dump.as_deref(), ciff.as_deref()),
        Command::Bench(BenchCommand::Quantization(b)) => bench::quantization(&b),
        Command::Bench(BenchCommand::Encode(b)) => bench::encode(&b),
        Command::Bench(BenchCommand::Train(b)) => bench::train(&b),
        Command::Bench(BenchCommand::Mine(b)) => bench::mine(&b),
        Command::Bench(BenchCommand::Distill { scores }) => bench::distill(&scores),
        Command::Expand {
            model,
            max_length,
            top,
            json,
            texts,
        } => expand(&model, max_length, top, json, &texts),
        Command::Kinds => {
            for kind in Registry::builtin().all() {
                println!("{} (v{}): {}", kind.kind(), kind.version(), kind.doc());
                for p in kind.params() {
                    let default = p
                        .default
                        .map(|d| format!(" = {d}"))
                        .unwrap_or_else(|| " (required)".into());
                    println!(
                        "    {:<22} {}{default}\n        {}",
                        p.name,
                        p.ty.describe(),
                        p.doc
                    );
                }
            }
            Ok(())
        }
    }
}

fn expand(model: &Path, max_length: usize, top: usize, json: bool, texts: &[String]) -> Result<()> {
    use splade_stages::model::encoder::{Pooling, SpladeEncoder};
    let devices = splade_stages::model::devices_from_backend(&serde_json::json!({"kind": "flex"}))?;
    let enc = SpladeEncoder::load(model, max_length, Pooling::Max, &devices[0])
        .with_context(|| format!("loading model {}", model.display()))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = enc.encode_texts(&refs)?;
    for (text, v) in texts.iter().zip(&vectors) {
        if json {
            let weights: serde_json::Map<String, serde_json::Value> = v
                .terms
                .iter()
                .zip(&v.weights)
                .map(|(t, w)| (t.to_string(), serde_json::json!(w)))
                .collect();
            println!("{}", serde_json::json!({"text": text, "weights": weights}));
            continue;
        }
        let mut pairs: Vec<(u32, f32)> = v
            .terms
            .iter()
            .copied()
            .zip(v.weights.iter().copied())
            .collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        println!(
            "{text}  ({} terms, sum {:.2})",
            pairs.len(),
            v.weights.iter().sum::<f32>()
        );
        let shown = if top == 0 {
            pairs.len()
        } else {
            top.min(pairs.len())
        };
        for (t, w) in &pairs[..shown] {
            println!("  {:<16} {:>7.4}   ({t})", enc.tokenizer.token(*t), w);
        }
    }
    Ok(())
}
