//! Collection profiles: the statistics of real SPLADE vectors that decide how retrieval behaves
//! (`splade bench profile`), and collections of any size generated from them
//! (`splade bench synth --profile`).
//!
//! A profile holds, for documents and for queries: how many vectors it was estimated from, each
//! term's share of vectors holding it (most frequent first), the quantiles of nnz, and the
//! quantiles of weights per band of the term's rank in the documents' frequency order (trained
//! SPLADE gives frequent terms small weights). All of it is kept twice: for a vector's strong
//! terms (the top [`STRONG_FRACTION`] of its terms by weight: mostly words of its text) and for
//! the rest (mostly expansions). Keeping them apart matters for pruning: a term holds a doc-id
//! range's bound high only where it is strong in some document of the range, and terms are
//! strong in far fewer documents than hold them. Generated vectors draw their nnz from the
//! quantiles, their strong and weak terms in proportion to those shares, and each weight from
//! its kind's band. Topical co-occurrence is not estimated: [`Topics`] adds it when generating
//! (each vector belongs to a topic and draws a share of its terms from the topic's terms).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use splade_stages::parquet_io::SparseVector;

/// Ranks (in the documents' frequency order) where weight bands end.
const BANDS: [usize; 8] = [10, 30, 100, 300, 1000, 3000, 10000, usize::MAX];
/// Quantiles stored: 0 %, 5 %, ..., 100 %.
const QUANTILES: usize = 21;
/// The share of a vector's terms (its heaviest) counted as strong.
pub const STRONG_FRACTION: f64 = 0.25;

/// Strong terms of a vector with `nnz` terms (at least one).
fn strong_count(nnz: usize) -> usize {
    ((nnz as f64 * STRONG_FRACTION).ceil() as usize).clamp(usize::from(nnz > 0), nnz)
}

/// The statistics of one side (documents or queries).
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// Vectors the side was estimated from.
    pub count: usize,
    /// `(term, share of vectors holding it)`, most frequent first.
    pub df: Vec<(u32, f64)>,
    /// nnz quantiles.
    pub nnz: Vec<f64>,
    /// Weight quantiles of weak terms per band of [`BANDS`] (empty when no weight fell in a
    /// band).
    pub weights: Vec<Vec<f64>>,
    /// `(term, share of vectors where it is strong)`, most frequent first.
    pub strong_df: Vec<(u32, f64)>,
    /// Weight quantiles of strong terms per band of [`BANDS`].
    pub strong_weights: Vec<Vec<f64>>,
}

/// Topical co-occurrence added when generating: `count` topics (0 = none) of [`TOPIC_TERMS`]
/// terms each, drawn uniformly from the terms past the documents' 100 most frequent (a topic's
/// own words: distinctive, not common); a vector draws `share` of its strong terms from its
/// topic's. A query tied to a document (`--query-overlap`) takes that document's topic, so the
/// document's topic siblings score near it, as real passages on a query's subject do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Topics {
    /// Topics (0: terms drawn independently).
    pub count: usize,
    /// Share of a vector's terms drawn from its topic.
    pub share: f64,
}

/// Terms per topic (the synthetic MS MARCO text's topics have 40 words).
pub const TOPIC_TERMS: usize = 40;

/// Documents' and queries' statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Where it was estimated from.
    pub source: String,
    /// Document side.
    pub docs: Side,
    /// Query side.
    pub queries: Side,
}

fn quantiles(mut xs: Vec<f64>) -> Vec<f64> {
    if xs.is_empty() {
        return Vec::new();
    }
    xs.sort_by(f64::total_cmp);
    (0..QUANTILES)
        .map(|i| xs[((xs.len() - 1) as f64 * i as f64 / (QUANTILES - 1) as f64).round() as usize])
        .collect()
}

/// A value drawn from quantiles `q` at uniform `u` (piecewise linear between quantiles).
fn draw(q: &[f64], u: f64) -> f64 {
    if q.is_empty() {
        return 0.0;
    }
    let x = u * (q.len() - 1) as f64;
    let i = (x.floor() as usize).min(q.len() - 1);
    let j = (i + 1).min(q.len() - 1);
    q[i] + (q[j] - q[i]) * (x - i as f64)
}

fn band_of(rank: usize) -> usize {
    BANDS
        .iter()
        .position(|end| rank < *end)
        .unwrap_or(BANDS.len() - 1)
}

/// Each term's rank in `df` (most frequent first); terms absent get `usize::MAX - 1`.
fn ranks(df: &[(u32, f64)], vocab: usize) -> Vec<usize> {
    let mut r = vec![usize::MAX - 1; vocab];
    for (i, (t, _)) in df.iter().enumerate() {
        r[*t as usize] = i;
    }
    r
}

fn vocab_of(vectors: &[SparseVector]) -> usize {
    vectors
        .iter()
        .flat_map(|v| v.terms.iter())
        .map(|t| *t as usize + 1)
        .max()
        .unwrap_or(0)
}

fn document_frequencies(vectors: &[SparseVector], vocab: usize) -> Vec<(u32, f64)> {
    let mut count = vec![0u64; vocab];
    for v in vectors {
        v.terms.iter().for_each(|t| count[*t as usize] += 1);
    }
    shares(&count, vectors.len())
}

/// Each vector's strong terms: the [`strong_count`] heaviest (ties to the lower term id).
fn strong_terms(v: &SparseVector) -> Vec<u32> {
    let mut by_weight: Vec<usize> = (0..v.nnz()).collect();
    by_weight.sort_by(|a, b| v.weights[*b].total_cmp(&v.weights[*a]).then(a.cmp(b)));
    by_weight.truncate(strong_count(v.nnz()));
    let mut t: Vec<u32> = by_weight.iter().map(|i| v.terms[*i]).collect();
    t.sort_unstable();
    t
}

/// `(term, count / n)` of the terms counted, most frequent first.
fn shares(count: &[u64], n: usize) -> Vec<(u32, f64)> {
    let vocab = count.len();
    let n = n.max(1) as f64;
    let mut df: Vec<(u32, f64)> = (0..vocab)
        .filter(|t| count[*t] > 0)
        .map(|t| (t as u32, count[t] as f64 / n))
        .collect();
    most_frequent_first(&mut df);
    df
}

/// Sorts `(term, share)` pairs by share, largest first (ties to the lower term id).
fn most_frequent_first(shares: &mut [(u32, f64)]) {
    shares.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

fn side(vectors: &[SparseVector], df: Vec<(u32, f64)>, rank: &[usize]) -> Side {
    let mut by_band: [Vec<Vec<f64>>; 2] =
        [vec![Vec::new(); BANDS.len()], vec![Vec::new(); BANDS.len()]];
    let mut strong_count = vec![0u64; rank.len()];
    for v in vectors {
        let strong = strong_terms(v);
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let r = rank.get(*t as usize).copied().unwrap_or(usize::MAX - 1);
            let is_strong = strong.binary_search(t).is_ok();
            if is_strong {
                strong_count[*t as usize] += 1;
            }
            by_band[usize::from(is_strong)][band_of(r)].push(f64::from(*w));
        }
    }
    let [weak, strong] = by_band;
    Side {
        count: vectors.len(),
        df,
        nnz: quantiles(vectors.iter().map(|v| v.nnz() as f64).collect()),
        weights: weak.into_iter().map(quantiles).collect(),
        strong_df: shares(&strong_count, vectors.len()),
        strong_weights: strong.into_iter().map(quantiles).collect(),
    }
}

impl Profile {
    /// Estimates a profile from document and query vectors.
    pub fn estimate(source: &str, docs: &[SparseVector], queries: &[SparseVector]) -> Self {
        let vocab = vocab_of(docs).max(vocab_of(queries));
        let doc_df = document_frequencies(docs, vocab);
        let rank = ranks(&doc_df, vocab);
        let query_df = document_frequencies(queries, vocab);
        Profile {
            source: source.to_string(),
            docs: side(docs, doc_df, &rank),
            queries: side(queries, query_df, &rank),
        }
    }

    /// The profile as JSON.
    pub fn to_json(&self) -> Value {
        let side = |s: &Side| {
            json!({
                "count": s.count,
                "nnz_quantiles": s.nnz,
                "weight_quantiles_by_band": s.weights,
                "strong_weight_quantiles_by_band": s.strong_weights,
                "df": s.df.iter().map(|(t, f)| json!([t, f])).collect::<Vec<_>>(),
                "strong_df": s.strong_df.iter().map(|(t, f)| json!([t, f])).collect::<Vec<_>>(),
            })
        };
        json!({
            "source": self.source,
            "strong_fraction": STRONG_FRACTION,
            "bands_end_at_rank": BANDS.iter().map(|b| if *b == usize::MAX { Value::Null } else { json!(b) }).collect::<Vec<_>>(),
            "docs": side(&self.docs),
            "queries": side(&self.queries),
        })
    }

    /// Reads a profile written by [`Profile::to_json`].
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON profile", path.display()))?;
        let bad = |key: &str| anyhow::anyhow!("{}: missing or malformed `{key}`", path.display());
        let floats = |v: &Value, key: &str| -> Result<Vec<f64>> {
            v.as_array()
                .ok_or_else(|| bad(key))?
                .iter()
                .map(|x| x.as_f64().filter(|x| x.is_finite()).ok_or_else(|| bad(key)))
                .collect()
        };
        let shares = |s: &Value, key: &str| -> Result<Vec<(u32, f64)>> {
            s.as_array()
                .ok_or_else(|| bad(key))?
                .iter()
                .map(|p| match (p[0].as_u64(), p[1].as_f64()) {
                    (Some(t), Some(f)) if t <= u64::from(u32::MAX) && (0.0..=1.0).contains(&f) => {
                        Ok((t as u32, f))
                    }
                    _ => Err(bad(key)),
                })
                .collect()
        };
        let bands = |s: &Value, key: &str| -> Result<Vec<Vec<f64>>> {
            s.as_array()
                .filter(|b| b.len() == BANDS.len())
                .ok_or_else(|| bad(key))?
                .iter()
                .map(|b| floats(b, key))
                .collect()
        };
        let side = |key: &str| -> Result<Side> {
            let s = &v[key];
            let df = shares(&s["df"], &format!("{key}.df"))?;
            let strong_df = shares(
                &s["strong_df"],
                &format!("{key}.strong_df (a profile from before strong terms: estimate it again)"),
            )?;
            let weights = bands(
                &s["weight_quantiles_by_band"],
                &format!("{key}.weight_quantiles_by_band"),
            )?;
            let strong_weights = bands(
                &s["strong_weight_quantiles_by_band"],
                &format!("{key}.strong_weight_quantiles_by_band"),
            )?;
            let nnz = floats(&s["nnz_quantiles"], &format!("{key}.nnz_quantiles"))?;
            anyhow::ensure!(
                !df.is_empty() && !nnz.is_empty(),
                "{}: `{key}` has no terms",
                path.display()
            );
            Ok(Side {
                count: s["count"].as_u64().unwrap_or(0) as usize,
                df,
                nnz,
                weights,
                strong_df,
                strong_weights,
            })
        };
        Ok(Profile {
            source: v["source"].as_str().unwrap_or("").to_string(),
            docs: side("docs")?,
            queries: side("queries")?,
        })
    }

    /// `n` document vectors (or queries) drawn from the profile, deterministic in `seed`, and
    /// each vector's topic (0 without topics). `topic_of` gives the topics instead of drawing
    /// them (a query takes the topic of the document it was written for).
    pub fn generate(
        &self,
        queries: bool,
        n: usize,
        seed: u64,
        topics: Topics,
        topic_of: Option<&[usize]>,
    ) -> (Vec<SparseVector>, Vec<usize>) {
        let mut vectors = Vec::with_capacity(n);
        let mut drawn_topics = Vec::with_capacity(n);
        let collect = |v: SparseVector, topic: usize| -> Result<(), std::convert::Infallible> {
            vectors.push(v);
            drawn_topics.push(topic);
            Ok(())
        };
        let Ok(()) = self.generate_each(queries, n, seed, topics, topic_of, collect);
        (vectors, drawn_topics)
    }

    /// As [`Profile::generate`], handing each vector and its topic to `each` in order instead of
    /// holding them (a collection larger than memory); stops at `each`'s first error.
    pub fn generate_each<E>(
        &self,
        queries: bool,
        n: usize,
        seed: u64,
        topics: Topics,
        topic_of: Option<&[usize]>,
        mut each: impl FnMut(SparseVector, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        let s = if queries { &self.queries } else { &self.docs };
        let vocab = self
            .docs
            .df
            .iter()
            .chain(&self.queries.df)
            .map(|(t, _)| *t as usize + 1)
            .max()
            .unwrap_or(0);
        let rank = ranks(&self.docs.df, vocab);
        let strong_pool = Pool::new(&s.strong_df);
        let weak_pool = Pool::new(&weak_shares(s));
        // Topics: the same for documents and queries (drawn with a seed of their own).
        let topic_terms: Vec<Vec<u32>> = {
            let tail = &self.docs.df[self.docs.df.len().min(100)..];
            let mut state = 0x70_91C5;
            (0..if tail.is_empty() { 0 } else { topics.count })
                .map(|_| {
                    (0..TOPIC_TERMS)
                        .map(|_| {
                            let i = splade_stages::rng::splitmix64(&mut state) % tail.len() as u64;
                            tail[i as usize].0
                        })
                        .collect()
                })
                .collect()
        };
        let mut state = seed;
        let mut unit = move || {
            ((splade_stages::rng::splitmix64(&mut state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        for i in 0..n {
            let topic_id = match topic_of {
                Some(given) => given.get(i).copied().unwrap_or(0),
                None => (unit() * topic_terms.len() as f64) as usize,
            };
            let topic =
                (!topic_terms.is_empty()).then(|| &topic_terms[topic_id % topic_terms.len()]);
            let nnz = (draw(&s.nnz, unit()).round() as usize).clamp(1, s.df.len());
            let n_strong = strong_count(nnz);
            // (term, strong) pairs: the strong terms first, then the weak ones.
            let mut terms: Vec<(u32, bool)> = Vec::with_capacity(nnz);
            let mut tries = 0;
            while terms.len() < nnz && tries < nnz * 50 {
                tries += 1;
                let strong = terms.len() < n_strong;
                let pool = if (strong && !strong_pool.is_empty()) || weak_pool.is_empty() {
                    &strong_pool
                } else {
                    &weak_pool
                };
                let t = match topic {
                    Some(words) if strong && unit() < topics.share => {
                        words[(unit() * words.len() as f64) as usize % words.len()]
                    }
                    _ => pool.pick(unit()),
                };
                if !terms.iter().any(|(x, _)| *x == t) {
                    terms.push((t, strong));
                }
            }
            terms.sort_unstable();
            let weights = terms
                .iter()
                .map(|(t, strong)| {
                    let r = rank.get(*t as usize).copied().unwrap_or(usize::MAX - 1);
                    let bands = if *strong {
                        &s.strong_weights
                    } else {
                        &s.weights
                    };
                    (draw(&bands[band_of(r)], unit()) as f32).max(1e-4)
                })
                .collect();
            let terms = terms.into_iter().map(|(t, _)| t).collect();
            each(SparseVector { terms, weights }, topic_id)?;
        }
        Ok(())
    }
}

/// Terms drawn in proportion to their shares.
struct Pool {
    terms: Vec<u32>,
    cdf: Vec<f64>,
}

impl Pool {
    fn new(shares: &[(u32, f64)]) -> Self {
        let mut acc = 0.0;
        let cdf = shares
            .iter()
            .map(|(_, f)| {
                acc += f;
                acc
            })
            .collect();
        Pool {
            terms: shares.iter().map(|(t, _)| *t).collect(),
            cdf,
        }
    }

    fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The term at uniform `u` in [0, 1).
    fn pick(&self, u: f64) -> u32 {
        let total = self.cdf.last().copied().unwrap_or(0.0);
        let i = self.cdf.partition_point(|c| *c < u * total);
        self.terms[i.min(self.terms.len().saturating_sub(1))]
    }
}

/// Each term's share of vectors where it is weak (held, not strong), most frequent first.
fn weak_shares(s: &Side) -> Vec<(u32, f64)> {
    let strong: std::collections::HashMap<u32, f64> = s.strong_df.iter().copied().collect();
    let mut weak: Vec<(u32, f64)> =
        s.df.iter()
            .map(|(t, f)| (*t, f - strong.get(t).copied().unwrap_or(0.0)))
            .filter(|(_, f)| *f > 1e-12)
            .collect();
    most_frequent_first(&mut weak);
    weak
}

/// The document each of `n` queries is written for (random, deterministic in `seed`).
pub fn query_anchors(n: usize, docs: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    (0..n)
        .map(|_| (splade_stages::rng::splitmix64(&mut state) % docs.max(1) as u64) as usize)
        .collect()
}

/// Ties each query to its document (`anchor_docs[i]` is query `i`'s, see [`query_anchors`]):
/// `overlap` of the query's terms are replaced by that document's strongest terms, which get the
/// query's largest weights (real queries share their strongest terms with the passages they were
/// written for; independent draws do not).
pub fn anchor_queries(queries: &mut [SparseVector], anchor_docs: &[&SparseVector], overlap: f64) {
    if overlap <= 0.0 {
        return;
    }
    for (q, d) in queries.iter_mut().zip(anchor_docs) {
        let take = ((q.nnz() as f64 * overlap).round() as usize).min(d.nnz());
        let mut strongest: Vec<(u32, f32)> = d
            .terms
            .iter()
            .copied()
            .zip(d.weights.iter().copied())
            .collect();
        strongest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut weights = q.weights.clone();
        weights.sort_by(|a, b| b.total_cmp(a));
        let mut terms: Vec<u32> = strongest.iter().take(take).map(|x| x.0).collect();
        let rest: Vec<u32> = q
            .terms
            .iter()
            .filter(|t| !terms.contains(t))
            .take(q.nnz() - take)
            .copied()
            .collect();
        terms.extend(rest);
        let mut pairs: Vec<(u32, f32)> = terms.into_iter().zip(weights).collect();
        pairs.sort_unstable_by_key(|p| p.0);
        q.terms = pairs.iter().map(|p| p.0).collect();
        q.weights = pairs.iter().map(|p| p.1).collect();
    }
}

/// `splade bench profile`: estimates a profile and writes it as JSON to `out`; prints a summary.
pub fn write(docs: &Path, queries: &Path, out: &Path, max_docs: usize) -> Result<()> {
    let (_, mut d) = splade_stages::parquet_io::read_sparse(docs)?;
    let (_, q) = splade_stages::parquet_io::read_sparse(queries)?;
    d.truncate(max_docs);
    let p = Profile::estimate(&docs.display().to_string(), &d, &q);
    std::fs::write(out, serde_json::to_string(&p.to_json())? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", summary(&p));
    Ok(())
}

/// One line per side: vectors, terms, median nnz, median weight of the first and last bands.
pub fn summary(p: &Profile) -> String {
    let line = |name: &str, s: &Side| {
        let med = |b: &Vec<f64>| b.get(QUANTILES / 2).copied().unwrap_or(f64::NAN);
        format!(
            "profile {name} vectors={} terms={} nnz_median={:.0} nnz_p95={:.0} weight_median_top10={:.3} weight_median_rank300_1000={:.3} weight_median_tail={:.3}",
            s.count,
            s.df.len(),
            s.nnz.get(QUANTILES / 2).copied().unwrap_or(0.0),
            s.nnz.get(19).copied().unwrap_or(0.0),
            med(&s.weights[0]),
            med(&s.weights[4]),
            med(&s.weights[BANDS.len() - 1]),
        )
    };
    format!("{}\n{}", line("docs", &p.docs), line("queries", &p.queries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_vectors_have_the_profile_they_were_drawn_from() {
        // A source where frequent terms carry small weights, as trained SPLADE's do.
        let mut state = 3u64;
        let mut unit =
            move || (splade_stages::rng::splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
        let source: Vec<SparseVector> = (0..3000)
            .map(|_| {
                let n = 20 + (unit() * 60.0) as usize;
                let mut terms: Vec<u32> =
                    (0..n).map(|_| (unit().powi(3) * 5000.0) as u32).collect();
                terms.sort_unstable();
                terms.dedup();
                let weights = terms
                    .iter()
                    .map(|t| (0.05 + *t as f64 / 2000.0 + unit() * 0.3) as f32)
                    .collect();
                SparseVector { terms, weights }
            })
            .collect();
        let p = Profile::estimate("test", &source, &source[..300]);
        let none = Topics {
            count: 0,
            share: 0.0,
        };
        let again = Profile::estimate(
            "test",
            &p.generate(false, 3000, 9, none, None).0,
            &p.generate(true, 300, 9, none, None).0,
        );
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * a.abs().max(b.abs());
        for (want, got) in [(&p.docs, &again.docs), (&p.queries, &again.queries)] {
            // nnz: median within 10 % (sampling ∝ df saturates on the most frequent terms).
            assert!(
                close(want.nnz[10], got.nnz[10], 0.1),
                "{:?} {:?}",
                want.nnz,
                got.nnz
            );
            // The 20 most frequent terms mostly stay the 20 most frequent.
            let top = |s: &Side| s.df.iter().take(20).map(|x| x.0).collect::<Vec<_>>();
            let shared = top(want).iter().filter(|t| top(got).contains(t)).count();
            assert!(shared >= 14, "top-20 terms shared: {shared}");
        }
        // Weights: the median over all postings within 10 %. (Per band and kind they move more:
        // re-estimation splits each drawn vector by weight rank again, so where a band's weak
        // and strong weights overlap, postings change sides.)
        let median = |v: &[SparseVector]| {
            let mut w: Vec<f32> = v.iter().flat_map(|x| x.weights.iter().copied()).collect();
            w.sort_by(f32::total_cmp);
            f64::from(w[w.len() / 2])
        };
        let drawn = p.generate(false, 3000, 9, none, None).0;
        let (want, got) = (median(&source), median(&drawn));
        assert!(close(want, got, 0.1), "median weight {want} vs {got}");
        // A profile survives its JSON.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(&path, p.to_json().to_string()).unwrap();
        let back = Profile::read(&path).unwrap();
        let near = |a: &[f64], b: &[f64]| {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= 1e-12 * x.abs())
        };
        for (a, b) in [(&p.docs, &back.docs), (&p.queries, &back.queries)] {
            assert_eq!(a.count, b.count);
            assert!(a.df.iter().map(|x| x.0).eq(b.df.iter().map(|x| x.0)));
            let shares = |s: &Side| s.df.iter().map(|x| x.1).collect::<Vec<_>>();
            assert!(near(&shares(a), &shares(b)) && near(&a.nnz, &b.nnz));
            assert!(a.weights.iter().zip(&b.weights).all(|(x, y)| near(x, y)));
            assert!(a
                .strong_weights
                .iter()
                .zip(&b.strong_weights)
                .all(|(x, y)| near(x, y)));
            assert!(a
                .strong_df
                .iter()
                .map(|x| x.0)
                .eq(b.strong_df.iter().map(|x| x.0)));
        }
    }
}
