//! Writing the index files term after term, one 128-posting block at a time: the single writer
//! behind both the in-memory build and the external (spill and merge) build, so both produce the
//! same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::build::BuildStats;
use super::format::{encode_block, TermMeta, BLOCK};
use super::ranges::{RangeWriter, RANGE_DOCS, RANGE_LAYOUT};
use crate::error::{Result, StageError};

/// Streams posting lists (terms in id order, docs ascending within a term) into `postings.bin`,
/// `blocks.bin` and `terms.bin`; [`IndexWriter::finish`] adds `meta.json`.
pub struct IndexWriter {
    dir: PathBuf,
    postings: BufWriter<File>,
    blocks: BufWriter<File>,
    terms: BufWriter<File>,
    offset: u64,
    n_blocks: u64,
    n_terms: u32,
    n_postings: u64,
    term: TermMeta,
    prev_last: u32,
    docs: Vec<u32>,
    impacts: Vec<u8>,
    payload: Vec<u8>,
    ranges: RangeWriter,
    ranges_out: BufWriter<File>,
    n_docs: u32,
}

fn create(dir: &Path, name: &str) -> Result<BufWriter<File>> {
    let p = dir.join(name);
    Ok(BufWriter::with_capacity(
        1 << 20,
        File::create(&p).map_err(|e| StageError::io(&p, e))?,
    ))
}

impl IndexWriter {
    /// Creates (truncates) the index files in `dir` for a collection of `n_docs` documents.
    pub fn create(dir: &Path, n_docs: u32) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
        Ok(IndexWriter {
            dir: dir.to_path_buf(),
            postings: create(dir, "postings.bin")?,
            blocks: create(dir, "blocks.bin")?,
            terms: create(dir, "terms.bin")?,
            offset: 0,
            n_blocks: 0,
            n_terms: 0,
            n_postings: 0,
            term: TermMeta::default(),
            prev_last: 0,
            docs: Vec::with_capacity(BLOCK),
            impacts: Vec::with_capacity(BLOCK),
            payload: Vec::with_capacity(BLOCK * 8),
            ranges: RangeWriter::new(n_docs),
            ranges_out: create(dir, "ranges.bin")?,
            n_docs,
        })
    }

    /// Appends one posting of the current term (doc indices strictly increasing, impact ≥ 1).
    #[inline]
    pub fn push(&mut self, doc: u32, impact: u8) -> Result<()> {
        self.docs.push(doc);
        self.impacts.push(impact);
        self.ranges.push(doc, impact);
        if self.docs.len() == BLOCK {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.docs.is_empty() {
            return Ok(());
        }
        self.payload.clear();
        let bm = encode_block(
            &self.docs,
            &self.impacts,
            self.prev_last,
            self.offset,
            &mut self.payload,
        );
        let err = |e| StageError::io(self.dir.join("postings.bin"), e);
        self.postings.write_all(&self.payload).map_err(err)?;
        self.offset += self.payload.len() as u64;
        self.prev_last = bm.last_doc;
        self.term.max_impact = self.term.max_impact.max(bm.max_impact);
        self.term.n_blocks += 1;
        self.term.df += bm.len as u32;
        self.n_blocks += 1;
        let mut rec = Vec::with_capacity(16);
        bm.write(&mut rec);
        self.blocks
            .write_all(&rec)
            .map_err(|e| StageError::io(self.dir.join("blocks.bin"), e))?;
        self.docs.clear();
        self.impacts.clear();
        Ok(())
    }

    /// Ends the current term (the next [`IndexWriter::push`] starts the next term id).
    pub fn end_term(&mut self) -> Result<()> {
        self.flush_block()?;
        self.ranges
            .end_term(&mut self.ranges_out)
            .map_err(|e| StageError::io(self.dir.join("ranges.bin"), e))?;
        if self.term.df > 0 {
            self.n_terms += 1;
        }
        self.n_postings += self.term.df as u64;
        let mut rec = Vec::with_capacity(TermMeta::BYTES);
        self.term.write(&mut rec);
        self.terms
            .write_all(&rec)
            .map_err(|e| StageError::io(self.dir.join("terms.bin"), e))?;
        self.term = TermMeta {
            first_block: self.n_blocks,
            ..TermMeta::default()
        };
        self.prev_last = 0;
        Ok(())
    }

    /// Flushes every file and writes `meta.json`.
    pub fn finish(
        mut self,
        vocab: usize,
        scale: f32,
        max_weight: f32,
        dropped_postings: u64,
    ) -> Result<BuildStats> {
        for (w, name) in [
            (&mut self.postings, "postings.bin"),
            (&mut self.blocks, "blocks.bin"),
            (&mut self.terms, "terms.bin"),
            (&mut self.ranges_out, "ranges.bin"),
        ] {
            w.flush()
                .map_err(|e| StageError::io(self.dir.join(name), e))?;
        }
        self.ranges.write_offsets(&self.dir)?;
        let stats = BuildStats {
            n_docs: self.n_docs,
            n_terms: self.n_terms,
            n_postings: self.n_postings,
            postings_bytes: self.offset,
            scale,
            dropped_postings,
        };
        let meta = json!({
            "format": 1,
            "n_docs": self.n_docs,
            "vocab": vocab,
            "scale": scale,
            "max_weight": max_weight,
            "n_postings": stats.n_postings,
            "block": BLOCK,
            "range_docs": RANGE_DOCS,
            "range_layout": RANGE_LAYOUT,
            "range_entries": self.ranges.entries(),
        });
        let p = self.dir.join("meta.json");
        std::fs::write(
            &p,
            serde_json::to_string_pretty(&meta)
                .unwrap_or_default()
                .as_bytes(),
        )
        .map_err(|e| StageError::io(&p, e))?;
        Ok(stats)
    }
}
