//! Top-k selection with the ranking rule every algorithm shares: integer score descending, then
//! doc index ascending.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A scored document; `Ord` puts the better one last (higher score, then lower doc index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Integer score: Σ quantized query weight × impact.
    pub score: u32,
    /// Doc index in the index (0-based row).
    pub doc: u32,
}

impl Ord for Hit {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.cmp(&o.score).then(o.doc.cmp(&self.doc))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The k best hits seen so far.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Hit>>,
}

impl TopK {
    /// An empty selection of `k` (≥ 1).
    pub fn new(k: usize) -> Self {
        TopK {
            k: k.max(1),
            heap: BinaryHeap::with_capacity(k.max(1) + 1),
        }
    }

    /// The score a new document (with a larger doc index than all seen) must beat to enter.
    #[inline]
    pub fn threshold(&self) -> u32 {
        if self.heap.len() < self.k {
            0
        } else {
            self.heap.peek().map(|h| h.0.score).unwrap_or(0)
        }
    }

    /// The k-th best hit once k hits are held (a new hit must beat it to enter), else `None`.
    #[inline]
    pub fn worst(&self) -> Option<Hit> {
        if self.heap.len() < self.k {
            None
        } else {
            self.heap.peek().map(|h| h.0)
        }
    }

    /// Offers a hit.
    #[inline]
    pub fn push(&mut self, hit: Hit) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(hit));
        } else if let Some(worst) = self.heap.peek() {
            if hit > worst.0 {
                self.heap.pop();
                self.heap.push(Reverse(hit));
            }
        }
    }

    /// The hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v
    }
}
