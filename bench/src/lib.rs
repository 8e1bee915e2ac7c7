//! `splade bench ...`: measurements printed as one line of `key=value` pairs (plus a readable
//! summary), to be run side by side with the reference scripts in `bench/`.
//!
//! Benchmarks reach into stage internals (the training step, retrieval algorithms, the index
//! builder) on purpose; that is why they live in their own crate and not in the engine.

pub mod msmarco_synth;
pub mod profile;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use splade_stages::contract::run_stage as run_in_process;
use splade_stages::encode::length_bucketed_batches;
use splade_stages::encode::EncodeMode;
use splade_stages::model::encoder::Pooling;
use splade_stages::model::text_encoder::{EncodeOptions, TextEncoder};
use splade_stages::model::BERT_VOCAB_SIZE;
use splade_stages::parquet_io::{write_sparse, SparseSink, SparseVector};

/// The `splade bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Write a deterministic SPLADE-shaped synthetic collection (docs.parquet, queries.parquet).
    Synth {
        /// Documents to write.
        #[arg(long, default_value_t = 100_000)]
        docs: usize,
        /// Queries to write.
        #[arg(long, default_value_t = 1000)]
        queries: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Topics (0 = independent vectors): without `--profile` each vector draws half its
        /// terms from its topic's 300 terms, so queries match a few documents strongly, as real
        /// queries do; with `--profile`, see `--topic-share`.
        #[arg(long, default_value_t = 0)]
        topics: usize,
        /// Draw the vectors from a profile (`splade bench profile`) instead of the uniform
        /// generator: its nnz, term frequencies and weights by frequency rank, for strong and
        /// weak terms (with `--topics`, a `--topic-share` of each vector's strong terms comes
        /// from its topic's 40 terms).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// With `--profile` and `--topics`: the share of a vector's strong terms drawn from its
        /// topic.
        #[arg(long, default_value_t = 0.5)]
        topic_share: f64,
        /// With `--profile`: the share of each query's terms taken from a random document's
        /// strongest terms; the query also takes that document's topic (0 = queries
        /// independent of the documents).
        #[arg(long, default_value_t = 0.0)]
        query_overlap: f64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Estimate a collection profile (term frequencies, nnz, weights by frequency rank) from
    /// real document and query vectors, for `bench synth --profile`.
    Profile {
        /// Document vectors (a Parquet file or shard directory).
        #[arg(long)]
        docs: PathBuf,
        /// Query vectors.
        #[arg(long)]
        queries: PathBuf,
        /// At most this many documents are read into the estimate.
        #[arg(long, default_value_t = 1_000_000)]
        max_docs: usize,
        /// Where the profile (JSON) is written.
        #[arg(long)]
        out: PathBuf,
    },
    /// Index build and retrieval speed (each algorithm, k = 10 and 1000): a warm-up pass, then
    /// `--repeats` timed passes, median and range.
    Retrieve {
        /// A `bench synth` directory (docs.parquet, queries.parquet); or give --docs and --queries.
        dir: Option<PathBuf>,
        /// Document vectors: a Parquet file or a shard directory (e.g. `splade path P encode.vectors`).
        #[arg(long)]
        docs: Option<PathBuf>,
        /// Query vectors: a Parquet file or a shard directory.
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Timed passes over the queries per algorithm and k (after one untimed warm-up pass).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// At most this many queries are timed.
        #[arg(long, default_value_t = 1000)]
        max_queries: usize,
        /// Write MaxScore's top-1000 (query index, doc index, integer score) here, for comparisons.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Write the index's quantized postings as CIFF here (terms named by id, docs by index),
        /// so PISA (`ciff2pisa`) indexes exactly the same integers; streamed from the built
        /// index, a list at a time, so it works with --memory-budget.
        #[arg(long)]
        ciff: Option<PathBuf>,
        /// Also time the approximate algorithm at these `query_cut:heap_factor` settings
        /// (comma-separated; `query_cut:heap_factor:row_prefix:completion` also sets how rows
        /// are scored), with recall@10 against exhaustive.
        #[arg(long)]
        approx: Option<String>,
        /// Approximate: postings kept per term.
        #[arg(long, default_value_t = 3500)]
        approx_postings: usize,
        /// Approximate: centroids per list as a fraction of its kept postings.
        #[arg(long, default_value_t = 0.1)]
        approx_centroid_fraction: f32,
        /// Approximate: share of a block summary's mass kept.
        #[arg(long, default_value_t = 0.4)]
        approx_summary_energy: f32,
        /// Approximate: lists pruned each to its own `n_postings` highest impacts (`per-list`) or
        /// by Seismic's global impact threshold (`global`: n_postings × non-empty lists kept).
        #[arg(long, value_parser = ["per-list", "global"], default_value = "per-list")]
        approx_pruning: String,
        /// Approximate, `global` pruning: a list's cap as a multiple of n_postings.
        #[arg(long, default_value_t = 1.5)]
        approx_max_fraction: f32,
        /// Skip the exact algorithms (only the approximate curve).
        #[arg(long)]
        approx_only: bool,
        /// Reorder the documents by recursive graph bisection before indexing (`bp`), as the
        /// index stage's `reorder = "bp"`.
        #[arg(long, value_parser = ["none", "bp"], default_value = "none")]
        reorder: String,
        /// The exact algorithms timed (comma-separated).
        #[arg(long, default_value = "exhaustive,one_pass,maxscore,block_max")]
        algorithms: String,
        /// MiB of postings the index build may hold: the collection is streamed from disk through
        /// sorted runs, as the index stage does when its `memory_budget` is exceeded (always
        /// spilled here, for collections larger than memory; not with --reorder bp).
        /// 0: read into memory.
        #[arg(long, default_value_t = 0)]
        memory_budget: usize,
    },
    /// Exact float top-k against the quantized index's top-k: overlap@k and, with qrels, the
    /// metric difference.
    Quantization(QuantizationBench),
    /// Encode throughput (docs/s) and peak memory of a model on the texts of a file.
    Encode(EncodeBench),
    /// Training step throughput (examples/s) and peak memory of the train stage's SPLADE step.
    Train(TrainBench),
    /// `mine` throughput (queries/s) and peak memory on a generated run + qrels.
    Mine(MineBench),
    /// `distill` throughput (scores/s) and peak memory on a teacher-score file.
    Distill {
        /// A CE pickle, TREC run, run JSON or triplet TSV (e.g. from `bench/mining.py`).
        scores: PathBuf,
    },
    /// Write a deterministic synthetic MS MARCO passage (collection, train/dev/TREC DL queries
    /// and qrels, CE-score pickle, hard-negatives file) in naver's layout at a fraction of the
    /// real size.
    MsmarcoSynth {
        /// Fraction of the real sizes (1.0: 8,841,823 passages, 502,939 train queries, ~160M
        /// teacher scores).
        #[arg(long, default_value_t = 0.001)]
        scale: f64,
        /// Generator seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The tokenizer whose whole words make the texts.
        #[arg(long, default_value = "conf/models/splade-tiny/tokenizer.json")]
        tokenizer: PathBuf,
        /// Passages of `dev_slice/raw.tsv` (every dev positive, then the lowest other ids).
        #[arg(long, default_value_t = 100_000)]
        slice: usize,
        /// Output directory (what pipelines call `data/msmarco`).
        dir: PathBuf,
    },
}

/// Runs one `splade bench` subcommand.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Synth {
            docs,
            queries,
            seed,
            topics,
            profile: None,
            out,
            ..
        } => synth(&out, docs, queries, seed, topics),
        BenchCommand::Synth {
            docs,
            queries,
            seed,
            profile: Some(profile),
            topics,
            topic_share,
            query_overlap,
            out,
        } => synth_from_profile(
            &out,
            &profile,
            docs,
            queries,
            seed,
            profile::Topics {
                count: topics,
                share: topic_share,
            },
            query_overlap,
        ),
        BenchCommand::Profile {
            docs,
            queries,
            max_docs,
            out,
        } => profile::write(&docs, &queries, &out, max_docs),
        BenchCommand::Retrieve {
            dir,
            docs,
            queries,
            repeats,
            max_queries,
            dump,
            ciff,
            approx,
            approx_postings,
            approx_centroid_fraction,
            approx_summary_energy,
            approx_pruning,
            approx_max_fraction,
            approx_only,
            reorder,
            algorithms,
            memory_budget,
        } => {
            let mut inputs = RetrieveInputs::new(dir, docs, queries)?;
            inputs.reorder = reorder == "bp";
            inputs.memory_budget_mib = memory_budget;
            anyhow::ensure!(
                approx_max_fraction.is_finite() && approx_max_fraction > 0.0,
                "--approx-max-fraction must be a finite number > 0, got {approx_max_fraction}"
            );
            anyhow::ensure!(
                memory_budget == 0 || reorder != "bp",
                "--memory-budget builds the index from the file as the index stage does: \
                 --reorder bp needs the collection in memory"
            );
            let approx = approx
                .map(|grid| -> Result<ApproxBench> {
                    Ok(ApproxBench {
                        grid: parse_grid(&grid)?,
                        build: splade_stages::retrieve::approximate::BuildKnobs {
                            n_postings: approx_postings,
                            centroid_fraction: approx_centroid_fraction,
                            summary_energy: approx_summary_energy,
                            pruning: if approx_pruning == "global" {
                                splade_stages::retrieve::approximate::ListPruning::Global {
                                    max_fraction: approx_max_fraction,
                                }
                            } else {
                                splade_stages::retrieve::approximate::ListPruning::PerList
                            },
                        },
                        only: approx_only,
                    })
                })
                .transpose()?;
            retrieve(
                &inputs,
                max_queries,
                repeats.max(1),
                dump.as_deref(),
                ciff.as_deref(),
                approx.as_ref(),
                &algorithms,
            )
        }
        BenchCommand::Quantization(b) => quantization(&b),
        BenchCommand::Encode(b) => encode(&b),
        BenchCommand::Train(b) => train(&b),
        BenchCommand::Mine(b) => mine(&b),
        BenchCommand::Distill { scores } => distill(&scores),
        BenchCommand::MsmarcoSynth {
            scale,
            seed,
            tokenizer,
            slice,
            dir,
        } => msmarco_synth::write(&dir, scale, seed, &tokenizer, slice).map(|_| ()),
    }
}

/// Settings of `splade bench encode`.
#[derive(clap::Args)]
pub struct EncodeBench {
    /// Model directory (config.json, weights, tokenizer.json).
    #[arg(long, default_value = "conf/models/splade-tiny")]
    pub model: PathBuf,
    /// `id<TAB>text` lines (cycled to reach --docs).
    #[arg(long, default_value = "pipelines/data/toy/collection.tsv")]
    pub texts: PathBuf,
    /// Documents to encode.
    #[arg(long, default_value_t = 512)]
    pub docs: usize,
    /// Maximum tokens per document (longer texts are truncated).
    #[arg(long, default_value_t = 128)]
    pub max_length: usize,
    /// Documents per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Length-bucketing window (0 = keep input order).
    #[arg(long, default_value_t = 2048)]
    pub sort_window: usize,
    /// Vocabulary terms projected at a time (bounds activation memory).
    #[arg(long, default_value_t = 8192)]
    pub vocab_chunk: usize,
    /// `flex` or `tch`.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Devices, comma-separated, one worker each: `cpu`, `cuda:N`, `cpu,cpu`, `cuda:0,cuda:1`.
    #[arg(long, alias = "devices", default_value = "cpu")]
    pub device: String,
    /// CPU threads shared by the device workers (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `f32` or `bf16` compute (the vectors stay f32).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub precision: String,
    /// Random token sequences of exactly --max-length tokens instead of --texts (the shape
    /// `gpu_anchor.py` measures).
    #[arg(long)]
    pub fixed_length: bool,
}

/// The `[backend]` table of `--backend` and a comma-separated `--device` list.
fn backend_table(backend: &str, devices: &str) -> serde_json::Value {
    let devices: Vec<&str> = devices.split(',').map(str::trim).collect();
    serde_json::json!({"kind": backend, "devices": devices})
}

/// `--threads`, or every core.
fn threads_or_all(threads: Option<usize>) -> usize {
    threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The `--precision` flag (clap allows only `f32` and `bf16`).
fn precision(name: &str) -> splade_stages::model::Precision {
    match name {
        "bf16" => splade_stages::model::Precision::Bf16,
        _ => splade_stages::model::Precision::F32,
    }
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Encodes `docs` texts (after one warm-up batch) and prints docs/s and peak memory.
pub fn encode(b: &EncodeBench) -> Result<()> {
    let text = std::fs::read_to_string(&b.texts)
        .with_context(|| format!("reading {}", b.texts.display()))?;
    let pool: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(_, t)| t))
        .collect();
    anyhow::ensure!(
        !pool.is_empty(),
        "{} has no id<TAB>text lines",
        b.texts.display()
    );
    let texts: Vec<&str> = (0..b.docs).map(|i| pool[i % pool.len()]).collect();
    let backend = backend_table(&b.backend, &b.device);
    let threads = threads_or_all(b.threads);
    let opts = EncodeOptions {
        max_length: b.max_length,
        pooling: Pooling::Max,
        batch_size: b.batch_size,
        sort_window: b.sort_window,
        vocab_chunk: b.vocab_chunk,
        precision: precision(&b.precision),
        sparsify: Default::default(),
    };
    let enc = TextEncoder::load(&b.model, EncodeMode::Splade, &opts, &backend, threads)?;
    let ids = match b.fixed_length {
        true => random_sequences(b.docs, b.max_length, 11),
        false => enc.tokenize(&texts)?,
    };
    let tokens: usize = ids.iter().map(Vec::len).sum();
    let hidden = indicatif::ProgressBar::hidden();
    // Warm-up: one batch per device (allocators, kernels).
    let devices = backend["devices"].as_array().map_or(1, Vec::len);
    enc.encode_tokens(&ids[..(b.batch_size * devices).min(ids.len())], &hidden)?;
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let padded: usize = length_bucketed_batches(&lengths, b.batch_size, b.sort_window)
        .iter()
        .map(|batch| batch.len() * batch.iter().map(|i| lengths[*i]).max().unwrap_or(0))
        .sum();
    let t0 = Instant::now();
    let nnz: usize = enc
        .encode_tokens(&ids, &hidden)?
        .iter()
        .map(|v| v.nnz())
        .sum();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "docs={} devices={devices} secs={secs:.3} docs_per_s={:.1} mean_tokens={:.1} padding={:.1}% mean_nnz={:.1} peak_rss_mib={:.0} threads={threads}",
        b.docs,
        b.docs as f64 / secs,
        tokens as f64 / b.docs as f64,
        100.0 * (1.0 - tokens as f64 / padded.max(1) as f64),
        nnz as f64 / b.docs as f64,
        peak_rss_mib(),
    );
    Ok(())
}

/// Deterministic 64-bit generator (splitmix64) so every machine builds the same collection.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        splade_stages::rng::splitmix64(&mut self.0)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}

/// A SPLADE-shaped synthetic vector: term ids Zipfian over the vocabulary (rank r has
/// probability ∝ 1/r), a permutation decoupling id from frequency, weights in (0, 3].
fn synth_vector(
    rng: &mut SplitMix,
    nnz: usize,
    cdf: &[f64],
    perm: &[u32],
    topic: &[u32],
) -> SparseVector {
    let mut terms = Vec::with_capacity(nnz);
    let mut guard = 0;
    while terms.len() < nnz && guard < nnz * 20 {
        guard += 1;
        if !topic.is_empty() && rng.unit() < TOPIC_SHARE {
            terms.push(topic[(rng.next() % topic.len() as u64) as usize]);
        } else {
            let u = rng.unit();
            let r = cdf.partition_point(|c| *c < u).min(cdf.len() - 1);
            terms.push(perm[r]);
        }
        if terms.len() % 16 == 0 || terms.len() == nnz {
            terms.sort_unstable();
            terms.dedup();
        }
    }
    terms.sort_unstable();
    terms.dedup();
    let weights = terms
        .iter()
        .map(|_| (3.0 * rng.unit().powf(1.6)).clamp(0.01, 3.0) as f32)
        .collect();
    SparseVector { terms, weights }
}

/// `bench synth --profile`: `docs` and `queries` vectors drawn from a profile.
fn synth_from_profile(
    out: &std::path::Path,
    profile: &std::path::Path,
    docs: usize,
    queries: usize,
    seed: u64,
    topics: profile::Topics,
    query_overlap: f64,
) -> Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&topics.share) && (0.0..=1.0).contains(&query_overlap),
        "--topic-share and --query-overlap must be in [0, 1]"
    );
    anyhow::ensure!(
        docs <= u32::MAX as usize && queries <= MAX_SYNTH_QUERIES,
        "--docs must be at most {} (an index numbers documents in 32 bits) and --queries at \
         most {MAX_SYNTH_QUERIES} (queries are held in memory)",
        u32::MAX
    );
    let p = profile::Profile::read(profile)?;
    std::fs::create_dir_all(out)?;
    let t0 = Instant::now();
    // Queries are written for random documents, chosen up front so those documents (and their
    // topics) can be kept while the rest stream to disk.
    let anchors = profile::query_anchors(queries, docs, seed ^ 0xA4C1);
    let (doc_postings, kept) =
        stream_docs(&p, &out.join("docs.parquet"), docs, seed, topics, &anchors)?;
    let anchor_docs: Vec<&(SparseVector, usize)> = match anchors
        .iter()
        .map(|d| kept.get(d).and_then(Option::as_ref))
        .collect::<Option<Vec<_>>>()
    {
        Some(drawn) => drawn,
        None if docs == 0 => Vec::new(),
        None => anyhow::bail!("a document that queries are written for was not drawn"),
    };
    // Queries tied to documents are about their document's topic.
    let query_topics: Vec<usize> = if anchor_docs.is_empty() {
        vec![0; queries]
    } else {
        anchor_docs.iter().map(|(_, topic)| *topic).collect()
    };
    let tied = query_overlap > 0.0;
    let (mut query_vectors, _) = p.generate(
        true,
        queries,
        seed ^ 0x9E37,
        topics,
        tied.then_some(query_topics.as_slice()),
    );
    let anchor_vectors: Vec<&SparseVector> = anchor_docs.iter().map(|a| &a.0).collect();
    profile::anchor_queries(&mut query_vectors, &anchor_vectors, query_overlap);
    let query_ids: Vec<String> = (0..queries).map(|i| format!("q{i}")).collect();
    write_sparse(&out.join("queries.parquet"), &query_ids, &query_vectors)?;
    let doc_nnz = doc_postings as f64 / docs.max(1) as f64;
    let query_nnz =
        query_vectors.iter().map(|v| v.nnz()).sum::<usize>() as f64 / queries.max(1) as f64;
    println!(
        "synth profile={} docs={docs} queries={queries} doc_nnz_mean={doc_nnz:.1} query_nnz_mean={query_nnz:.1} secs={:.1} out={}",
        profile.display(),
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// The documents queries are written for, with their topics, once drawn.
type KeptDocs = std::collections::HashMap<usize, Option<(SparseVector, usize)>>;

/// Draws `docs` documents from `p` into `path` a batch at a time, keeping only those named in
/// `anchors`; returns the postings drawn and the kept documents.
fn stream_docs(
    p: &profile::Profile,
    path: &std::path::Path,
    docs: usize,
    seed: u64,
    topics: profile::Topics,
    anchors: &[usize],
) -> Result<(usize, KeptDocs)> {
    let mut kept: KeptDocs = anchors.iter().map(|&d| (d, None)).collect();
    let mut sink = SparseSink::create(path)?;
    let (mut ids, mut batch) = (Vec::new(), Vec::new());
    let (mut postings, mut d) = (0usize, 0usize);
    p.generate_each(false, docs, seed, topics, None, |v, topic| -> Result<()> {
        if let Some(slot) = kept.get_mut(&d) {
            *slot = Some((v.clone(), topic));
        }
        postings += v.nnz();
        ids.push(format!("d{d}"));
        batch.push(v);
        d += 1;
        if batch.len() == SparseSink::BATCH_ROWS {
            sink.write(&ids, &batch)?;
            (ids, batch) = (Vec::new(), Vec::new());
        }
        Ok(())
    })?;
    if !ids.is_empty() {
        sink.write(&ids, &batch)?;
    }
    sink.finish()?;
    Ok((postings, kept))
}

/// Most queries `bench synth --profile` draws (they are held in memory).
const MAX_SYNTH_QUERIES: usize = 10_000_000;

/// With topics, the share of a vector's terms drawn from its topic's terms.
const TOPIC_SHARE: f64 = 0.5;
/// Terms per topic, drawn uniformly from the vocabulary (so mostly rare terms).
const TOPIC_TERMS: usize = 300;

/// Writes `docs.parquet` and `queries.parquet` of a synthetic SPLADE-shaped collection. With
/// `topics > 0` every document and query also belongs to one of `topics` random topics and draws
/// half its terms from that topic's 300 terms (queries share vocabulary with a few documents, as
/// real queries do); `topics = 0` gives the independent, hardest-to-prune collection.
pub fn synth(
    out: &std::path::Path,
    docs: usize,
    queries: usize,
    seed: u64,
    topics: usize,
) -> Result<()> {
    const VOCAB: usize = BERT_VOCAB_SIZE;
    std::fs::create_dir_all(out)?;
    let mut rng = SplitMix(seed);
    let mut cdf = Vec::with_capacity(VOCAB);
    let mut acc = 0.0;
    for r in 1..=VOCAB {
        acc += 1.0 / (r as f64).powf(1.0);
        cdf.push(acc);
    }
    for c in cdf.iter_mut() {
        *c /= acc;
    }
    let mut perm: Vec<u32> = (0..VOCAB as u32).collect();
    for i in (1..VOCAB).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        perm.swap(i, j);
    }
    let topic_terms: Vec<Vec<u32>> = (0..topics)
        .map(|_| {
            (0..TOPIC_TERMS)
                .map(|_| (rng.next() % VOCAB as u64) as u32)
                .collect()
        })
        .collect();
    // No draw at all without topics, so `topics = 0` keeps the original collection.
    let pick_topic =
        |rng: &mut SplitMix| (topics > 0).then(|| (rng.next() % topics as u64) as usize);
    let terms_of = |t: Option<usize>| t.map_or(&[][..], |t| &topic_terms[t][..]);
    let t0 = Instant::now();
    // Document nnz: log-normal around 150 (mean ≈ 170, long tail), capped at 1000.
    let doc_vecs: Vec<_> = (0..docs)
        .map(|_| {
            let nnz = (150.0 * (0.5 * rng.normal()).exp()).clamp(10.0, 1000.0) as usize;
            let topic = pick_topic(&mut rng);
            synth_vector(&mut rng, nnz, &cdf, &perm, terms_of(topic))
        })
        .collect();
    let q_vecs: Vec<_> = (0..queries)
        .map(|_| {
            let nnz = 20 + (rng.next() % 26) as usize;
            let topic = pick_topic(&mut rng);
            synth_vector(&mut rng, nnz, &cdf, &perm, terms_of(topic))
        })
        .collect();
    let ids: Vec<String> = (0..docs).map(|i| format!("d{i}")).collect();
    let qids: Vec<String> = (0..queries).map(|i| format!("q{i}")).collect();
    write_sparse(&out.join("docs.parquet"), &ids, &doc_vecs)?;
    write_sparse(&out.join("queries.parquet"), &qids, &q_vecs)?;
    let nnz: usize = doc_vecs.iter().map(|v| v.nnz()).sum();
    let qnnz: usize = q_vecs.iter().map(|v| v.nnz()).sum();
    println!(
        "synth docs={docs} queries={queries} doc_nnz_mean={:.1} query_nnz_mean={:.1} secs={:.1} out={}",
        nnz as f64 / docs.max(1) as f64,
        qnnz as f64 / queries.max(1) as f64,
        t0.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// Index build speed and size, then latency (1 thread) and throughput (all threads) of each
/// algorithm at k = 10 and 1000 on a synthetic collection made by [`synth`].
/// Where `bench retrieve` reads its vectors and builds its index.
pub struct RetrieveInputs {
    /// Document vectors (file or shard directory).
    pub docs: PathBuf,
    /// Query vectors (file or shard directory).
    pub queries: PathBuf,
    /// Where the index is built (inside the synth dir, or a temporary directory).
    pub index_dir: PathBuf,
    /// A temporary index directory to remove at the end.
    temporary: bool,
    /// Reorder the documents by graph bisection before indexing.
    pub reorder: bool,
    /// MiB of postings the index build may hold (0: the collection is read into memory).
    pub memory_budget_mib: usize,
}

impl RetrieveInputs {
    /// A `bench synth` directory, or `--docs` and `--queries`.
    pub fn new(
        dir: Option<PathBuf>,
        docs: Option<PathBuf>,
        queries: Option<PathBuf>,
    ) -> Result<Self> {
        match (dir, docs, queries) {
            (Some(dir), None, None) => Ok(RetrieveInputs {
                docs: dir.join("docs.parquet"),
                queries: dir.join("queries.parquet"),
                index_dir: dir.join("index"),
                temporary: false,
                reorder: false,
                memory_budget_mib: 0,
            }),
            (None, Some(docs), Some(queries)) => Ok(RetrieveInputs {
                docs,
                queries,
                index_dir: std::env::temp_dir()
                    .join(format!("splade-bench-index-{}", std::process::id())),
                temporary: true,
                reorder: false,
                memory_budget_mib: 0,
            }),
            _ => anyhow::bail!("give a `bench synth` directory, or both --docs and --queries"),
        }
    }
}

impl Drop for RetrieveInputs {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.index_dir);
        }
    }
}

/// Median, minimum and maximum of some measurements.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let median = if xs.is_empty() {
        0.0
    } else if xs.len() % 2 == 1 {
        xs[xs.len() / 2]
    } else {
        (xs[xs.len() / 2 - 1] + xs[xs.len() / 2]) / 2.0
    };
    (
        median,
        xs.first().copied().unwrap_or(0.0),
        xs.last().copied().unwrap_or(0.0),
    )
}

/// The approximate algorithm's part of `bench retrieve`.
pub struct ApproxBench {
    /// Settings timed.
    pub grid: Vec<splade_stages::retrieve::approximate::SearchKnobs>,
    /// How the structure is built.
    pub build: splade_stages::retrieve::approximate::BuildKnobs,
    /// Skip the exact algorithms' timings.
    pub only: bool,
}

/// `query_cut:heap_factor[:row_prefix:completion]` settings, comma-separated.
fn parse_grid(grid: &str) -> Result<Vec<splade_stages::retrieve::approximate::SearchKnobs>> {
    use splade_stages::retrieve::approximate::SearchKnobs;
    grid.split(',')
        .map(|setting| {
            let fields: Vec<&str> = setting.split(':').map(str::trim).collect();
            anyhow::ensure!(
                fields.len() == 2 || fields.len() == 4,
                "--approx: `{setting}` is not query_cut:heap_factor[:row_prefix:completion]"
            );
            let cut: usize = parse_field(fields[0])?;
            let factor: f32 = parse_field(fields[1])?;
            anyhow::ensure!(
                cut > 0 && factor > 0.0 && factor <= 1.0,
                "--approx: `{setting}`: query_cut must be > 0 and heap_factor in (0, 1]"
            );
            let mut knobs = SearchKnobs::whole_rows(cut, factor);
            if fields.len() == 4 {
                knobs.row_prefix = parse_field(fields[2])?;
                knobs.completion = parse_field(fields[3])?;
                anyhow::ensure!(
                    knobs.completion.is_finite() && knobs.completion >= 0.0,
                    "--approx: `{setting}`: completion must be a finite number >= 0"
                );
            }
            Ok(knobs)
        })
        .collect()
}

/// One number of an `--approx` setting.
fn parse_field<T>(field: &str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    field
        .parse()
        .with_context(|| format!("--approx: `{field}`"))
}

/// Approximate search at each setting of `a.grid`: single-thread ms/query (median of `repeats`
/// after a warm-up) and recall@10 against exhaustive's top 10.
fn approximate_curve(
    index: &splade_stages::index::reader::InvertedIndex,
    queries: &[SparseVector],
    repeats: usize,
    a: &ApproxBench,
) -> Result<()> {
    use splade_stages::retrieve::algorithms::exhaustive;
    use splade_stages::retrieve::approximate::{ApproximateIndex, ApproximateScratch, ListPruning};
    let t0 = Instant::now();
    let approx = ApproximateIndex::build(index, a.build)
        .context("the index has more terms than the approximate structure holds")?;
    let pruning = match a.build.pruning {
        ListPruning::PerList => "per-list".to_string(),
        ListPruning::Global { max_fraction } => format!("global max_fraction={max_fraction}"),
    };
    println!(
        "approximate index n_postings={} pruning={pruning} kept_postings={} centroid_fraction={} summary_energy={} blocks={} mib={:.1} build_s={:.2}",
        a.build.n_postings,
        approx.kept_postings(),
        a.build.centroid_fraction,
        a.build.summary_energy,
        approx.blocks(),
        approx.bytes() as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    let mut acc = Vec::new();
    let exact: Vec<Vec<u32>> = queries
        .iter()
        .map(|q| {
            exhaustive(index, q, 10, &mut acc)
                .iter()
                .map(|h| h.doc)
                .collect()
        })
        .collect();
    let n = queries.len().max(1) as f64;
    for &knobs in &a.grid {
        let mut s = ApproximateScratch::default();
        let got: Vec<Vec<u32>> = queries
            .iter()
            .map(|q| {
                approx
                    .search(q, 10, knobs, &mut s)
                    .iter()
                    .map(|h| h.doc)
                    .collect()
            })
            .collect();
        let per_q = |x: u64| x as f64 / n;
        let counts = format!(
            "docs_scored={:.0} rows_completed={:.0} blocks_scored={:.0} blocks_ranked={:.0} entries_per_doc={:.1}",
            per_q(s.docs_scored),
            per_q(s.rows_completed),
            per_q(s.blocks_scored),
            per_q(s.blocks_ranked),
            s.entries_scored as f64 / s.docs_scored.max(1) as f64
        );
        let recall = exact
            .iter()
            .zip(&got)
            .map(|(e, g)| splade_stages::retrieve::exact::overlap_at(e, g, 10))
            .sum::<f64>()
            / n;
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t0 = Instant::now();
            let hits: usize = queries
                .iter()
                .map(|q| approx.search(q, 10, knobs, &mut s).len())
                .sum();
            times.push(t0.elapsed().as_secs_f64() * 1e3 / n);
            std::hint::black_box(hits);
        }
        let (ms, lo, hi) = spread(times);
        println!(
            "retrieve algo=approximate query_cut={} heap_factor={} row_prefix={} completion={} k=10 \
             ms_per_query_1thread={ms:.3} (min {lo:.3} max {hi:.3}) recall_at_10={recall:.4} repeats={repeats} {counts}",
            knobs.query_cut, knobs.heap_factor, knobs.row_prefix, knobs.completion
        );
    }
    Ok(())
}

/// Builds `inputs.index_dir` from the documents held in memory (reordered first with
/// `inputs.reorder`); returns the seconds the index build took (not the reading or reordering).
fn build_in_memory(
    inputs: &RetrieveInputs,
) -> Result<(splade_stages::index::build::BuildStats, f64)> {
    let (_, mut docs) = splade_stages::parquet_io::read_sparse(&inputs.docs)?;
    if inputs.reorder {
        use splade_stages::index::reorder::{bisection_order, permute};
        let t0 = Instant::now();
        let order = bisection_order(&docs);
        docs = permute(docs, &order);
        println!(
            "reorder bp docs={} seconds={:.1}",
            docs.len(),
            t0.elapsed().as_secs_f64()
        );
    }
    let t0 = Instant::now();
    let stats = splade_stages::index::build::build(&inputs.index_dir, &docs, BERT_VOCAB_SIZE, 0.0)?;
    let build_s = t0.elapsed().as_secs_f64();
    Ok((stats, build_s))
}

/// Builds `inputs.index_dir` as the index stage does with a `memory_budget`: streamed from the
/// file through sorted runs on disk, so the collection is never held; returns the seconds it
/// took (the scan included) and the runs spilled. The runs and the doc ids the scan writes go to
/// a directory beside the index, removed however the build ends.
fn build_spilled(
    inputs: &RetrieveInputs,
) -> Result<(splade_stages::index::build::BuildStats, f64, usize)> {
    use splade_stages::index::spill;
    let t0 = Instant::now();
    let runs_dir = inputs.index_dir.with_extension("runs");
    let build = || -> Result<(splade_stages::index::build::BuildStats, usize)> {
        std::fs::create_dir_all(&runs_dir)
            .with_context(|| format!("creating {}", runs_dir.display()))?;
        let scan = spill::scan(&inputs.docs, &runs_dir.join("doc_ids.parquet"))?;
        let job = spill::ExternalBuild {
            input: inputs.docs.clone(),
            dir: inputs.index_dir.clone(),
            runs_dir: runs_dir.clone(),
            vocab: BERT_VOCAB_SIZE,
            max_weight: 0.0,
            budget: inputs.memory_budget_mib.saturating_mul(1 << 20),
        };
        Ok(spill::build_external(
            &job,
            &scan,
            spill::SpillState::default(),
            |_| Ok(()),
        )?)
    };
    let built = build();
    let _ = std::fs::remove_dir_all(&runs_dir);
    let (stats, runs) = built?;
    Ok((stats, t0.elapsed().as_secs_f64(), runs))
}

/// Builds an index over the documents and times every algorithm at k = 10 and 1000 (see
/// [`BenchCommand::Retrieve`]).
pub fn retrieve(
    inputs: &RetrieveInputs,
    max_queries: usize,
    repeats: usize,
    dump: Option<&std::path::Path>,
    ciff: Option<&std::path::Path>,
    approx: Option<&ApproxBench>,
    algorithms: &str,
) -> Result<()> {
    use rayon::prelude::*;
    use splade_stages::index::reader::InvertedIndex;
    use splade_stages::retrieve::algorithms::{exhaustive, exhaustive_in_slices, maxscore};
    use splade_stages::retrieve::block_max::{block_max, RangeMaxima};
    // Checked before the index is built (minutes at 1M documents).
    let algos: Vec<&str> = algorithms.split(',').map(str::trim).collect();
    for algo in &algos {
        anyhow::ensure!(
            EXACT_ALGORITHMS.contains(algo),
            "--algorithms: unknown `{algo}` ({})",
            EXACT_ALGORITHMS.join(", ")
        );
    }
    let (_, mut queries) = splade_stages::parquet_io::read_query_vectors(&inputs.queries)?;
    queries.truncate(max_queries);
    let index_dir = inputs.index_dir.clone();
    let (stats, build_s, spilled_runs) = if inputs.memory_budget_mib > 0 {
        build_spilled(inputs)?
    } else {
        let (stats, build_s) = build_in_memory(inputs)?;
        (stats, build_s, 0)
    };
    let t0 = Instant::now();
    let index = InvertedIndex::open(&index_dir)?;
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "index docs={} postings={} build_docs_per_s={:.0} bytes_per_posting={:.3} postings_mib={:.1} open_ms={:.1} spilled_runs={spilled_runs} rss_mib={:.0}",
        stats.n_docs,
        stats.n_postings,
        stats.n_docs as f64 / build_s,
        stats.postings_bytes as f64 / stats.n_postings.max(1) as f64,
        stats.postings_bytes as f64 / (1 << 20) as f64,
        open_ms,
        peak_rss_mib()
    );
    if let Some(path) = ciff {
        write_ciff(&index, path)?;
    }
    if let Some(path) = dump {
        // MaxScore top-1000 per query as `query_index<TAB>doc_index<TAB>integer score`.
        let mut out = String::new();
        for (qi, q) in queries.iter().enumerate() {
            for h in maxscore(&index, q, 1000) {
                out += &format!("{qi}\t{}\t{}\n", h.doc, h.score);
            }
        }
        std::fs::write(path, out)?;
    }
    if let Some(a) = approx {
        approximate_curve(&index, &queries, repeats, a)?;
        if a.only {
            return Ok(());
        }
    }
    let t0 = Instant::now();
    let table = RangeMaxima::load(&index, &index_dir)?;
    println!(
        "block_max bound table entries={} mib={:.1} open_ms={:.0}",
        table.entries(),
        table.bytes() as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64() * 1e3
    );
    for k in [10usize, 1000] {
        // `one_pass`: exhaustive with a single collection-wide accumulator (no slicing), to show
        // what the L2-sized slices buy.
        let run = |algo: &str, q: &SparseVector, s: &mut ExactScratch| match algo {
            "exhaustive" => exhaustive(&index, q, k, &mut s.0),
            "one_pass" => exhaustive_in_slices(&index, q, k, &mut s.0, u32::MAX),
            "maxscore" => maxscore(&index, q, k),
            _ => block_max(&index, &table, q, k, &mut s.1),
        };
        // Warm-up: caches, page-ins and allocations out of the timed passes.
        let mut timings: Vec<ExactTiming> = algos
            .iter()
            .map(|algo| {
                let mut scratch = ExactScratch::default();
                let hits = queries
                    .iter()
                    .map(|q| run(algo, q, &mut scratch).len())
                    .sum();
                ExactTiming {
                    hits,
                    ..ExactTiming::default()
                }
            })
            .collect();
        let n = queries.len().max(1) as f64;
        // Every repeat times each algorithm once, in turn: the machine's drift (it is shared)
        // then falls on all of them alike, and their ratios hold within a run. The order rotates
        // from one repeat to the next: the algorithm timed right after exhaustive starts with
        // caches full of exhaustive's postings, measured 7–10 % slower than in the next place.
        for r in 0..repeats {
            let mut turns: Vec<(&&str, &mut ExactTiming)> =
                algos.iter().zip(&mut timings).collect();
            turns.rotate_left(r % algos.len().max(1));
            for (algo, t) in turns {
                let t0 = Instant::now();
                let again: usize = queries
                    .iter()
                    .map(|q| run(algo, q, &mut t.scratch).len())
                    .sum();
                t.single.push(t0.elapsed().as_secs_f64() * 1e3 / n);
                anyhow::ensure!(again == t.hits, "two passes disagree");
                let t0 = Instant::now();
                let total: usize = queries
                    .par_iter()
                    .map_init(ExactScratch::default, |s, q| run(algo, q, s).len())
                    .sum();
                t.parallel.push(n / t0.elapsed().as_secs_f64());
                anyhow::ensure!(total == t.hits, "parallel and sequential runs disagree");
            }
        }
        for (algo, t) in algos.iter().zip(timings) {
            print_exact_timing(algo, k, repeats, n, t);
        }
    }
    Ok(())
}

/// Writes the index's postings as CIFF (terms and doc ids named by their numbers), streamed a
/// list at a time, for PISA's `ciff2pisa`.
fn write_ciff(
    index: &splade_stages::index::reader::InvertedIndex,
    path: &std::path::Path,
) -> Result<()> {
    let t0 = Instant::now();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let name = |n: u32| n.to_string();
    splade_stages::export::index_ciff::write_index_ciff(index, &name, &name, &mut out)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::flush(&mut out).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "ciff path={} seconds={:.1}",
        path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The exact algorithms `bench retrieve --algorithms` times.
const EXACT_ALGORITHMS: [&str; 4] = ["exhaustive", "one_pass", "maxscore", "block_max"];

/// Per-thread buffers of the exact algorithms.
type ExactScratch = (
    Vec<u32>,
    splade_stages::retrieve::block_max::BlockMaxScratch,
);

/// One exact algorithm's timed passes at one k.
#[derive(Default)]
struct ExactTiming {
    /// Hits of the warm-up pass (every timed pass must return as many).
    hits: usize,
    /// ms per query of each single-thread pass.
    single: Vec<f64>,
    /// Queries per second of each all-threads pass.
    parallel: Vec<f64>,
    /// The single-thread passes' buffers (their pruning counters are reported).
    scratch: ExactScratch,
}

/// Prints one `retrieve algo=...` line: median and range of the passes, and for block_max how
/// much pruning saved.
fn print_exact_timing(algo: &str, k: usize, repeats: usize, n: f64, t: ExactTiming) {
    let (single_ms, single_min, single_max) = spread(t.single);
    let (qps, qps_min, qps_max) = spread(t.parallel);
    let s = &t.scratch.1;
    let pruning = if algo == "block_max" {
        format!(
            " ranges_scored={:.3} ranges_cut={:.3} terms_per_scored_range={:.1} \
             bounds_ms_per_query={:.3}",
            s.ranges_scored as f64 / s.ranges_bounded.max(1) as f64,
            s.ranges_cut as f64 / s.ranges_scored.max(1) as f64,
            s.range_terms_scored as f64 / s.ranges_scored.max(1) as f64,
            s.bounds_s * 1e3 / (n * repeats as f64)
        )
    } else {
        String::new()
    };
    println!(
        "retrieve algo={algo:<10} k={k:<5} ms_per_query_1thread={single_ms:.3} \
         (min {single_min:.3} max {single_max:.3}) qps_all_threads={qps:.1} \
         (min {qps_min:.1} max {qps_max:.1}) repeats={repeats} threads={}{pruning}",
        rayon::current_num_threads()
    );
}

/// Settings of `splade bench train`.
#[derive(clap::Args)]
pub struct TrainBench {
    /// Model directory (config.json, weights, tokenizer.json).
    #[arg(long, default_value = "conf/models/splade-tiny")]
    pub model: PathBuf,
    /// Queries per step (each with one positive and one negative document).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Tokens per generated query ([CLS] and [SEP] included).
    #[arg(long, default_value_t = 32)]
    pub query_length: usize,
    /// Tokens per generated document ([CLS] and [SEP] included).
    #[arg(long, default_value_t = 128)]
    pub doc_length: usize,
    /// Measured steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// `flex` or `tch`.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Devices, comma-separated, one worker each: `cpu`, `cuda:N`, `cpu,cpu`, `cuda:0,cuda:0`.
    #[arg(long, alias = "devices", default_value = "cpu")]
    pub device: String,
    /// CPU threads shared by the device workers (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Dropout probability (BERT's 0.1 by default; 0 turns it off).
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    /// Vocabulary terms projected at a time (bounds activation memory).
    #[arg(long, default_value_t = 8192)]
    pub vocab_chunk: usize,
    /// `f32` or `bf16` (mixed precision: bf16 compute, f32 master weights and optimizer).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16"])]
    pub precision: String,
}

/// Random token sequences of exactly `len` tokens (`[CLS] ... [SEP]`), as `bench/train_torch.py`.
fn random_sequences(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let mut seq = vec![101u32];
            seq.extend(
                (2..len).map(|_| 1000 + (splade_stages::rng::splitmix64(&mut s) % 29000) as u32),
            );
            seq.push(102);
            seq
        })
        .collect()
}

/// Training steps per second of the SPLADE step the `train` stage runs (in-batch negatives +
/// FLOPS, AdamW), on fixed-length random token batches, with peak memory.
pub fn train(b: &TrainBench) -> Result<()> {
    use burn::module::Module;
    use burn::optim::{AdamWConfig, GradientsAccumulator};
    use splade_stages::model::loader::load_mlm;
    use splade_stages::model::network::PoolingKind;
    use splade_stages::train::encoders::{EncoderPair, Encoding, QueryEncoding};
    use splade_stages::train::losses::RankingLoss;
    use splade_stages::train::regularizer::{
        LambdaSchedule, LambdaWarmup, Regularizer, RegularizerKind,
    };
    use splade_stages::train::step::{
        DataParallel, Objective, PendingStats, StepPosition, TokenizedBatch,
    };

    let devices: Vec<_> =
        splade_stages::model::devices_from_backend(&backend_table(&b.backend, &b.device))?
            .into_iter()
            .map(|d| d.autodiff())
            .collect();
    let (cfg, model) = load_mlm(&b.model, &devices[0])?;
    let model = EncoderPair {
        doc: model,
        query: None,
    }
    .train();
    let mut optim = AdamWConfig::new()
        .with_epsilon(1e-6)
        .with_weight_decay(0.01)
        .init();
    let objective = Objective {
        losses: vec![(RankingLoss::InBatchPairwiseNll, 1.0)],
        regularizers: vec![Regularizer {
            kind: RegularizerKind::Flops,
            query: LambdaSchedule {
                lambda: 0.5,
                warmup: 0,
                counting: LambdaWarmup::Steps,
            },
            doc: LambdaSchedule {
                lambda: 0.4,
                warmup: 0,
                counting: LambdaWarmup::Steps,
            },
            pooled_docs: false,
        }],
        anti_zero: false,
    };
    let threads = threads_or_all(b.threads);
    let n_devices = devices.len();
    let parallel = DataParallel::new(
        devices,
        Encoding {
            pooling: PoolingKind::Max,
            vocab_chunk: b.vocab_chunk,
            pad: cfg.pad_token_id,
            queries: QueryEncoding::Shared,
            precision: precision(&b.precision),
            dropout: b.dropout,
        },
        threads,
    )?;
    let mut run_step = |i: usize, model: EncoderPair| -> Result<(EncoderPair, PendingStats)> {
        let batch = TokenizedBatch {
            queries: random_sequences(b.batch_size, b.query_length, 2 * i as u64 + 1),
            docs: random_sequences(2 * b.batch_size, b.doc_length, 2 * i as u64 + 2),
            per_query: 2,
            teacher: None,
            query_len: b.query_length,
            doc_len: b.doc_length,
        };
        let mut acc = GradientsAccumulator::<EncoderPair>::new();
        let figures = parallel.accumulate(
            &model,
            i as u64,
            &batch,
            &objective,
            StepPosition {
                t: i as u64 + 1,
                micro: i as u64,
                seed: 1,
            },
            1.0,
            &mut acc,
        )?;
        Ok((optim.step(2e-5, model, acc.grads()), figures))
    };
    // The figures are read as the stage reads them: not every step; the last read waits for the
    // device (asynchronous on a GPU) so the timing covers all the work.
    let (mut model, warm_up) = run_step(0, model)?;
    warm_up.read()?;
    let t0 = Instant::now();
    let mut last = None;
    for i in 1..=b.steps {
        let figures;
        (model, figures) = run_step(i, model)?;
        last = Some(figures);
    }
    if let Some(figures) = last {
        figures.read()?;
    }
    let _ = model.valid();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "steps={} devices={n_devices} batch={} query_length={} doc_length={} secs={secs:.3} steps_per_s={:.3} examples_per_s={:.2} peak_rss_mib={:.0} threads={threads} backend={}",
        b.steps,
        b.batch_size,
        b.query_length,
        b.doc_length,
        b.steps as f64 / secs,
        (b.steps * b.batch_size) as f64 / secs,
        peak_rss_mib(),
        b.backend,
    );
    Ok(())
}

/// Settings of `splade bench mine`.
#[derive(clap::Args)]
pub struct MineBench {
    /// Queries in the generated run.
    #[arg(long, default_value_t = 500_000)]
    pub queries: usize,
    /// Run depth per query.
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// Negatives to mine per query.
    #[arg(long, default_value_t = 8)]
    pub negatives: usize,
    /// Negative sampling: `random`, `top` or `stratified`.
    #[arg(long, default_value = "random")]
    pub sampling: String,
    /// Also generate a teacher score for every run row and positive, and mine with the
    /// false-negative filter (margin 3, unscored kept).
    #[arg(long)]
    pub teacher: bool,
    /// Where the generated run, qrels and output go (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs one stage kind on `inputs` with `params` over its defaults, the way the engine would;
/// returns the outcome and the seconds `run` took.
fn run_stage(
    kind: &dyn splade_stages::Stage,
    params: serde_json::Value,
    inputs: Vec<(&str, splade_stages::ResolvedInput)>,
    staging: &std::path::Path,
) -> Result<(splade_stages::StageOutcome, f64)> {
    let t0 = Instant::now();
    let outcome = run_in_process(kind, &params, staging, |ctx| {
        inputs
            .into_iter()
            .fold(ctx.with_threads(2), |ctx, (k, v)| ctx.with_input(k, v))
    })?;
    Ok((outcome, t0.elapsed().as_secs_f64()))
}

fn artifact_input(path: PathBuf) -> splade_stages::ResolvedInput {
    splade_stages::ResolvedInput::Artifact {
        reference: "bench".into(),
        artifact: path.parent().map(PathBuf::from).unwrap_or_default(),
        path,
    }
}

/// Generates a run of `queries` x `depth` (one positive per query, inside the run for half of
/// them) and qrels as Parquet, streamed, then times the mine stage on them.
pub fn mine(b: &MineBench) -> Result<()> {
    use splade_stages::parquet_io::ParquetSink;
    use std::sync::Arc;
    let dir = match &b.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("splade-bench-mine-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (run_path, qrels_path) = (dir.join("run.parquet"), dir.join("qrels.parquet"));
    let t0 = Instant::now();
    let mut run = ParquetSink::create(&run_path, splade_stages::schema::run())?;
    let mut qrels = ParquetSink::create(&qrels_path, splade_stages::schema::qrels())?;
    let teacher_path = dir.join("teacher_scores.parquet");
    let mut teacher = if b.teacher {
        Some(ParquetSink::create(
            &teacher_path,
            splade_stages::schema::teacher_scores(),
        )?)
    } else {
        None
    };
    let mut rng = 7u64;
    let chunk = (64 * 1024 / b.depth).max(1);
    for start in (0..b.queries).step_by(chunk) {
        let end = (start + chunk).min(b.queries);
        let (mut q, mut d, mut r, mut s) = (vec![], vec![], vec![], vec![]);
        let (mut qq, mut qd) = (vec![], vec![]);
        for qid in start..end {
            let base = splade_stages::rng::splitmix64(&mut rng) % 8_800_000;
            let pos = base
                + if qid % 2 == 0 {
                    splade_stages::rng::splitmix64(&mut rng) % b.depth as u64
                } else {
                    b.depth as u64
                };
            qq.push(qid.to_string());
            qd.push(pos.to_string());
            for i in 0..b.depth {
                q.push(qid.to_string());
                d.push((base + i as u64).to_string());
                r.push(i as u32 + 1);
                s.push(100.0 - i as f64 * 0.5);
            }
        }
        if let Some(t) = teacher.as_mut() {
            // The positive scores 10, run documents spread over [-12, 12): some within the margin.
            let mut tq = q.clone();
            let mut td = d.clone();
            let mut ts: Vec<f32> = (0..q.len())
                .map(|_| (splade_stages::rng::splitmix64(&mut rng) % 2400) as f32 / 100.0 - 12.0)
                .collect();
            tq.extend(qq.iter().cloned());
            td.extend(qd.iter().cloned());
            ts.extend(std::iter::repeat_n(10.0f32, qq.len()));
            let n = tq.len();
            t.write_columns(vec![
                Arc::new(splade_stages::arrow::array::StringArray::from(tq)),
                Arc::new(splade_stages::arrow::array::StringArray::from(td)),
                Arc::new(splade_stages::arrow::array::Float32Array::from(ts)),
                Arc::new(splade_stages::arrow::array::StringArray::from(vec![
                    "bench";
                    n
                ])),
            ])?;
        }
        run.write_columns(vec![
            Arc::new(splade_stages::arrow::array::StringArray::from(q)),
            Arc::new(splade_stages::arrow::array::StringArray::from(d)),
            Arc::new(splade_stages::arrow::array::UInt32Array::from(r)),
            Arc::new(splade_stages::arrow::array::Float64Array::from(s)),
        ])?;
        let n = qq.len();
        qrels.write_columns(vec![
            Arc::new(splade_stages::arrow::array::StringArray::from(qq)),
            Arc::new(splade_stages::arrow::array::StringArray::from(qd)),
            Arc::new(splade_stages::arrow::array::Int32Array::from(vec![1; n])),
        ])?;
    }
    let rows = run.finish()?;
    qrels.finish()?;
    if let Some(t) = teacher {
        t.finish()?;
    }
    let gen_secs = t0.elapsed().as_secs_f64();
    let rss_before = peak_rss_mib();
    let mut params = serde_json::json!({
        "run": "bench.run", "qrels": "bench.qrels", "depth": b.depth,
        "rank_range": [1, b.depth], "negatives": b.negatives, "sampling": b.sampling,
    });
    let mut inputs = vec![
        ("run", artifact_input(run_path)),
        ("qrels", artifact_input(qrels_path)),
    ];
    if b.teacher {
        params["teacher_scores"] = serde_json::json!("bench.teacher_scores");
        params["margin"] = serde_json::json!(3.0);
        inputs.push(("teacher_scores", artifact_input(teacher_path)));
    }
    let (outcome, secs) = run_stage(
        &splade_stages::mine::Mine,
        params,
        inputs,
        &dir.join("staging"),
    )?;
    let kept = outcome.stats["queries_kept"].as_u64().unwrap_or(0);
    if b.teacher {
        println!(
            "teacher filter: {} candidates, {} dropped by the margin",
            outcome.stats["candidates_seen"], outcome.stats["dropped_margin"]
        );
    }
    println!(
        "mine: {} queries x depth {} ({rows} run rows, generated in {gen_secs:.1} s): {secs:.2} s = {:.0} queries/s, {:.2}M run rows/s; {kept} queries kept; peak RSS {:.0} MiB (after generating: {rss_before:.0} MiB)",
        b.queries,
        b.depth,
        b.queries as f64 / secs,
        rows as f64 / secs / 1e6,
        peak_rss_mib()
    );
    println!(
        "queries={} depth={} seconds={secs:.3} queries_per_s={:.0} peak_rss_mib={:.0}",
        b.queries,
        b.depth,
        b.queries as f64 / secs,
        peak_rss_mib()
    );
    if b.dir.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}

/// Times the distill stage on a score file and prints scores/s and peak memory.
pub fn distill(scores: &std::path::Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("splade-bench-distill-{}", std::process::id()));
    let (outcome, secs) = run_stage(
        &splade_stages::distill::Distill,
        serde_json::json!({ "scores": scores.display().to_string() }),
        vec![(
            "scores",
            splade_stages::ResolvedInput::File(scores.to_path_buf()),
        )],
        &dir,
    )?;
    let n = outcome.stats["scores"].as_u64().unwrap_or(0);
    let size = std::fs::metadata(scores).map(|m| m.len()).unwrap_or(0);
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "distill: {n} scores from {} ({:.0} MB): {secs:.2} s = {:.2}M scores/s; peak RSS {:.0} MiB",
        scores.display(),
        size as f64 / 1e6,
        n as f64 / secs / 1e6,
        peak_rss_mib()
    );
    println!(
        "scores={n} seconds={secs:.3} scores_per_s={:.0} peak_rss_mib={:.0}",
        n as f64 / secs,
        peak_rss_mib()
    );
    Ok(())
}

/// Settings of `splade bench quantization`.
#[derive(clap::Args)]
pub struct QuantizationBench {
    /// A `bench synth` directory (docs.parquet, queries.parquet); or give --docs and --queries.
    pub dir: Option<PathBuf>,
    /// Document sparse vectors (file or shard directory, e.g. `splade path P encode_docs.vectors`).
    #[arg(long)]
    pub docs: Option<PathBuf>,
    /// Query sparse vectors.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Qrels (Parquet, e.g. `splade path P ingest.dev_qrels`): adds MRR@10 and nDCG@10 of both.
    #[arg(long)]
    pub qrels: Option<PathBuf>,
    /// At most this many queries.
    #[arg(long, default_value_t = 1000)]
    pub max_queries: usize,
    /// `max_weight` of the index (0 = the collection's largest weight, the stage default).
    #[arg(long, default_value_t = 0.0)]
    pub max_weight: f32,
}

/// Exact float top-k against the quantized index's top-k (the `index` and `retrieve` stages'
/// arithmetic): mean overlap@k and, with qrels, MRR@10 / nDCG@10 of both runs.
pub fn quantization(b: &QuantizationBench) -> Result<()> {
    use splade_stages::evaluate::metrics::{evaluate, EvalOptions, Measure};
    use splade_stages::index::reader::InvertedIndex;
    use splade_stages::parquet_io::{read_qrels, read_query_vectors, read_sparse, RunRow};
    use splade_stages::retrieve::algorithms::{exhaustive, QUERY_SCALE};
    use splade_stages::retrieve::exact::{overlap_at, FloatIndex};
    let (docs_path, queries_path) = match (&b.dir, &b.docs, &b.queries) {
        (_, Some(d), Some(q)) => (d.clone(), q.clone()),
        (Some(dir), None, None) => (dir.join("docs.parquet"), dir.join("queries.parquet")),
        _ => anyhow::bail!("give a `bench synth` directory, or both --docs and --queries"),
    };
    let (doc_ids, docs) = read_sparse(&docs_path)?;
    let (qids, mut queries) = read_query_vectors(&queries_path)?;
    queries.truncate(b.max_queries);
    let tmp = tempfile_dir()?;
    let stats = splade_stages::index::build::build(&tmp, &docs, BERT_VOCAB_SIZE, b.max_weight)?;
    let index = InvertedIndex::open(&tmp)?;
    let exact = FloatIndex::build(&docs);
    drop(docs);
    const DEPTH: usize = 1000;
    let ks = [1usize, 10, 100, 1000];
    let to_float = 1.0 / (index.scale * QUERY_SCALE);
    let per_query: Vec<(Vec<f64>, Vec<RunRow>, Vec<RunRow>)> = {
        use rayon::prelude::*;
        queries
            .par_iter()
            .enumerate()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(acc_q, acc_f), (i, q)| {
                    let quant = exhaustive(&index, q, DEPTH, acc_q);
                    let float = exact.top_k(q, DEPTH, acc_f);
                    let fd: Vec<u32> = float.iter().map(|h| h.0).collect();
                    let qd: Vec<u32> = quant.iter().map(|h| h.doc).collect();
                    let overlaps = ks.iter().map(|k| overlap_at(&fd, &qd, *k)).collect();
                    let row = |rank: usize, doc: u32, score: f32| RunRow {
                        qid: qids[i].clone(),
                        did: doc_ids[doc as usize].clone(),
                        rank: rank as u32 + 1,
                        score: f64::from(score),
                    };
                    let frun = float
                        .iter()
                        .enumerate()
                        .map(|(r, h)| row(r, h.0, h.1))
                        .collect();
                    let qrun = quant
                        .iter()
                        .enumerate()
                        .map(|(r, h)| row(r, h.doc, h.score as f32 * to_float))
                        .collect();
                    (overlaps, frun, qrun)
                },
            )
            .collect()
    };
    let n = per_query.len().max(1) as f64;
    let mut line = format!(
        "quantization queries={} docs={} scale={:.3} dropped_postings={}",
        per_query.len(),
        stats.n_docs,
        stats.scale,
        stats.dropped_postings
    );
    for (j, k) in ks.iter().enumerate() {
        let mean = per_query.iter().map(|p| p.0[j]).sum::<f64>() / n;
        line += &format!(" overlap@{k}={mean:.4}");
    }
    if let Some(qrels_path) = &b.qrels {
        let qrels = read_qrels(qrels_path)?;
        let measures = [Measure::Mrr(10), Measure::Ndcg(10)];
        let float_run: Vec<RunRow> = per_query.iter().flat_map(|p| p.1.clone()).collect();
        let quant_run: Vec<RunRow> = per_query.iter().flat_map(|p| p.2.clone()).collect();
        let f = evaluate(&float_run, &qrels, &measures, EvalOptions::default());
        let q = evaluate(&quant_run, &qrels, &measures, EvalOptions::default());
        for (j, m) in measures.iter().enumerate() {
            line += &format!(
                " {name}_float={:.4} {name}_quantized={:.4} {name}_diff={:+.4}",
                f.means[j],
                q.means[j],
                q.means[j] - f.means[j],
                name = m.name()
            );
        }
        line += &format!(" evaluated_queries={}", q.n_queries);
    }
    println!("{line}");
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// A fresh scratch directory under the system temp dir.
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "splade-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
