//! Opening an index (postings memory-mapped) and walking posting lists with block skipping.

use std::path::Path;

use memmap2::Mmap;
use serde_json::Value;

use super::format::{decode_block, BlockMeta, TermMeta, BLOCK};
use crate::error::{Result, StageError};

/// An opened inverted index.
pub struct InvertedIndex {
    postings: Mmap,
    blocks: Vec<BlockMeta>,
    terms: Vec<TermMeta>,
    /// Documents in the index; doc indexes are `0..n_docs`.
    pub n_docs: u32,
    /// Impact = round(weight · scale).
    pub scale: f32,
}

impl InvertedIndex {
    /// Opens the index files in `dir` (postings.bin is memory-mapped, the tables are read).
    pub fn open(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<Vec<u8>> {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| StageError::io(&p, e))
        };
        let meta_path = dir.join("meta.json");
        let meta: Value = serde_json::from_slice(&read("meta.json")?)
            .map_err(|e| StageError::malformed(&meta_path, e.line(), e.to_string()))?;
        if meta["format"].as_u64() != Some(1) {
            return Err(StageError::malformed(&meta_path, 0, "unknown index format"));
        }
        let blocks_raw = read("blocks.bin")?;
        let terms_raw = read("terms.bin")?;
        if blocks_raw.len() % BlockMeta::BYTES != 0 || terms_raw.len() % TermMeta::BYTES != 0 {
            return Err(StageError::malformed(
                dir,
                0,
                "truncated blocks.bin or terms.bin",
            ));
        }
        let path = dir.join("postings.bin");
        let file = std::fs::File::open(&path).map_err(|e| StageError::io(&path, e))?;
        // SAFETY: artifacts are immutable once committed; the engine never rewrites them in place.
        let postings = unsafe { Mmap::map(&file) }.map_err(|e| StageError::io(&path, e))?;
        Ok(InvertedIndex {
            postings,
            blocks: blocks_raw
                .chunks_exact(BlockMeta::BYTES)
                .map(BlockMeta::read)
                .collect(),
            terms: terms_raw
                .chunks_exact(TermMeta::BYTES)
                .map(TermMeta::read)
                .collect(),
            n_docs: meta["n_docs"].as_u64().unwrap_or(0) as u32,
            scale: meta["scale"].as_f64().unwrap_or(1.0) as f32,
        })
    }

    /// The posting list of `term`, if it has any postings.
    pub fn term(&self, term: u32) -> Option<TermMeta> {
        self.terms.get(term as usize).copied().filter(|t| t.df > 0)
    }

    /// Size of the term-id space (the vocabulary the index was built with).
    pub fn n_terms(&self) -> u32 {
        self.terms.len() as u32
    }

    /// A cursor over `term`'s postings (positioned on the first).
    pub fn cursor(&self, meta: TermMeta) -> PostingCursor<'_> {
        let lo = meta.first_block as usize;
        let mut c = PostingCursor {
            index: self,
            blocks: &self.blocks[lo..lo + meta.n_blocks as usize],
            block: 0,
            pos: 0,
            docs: [0; BLOCK],
            impacts: [0; BLOCK],
            decoded: usize::MAX,
        };
        c.load(0);
        c
    }

    /// Bytes of memory-mapped postings.
    pub fn postings_bytes(&self) -> usize {
        self.postings.len()
    }
}

/// Sentinel doc index past the end of a list.
pub const END: u32 = u32::MAX;

/// A position in one posting list; blocks are decoded only when a cursor lands in them.
pub struct PostingCursor<'a> {
    index: &'a InvertedIndex,
    blocks: &'a [BlockMeta],
    block: usize,
    pos: usize,
    docs: [u32; BLOCK],
    impacts: [u32; BLOCK],
    decoded: usize,
}

impl PostingCursor<'_> {
    fn load(&mut self, block: usize) {
        self.block = block;
        self.pos = 0;
        if block < self.blocks.len() && self.decoded != block {
            let m = &self.blocks[block];
            let prev = if block == 0 {
                0
            } else {
                self.blocks[block - 1].last_doc
            };
            let start = m.offset as usize;
            let payload = &self.index.postings[start..start + m.payload_len()];
            decode_block(m, payload, prev, &mut self.docs, &mut self.impacts);
            self.decoded = block;
        }
    }

    /// Current doc index, or [`END`].
    #[inline]
    pub fn doc(&self) -> u32 {
        if self.block < self.blocks.len() {
            self.docs[self.pos]
        } else {
            END
        }
    }

    /// Impact of the current posting.
    #[inline]
    pub fn impact(&self) -> u32 {
        self.impacts[self.pos]
    }

    /// Moves to the next posting.
    #[inline]
    pub fn next(&mut self) {
        if self.block >= self.blocks.len() {
            return;
        }
        self.pos += 1;
        if self.pos >= self.blocks[self.block].len as usize {
            self.load(self.block + 1);
        }
    }

    /// Moves to the first posting with doc ≥ `target`, skipping whole blocks by their last doc.
    pub fn next_geq(&mut self, target: u32) {
        if self.block >= self.blocks.len() || self.doc() >= target {
            return;
        }
        // Galloping: the next few blocks linearly (the usual case), then a binary search.
        let mut b = self.block;
        let mut step = 1;
        while b + step < self.blocks.len() && self.blocks[b + step].last_doc < target {
            b += step;
            step *= 2;
        }
        let end = (b + step + 1).min(self.blocks.len());
        b += self.blocks[b..end].partition_point(|m| m.last_doc < target);
        if b != self.block {
            self.load(b);
            if b >= self.blocks.len() {
                return;
            }
        }
        while self.docs[self.pos] < target {
            self.pos += 1;
        }
    }

    /// Adds `weight × impact` of every posting with doc < `end` into `acc[doc - base]` and leaves
    /// the cursor on the first posting ≥ `end`: the term-at-a-time inner loop, a block at a time
    /// with no per-posting cursor bookkeeping. `acc` must cover `base..end`.
    pub fn accumulate_until(&mut self, end: u32, base: u32, weight: u32, acc: &mut [u32]) {
        self.accumulate::<false>(end, base, weight, acc);
    }

    /// [`Self::accumulate_until`], returning the largest impact it added (0 if none): what
    /// this list really contributed to the window, against the bound it was counted at.
    pub fn accumulate_until_max(
        &mut self,
        end: u32,
        base: u32,
        weight: u32,
        acc: &mut [u32],
    ) -> u32 {
        self.accumulate::<true>(end, base, weight, acc)
    }

    #[inline(always)]
    fn accumulate<const MAX: bool>(
        &mut self,
        end: u32,
        base: u32,
        weight: u32,
        acc: &mut [u32],
    ) -> u32 {
        let mut max = 0u32;
        while self.block < self.blocks.len() {
            if self.docs[self.pos] >= end {
                // Nothing of this list in the window (the common case when pruning picks
                // scattered ranges): no search over the block.
                return max;
            }
            let meta = &self.blocks[self.block];
            let len = meta.len as usize;
            let whole = meta.last_doc < end;
            let stop = if whole {
                len
            } else {
                self.pos + self.docs[self.pos..len].partition_point(|d| *d < end)
            };
            for (d, w) in self.docs[self.pos..stop]
                .iter()
                .zip(&self.impacts[self.pos..stop])
            {
                acc[(d - base) as usize] += weight * w;
                if MAX {
                    max = max.max(*w);
                }
            }
            if !whole {
                self.pos = stop;
                return max;
            }
            self.load(self.block + 1);
        }
        max
    }
}
