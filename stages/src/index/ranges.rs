//! The block-max bound table stored with the index: for each term, the doc-id ranges of
//! [`RANGE_DOCS`] documents it occurs in and its largest impact in each, so `block_max` opens it
//! instead of deriving it from every posting list.
//!
//! Files: `ranges.bin` holds one row per term with postings, term after term. A row is a tag
//! byte, then either (tag 2, grouped) the term's ranges grouped by page of [`PAGE_RANGES`]
//! ranges — per page it occurs in: the gap from the previous group's page + 1 as a LEB128
//! varint (0 for consecutive pages), the entry count − 1 (u8), the entries' ranges within the
//! page (u8 each, ascending), then their max impacts (u8 each) — or (tag 1, dense, when the
//! term occurs in at least half of the ranges) one max impact per range of the collection, 0
//! where it is absent, which a query adds to its bounds in one vectorised pass. Within a group
//! no entry's position depends on the one before, so a query adds a group's bounds without the
//! serial dependency of one varint per entry. `range_offsets.bin` holds `vocab + 1`
//! little-endian u64 byte offsets: term `t`'s row is `ranges.bin[offsets[t]..offsets[t + 1]]`
//! (empty: no postings). About two bytes per (term, range) entry, where an in-memory
//! `(u32, u8)` table takes five. `meta.json` names the layout (`range_layout`); a table of
//! another layout or range size is derived again, not read.

use std::io::Write;
use std::path::Path;

use memmap2::Mmap;

use super::reader::{InvertedIndex, END};
use crate::error::{Result, StageError};

/// log2 of the docs per range.
pub const RANGE_BITS: u32 = 3;
/// Docs per range: small enough for tight bounds, large enough that the table stays a fraction
/// of the postings.
pub const RANGE_DOCS: usize = 1 << RANGE_BITS;

/// Ranges of a collection of `n_docs` documents.
pub fn ranges_for(n_docs: u32) -> usize {
    (n_docs as usize).div_ceil(RANGE_DOCS)
}

/// Row tags (0 was the per-entry varint layout, no longer read).
const DENSE: u8 = 1;
const GROUPED: u8 = 2;

/// log2 of the ranges per page of a grouped row.
const PAGE_BITS: u32 = 8;
/// Ranges per page: one byte addresses a range within its page.
pub const PAGE_RANGES: usize = 1 << PAGE_BITS;

/// The table layout `meta.json` names (`range_layout`), bumped when rows change encoding.
pub const RANGE_LAYOUT: u64 = 2;

/// Builds the table row by row from postings in doc order, writing each finished row to a sink
/// (the index's `ranges.bin`, or memory), so only one term's row is ever held.
pub struct RangeWriter {
    n_ranges: usize,
    /// The current term's `(range, max impact)` entries.
    row: Vec<(u32, u8)>,
    /// Where each finished term's row ends.
    ends: Vec<u64>,
    written: u64,
    entries: u64,
    encoded: Vec<u8>,
}

impl RangeWriter {
    /// A writer for a collection of `n_docs` documents.
    pub fn new(n_docs: u32) -> Self {
        RangeWriter {
            n_ranges: ranges_for(n_docs),
            row: Vec::new(),
            ends: Vec::new(),
            written: 0,
            entries: 0,
            encoded: Vec::new(),
        }
    }

    /// A posting of the current term (docs ascending).
    #[inline]
    pub fn push(&mut self, doc: u32, impact: u8) {
        let r = doc >> RANGE_BITS;
        match self.row.last_mut() {
            Some((range, max)) if *range == r => *max = (*max).max(impact),
            _ => self.row.push((r, impact)),
        }
    }

    /// Ends the current term: encodes its row into `out` (the next posting starts the next
    /// term id).
    pub fn end_term(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.encoded.clear();
        if !self.row.is_empty() {
            if self.row.len() * 2 >= self.n_ranges {
                self.encoded.push(DENSE);
                self.encoded.resize(1 + self.n_ranges, 0);
                for &(r, m) in &self.row {
                    if let Some(slot) = self.encoded.get_mut(1 + r as usize) {
                        *slot = m;
                    }
                }
            } else {
                self.encoded.push(GROUPED);
                encode_groups(&self.row, &mut self.encoded);
            }
        }
        out.write_all(&self.encoded)?;
        self.written += self.encoded.len() as u64;
        self.entries += self.row.len() as u64;
        self.ends.push(self.written);
        self.row.clear();
        Ok(())
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The row offsets (`range_offsets.bin`'s values).
    fn offsets(&self) -> Vec<u64> {
        std::iter::once(0)
            .chain(self.ends.iter().copied())
            .collect()
    }

    /// Writes `range_offsets.bin` into `dir` (the rows went to `ranges.bin` as they ended).
    pub fn write_offsets(&self, dir: &Path) -> Result<()> {
        let bytes: Vec<u8> = self
            .offsets()
            .iter()
            .flat_map(|o| o.to_le_bytes())
            .collect();
        let p = dir.join("range_offsets.bin");
        std::fs::write(&p, bytes).map_err(|e| StageError::io(&p, e))
    }
}

/// Appends the grouped encoding of `row` (ranges ascending) to `out`.
fn encode_groups(row: &[(u32, u8)], out: &mut Vec<u8>) {
    let mut next_page = 0;
    for group in row.chunk_by(|a, b| a.0 >> PAGE_BITS == b.0 >> PAGE_BITS) {
        let page = group[0].0 >> PAGE_BITS;
        write_varint(out, page - next_page);
        // A page holds at most PAGE_RANGES ranges, each listed once: the count fits a byte.
        out.push((group.len() - 1) as u8);
        out.extend(group.iter().map(|(r, _)| (*r as usize % PAGE_RANGES) as u8));
        out.extend(group.iter().map(|(_, m)| *m));
        next_page = page + 1;
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

/// One page's entries of a grouped row: the page's first range, then the entries' ranges
/// within the page and their max impacts (same length).
struct Group<'a> {
    base: usize,
    locals: &'a [u8],
    maxes: &'a [u8],
}

/// The groups of a grouped row (its bytes after the tag). Stops early on a malformed group and
/// says so in `malformed`.
struct Groups<'a> {
    row: &'a [u8],
    at: usize,
    next_page: usize,
    malformed: bool,
}

impl<'a> Groups<'a> {
    fn new(row: &'a [u8]) -> Self {
        Groups {
            row,
            at: 0,
            next_page: 0,
            malformed: false,
        }
    }

    #[inline(always)]
    fn read(&mut self) -> Option<Group<'a>> {
        let gap = read_varint(self.row, &mut self.at)?;
        let page = self.next_page.checked_add(gap as usize)?;
        let n = usize::from(*self.row.get(self.at)?) + 1;
        let entries = self.row.get(self.at + 1..self.at + 1 + 2 * n)?;
        self.at += 1 + 2 * n;
        self.next_page = page + 1;
        let (locals, maxes) = entries.split_at(n);
        Some(Group {
            base: page.checked_mul(PAGE_RANGES)?,
            locals,
            maxes,
        })
    }
}

impl<'a> Iterator for Groups<'a> {
    type Item = Group<'a>;

    #[inline]
    fn next(&mut self) -> Option<Group<'a>> {
        if self.at >= self.row.len() {
            return None;
        }
        let group = self.read();
        self.malformed |= group.is_none();
        group
    }
}

/// The range size and layout the index in `dir` stored its table in (`meta.json`'s
/// `range_docs`, `range_layout`); a table of another size or layout is derived again rather
/// than read.
fn stored_layout(dir: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::read(dir.join("meta.json")).ok()?;
    let meta = serde_json::from_slice::<serde_json::Value>(&meta).ok()?;
    Some((meta["range_docs"].as_u64()?, meta["range_layout"].as_u64()?))
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
            let (start, end) = (w[0] as usize, w[1] as usize);
            match data.get(start..end) {
                None | Some([]) => {}
                Some([DENSE, row @ ..]) if row.len() == n_ranges => {
                    entries += row.iter().filter(|m| **m > 0).count() as u64;
                }
                Some([GROUPED, row @ ..]) => {
                    let mut it = Groups::new(row);
                    for g in &mut it {
                        check_group(&g, n_ranges)?;
                        entries += g.locals.len() as u64;
                    }
                    if it.malformed {
                        return Err("a truncated range entry".into());
                    }
                }
                Some(_) => return Err("a row with an unknown tag or the wrong length".into()),
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
    /// (written before the table was stored) or stored it for another range size or layout.
    pub fn open(dir: &Path, n_ranges: usize) -> Result<Option<Self>> {
        let (data_path, offsets_path) = (dir.join("ranges.bin"), dir.join("range_offsets.bin"));
        if !data_path.is_file() || stored_layout(dir) != Some((RANGE_DOCS as u64, RANGE_LAYOUT)) {
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
        let mut w = RangeWriter::new(index.n_docs);
        let mut bytes = Vec::new();
        for t in 0..index.n_terms() {
            if let Some(meta) = index.term(t) {
                let mut c = index.cursor(meta);
                while c.doc() != END {
                    w.push(c.doc(), c.impact().min(255) as u8);
                    c.next();
                }
            }
            // Writing to memory cannot fail.
            let _ = w.end_term(&mut bytes);
        }
        let n_ranges = w.n_ranges;
        // Postings come from the index itself, so every range lies inside the collection.
        RangeTable::new(Bytes::Owned(bytes), w.offsets(), n_ranges).unwrap_or(RangeTable {
            bytes: Bytes::Owned(Vec::new()),
            offsets: vec![0],
            n_ranges,
            entries: 0,
        })
    }

    /// The stored table of the index in `dir`, or one derived from its postings when the index
    /// has none (or stored it for another range size or layout).
    pub fn load(index: &InvertedIndex, dir: &Path) -> Result<Self> {
        Ok(match RangeTable::open(dir, ranges_for(index.n_docs))? {
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

    #[inline(always)]
    fn row(&self, term: u32) -> &[u8] {
        let t = term as usize;
        match (self.offsets.get(t), self.offsets.get(t + 1)) {
            (Some(&lo), Some(&hi)) => &self.bytes.as_slice()[lo as usize..hi as usize],
            _ => &[],
        }
    }

    /// Calls `f(range, max impact)` for each range `term` occurs in, ascending.
    #[inline]
    pub fn for_each(&self, term: u32, mut f: impl FnMut(usize, u8)) {
        match self.row(term) {
            [DENSE, row @ ..] => row
                .iter()
                .enumerate()
                .filter(|(_, m)| **m > 0)
                .for_each(|(r, m)| f(r, *m)),
            // Checked at open: every group is whole and inside the collection.
            [_, row @ ..] => Groups::new(row).for_each(|g| {
                for (l, m) in g.locals.iter().zip(g.maxes) {
                    f(g.base + usize::from(*l), *m)
                }
            }),
            [] => {}
        }
    }

    /// Slots [`RangeTable::add_bounds`] needs: one per range, rounded up to whole pages.
    pub fn n_slots(&self) -> usize {
        self.n_ranges.div_ceil(PAGE_RANGES) * PAGE_RANGES
    }

    /// Adds `weight × max impact` of `term` into the bound half (high 32 bits) of `slots` (one
    /// per range, [`RangeTable::n_slots`] of them) and `flag` into the low half of every range
    /// the term occurs in: with a distinct single bit per term, the low halves say which terms
    /// occur in each range. One add per entry (each term lists a range once, so adding the bit
    /// sets it).
    #[inline(always)]
    pub fn add_bounds(&self, term: u32, weight: u32, flag: u32, slots: &mut [u64]) {
        match self.row(term) {
            [DENSE, row @ ..] => {
                // Branch-free, so it vectorises: absent ranges (max 0) add nothing.
                for (s, m) in slots.iter_mut().zip(row) {
                    let m = u32::from(*m);
                    *s += u64::from(weight * m) << 32 | u64::from(flag * u32::from(m > 0));
                }
            }
            [_, row @ ..] => {
                for g in Groups::new(row) {
                    // Whole pages: a u8 index cannot fall outside one.
                    let Some(page) = slots
                        .get_mut(g.base..g.base + PAGE_RANGES)
                        .and_then(|p| <&mut [u64; PAGE_RANGES]>::try_from(p).ok())
                    else {
                        continue;
                    };
                    for (l, m) in g.locals.iter().zip(g.maxes) {
                        page[usize::from(*l)] +=
                            u64::from(weight * u32::from(*m)) << 32 | u64::from(flag);
                    }
                }
            }
            [] => {}
        }
    }
}

/// Checks at open that a group's ranges are ascending and inside the collection (so each
/// range is listed once per term, as [`RangeTable::add_bounds`] relies on).
fn check_group(g: &Group, n_ranges: usize) -> std::result::Result<(), String> {
    if g.locals.windows(2).any(|w| w[0] >= w[1]) {
        return Err("a group's ranges are not ascending".into());
    }
    let last = g.base + g.locals.last().map_or(0, |l| usize::from(*l));
    if last >= n_ranges {
        return Err(format!(
            "a range entry past the collection's {n_ranges} ranges"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_written() {
        let n_docs = (301 * RANGE_DOCS) as u32;
        let mut w = RangeWriter::new(n_docs);
        let mut bytes = Vec::new();
        // Term 0: docs in ranges 0, 0, 1 (page 0) and 300 (page 1).
        let d = |range: usize, off: usize| (range * RANGE_DOCS + off) as u32;
        for (doc, i) in [(d(0, 3), 5), (d(0, 7), 9), (d(1, 0), 2), (d(300, 1), 7)] {
            w.push(doc, i);
        }
        w.end_term(&mut bytes).unwrap();
        w.end_term(&mut bytes).unwrap(); // term 1: empty
        w.push(5, 1);
        w.end_term(&mut bytes).unwrap();
        // Term 3: in every other range and more: stored dense.
        for r in (0..301).step_by(2) {
            w.push(d(r, 0), (r % 250 + 1) as u8);
        }
        w.end_term(&mut bytes).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ranges.bin"), &bytes).unwrap();
        w.write_offsets(dir.path()).unwrap();
        let meta = |docs: usize, layout: u64| {
            format!("{{\"range_docs\": {docs}, \"range_layout\": {layout}}}")
        };
        let current = meta(RANGE_DOCS, RANGE_LAYOUT);
        std::fs::write(dir.path().join("meta.json"), &current).unwrap();
        let t = RangeTable::open(dir.path(), 301).unwrap().unwrap();
        let row = |term| {
            let mut v = Vec::new();
            t.for_each(term, |r, m| v.push((r, m)));
            v
        };
        assert_eq!(row(0), vec![(0, 9), (1, 2), (300, 7)]);
        assert_eq!(row(1), vec![]);
        assert_eq!(row(2), vec![(0, 1)]);
        let every_other: Vec<(usize, u8)> = (0..301)
            .step_by(2)
            .map(|r| (r, (r % 250 + 1) as u8))
            .collect();
        assert_eq!(row(3), every_other);
        assert_eq!(row(4), vec![], "past the vocabulary");
        assert_eq!(t.entries(), 4 + every_other.len() as u64);
        // Bounds and presence flags, sparse and dense rows alike.
        let mut slots = vec![0u64; t.n_slots()];
        assert_eq!(slots.len(), 2 * PAGE_RANGES);
        t.add_bounds(0, 2, 1, &mut slots);
        t.add_bounds(3, 3, 1 << 5, &mut slots);
        let split = |s: u64| (s >> 32, s as u32);
        assert_eq!(split(slots[0]), (2 * 9 + 3, 1 | 1 << 5));
        assert_eq!(split(slots[1]), (2 * 2, 1));
        assert_eq!(split(slots[2]), (3 * 3, 1 << 5));
        assert_eq!(split(slots[3]), (0, 0));
        assert_eq!(split(slots[300]), (2 * 7 + 3 * 51, 1 | 1 << 5));
        assert_eq!(split(slots[299]), (0, 0));
        // A table stored for another range size or layout is not read (it is derived again).
        for other in [meta(2 * RANGE_DOCS, RANGE_LAYOUT), meta(RANGE_DOCS, 1)] {
            std::fs::write(dir.path().join("meta.json"), other).unwrap();
            assert!(RangeTable::open(dir.path(), 301).unwrap().is_none());
        }
        std::fs::write(dir.path().join("meta.json"), &current).unwrap();
        // A collection too small for the entries is refused at open.
        assert!(RangeTable::open(dir.path(), 300).is_err());
        // So is a truncated table.
        let p = dir.path().join("ranges.bin");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(RangeTable::open(dir.path(), 301).is_err());
        // And a group whose ranges are not ascending (term 2's one-entry group made two).
        let mut bad = bytes.clone();
        let at = 1 + (t.offsets[2] as usize);
        bad.splice(at + 1..at + 4, [1, 0, 0, 1, 1]);
        std::fs::write(&p, &bad).unwrap();
        std::fs::write(dir.path().join("range_offsets.bin"), {
            let mut o = t.offsets.clone();
            o.iter_mut().skip(3).for_each(|x| *x += 2);
            o.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()
        })
        .unwrap();
        let err = RangeTable::open(dir.path(), 301).err().unwrap().to_string();
        assert!(err.contains("not ascending"), "{err}");
    }

    #[test]
    fn a_row_across_many_pages_adds_every_entry_once() {
        // Every 7th range but none in pages 3 to 5 (a gap of three pages), every range of page 10
        // (a full page: count byte 255), and the collection's last range (a partial page).
        let n_ranges = 5000;
        let mut w = RangeWriter::new((n_ranges * RANGE_DOCS) as u32);
        let mut bytes = Vec::new();
        let page = |r: usize| r / PAGE_RANGES;
        let ranges: Vec<usize> = (0..n_ranges)
            .filter(|r| page(*r) == 10 || (r % 7 == 0 && !(3..6).contains(&page(*r))) || *r == 4999)
            .collect();
        assert!(ranges.len() * 2 < n_ranges, "stored sparse");
        for &r in &ranges {
            w.push((r * RANGE_DOCS) as u32, (r % 200 + 1) as u8);
        }
        w.end_term(&mut bytes).unwrap();
        // One group per page with entries: pages 0 to 2, then 6 on (a page gap of 3), page 10
        // whole.
        let groups: Vec<(usize, usize)> = Groups::new(&bytes[1..])
            .map(|g| (g.base / PAGE_RANGES, g.locals.len()))
            .collect();
        let pages: Vec<usize> = groups.iter().map(|g| g.0).collect();
        assert_eq!(
            pages,
            [0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
        );
        assert_eq!(groups[7], (10, PAGE_RANGES));
        let t = RangeTable::new(Bytes::Owned(bytes), w.offsets(), n_ranges).unwrap();
        let mut listed = Vec::new();
        t.for_each(0, |r, _| listed.push(r));
        assert_eq!(listed, ranges);
        let mut slots = vec![0u64; t.n_slots()];
        t.add_bounds(0, 1, 1, &mut slots);
        for (r, s) in slots.iter().enumerate() {
            let want = if ranges.contains(&r) {
                (r % 200 + 1) as u64
            } else {
                0
            };
            assert_eq!(*s >> 32, want, "range {r}");
            assert_eq!(*s as u32, u32::from(want > 0), "range {r}");
        }
    }
}
