//! `bm25`: documents → BM25 term-weight vectors over the model's WordPiece vocabulary, so BM25
//! runs through the same `index` and `retrieve` stages as SPLADE (queries: `encode` with
//! `mode = "bag_of_words"`). Lucene's idf `ln(1 + (N − df + 0.5)/(df + 0.5))`.
//!
//! Two passes, each tokenizing nothing twice: the first tokenizes the collection a shard of 100k
//! documents at a time, keeping lengths and document frequencies (4 bytes per document) and
//! spilling each shard's term counts to the staging directory; the second weighs and writes the
//! shards from the spill (resumable per shard). Memory: one shard, plus 4 bytes per document.

use std::collections::HashMap;

use rayon::prelude::*;
use serde_json::{json, Map, Value};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::encode::VectorStats;
use crate::error::{Result, StageError};
use crate::model::{TextTokenizer, BERT_VOCAB_SIZE};
use crate::params::ParamError;
use crate::parquet_io::{read_sparse, write_sparse, IdTextChunks, SparseVector};
use crate::sharded::ShardedOutput;

/// The bm25 stage kind.
pub struct Bm25;

crate::stage_params! {
    /// Params of [`Bm25`].
    pub struct Bm25Params {
        /// documents (id, text)
        input: String [Artifact],
        /// model directory whose tokenizer.json is used
        model: String [File] = "\"conf/models/splade-tiny\"",
        /// term-frequency saturation
        k1: f64 [Float] = "0.9",
        /// length normalisation
        b: f64 [Float] = "0.4",
        /// tokens per document
        max_length: i64 [Int] = "512",
    }
}

impl TypedStage for Bm25 {
    type Params = Bm25Params;
    const KIND: &'static str = "bm25";
    const VERSION: u32 = 2;
    const STOPS_AT_CHECKPOINTS: bool = true;
    const DOC: &'static str =
        "documents → BM25 weight vectors (index them with `index`, query with bag-of-words vectors)";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "input" => Some(&[Holds::Texts]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &Bm25Params) -> Vec<String> {
        vec!["vectors".into()]
    }

    fn check(&self, p: &Bm25Params) -> std::result::Result<(), ParamError> {
        if p.k1 < 0.0 {
            return Err(ParamError::new(
                "k1",
                format!(
                    "must be >= 0 (0 = binary term weights; usual: 0.9 to 1.2), got {}",
                    p.k1
                ),
            ));
        }
        if !(0.0..=1.0).contains(&p.b) {
            return Err(ParamError::new(
                "b",
                format!(
                    "must be in [0, 1] (0 = no length normalisation, 1 = full), got {}",
                    p.b
                ),
            ));
        }
        if p.max_length < 2 {
            return Err(ParamError::new(
                "max_length",
                format!(
                    "must leave room for [CLS] and [SEP] (at least 2), got {}",
                    p.max_length
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, p: Bm25Params, ctx: &mut StageContext) -> Result<StageOutcome> {
        let tok = TextTokenizer::load(ctx.input("model")?.path(), p.max_length.max(2) as usize)?;
        let input = ctx.input("input")?.path().to_path_buf();
        let spill = ctx.staging_dir().join("bm25-term-counts");
        let counts = collection_counts(&input, &tok, &spill)?;
        let shards = counts.lens.len().div_ceil(DOCS_PER_SHARD).max(1);
        let mut out = ShardedOutput::open(ctx, "vectors", shards)?;
        let weigh = Weighting {
            k1: p.k1,
            b: p.b,
            counts: &counts,
        };
        let mut stats = VectorStats::new(BERT_VOCAB_SIZE);
        for s in 0..shards {
            if out.path(s).is_file() && s < out.committed() {
                stats.add(&read_sparse(&out.path(s))?.1);
                continue;
            }
            let (ids, docs) = read_term_counts(&spill_file(&spill, s))?;
            let vectors: Vec<SparseVector> = docs
                .iter()
                .map(|(tf, len)| weigh.vector(tf, *len))
                .collect();
            write_sparse(&out.path(s), &ids, &vectors)?;
            stats.add(&vectors);
            out.commit(ctx, s, Map::new())?;
        }
        // The spill is scratch, not part of the artifact.
        std::fs::remove_dir_all(&spill).map_err(|e| StageError::io(&spill, e))?;
        let mut stats: Map<String, Value> = stats.finish();
        stats.insert("avg_doc_tokens".into(), json!(counts.avgdl));
        stats.insert("shards".into(), json!(shards));
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}

/// Documents per output shard (and per chunk read): bounds what one pass holds.
const DOCS_PER_SHARD: usize = 100_000;

/// What BM25 needs of the whole collection before it can weigh any document: each document's
/// length in tokens, each term's document frequency, and the mean length.
struct CollectionCounts {
    lens: Vec<u32>,
    df: HashMap<u32, u32>,
    avgdl: f64,
}

/// The first pass: tokenizes every document once, keeping lengths and document frequencies in
/// memory and each shard's ids and term counts in a spill file under `spill`, which the second
/// pass reads instead of tokenizing again.
fn collection_counts(
    input: &std::path::Path,
    tok: &TextTokenizer,
    spill: &std::path::Path,
) -> Result<CollectionCounts> {
    std::fs::create_dir_all(spill).map_err(|e| StageError::io(spill, e))?;
    let mut lens = Vec::new();
    let mut df: HashMap<u32, u32> = HashMap::new();
    let mut chunks = IdTextChunks::open(input, DOCS_PER_SHARD)?;
    let mut shard = 0;
    while let Some(docs) = chunks.next_chunk()? {
        let counts = term_counts(&docs.texts, tok)?;
        for (tf, len) in &counts {
            lens.push(*len);
            for (t, _) in tf {
                *df.entry(*t).or_insert(0) += 1;
            }
        }
        write_term_counts(&spill_file(spill, shard), &docs.ids, &counts)?;
        shard += 1;
    }
    if shard == 0 {
        write_term_counts(&spill_file(spill, 0), &[], &[])?;
    }
    let avgdl = lens.iter().map(|l| *l as f64).sum::<f64>() / (lens.len() as f64).max(1.0);
    Ok(CollectionCounts { lens, df, avgdl })
}

/// Each document's (term, count) pairs, sorted by term, and its length.
type TermCounts = (Vec<(u32, u32)>, u32);

fn spill_file(dir: &std::path::Path, shard: usize) -> std::path::PathBuf {
    dir.join(format!("shard-{shard:05}.bin"))
}

/// Writes a shard's ids and term counts: per document the id (u32 length + bytes), the length,
/// the number of pairs, then the pairs, all little-endian u32.
fn write_term_counts(path: &std::path::Path, ids: &[String], docs: &[TermCounts]) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let put = |buf: &mut Vec<u8>, v: u32| buf.extend_from_slice(&v.to_le_bytes());
    for (id, (tf, len)) in ids.iter().zip(docs) {
        put(&mut buf, id.len() as u32);
        buf.extend_from_slice(id.as_bytes());
        put(&mut buf, *len);
        put(&mut buf, tf.len() as u32);
        for (t, f) in tf {
            put(&mut buf, *t);
            put(&mut buf, *f);
        }
    }
    std::fs::write(path, buf).map_err(|e| StageError::io(path, e))
}

/// Reads back what [`write_term_counts`] wrote.
fn read_term_counts(path: &std::path::Path) -> Result<(Vec<String>, Vec<TermCounts>)> {
    let bytes = std::fs::read(path).map_err(|e| StageError::io(path, e))?;
    let bad = || StageError::Other(format!("{}: truncated term counts", path.display()));
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let b = bytes.get(*at..*at + n).ok_or_else(bad)?;
        *at += n;
        Ok(b)
    };
    let word = |at: &mut usize| -> Result<u32> {
        let b = take(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (mut ids, mut docs) = (Vec::new(), Vec::new());
    let mut at = 0usize;
    while at < bytes.len() {
        let n = word(&mut at)? as usize;
        ids.push(String::from_utf8_lossy(take(&mut at, n)?).into_owned());
        let len = word(&mut at)?;
        let pairs = word(&mut at)?;
        let mut tf = Vec::with_capacity(pairs as usize);
        for _ in 0..pairs {
            let t = word(&mut at)?;
            tf.push((t, word(&mut at)?));
        }
        docs.push((tf, len));
    }
    Ok((ids, docs))
}

/// Term frequencies (sorted by term) and length (special tokens excluded) of each text,
/// tokenized in parallel.
fn term_counts(texts: &[String], tok: &TextTokenizer) -> Result<Vec<TermCounts>> {
    let specials = tok.special_ids();
    Ok(texts
        .par_chunks(256)
        .map(|chunk| {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            tok.encode_batch(&refs).map(|ids| {
                ids.into_iter()
                    .map(|ids| {
                        let mut tf: HashMap<u32, u32> = HashMap::new();
                        let mut len = 0u32;
                        for t in ids.into_iter().filter(|t| !specials.contains(t)) {
                            *tf.entry(t).or_insert(0u32) += 1;
                            len += 1;
                        }
                        let mut tf: Vec<(u32, u32)> = tf.into_iter().collect();
                        tf.sort_unstable();
                        (tf, len)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect())
}

/// Lucene's BM25 weight of each term of a document.
struct Weighting<'a> {
    k1: f64,
    b: f64,
    counts: &'a CollectionCounts,
}

impl Weighting<'_> {
    fn vector(&self, tf: &[(u32, u32)], len: u32) -> SparseVector {
        let n = self.counts.lens.len() as f64;
        let norm = self.k1 * (1.0 - self.b + self.b * len as f64 / self.counts.avgdl.max(1e-9));
        let mut pairs: Vec<(u32, f32)> = tf
            .iter()
            .map(|(t, f)| {
                let d = self.counts.df.get(t).copied().unwrap_or(1) as f64;
                let idf = (1.0 + (n - d + 0.5) / (d + 0.5)).ln();
                let f = *f as f64;
                (*t, (idf * f * (self.k1 + 1.0) / (f + norm)) as f32)
            })
            .filter(|(_, w)| *w > 0.0)
            .collect();
        pairs.sort_by_key(|p| p.0);
        SparseVector {
            terms: pairs.iter().map(|p| p.0).collect(),
            weights: pairs.iter().map(|p| p.1).collect(),
        }
    }
}
