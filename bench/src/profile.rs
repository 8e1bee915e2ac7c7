//! Collection profiles: the statistics of real SPLADE vectors that decide how retrieval behaves
//! (`splade bench profile`), and collections of any size generated from them
//! (`splade bench synth --profile`).
//!
//! A profile holds, for documents and for queries: how many vectors it was estimated from, each
//! term's share of vectors holding it (most frequent first), the quantiles of nnz, and the
//! quantiles of weights per band of the term's rank in the documents' frequency order (trained
//! SPLADE gives frequent terms small weights). Generated vectors draw their nnz from those
//! quantiles, their terms in proportion to that share, and each weight from its band. Topical
//! co-occurrence is not estimated: [`Topics`] adds it when generating (each vector belongs to a
//! topic and draws a share of its terms from the topic's terms).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use splade_stages::parquet_io::SparseVector;

/// Ranks (in the documents' frequency order) where weight bands end.
const BANDS: [usize; 8] = [10, 30, 100, 300, 1000, 3000, 10000, usize::MAX];
/// Quantiles stored: 0 %, 5 %, ..., 100 %.
const QUANTILES: usize = 21;

/// The statistics of one side (documents or queries).
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// Vectors the side was estimated from.
    pub count: usize,
    /// `(term, share of vectors holding it)`, most frequent first.
    pub df: Vec<(u32, f64)>,
    /// nnz quantiles.
    pub nnz: Vec<f64>,
    /// Weight quantiles per band of [`BANDS`] (empty when no weight fell in a band).
    pub weights: Vec<Vec<f64>>,
}

/// Topical co-occurrence added when generating: `count` topics (0 = none) of 300 terms each,
/// drawn in proportion to the documents' frequencies past the 100 most frequent terms; a vector
/// draws `share` of its terms from its topic's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Topics {
    /// Topics (0: terms drawn independently).
    pub count: usize,
    /// Share of a vector's terms drawn from its topic.
    pub share: f64,
}

/// Terms per topic.
const TOPIC_TERMS: usize = 300;

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
    let n = vectors.len().max(1) as f64;
    let mut df: Vec<(u32, f64)> = (0..vocab)
        .filter(|t| count[*t] > 0)
        .map(|t| (t as u32, count[t] as f64 / n))
        .collect();
    df.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    df
}

fn side(vectors: &[SparseVector], df: Vec<(u32, f64)>, rank: &[usize]) -> Side {
    let mut by_band: Vec<Vec<f64>> = vec![Vec::new(); BANDS.len()];
    for v in vectors {
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let r = rank.get(*t as usize).copied().unwrap_or(usize::MAX - 1);
            by_band[band_of(r)].push(f64::from(*w));
        }
    }
    Side {
        count: vectors.len(),
        df,
        nnz: quantiles(vectors.iter().map(|v| v.nnz() as f64).collect()),
        weights: by_band.into_iter().map(quantiles).collect(),
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
                "df": s.df.iter().map(|(t, f)| json!([t, f])).collect::<Vec<_>>(),
            })
        };
        json!({
            "source": self.source,
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
        let side = |key: &str| -> Result<Side> {
            let s = &v[key];
            let df = s["df"]
                .as_array()
                .ok_or_else(|| bad(&format!("{key}.df")))?
                .iter()
                .map(|p| match (p[0].as_u64(), p[1].as_f64()) {
                    (Some(t), Some(f)) if t <= u64::from(u32::MAX) && (0.0..=1.0).contains(&f) => {
                        Ok((t as u32, f))
                    }
                    _ => Err(bad(&format!("{key}.df"))),
                })
                .collect::<Result<Vec<_>>>()?;
            let weights = s["weight_quantiles_by_band"]
                .as_array()
                .filter(|b| b.len() == BANDS.len())
                .ok_or_else(|| bad(&format!("{key}.weight_quantiles_by_band")))?
                .iter()
                .map(|b| floats(b, &format!("{key}.weight_quantiles_by_band")))
                .collect::<Result<Vec<_>>>()?;
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
            })
        };
        Ok(Profile {
            source: v["source"].as_str().unwrap_or("").to_string(),
            docs: side("docs")?,
            queries: side("queries")?,
        })
    }

    /// `n` document vectors (or queries) drawn from the profile, deterministic in `seed`.
    pub fn generate(
        &self,
        queries: bool,
        n: usize,
        seed: u64,
        topics: Topics,
    ) -> Vec<SparseVector> {
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
        let mut cdf = Vec::with_capacity(s.df.len());
        let mut acc = 0.0;
        for (_, f) in &s.df {
            acc += f;
            cdf.push(acc);
        }
        // Topics: the same for documents and queries (drawn with a seed of their own).
        let topic_terms: Vec<Vec<u32>> = {
            let tail = &self.docs.df[self.docs.df.len().min(100)..];
            let mut tail_cdf = Vec::with_capacity(tail.len());
            let mut total = 0.0;
            for (_, f) in tail {
                total += f;
                tail_cdf.push(total);
            }
            let mut state = 0x70_91C5;
            (0..if tail.is_empty() { 0 } else { topics.count })
                .map(|_| {
                    (0..TOPIC_TERMS)
                        .map(|_| {
                            let u = ((splade_stages::rng::splitmix64(&mut state) >> 11) as f64
                                / (1u64 << 53) as f64)
                                * total;
                            tail[tail_cdf.partition_point(|c| *c < u).min(tail.len() - 1)].0
                        })
                        .collect()
                })
                .collect()
        };
        let mut state = seed;
        let mut unit = move || {
            ((splade_stages::rng::splitmix64(&mut state) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let topic = (!topic_terms.is_empty()).then(|| {
                    &topic_terms[(unit() * topic_terms.len() as f64) as usize % topic_terms.len()]
                });
                let nnz = (draw(&s.nnz, unit()).round() as usize).clamp(1, s.df.len());
                let mut terms: Vec<u32> = Vec::with_capacity(nnz);
                let mut tries = 0;
                while terms.len() < nnz && tries < nnz * 50 {
                    tries += 1;
                    let t = match topic {
                        Some(words) if unit() < topics.share => {
                            words[(unit() * words.len() as f64) as usize % words.len()]
                        }
                        _ => {
                            let u = unit() * acc;
                            s.df[cdf.partition_point(|c| *c < u).min(cdf.len() - 1)].0
                        }
                    };
                    if !terms.contains(&t) {
                        terms.push(t);
                    }
                }
                terms.sort_unstable();
                let weights = terms
                    .iter()
                    .map(|t| {
                        let r = rank.get(*t as usize).copied().unwrap_or(usize::MAX - 1);
                        let band = &s.weights[band_of(r)];
                        (draw(band, unit()) as f32).max(1e-4)
                    })
                    .collect();
                SparseVector { terms, weights }
            })
            .collect()
    }
}

/// Ties each query to a random document: `overlap` of the query's terms are replaced by that
/// document's strongest terms, which get the query's largest weights (real queries share their
/// strongest terms with the passages they were written for; independent draws do not).
pub fn anchor_queries(
    queries: &mut [SparseVector],
    docs: &[SparseVector],
    overlap: f64,
    seed: u64,
) {
    if docs.is_empty() || overlap <= 0.0 {
        return;
    }
    let mut state = seed;
    for q in queries.iter_mut() {
        let d = &docs[(splade_stages::rng::splitmix64(&mut state) % docs.len() as u64) as usize];
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
            &p.generate(false, 3000, 9, none),
            &p.generate(true, 300, 9, none),
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
        // Weights by band: medians within 10 % where the source has weights.
        for (b, (w, g)) in p.docs.weights.iter().zip(&again.docs.weights).enumerate() {
            if w.len() == QUANTILES && g.len() == QUANTILES {
                assert!(close(w[10], g[10], 0.1), "band {b}: {} vs {}", w[10], g[10]);
            }
        }
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
        }
    }
}
