//! Document reordering by recursive graph bisection (Dhulipala et al., KDD 2016; the settings of
//! Mackenzie et al.'s reproducibility study, ECIR 2019): documents that share terms get nearby
//! doc indexes, so a doc-id range holds topically similar documents. That tightens the per-range
//! bounds block-max pruning uses and shortens the doc-id gaps the blocks pack.
//!
//! Each step splits a set of documents into two halves and, for a fixed number of iterations,
//! swaps the pairs of documents whose move most reduces the estimated cost of coding the
//! halves' posting lists (per term with `d` of a half's `n` documents: `d · log2(n / (d + 1))`
//! bits), then recurses into each half. Deterministic: the same vectors give the same order on
//! any number of threads (gains are summed per document in term order, ties broken by doc).

use rayon::prelude::*;

use crate::parquet_io::SparseVector;

/// Swap rounds per bisection (the literature's 20).
const ITERATIONS: usize = 20;
/// Sets this small are left in their current order.
const LEAF_DOCS: usize = 16;
/// Sets with more postings than this compute their gains in parallel.
const PARALLEL_POSTINGS: usize = 1 << 16;

/// The order of `vectors` after recursive graph bisection: `order[i]` is the input row placed
/// at doc index `i` (a permutation of `0..vectors.len()`).
pub fn bisection_order(vectors: &[SparseVector]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..vectors.len() as u32).collect();
    bisect(&mut order, vectors);
    order
}

/// `items` rearranged so that element `i` is `items[order[i]]`.
pub fn permute<T: Default>(mut items: Vec<T>, order: &[u32]) -> Vec<T> {
    order
        .iter()
        .map(|&i| std::mem::take(&mut items[i as usize]))
        .collect()
}

/// Bisects `docs` (input rows) in place, then each half, down to [`LEAF_DOCS`].
fn bisect(docs: &mut [u32], vectors: &[SparseVector]) {
    if docs.len() <= LEAF_DOCS {
        return;
    }
    let mut set = LocalSet::new(docs, vectors);
    set.refine();
    set.write_order(docs);
    let (left, right) = docs.split_at_mut(docs.len() / 2);
    rayon::join(|| bisect(left, vectors), || bisect(right, vectors));
}

/// One set being bisected: its documents' terms renumbered densely (so per-term tables are
/// as small as the set's own vocabulary), and which side each document is on.
struct LocalSet {
    docs: Vec<u32>,
    /// Local term ids of member `m`: `terms[offsets[m]..offsets[m + 1]]`.
    offsets: Vec<usize>,
    terms: Vec<u32>,
    n_terms: usize,
    /// Members (indexes into `docs`) in their current order; the first half is the left side.
    members: Vec<u32>,
}

impl LocalSet {
    fn new(docs: &[u32], vectors: &[SparseVector]) -> Self {
        let mut vocab: Vec<u32> = docs
            .iter()
            .flat_map(|&d| vectors[d as usize].terms.iter().copied())
            .collect();
        vocab.sort_unstable();
        vocab.dedup();
        let mut offsets = Vec::with_capacity(docs.len() + 1);
        offsets.push(0);
        let mut terms = Vec::new();
        for &d in docs {
            let v = &vectors[d as usize];
            terms.extend(
                v.terms
                    .iter()
                    .filter_map(|t| vocab.binary_search(t).ok().map(|i| i as u32)),
            );
            offsets.push(terms.len());
        }
        LocalSet {
            docs: docs.to_vec(),
            offsets,
            terms,
            n_terms: vocab.len(),
            members: (0..docs.len() as u32).collect(),
        }
    }

    fn terms_of(&self, member: u32) -> &[u32] {
        let m = member as usize;
        &self.terms[self.offsets[m]..self.offsets[m + 1]]
    }

    /// Runs the swap rounds, stopping early when a round swaps nothing.
    fn refine(&mut self) {
        let half = self.members.len() / 2;
        let (n_left, n_right) = (half as f32, (self.members.len() - half) as f32);
        let mut degrees = vec![[0u32; 2]; self.n_terms];
        for (i, &m) in self.members.iter().enumerate() {
            let side = usize::from(i >= half);
            for &t in self.terms_of(m) {
                degrees[t as usize][side] += 1;
            }
        }
        let parallel = self.terms.len() > PARALLEL_POSTINGS;
        for _ in 0..ITERATIONS {
            let moves: Vec<[f32; 2]> = degrees
                .iter()
                .map(|&[l, r]| move_gains(l, r, n_left, n_right))
                .collect();
            let gain = |i: usize, m: u32| -> f32 {
                let side = usize::from(i >= half);
                self.terms_of(m)
                    .iter()
                    .map(|&t| moves[t as usize][side])
                    .sum()
            };
            let mut gains: Vec<(f32, u32)> = if parallel {
                self.members
                    .par_iter()
                    .enumerate()
                    .map(|(i, &m)| (gain(i, m), m))
                    .collect()
            } else {
                self.members
                    .iter()
                    .enumerate()
                    .map(|(i, &m)| (gain(i, m), m))
                    .collect()
            };
            let by_gain = |a: &(f32, u32), b: &(f32, u32)| {
                b.0.total_cmp(&a.0)
                    .then(self.docs[a.1 as usize].cmp(&self.docs[b.1 as usize]))
            };
            let (left, right) = gains.split_at_mut(half);
            left.sort_unstable_by(by_gain);
            right.sort_unstable_by(by_gain);
            let mut swapped = 0;
            for (l, r) in left.iter_mut().zip(right.iter_mut()) {
                if l.0 + r.0 <= 0.0 {
                    break;
                }
                for &t in self.terms_of(l.1) {
                    degrees[t as usize][0] -= 1;
                    degrees[t as usize][1] += 1;
                }
                for &t in self.terms_of(r.1) {
                    degrees[t as usize][1] -= 1;
                    degrees[t as usize][0] += 1;
                }
                std::mem::swap(&mut l.1, &mut r.1);
                swapped += 1;
            }
            self.members = gains.into_iter().map(|(_, m)| m).collect();
            if swapped == 0 {
                break;
            }
        }
        // Each side in input order, so leaves (and ties) keep the order they came in.
        let (left, right) = self.members.split_at_mut(half);
        left.sort_unstable_by_key(|&m| self.docs[m as usize]);
        right.sort_unstable_by_key(|&m| self.docs[m as usize]);
    }

    /// Writes the set's documents into `out` in their new order.
    fn write_order(&self, out: &mut [u32]) {
        for (slot, &m) in out.iter_mut().zip(&self.members) {
            *slot = self.docs[m as usize];
        }
    }
}

/// Estimated bits of a term's postings in a half of `n` documents holding `d` of them.
fn cost(d: u32, n: f32) -> f32 {
    let d = d as f32;
    d * (n / (d + 1.0)).log2()
}

/// For a term with `l` documents on the left and `r` on the right: the bits saved by moving one
/// of its documents left → right (`[0]`) and right → left (`[1]`).
fn move_gains(l: u32, r: u32, n_left: f32, n_right: f32) -> [f32; 2] {
    let now = cost(l, n_left) + cost(r, n_right);
    let to_right = if l > 0 {
        now - cost(l - 1, n_left) - cost(r + 1, n_right)
    } else {
        0.0
    };
    let to_left = if r > 0 {
        now - cost(l + 1, n_left) - cost(r - 1, n_right)
    } else {
        0.0
    };
    [to_right, to_left]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(terms: &[u32]) -> SparseVector {
        SparseVector {
            terms: terms.to_vec(),
            weights: vec![1.0; terms.len()],
        }
    }

    /// Documents of 4 topics in random order, each with 6 of its topic's 20 terms and 4 of
    /// 1000 noise terms: after bisection, neighbours share a topic (halves are equal, topics
    /// are not, so a few leaves mix two).
    #[test]
    fn groups_documents_by_topic() {
        let mut s = 11u64;
        let mut next = |n: u64| crate::rng::splitmix64(&mut s) % n;
        let topics: Vec<u32> = (0..256).map(|_| next(4) as u32).collect();
        let vectors: Vec<SparseVector> = topics
            .iter()
            .map(|&topic| {
                let mut t: Vec<u32> = (0..6).map(|_| topic * 20 + next(20) as u32).collect();
                t.extend((0..4).map(|_| 100 + next(1000) as u32));
                t.sort_unstable();
                t.dedup();
                vector(&t)
            })
            .collect();
        let switches = |order: &[u32]| {
            order
                .windows(2)
                .filter(|w| topics[w[0] as usize] != topics[w[1] as usize])
                .count()
        };
        let identity: Vec<u32> = (0..256).collect();
        let order = bisection_order(&vectors);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, identity, "a permutation");
        let (before, after) = (switches(&identity), switches(&order));
        assert!(
            after * 5 < before,
            "topic switches between neighbours: {before} in input order, {after} after"
        );
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let mut s = 7u64;
        let vectors: Vec<SparseVector> = (0..3000)
            .map(|_| {
                let mut t: Vec<u32> = (0..40)
                    .map(|_| (crate::rng::splitmix64(&mut s) % 2000) as u32)
                    .collect();
                t.sort_unstable();
                t.dedup();
                vector(&t)
            })
            .collect();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| bisection_order(&vectors));
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| bisection_order(&vectors));
        assert_eq!(one, two);
        assert_ne!(one, (0..3000).collect::<Vec<u32>>(), "nothing moved");
    }

    #[test]
    fn permute_places_rows() {
        assert_eq!(
            permute(vec!["a", "b", "c"], &[2, 0, 1]),
            vec!["c", "a", "b"]
        );
    }

    #[test]
    fn tiny_sets_are_left_alone() {
        let vectors: Vec<SparseVector> = (0..5).map(|i| vector(&[i])).collect();
        assert_eq!(bisection_order(&vectors), vec![0, 1, 2, 3, 4]);
    }
}
