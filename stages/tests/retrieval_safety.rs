//! Safety of dynamic pruning: on random collections, MaxScore and block-max pruning return exactly the top-k of
//! exhaustive scoring over the same quantized index (ties by doc index), and exhaustive scoring
//! equals a brute-force dot product of the quantized vectors (so encode/decode is lossless). The
//! float reference scorer (for measuring quantization) equals a brute-force float dot product.

use splade_stages::index::build::{build, quantize};
use splade_stages::index::reader::InvertedIndex;
use splade_stages::parquet_io::SparseVector;
use splade_stages::retrieve::algorithms::{
    exhaustive, exhaustive_in_slices, maxscore, QUERY_SCALE,
};
use splade_stages::retrieve::block_max::{block_max, BlockMaxScratch, RangeMaxima};
use splade_stages::retrieve::exact::{overlap_at, FloatIndex};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        splade_stages::rng::splitmix64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Zipf-ish term: low ids are much more frequent.
    fn term(&mut self, vocab: u32) -> u32 {
        let u = self.unit().max(1e-6);
        ((vocab as f32).powf(u) - 1.0) as u32 % vocab
    }
}

fn vector(rng: &mut Rng, vocab: u32, nnz: usize, coarse: bool) -> SparseVector {
    let mut terms: Vec<u32> = (0..nnz).map(|_| rng.term(vocab)).collect();
    terms.sort_unstable();
    terms.dedup();
    let weights = terms
        .iter()
        .map(|_| {
            if coarse {
                (1 + rng.below(3)) as f32
            } else {
                0.01 + 3.0 * rng.unit()
            }
        })
        .collect();
    SparseVector { terms, weights }
}

#[test]
fn pruned_algorithms_equal_exhaustive_on_random_collections() {
    let tmp = tempfile::tempdir().unwrap();
    // Scored ranges block_max left with terms unscored, over all cases: the equalities below
    // must have covered that path, not only whole ranges.
    let mut ranges_cut = 0;
    for case in 0..24u64 {
        let mut rng = Rng(case * 7919 + 1);
        let vocab = 50 + rng.below(400) as u32;
        let n_docs = 1 + rng.below(3000) as usize;
        // Coarse weights produce many exact score ties.
        let coarse = case % 3 == 0;
        let docs: Vec<SparseVector> = (0..n_docs)
            .map(|_| {
                let nnz = 1 + rng.below(60) as usize;
                vector(&mut rng, vocab, nnz, coarse)
            })
            .collect();
        let dir = tmp.path().join(format!("case{case}"));
        let stats = build(&dir, &docs, vocab as usize, 0.0).unwrap();
        let index = InvertedIndex::open(&dir).unwrap();
        assert_eq!(index.n_docs as usize, n_docs);
        let table = RangeMaxima::load(&index, &dir).unwrap();
        // The table stored at build time is the one the postings give.
        let derived = RangeMaxima::derive(&index);
        assert_eq!(table.entries(), derived.entries());
        for t in 0..vocab {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            table.for_each(t, |r, m| a.push((r, m)));
            derived.for_each(t, |r, m| b.push((r, m)));
            assert_eq!(a, b, "term {t}");
        }
        let mut scratch = BlockMaxScratch::default();
        let mut acc = Vec::new();
        for qi in 0..40 {
            // Every fourth query long enough to pass block_max's 32 flagged terms.
            let nnz = 1 + rng.below(if qi % 4 == 0 { 200 } else { 30 }) as usize;
            let q = vector(&mut rng, vocab, nnz, coarse);
            for k in [1usize, 10, 100, 1000] {
                let want = exhaustive(&index, &q, k, &mut acc);
                let got = maxscore(&index, &q, k);
                assert_eq!(
                    got, want,
                    "case {case} query {qi} k {k}: maxscore differs from exhaustive"
                );
                for slice in [1, 7, 64, 1000] {
                    let got = exhaustive_in_slices(&index, &q, k, &mut acc, slice);
                    assert_eq!(
                        got, want,
                        "case {case} query {qi} k {k}: exhaustive in slices of {slice} differs"
                    );
                }
                let got = block_max(&index, &table, &q, k, &mut scratch);
                assert_eq!(
                    got, want,
                    "case {case} query {qi} k {k}: block_max differs from exhaustive"
                );
            }
            // A cursor walked window by window adds what exhaustive scoring adds, and reports
            // the largest impact each window held.
            check_windowed_accumulation(&index, &q, &docs, stats.scale);
            // Exhaustive equals a brute-force dot product of quantized vectors.
            let want = exhaustive(&index, &q, n_docs, &mut acc);
            let mut brute: Vec<(u32, u32)> = docs
                .iter()
                .enumerate()
                .map(|(d, v)| {
                    let mut s = 0u32;
                    for (t, w) in q.terms.iter().zip(&q.weights) {
                        let qw = (w * QUERY_SCALE).round() as u32;
                        if let Ok(pos) = v.terms.binary_search(t) {
                            s += qw * quantize(v.weights[pos], stats.scale) as u32;
                        }
                    }
                    (s, d as u32)
                })
                .filter(|(s, _)| *s > 0)
                .collect();
            brute.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let got: Vec<(u32, u32)> = want.iter().map(|h| (h.score, h.doc)).collect();
            assert_eq!(
                got, brute,
                "case {case} query {qi}: index scoring differs from brute force"
            );
        }
        ranges_cut += scratch.ranges_cut;
    }
    assert!(ranges_cut > 0, "block_max never left a scored range early");
}

/// Walks each query term's postings in windows of 8 docs with `accumulate_until_max`: each
/// window's scores and largest impact equal those of the quantized vectors.
fn check_windowed_accumulation(
    index: &InvertedIndex,
    q: &SparseVector,
    docs: &[SparseVector],
    scale: f32,
) {
    for (t, w) in q.terms.iter().zip(&q.weights) {
        let Some(meta) = index.term(*t) else { continue };
        let qw = (w * QUERY_SCALE).round() as u32;
        let mut cursor = index.cursor(meta);
        for lo in (0..docs.len() as u32).step_by(8) {
            let mut acc = [0u32; 8];
            let max = cursor.accumulate_until_max(lo + 8, lo, qw, &mut acc);
            let impacts: Vec<u32> = (lo..(lo + 8).min(docs.len() as u32))
                .map(|d| {
                    let v = &docs[d as usize];
                    v.terms
                        .binary_search(t)
                        .map_or(0, |p| quantize(v.weights[p], scale) as u32)
                })
                .collect();
            let want: Vec<u32> = impacts.iter().map(|i| qw * i).collect();
            assert_eq!(&acc[..want.len()], &want[..], "term {t} window {lo}");
            assert_eq!(
                max,
                impacts.iter().copied().max().unwrap_or(0),
                "term {t} window {lo}"
            );
        }
    }
}

#[test]
fn ties_are_broken_by_doc_index() {
    let tmp = tempfile::tempdir().unwrap();
    let same = SparseVector {
        terms: vec![3, 7],
        weights: vec![1.0, 2.0],
    };
    let docs = vec![same.clone(); 300];
    build(tmp.path(), &docs, 10, 0.0).unwrap();
    let index = InvertedIndex::open(tmp.path()).unwrap();
    let hits = maxscore(&index, &same, 10);
    assert_eq!(
        hits.iter().map(|h| h.doc).collect::<Vec<_>>(),
        (0..10).collect::<Vec<u32>>()
    );
    let mut acc = Vec::new();
    assert_eq!(exhaustive(&index, &same, 10, &mut acc), hits);
    let table = RangeMaxima::derive(&index);
    let mut scratch = BlockMaxScratch::default();
    assert_eq!(block_max(&index, &table, &same, 10, &mut scratch), hits);
}

#[test]
fn float_reference_equals_brute_force_dot_products() {
    for case in 0..12u64 {
        let mut rng = Rng(case * 104_729 + 5);
        let vocab = 30 + rng.below(300) as u32;
        let n_docs = 1 + rng.below(2000) as usize;
        let coarse = case % 3 == 0;
        let docs: Vec<SparseVector> = (0..n_docs)
            .map(|_| {
                let nnz = 1 + rng.below(50) as usize;
                vector(&mut rng, vocab, nnz, coarse)
            })
            .collect();
        let index = FloatIndex::build(&docs);
        let mut acc = Vec::new();
        for qi in 0..30 {
            let nnz = 1 + rng.below(25) as usize;
            let q = vector(&mut rng, vocab, nnz, coarse);
            let mut brute: Vec<(u32, f32)> = docs
                .iter()
                .enumerate()
                .map(|(d, v)| (d as u32, q.dot(v)))
                .filter(|(_, s)| *s > 0.0)
                .collect();
            brute.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for k in [1usize, 10, 1000, n_docs] {
                let got = index.top_k(&q, k, &mut acc);
                let want: Vec<(u32, f32)> = brute.iter().take(k).copied().collect();
                assert_eq!(got, want, "case {case} query {qi} k {k}");
            }
        }
    }
}

#[test]
fn overlap_counts_shared_documents_of_the_reference_prefix() {
    assert_eq!(overlap_at(&[1, 2, 3, 4], &[4, 3, 9, 1], 2), 0.0);
    assert_eq!(overlap_at(&[1, 2, 3, 4], &[4, 3, 9, 1], 4), 0.75);
    assert_eq!(overlap_at(&[1, 2], &[2, 1, 7], 10), 1.0);
    assert_eq!(overlap_at(&[], &[2], 10), 1.0);
}
