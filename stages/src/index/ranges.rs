//! The block-max bound table stored with the index: for each term, the doc-id ranges of
//! [`RANGE_DOCS`] documents it occurs in and its largest impact in each, so `block_max` opens it
//! instead of deriving it from every posting list.
//!
//! Files: `ranges.bin` holds, term after term, one entry per range the term occurs in: the gap
//! from the previous entry's range + 1 (LEB128 varint; 0 for consecutive ranges, one byte for
//! gaps under 128) then the max impact (u8). `range_offsets.bin` holds `vocab + 1` little-endian
//! u64 byte offsets: term `t`'s entries are `ranges.bin[offsets[t]..offsets[t + 1]]`. About two
//! bytes per entry, where an in-memory `(u32 range, u8 max)` table takes five.

use std::io::Write;
use std::path::Path;

use memmap2::Mmap;

use super::reader::{InvertedIndex, END};
use crate::error::{Result, StageError};

/// log2 of the docs per range.
pub const RANGE_BITS: u32 = 6;
/// Docs per range: small enough for tight bounds, large enough that the table stays a fraction
/// of the postings.
pub const RANGE_DOCS: usize = 1 << RANGE_BITS;

/// Builds the table's bytes term after term from postings in doc order.
#[derive(Default)]
pub struct RangeWriter {
    bytes: Vec<u8>,
    /// Where each finished term's entries end.
    ends: Vec<u64>,
    /// The current range and its max impact (`None` before a term's first posting).
    open: Option<(u32, u8)>,
    /// The range after the term's last written entry.
    next: u32,
    entries: u64,
}

impl RangeWriter {
    /// A posting of the current term (docs ascending).
    #[inline]
    pub fn push(&mut self, doc: u32, impact: u8) {
        let r = doc >> RANGE_BITS;
        match &mut self.open {
            Some((range, max)) if *range == r => *max = (*max).max(impact),
            _ => {
                self.close_range();
                self.open = Some((r, impact));
            }
        }
    }

    fn close_range(&mut self) {
        if let Some((range, max)) = self.open.take() {
            write_varint(&mut self.bytes, range - self.next);
            self.bytes.push(max);
            self.next = range + 1;
            self.entries += 1;
        }
    }

    /// Ends the current term (the next posting starts the next term id).
    pub fn end_term(&mut self) {
        self.close_range();
        self.ends.push(self.bytes.len() as u64);
        self.next = 0;
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn finish_offsets(&self) -> Vec<u64> {
        std::iter::once(0)
            .chain(self.ends.iter().copied())
            .collect()
    }

    /// Writes `ranges.bin` and `range_offsets.bin` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let offsets: Vec<u8> = self
            .finish_offsets()
            .iter()
            .flat_map(|o| o.to_le_bytes())
            .collect();
        for (name, bytes) in [("ranges.bin", &self.bytes), ("range_offsets.bin", &offsets)] {
            let p = dir.join(name);
            let mut f = std::fs::File::create(&p).map_err(|e| StageError::io(&p, e))?;
            f.write_all(bytes).map_err(|e| StageError::io(&p, e))?;
        }
        Ok(())
    }

    /// The table in memory (for indexes written before the table was stored).
    pub fn into_table(self, n_ranges: usize) -> std::result::Result<RangeTable, String> {
        let offsets = self.finish_offsets();
        RangeTable::new(Bytes::Owned(self.bytes), offsets, n_ranges)
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `bytes[*at..]`, advancing `at`; `None` past the end or over 5 bytes.
#[inline]
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut v = 0u32;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u32::from(b & 0x7F).checked_shl(shift)?;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Where the table's bytes live.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// The bound table, checked once at open so queries decode it without bounds failures.
pub struct RangeTable {
    bytes: Bytes,
    offsets: Vec<u64>,
    n_ranges: usize,
    entries: u64,
}

impl RangeTable {
    fn new(bytes: Bytes, offsets: Vec<u64>, n_ranges: usize) -> std::result::Result<Self, String> {
        let data = bytes.as_slice();
        if offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last().is_some_and(|&o| o as usize != data.len())
        {
            return Err("range offsets are not ascending or do not end at the table's end".into());
        }
        let mut entries = 0u64;
        for w in offsets.windows(2) {
            let (mut at, end, mut r) = (w[0] as usize, w[1] as usize, 0u64);
            while at < end {
                let gap = read_varint(data, &mut at).ok_or("a truncated range entry")?;
                r += u64::from(gap);
                if r >= n_ranges as u64 || at >= end {
                    return Err(format!(
                        "a range entry past the collection's {n_ranges} ranges"
                    ));
                }
                at += 1;
                r += 1;
                entries += 1;
            }
        }
        Ok(RangeTable {
            bytes,
            offsets,
            n_ranges,
            entries,
        })
    }

    /// Opens `ranges.bin` and `range_offsets.bin` in `dir`; `None` when the index has none
    /// (written before the table was stored).
    pub fn open(dir: &Path, n_ranges: usize) -> Result<Option<Self>> {
        let (data_path, offsets_path) = (dir.join("ranges.bin"), dir.join("range_offsets.bin"));
        if !data_path.is_file() {
            return Ok(None);
        }
        let raw = std::fs::read(&offsets_path).map_err(|e| StageError::io(&offsets_path, e))?;
        if raw.len() % 8 != 0 {
            return Err(StageError::malformed(
                &offsets_path,
                0,
                "not a whole number of u64",
            ));
        }
        let offsets = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let file = std::fs::File::open(&data_path).map_err(|e| StageError::io(&data_path, e))?;
        // SAFETY: artifacts are immutable once committed; the engine never rewrites them in place.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| StageError::io(&data_path, e))?;
        RangeTable::new(Bytes::Mapped(map), offsets, n_ranges)
            .map(Some)
            .map_err(|why| StageError::malformed(&data_path, 0, why))
    }

    /// The table derived from the postings (one decoding pass over every list), for indexes
    /// written before the table was stored.
    pub fn derive(index: &InvertedIndex) -> Self {
        let mut w = RangeWriter::default();
        for t in 0..index.n_terms() {
            if let Some(meta) = index.term(t) {
                let mut c = index.cursor(meta);
                while c.doc() != END {
                    w.push(c.doc(), c.impact().min(255) as u8);
                    c.next();
                }
            }
            w.end_term();
        }
        let n_ranges = (index.n_docs as usize).div_ceil(RANGE_DOCS);
        // Postings come from the index itself, so every range lies inside the collection.
        match w.into_table(n_ranges) {
            Ok(t) => t,
            Err(_) => RangeTable {
                bytes: Bytes::Owned(Vec::new()),
                offsets: vec![0],
                n_ranges,
                entries: 0,
            },
        }
    }

    /// The stored table of the index in `dir`, or one derived from its postings when the index
    /// has none.
    pub fn load(index: &InvertedIndex, dir: &Path) -> Result<Self> {
        let n_ranges = (index.n_docs as usize).div_ceil(RANGE_DOCS);
        Ok(match RangeTable::open(dir, n_ranges)? {
            Some(t) => t,
            None => RangeTable::derive(index),
        })
    }

    /// Entries in the table (one per term and range it occurs in).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes the table takes (mapped or held).
    pub fn bytes(&self) -> usize {
        self.bytes.as_slice().len() + self.offsets.len() * 8
    }

    /// Ranges of the collection.
    pub fn n_ranges(&self) -> usize {
        self.n_ranges
    }

    /// Calls `f(range, max impact)` for each range `term` occurs in, ascending.
    #[inline]
    pub fn for_each(&self, term: u32, mut f: impl FnMut(usize, u8)) {
        let t = term as usize;
        let (Some(&lo), Some(&hi)) = (self.offsets.get(t), self.offsets.get(t + 1)) else {
            return;
        };
        let data = self.bytes.as_slice();
        let (mut at, end, mut r) = (lo as usize, hi as usize, 0usize);
        while at < end {
            // Checked at open: every entry is whole and inside the collection.
            let gap = read_varint(data, &mut at).unwrap_or(0);
            r += gap as usize;
            f(r, data[at]);
            at += 1;
            r += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_written() {
        let mut w = RangeWriter::default();
        // Term 0: docs in ranges 0, 0, 1, 300 (a gap of 298: two varint bytes).
        for (d, i) in [(3, 5), (60, 9), (64, 2), (300 * 64 + 1, 7)] {
            w.push(d, i);
        }
        w.end_term();
        w.end_term(); // term 1: empty
        w.push(5, 1);
        w.end_term();
        let dir = tempfile::tempdir().unwrap();
        w.write(dir.path()).unwrap();
        let t = RangeTable::open(dir.path(), 301).unwrap().unwrap();
        let row = |term| {
            let mut v = Vec::new();
            t.for_each(term, |r, m| v.push((r, m)));
            v
        };
        assert_eq!(row(0), vec![(0, 9), (1, 2), (300, 7)]);
        assert_eq!(row(1), vec![]);
        assert_eq!(row(2), vec![(0, 1)]);
        assert_eq!(row(3), vec![], "past the vocabulary");
        assert_eq!(t.entries(), 4);
        // A collection too small for the entries is refused at open.
        assert!(RangeTable::open(dir.path(), 300).is_err());
        // So is a truncated table.
        let p = dir.path().join("ranges.bin");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(RangeTable::open(dir.path(), 301).is_err());
    }
}
