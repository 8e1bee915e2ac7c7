//! `splade bench msmarco-synth --scale S DIR`: a deterministic synthetic MS MARCO passage in
//! naver's data layout, at any fraction of the real size (S = 1: 8,841,823 passages, 502,939
//! training queries, 6,980 dev queries, about 160M cross-encoder scores).
//!
//! Files (DIR is what pipelines call `data/msmarco`):
//! `full_collection/raw.tsv`, `train_queries/queries/raw.tsv`, `train_queries/qrels.json`,
//! `dev_queries/raw.tsv`, `dev_qrel.json`, `TREC_DL_{2019,2020}/{queries_YEAR/raw.tsv, qrel.json}`
//! (graded 0..3), `hard_negatives_scores/cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz`
//! (a pickled `{qid: {pid: score}}` as the real file) and `msmarco-hard-negatives.jsonl.gz`
//! (sentence-transformers' shape: `{"qid", "pos", "neg": {system: [pids]}}`).
//! Two subsets for the end-to-end pipeline (`pipelines/msmarco-synthetic.toml`):
//! `train_queries/queries_20k/raw.tsv` (the first 20,000 training queries, for BM25 mining) and
//! `dev_slice/raw.tsv` (`slice` passages: every dev query's positive, then the lowest other ids).
//!
//! Texts are words of the BERT vocabulary drawn Zipf-like by vocabulary rank (BERT's whole-word
//! entries are roughly in corpus-frequency order), lengths log-normal with mean ≈ 56 words. Each
//! passage has a topic whose words it over-uses; a query takes a few of its positive passage's
//! less common words and a few of the topic's, so BM25 finds the positive often but far from
//! always (topic siblings share the words). Teacher scores rank the positive above most
//! candidates, with noise. Everything streams: memory is O(passages) u32s for the topic lists,
//! whatever S is.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use splade_stages::rng::splitmix64;

/// Sizes of the real MS MARCO passage collection and its query sets.
const PASSAGES: f64 = 8_841_823.0;
const TRAIN_QUERIES: f64 = 502_939.0;
const DEV_QUERIES: f64 = 6_980.0;
const DL_QUERIES: [(u32, f64); 2] = [(2019, 43.0), (2020, 54.0)];
/// Teacher scores per training query in the real file (≈ 160M / 502,939).
const SCORES_PER_QUERY: usize = 318;
/// Hard-negative systems of the sentence-transformers file, and negatives per system.
const SYSTEMS: [&str; 5] = [
    "bm25",
    "msmarco-distilbert-base-tas-b",
    "msmarco-MiniLM-L-6-v3",
    "msmarco-distilbert-base-v3",
    "distilbert-margin_mse-cls-dot-v2",
];
const NEGATIVES_PER_SYSTEM: usize = 50;
/// Words per topic, and the share of a passage's words drawn from its topic.
const TOPIC_WORDS: usize = 40;
const TOPIC_SHARE: f64 = 0.3;

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Passages.
    pub passages: usize,
    /// Training queries (with qrels and teacher scores).
    pub train_queries: usize,
    /// Dev queries.
    pub dev_queries: usize,
    /// Teacher scores in the pickle.
    pub scores: u64,
    /// Passages in `dev_slice/raw.tsv`.
    pub slice: usize,
}

/// Training queries in `train_queries/queries_20k` (fewer when the set is smaller).
const TRAIN_SUBSET: usize = 20_000;

/// The generator's state: vocabulary, Zipf table, topics.
struct Generator {
    words: Vec<String>,
    zipf_cdf: Vec<f64>,
    topics: usize,
    seed: u64,
    /// Passage ids of each topic, ascending.
    members: Vec<Vec<u32>>,
}

fn uniform(state: &mut u64) -> f64 {
    (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

fn below(state: &mut u64, n: usize) -> usize {
    (uniform(state) * n as f64) as usize % n.max(1)
}

fn normal(state: &mut u64) -> f64 {
    let (u1, u2) = (uniform(state).max(1e-300), uniform(state));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl Generator {
    fn new(vocabulary: Vec<String>, passages: usize, seed: u64) -> Self {
        let zipf_cdf = {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = (0..vocabulary.len())
                .map(|r| {
                    acc += 1.0 / (r as f64 + 2.7);
                    acc
                })
                .collect();
            let total = acc;
            cdf.iter_mut().for_each(|c| *c /= total);
            cdf
        };
        let topics = (passages / 150).max(20);
        let mut g = Generator {
            words: vocabulary,
            zipf_cdf,
            topics,
            seed,
            members: vec![Vec::new(); topics],
        };
        for pid in 0..passages {
            let t = g.topic_of(pid as u32);
            g.members[t].push(pid as u32);
        }
        g
    }

    fn rng(&self, stream: u64, id: u64) -> u64 {
        let mut s = self.seed
            ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03);
        splitmix64(&mut s);
        s
    }

    fn topic_of(&self, pid: u32) -> usize {
        let mut s = self.rng(1, u64::from(pid));
        below(&mut s, self.topics)
    }

    /// Word index `i` of topic `t`: mid-frequency vocabulary ranks.
    fn topic_word(&self, t: usize, i: usize) -> usize {
        let mut s = self.rng(2, (t * TOPIC_WORDS + i) as u64);
        let lo = 150.min(self.words.len() / 4);
        lo + below(&mut s, self.words.len() - lo)
    }

    fn zipf_word(&self, s: &mut u64) -> usize {
        let u = uniform(s);
        self.zipf_cdf
            .partition_point(|c| *c < u)
            .min(self.words.len() - 1)
    }

    /// The word ranks of passage `pid` (a pure function of the seed and the id).
    fn passage(&self, pid: u32) -> Vec<usize> {
        let mut s = self.rng(3, u64::from(pid));
        let len = (3.90 + 0.5 * normal(&mut s))
            .exp()
            .round()
            .clamp(8.0, 220.0) as usize;
        let topic = self.topic_of(pid);
        (0..len)
            .map(|_| {
                if uniform(&mut s) < TOPIC_SHARE {
                    self.topic_word(topic, below(&mut s, TOPIC_WORDS))
                } else {
                    self.zipf_word(&mut s)
                }
            })
            .collect()
    }

    fn text(&self, ranks: &[usize]) -> String {
        let words: Vec<&str> = ranks.iter().map(|r| self.words[*r].as_str()).collect();
        words.join(" ")
    }

    /// A query for positive passage `pid`: some of its less common words, some of its topic's.
    fn query(&self, stream: u64, qid: u64, pid: u32) -> Vec<usize> {
        let mut s = self.rng(stream, qid);
        let passage = self.passage(pid);
        let rare: Vec<usize> = passage.iter().copied().filter(|r| *r >= 100).collect();
        let len = 3 + below(&mut s, 5);
        let topic = self.topic_of(pid);
        (0..len)
            .map(|_| {
                let x = uniform(&mut s);
                if x < 0.35 && !rare.is_empty() {
                    rare[below(&mut s, rare.len())]
                } else if x < 0.85 {
                    self.topic_word(topic, below(&mut s, TOPIC_WORDS))
                } else {
                    self.zipf_word(&mut s)
                }
            })
            .collect()
    }

    /// The positive of query `qid` of a query stream.
    fn positive(&self, stream: u64, qid: u64, passages: usize) -> u32 {
        let mut s = self.rng(stream + 100, qid);
        below(&mut s, passages) as u32
    }

    /// Candidates of a training query (the positive first) with teacher scores: half from the
    /// positive's topic, half from anywhere.
    fn candidates(&self, qid: u64, pos: u32, passages: usize) -> Vec<(u32, f64)> {
        let mut s = self.rng(7, qid);
        let siblings = &self.members[self.topic_of(pos)];
        let want = SCORES_PER_QUERY.min(passages);
        let mut seen = std::collections::HashSet::with_capacity(want * 2);
        seen.insert(pos);
        let mut out = vec![(pos, 6.0 + 1.5 * normal(&mut s))];
        let mut tries = 0;
        while out.len() < want && tries < want * 20 {
            tries += 1;
            let sibling = uniform(&mut s) < 0.5 && siblings.len() > 1;
            let pid = if sibling {
                siblings[below(&mut s, siblings.len())]
            } else {
                below(&mut s, passages) as u32
            };
            if seen.insert(pid) {
                let score = if sibling {
                    1.0 + 2.5 * normal(&mut s)
                } else {
                    -5.0 + 2.0 * normal(&mut s)
                };
                out.push((pid, score));
            }
        }
        out
    }
}

/// The whole words of a BERT `tokenizer.json` vocabulary, in id order.
fn vocabulary(tokenizer: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(tokenizer)
        .with_context(|| format!("reading {}", tokenizer.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", tokenizer.display()))?;
    let vocab = json["model"]["vocab"]
        .as_object()
        .with_context(|| format!("{}: no model.vocab", tokenizer.display()))?;
    let mut words: Vec<(u64, &str)> = vocab
        .iter()
        .filter(|(w, _)| w.len() >= 3 && w.bytes().all(|b| b.is_ascii_lowercase()))
        .filter_map(|(w, id)| id.as_u64().map(|id| (id, w.as_str())))
        .collect();
    words.sort_unstable();
    anyhow::ensure!(
        words.len() >= 1000,
        "{}: too few whole words",
        tokenizer.display()
    );
    Ok(words.into_iter().map(|(_, w)| w.to_string()).collect())
}

fn create(path: &Path) -> Result<BufWriter<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, f))
}

fn scaled(n: f64, scale: f64, min: usize) -> usize {
    ((n * scale).round() as usize).max(min)
}

/// Writes the synthetic MS MARCO under `dir` at `scale` (1.0 = full size).
/// `slice` is the size of `dev_slice/raw.tsv` (capped at the collection's).
pub fn write(dir: &Path, scale: f64, seed: u64, tokenizer: &Path, slice: usize) -> Result<Written> {
    anyhow::ensure!(scale > 0.0 && scale <= 1.0, "--scale must be in (0, 1]");
    let t0 = Instant::now();
    let passages = scaled(PASSAGES, scale, 1000);
    let g = Generator::new(vocabulary(tokenizer)?, passages, seed);
    write_collection(dir, &g, passages)?;
    let train = scaled(TRAIN_QUERIES, scale, 50);
    let scores = write_training(dir, &g, passages, train)?;
    let dev = scaled(DEV_QUERIES, scale, 20);
    write_queries(dir, &g, passages, "dev", dev)?;
    let slice = write_dev_slice(dir, &g, passages, dev, slice)?;
    for (year, n) in DL_QUERIES {
        write_trec_dl(dir, &g, passages, year, scaled(n, scale, 10))?;
    }
    eprintln!(
        "msmarco-synth scale={scale} passages={passages} train_queries={train} dev_queries={dev} \
         scores={scores} slice={slice} secs={:.1} out={}",
        t0.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(Written {
        passages,
        train_queries: train,
        dev_queries: dev,
        scores,
        slice,
    })
}

/// `dev_slice/raw.tsv`: every dev query's positive, then the lowest other passage ids, up to
/// `size` passages in id order (a collection small enough to encode with a real model, on which
/// the dev queries still have their positives); returns its size.
fn write_dev_slice(
    dir: &Path,
    g: &Generator,
    passages: usize,
    dev: usize,
    size: usize,
) -> Result<usize> {
    let mut keep = vec![false; passages];
    let mut kept = 0;
    for i in 0..dev as u64 {
        let pos = g.positive(stream_of("dev"), qid_base("dev") + i, passages) as usize;
        if !keep[pos] {
            keep[pos] = true;
            kept += 1;
        }
    }
    for flag in keep.iter_mut().filter(|k| !**k) {
        if kept >= size {
            break;
        }
        *flag = true;
        kept += 1;
    }
    let path = dir.join("dev_slice/raw.tsv");
    let mut out = create(&path)?;
    for pid in (0..passages).filter(|p| keep[*p]) {
        writeln!(out, "{pid}\t{}", g.text(&g.passage(pid as u32)))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(kept)
}

fn write_collection(dir: &Path, g: &Generator, passages: usize) -> Result<()> {
    let path = dir.join("full_collection/raw.tsv");
    let mut out = create(&path)?;
    for pid in 0..passages as u32 {
        writeln!(out, "{pid}\t{}", g.text(&g.passage(pid)))?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Query ids of a set: train 1.., dev 1,100,000.., TREC DL 2,000,000 + year·1000...
fn qid_base(set: &str) -> u64 {
    match set {
        "train" => 1,
        "dev" => 1_100_000,
        "2019" => 2_019_000,
        _ => 2_020_000,
    }
}

fn stream_of(set: &str) -> u64 {
    match set {
        "train" => 10,
        "dev" => 20,
        "2019" => 30,
        _ => 40,
    }
}

/// Training queries, qrels, the teacher-score pickle and the hard-negatives file; the number of
/// scores written.
fn write_training(dir: &Path, g: &Generator, passages: usize, n: usize) -> Result<u64> {
    let mut queries = create(&dir.join("train_queries/queries/raw.tsv"))?;
    let mut subset = create(&dir.join("train_queries/queries_20k/raw.tsv"))?;
    let mut qrels = create(&dir.join("train_queries/qrels.json"))?;
    let pickle_path =
        dir.join("hard_negatives_scores/cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz");
    let mut pickle = Pickle::new(create(&pickle_path)?)?;
    let mut hard = GzEncoder::new(
        create(&dir.join("msmarco-hard-negatives.jsonl.gz"))?,
        flate2::Compression::fast(),
    );
    write!(qrels, "{{")?;
    let mut scores = 0u64;
    for i in 0..n as u64 {
        let qid = qid_base("train") + i;
        let pos = g.positive(stream_of("train"), qid, passages);
        let line = format!("{qid}\t{}", g.text(&g.query(stream_of("train"), qid, pos)));
        writeln!(queries, "{line}")?;
        if i < TRAIN_SUBSET as u64 {
            writeln!(subset, "{line}")?;
        }
        write!(
            qrels,
            "{}\"{qid}\": {{\"{pos}\": 1}}",
            if i > 0 { ", " } else { "" }
        )?;
        let candidates = g.candidates(qid, pos, passages);
        pickle.query(qid, &candidates)?;
        scores += candidates.len() as u64;
        writeln!(hard, "{}", hard_negatives_line(g, qid, &candidates))?;
    }
    writeln!(qrels, "}}")?;
    queries.flush()?;
    subset.flush()?;
    qrels.flush()?;
    pickle.finish()?;
    hard.finish()?.flush()?;
    Ok(scores)
}

/// One line of the sentence-transformers file: each system's negatives are the candidates it
/// "retrieves" best (the teacher score seen through system-specific noise), positive excluded.
fn hard_negatives_line(g: &Generator, qid: u64, candidates: &[(u32, f64)]) -> String {
    let mut neg = serde_json::Map::new();
    for (k, system) in SYSTEMS.iter().enumerate() {
        let mut s = g.rng(50 + k as u64, qid);
        let mut noisy: Vec<(f64, u32)> = candidates[1..]
            .iter()
            .map(|(pid, score)| (score + 3.0 * normal(&mut s), *pid))
            .collect();
        noisy.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let pids: Vec<u32> = noisy
            .iter()
            .take(NEGATIVES_PER_SYSTEM)
            .map(|(_, p)| *p)
            .collect();
        neg.insert(system.to_string(), serde_json::json!(pids));
    }
    serde_json::json!({"qid": qid, "pos": [candidates[0].0], "neg": neg}).to_string()
}

fn write_queries(dir: &Path, g: &Generator, passages: usize, set: &str, n: usize) -> Result<()> {
    let mut queries = create(&dir.join(format!("{set}_queries/raw.tsv")))?;
    let mut qrels = create(&dir.join(format!("{set}_qrel.json")))?;
    write!(qrels, "{{")?;
    for i in 0..n as u64 {
        let qid = qid_base(set) + i;
        let pos = g.positive(stream_of(set), qid, passages);
        writeln!(
            queries,
            "{qid}\t{}",
            g.text(&g.query(stream_of(set), qid, pos))
        )?;
        write!(
            qrels,
            "{}\"{qid}\": {{\"{pos}\": 1}}",
            if i > 0 { ", " } else { "" }
        )?;
    }
    writeln!(qrels, "}}")?;
    queries.flush()?;
    qrels.flush()?;
    Ok(())
}

/// TREC DL-like sets: each query judged on its positive (3), a few topic siblings (2, 1) and
/// random passages (0).
fn write_trec_dl(dir: &Path, g: &Generator, passages: usize, year: u32, n: usize) -> Result<()> {
    let set = year.to_string();
    let base = dir.join(format!("TREC_DL_{year}"));
    let mut queries = create(&base.join(format!("queries_{year}/raw.tsv")))?;
    let mut qrels = create(&base.join("qrel.json"))?;
    write!(qrels, "{{")?;
    for i in 0..n as u64 {
        let qid = qid_base(&set) + i;
        let pos = g.positive(stream_of(&set), qid, passages);
        writeln!(
            queries,
            "{qid}\t{}",
            g.text(&g.query(stream_of(&set), qid, pos))
        )?;
        let mut judged = vec![(pos, 3)];
        let siblings = &g.members[g.topic_of(pos)];
        let mut s = g.rng(60, qid);
        for grade in [2, 2, 1, 1, 1, 0, 0] {
            let pid = if grade > 0 && !siblings.is_empty() {
                siblings[below(&mut s, siblings.len())]
            } else {
                below(&mut s, passages) as u32
            };
            if !judged.iter().any(|(p, _)| *p == pid) {
                judged.push((pid, grade));
            }
        }
        let inner: Vec<String> = judged
            .iter()
            .map(|(p, r)| format!("\"{p}\": {r}"))
            .collect();
        write!(
            qrels,
            "{}\"{qid}\": {{{}}}",
            if i > 0 { ", " } else { "" },
            inner.join(", ")
        )?;
    }
    writeln!(qrels, "}}")?;
    queries.flush()?;
    qrels.flush()?;
    Ok(())
}

/// A streaming writer of a gzip'd pickle `{qid: {pid: score}}` (protocol 2, batches of 1000
/// items per SETITEMS, as Python's pickler writes dicts).
struct Pickle<W: Write> {
    out: GzEncoder<W>,
    in_batch: usize,
}

impl<W: Write> Pickle<W> {
    fn new(w: W) -> Result<Self> {
        let mut out = GzEncoder::new(w, flate2::Compression::fast());
        out.write_all(&[0x80, 2, b'}', b'('])?;
        Ok(Pickle { out, in_batch: 0 })
    }

    fn int(&mut self, v: u64) -> Result<()> {
        self.out.write_all(b"J")?;
        self.out.write_all(&(v as i32).to_le_bytes())?;
        Ok(())
    }

    fn query(&mut self, qid: u64, candidates: &[(u32, f64)]) -> Result<()> {
        if self.in_batch == 1000 {
            self.out.write_all(b"u(")?;
            self.in_batch = 0;
        }
        self.int(qid)?;
        self.out.write_all(b"}")?;
        for chunk in candidates.chunks(1000) {
            self.out.write_all(b"(")?;
            for (pid, score) in chunk {
                self.int(u64::from(*pid))?;
                self.out.write_all(b"G")?;
                self.out.write_all(&score.to_be_bytes())?;
            }
            self.out.write_all(b"u")?;
        }
        self.in_batch += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.out.write_all(b"u.")?;
        self.out.finish()?.flush()?;
        Ok(())
    }
}
