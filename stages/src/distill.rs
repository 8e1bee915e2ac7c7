//! `distill`: teacher (cross-encoder) scores → `teacher_scores` Parquet (qid, did, score,
//! teacher), from the formats they come in: gzip'd pickle `{qid: {pid: score}}` (int or str keys,
//! streamed, never held whole), TREC run, naver run JSON, and naver's 5-column triplet TSV
//! (`query, pos, neg, s+, s-` as texts, mapped back to ids). NaN/inf scores, duplicate pairs,
//! truncated gzip and pickles of an unexpected shape are errors naming the file; nothing is
//! written half.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Float32Array, StringArray};
use serde_json::{json, Map, Value};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::error::{Result, StageError};
use crate::ingest::formats::read_run;
use crate::parquet_io::{
    read_id_text, read_ids, read_negatives, IdText, NegativesRow, ParquetSink,
};
use crate::text_input::{excerpt, Lines};

/// The distill stage kind.
pub struct Distill;

crate::param_choice! {
    /// The file format of `distill`'s teacher scores.
    pub enum ScoreFormat {
        /// Told from the file name and first line.
        Auto = "auto",
        /// A (gzip'd) pickle `{qid: {pid: score}}`.
        Pickle = "pickle",
        /// A TREC or JSON run.
        Run = "run",
        /// naver's 5-column triplet TSV of texts.
        Triplets = "triplets",
    }
}

crate::param_choice! {
    /// What `distill` does with a score whose qid or did is not in `queries`/`docs`.
    pub enum OnMissing {
        /// Fail, naming the id.
        Error = "error",
        /// Drop the score (counted in the manifest).
        Drop = "drop",
    }
}

crate::stage_params! {
    /// Params of [`Distill`].
    pub struct DistillParams {
        /// teacher scores: .pkl(.gz) {qid: {pid: score}}, TREC run, run JSON, or 5-column triplet TSV
        scores: String [File],
        /// auto: pickle for *.pkl*/*.pickle*, triplets when the first line has 5 tab-separated fields ending in two numbers, else a TREC/JSON run
        format: ScoreFormat [Choice(ScoreFormat::NAMES)] = "\"auto\"",
        /// name stored in the `teacher` column
        teacher: String [Str] = "\"teacher\"",
        /// mined negatives, for the coverage report
        negatives: Option<String> [Artifact] = "null",
        /// the collection: maps triplet texts to ids; otherwise every did is checked against it
        docs: Option<String> [Artifact] = "null",
        /// the training queries: maps triplet texts to ids; otherwise every qid is checked against them
        queries: Option<String> [Artifact] = "null",
        /// a qid/did not in `queries`/`docs`: fail naming it, or drop the score (counted in the manifest)
        on_missing: OnMissing [Choice(OnMissing::NAMES)] = "\"error\"",
    }
}

/// One teacher score.
pub type Score = (String, String, f32);

/// The pickle opcodes of `{int|str: {int|str: float}}` pickles, protocols 2–5.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
}

/// A value on the unpickling stack. An inner dict carries its qid (the key pushed before it), so
/// its scores can be emitted as they are set instead of being built up.
#[derive(Clone, Debug)]
enum Item {
    Mark,
    Outer,
    Inner(Arc<str>),
    Int(i64),
    Str(Arc<str>),
    Float(f64),
}

impl Item {
    /// The id an int or str key stands for.
    fn id(&self) -> Option<Arc<str>> {
        match self {
            Item::Int(i) => Some(i.to_string().into()),
            Item::Str(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// A byte reader that counts its position in the unpickled stream.
struct PickleReader<R> {
    inner: R,
    /// Bytes read so far.
    pos: u64,
}

impl<R: BufRead> PickleReader<R> {
    /// The next `N` bytes.
    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }
    /// The next `n` bytes; an `UnexpectedEof` error when fewer are left.
    fn vec(&mut self, n: u64) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        (&mut self.inner).take(n).read_to_end(&mut v)?;
        self.pos += v.len() as u64;
        if (v.len() as u64) < n {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(v)
    }
}

/// What a pickle must hold, for error messages.
const SHAPE: &str = "expected a pickle of {qid: {pid: score}} (int or str ids, float scores)";

/// Streams a (gzip'd) pickle of `{qid: {pid: score}}` with int or str keys, calling `f(qid, pid,
/// score)` for every score in file order; returns the number of scores. Memory stays at one
/// inner dict plus the pickle memo (tiny for int keys; str keys are memoized by the pickler).
pub fn stream_pickle(path: &Path, f: impl FnMut(&str, &str, f32) -> Result<()>) -> Result<u64> {
    let mut u = Unpickler {
        r: PickleReader {
            inner: crate::text_input::open(path)?,
            pos: 0,
        },
        path,
        at: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        seen_qids: HashSet::new(),
        current_dids: HashSet::new(),
        n: 0,
        emit: f,
    };
    loop {
        u.at = u.r.pos;
        let [code] = u.read::<1>()?;
        if code == op::STOP {
            break;
        }
        u.step(code)?;
    }
    u.finish()
}

/// The state of [`stream_pickle`]: the unpickling stack and memo, and the ids seen so far.
struct Unpickler<'p, F> {
    r: PickleReader<Box<dyn BufRead + Send>>,
    path: &'p Path,
    /// Where the current opcode starts in the unpickled stream (for error messages).
    at: u64,
    stack: Vec<Item>,
    memo: HashMap<u64, Item>,
    seen_qids: HashSet<Arc<str>>,
    /// The dids of the inner dict being read.
    current_dids: HashSet<Arc<str>>,
    /// Scores emitted so far.
    n: u64,
    emit: F,
}

impl<F: FnMut(&str, &str, f32) -> Result<()>> Unpickler<'_, F> {
    /// A read failure (truncated stream) in the current opcode.
    fn io(&self, e: std::io::Error) -> StageError {
        StageError::malformed(
            self.path,
            0,
            format!(
                "not a readable pickle (truncated gzip?) at byte {} of the unpickled stream: {e}",
                self.at
            ),
        )
    }

    /// A shape error in the current opcode.
    fn bad(&self, m: String) -> StageError {
        StageError::malformed(self.path, 0, format!("byte {}: {m}", self.at))
    }

    /// The next `N` bytes.
    fn read<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.r.bytes::<N>().map_err(|e| self.io(e))
    }

    /// The next `n` bytes, as a vector.
    fn read_vec(&mut self, n: u64) -> Result<Vec<u8>> {
        self.r.vec(n).map_err(|e| self.io(e))
    }

    /// Applies one opcode other than STOP.
    fn step(&mut self, code: u8) -> Result<()> {
        match code {
            op::PROTO => {
                self.read::<1>()?;
            }
            op::FRAME => {
                self.read::<8>()?;
            }
            op::MARK => self.stack.push(Item::Mark),
            op::EMPTY_DICT => self.empty_dict()?,
            op::SETITEM | op::SETITEMS => self.set_items(code == op::SETITEMS)?,
            op::BINPUT => {
                let [i] = self.read::<1>()?;
                self.memo_put(u64::from(i))?;
            }
            op::LONG_BINPUT => {
                let i = u32::from_le_bytes(self.read::<4>()?);
                self.memo_put(u64::from(i))?;
            }
            op::MEMOIZE => self.memo_put(self.memo.len() as u64)?,
            op::BINGET => {
                let [i] = self.read::<1>()?;
                self.memo_get(u64::from(i))?;
            }
            op::LONG_BINGET => {
                let i = u32::from_le_bytes(self.read::<4>()?);
                self.memo_get(u64::from(i))?;
            }
            op::BININT => {
                let i = i32::from_le_bytes(self.read::<4>()?);
                self.stack.push(Item::Int(i64::from(i)));
            }
            op::BININT1 => {
                let [i] = self.read::<1>()?;
                self.stack.push(Item::Int(i64::from(i)));
            }
            op::BININT2 => {
                let i = u16::from_le_bytes(self.read::<2>()?);
                self.stack.push(Item::Int(i64::from(i)));
            }
            op::LONG1 => self.long1()?,
            op::BINFLOAT => {
                let x = f64::from_be_bytes(self.read::<8>()?);
                self.stack.push(Item::Float(x));
            }
            op::BINUNICODE
            | op::SHORT_BINUNICODE
            | op::BINUNICODE8
            | op::SHORT_BINBYTES
            | op::BINBYTES => self.string(code)?,
            other => {
                return Err(self.bad(format!(
                    "{SHAPE}: pickle opcode {:?} (0x{other:02x}) is outside that shape",
                    other as char
                )))
            }
        }
        Ok(())
    }

    /// EMPTY_DICT: the outer dict on an empty stack, else the inner dict of the qid on top.
    fn empty_dict(&mut self) -> Result<()> {
        let Some(k) = self.stack.last() else {
            self.stack.push(Item::Outer);
            return Ok(());
        };
        let qid = k
            .id()
            .ok_or_else(|| self.bad(format!("{SHAPE}: a dict that is not the value of a qid")))?;
        // Deeper nesting is caught when the items are set: an inner dict's values must be
        // numbers, the outer dict's values inner dicts.
        if !matches!(self.stack.first(), Some(Item::Outer)) {
            return Err(self.bad(format!("{SHAPE}: a dict outside the outer dict")));
        }
        if !self.seen_qids.insert(qid.clone()) {
            return Err(self.bad(format!("duplicate qid {qid}")));
        }
        self.current_dids.clear();
        self.stack.push(Item::Inner(qid));
        Ok(())
    }

    /// SETITEM (`many` false: the top two values) or SETITEMS (the values above the last mark):
    /// sets them as key/value pairs into the dict below them.
    fn set_items(&mut self, many: bool) -> Result<()> {
        let start = if many {
            self.stack.iter().rposition(|i| matches!(i, Item::Mark))
        } else {
            self.stack.len().checked_sub(2)
        }
        .ok_or_else(|| self.bad(format!("{SHAPE}: SETITEM(S) without its items")))?;
        let items: Vec<Item> = self.stack.drain(start..).collect();
        let items = if many { &items[1..] } else { &items[..] };
        if items.len() % 2 != 0 {
            return Err(self.bad(format!("{SHAPE}: odd number of dict items")));
        }
        match self.stack.last() {
            Some(Item::Inner(qid)) => {
                let qid = qid.clone();
                self.emit_scores(&qid, items)
            }
            Some(Item::Outer) => self.check_outer_items(items),
            _ => Err(self.bad(format!(
                "{SHAPE}: SETITEM(S) on something that is not a dict"
            ))),
        }
    }

    /// Emits the `did: score` pairs set into the inner dict of `qid`.
    fn emit_scores(&mut self, qid: &str, items: &[Item]) -> Result<()> {
        for kv in items.chunks(2) {
            let did = kv[0].id().ok_or_else(|| {
                self.bad(format!(
                    "{SHAPE}: qid {qid}: key {:?} is not an int or str id",
                    kv[0]
                ))
            })?;
            let score = match kv[1] {
                Item::Float(x) => x,
                Item::Int(i) => i as f64,
                ref other => {
                    return Err(self.bad(format!(
                        "{SHAPE}: ({qid}, {did}): score {other:?} is not a number"
                    )))
                }
            };
            if !score.is_finite() {
                return Err(self.bad(format!("({qid}, {did}): score {score} is not finite")));
            }
            if !self.current_dids.insert(did.clone()) {
                return Err(self.bad(format!("duplicate pair ({qid}, {did})")));
            }
            (self.emit)(qid, &did, score as f32)?;
            self.n += 1;
        }
        Ok(())
    }

    /// Checks the `qid: inner dict` pairs set into the outer dict (their scores are out already).
    fn check_outer_items(&self, items: &[Item]) -> Result<()> {
        for kv in items.chunks(2) {
            if kv[0].id().is_none() || !matches!(kv[1], Item::Inner(_)) {
                return Err(self.bad(format!("{SHAPE}: outer item {:?}: {:?}", kv[0], kv[1])));
            }
        }
        Ok(())
    }

    /// BINPUT, LONG_BINPUT, MEMOIZE: remembers the top of the stack as memo entry `idx`.
    fn memo_put(&mut self, idx: u64) -> Result<()> {
        let top = self
            .stack
            .last()
            .ok_or_else(|| self.bad("memo put on an empty stack".into()))?;
        // Dicts are remembered only as such: a later reference to one is rejected.
        self.memo.insert(idx, top.clone());
        Ok(())
    }

    /// BINGET, LONG_BINGET: pushes memo entry `i` (an id or a score, never a dict).
    fn memo_get(&mut self, i: u64) -> Result<()> {
        match self.memo.get(&i) {
            Some(v @ (Item::Int(_) | Item::Str(_) | Item::Float(_))) => {
                self.stack.push(v.clone());
                Ok(())
            }
            Some(_) => Err(self.bad(format!("{SHAPE}: a shared dict reference"))),
            None => Err(self.bad(format!("memo entry {i} was never stored"))),
        }
    }

    /// LONG1: a little-endian two's-complement integer id of at most 8 bytes.
    fn long1(&mut self) -> Result<()> {
        let [len] = self.read::<1>()?;
        let b = self.read_vec(u64::from(len))?;
        if b.len() > 8 {
            return Err(self.bad(format!("{SHAPE}: an integer id wider than 64 bits")));
        }
        let neg = b.last().is_some_and(|x| x & 0x80 != 0);
        let mut le = [if neg { 0xff } else { 0 }; 8];
        le[..b.len()].copy_from_slice(&b);
        self.stack.push(Item::Int(i64::from_le_bytes(le)));
        Ok(())
    }

    /// BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, SHORT_BINBYTES, BINBYTES: a UTF-8 string id.
    fn string(&mut self, code: u8) -> Result<()> {
        let len = match code {
            op::SHORT_BINUNICODE | op::SHORT_BINBYTES => u64::from(self.read::<1>()?[0]),
            op::BINUNICODE8 => u64::from_le_bytes(self.read::<8>()?),
            _ => u64::from(u32::from_le_bytes(self.read::<4>()?)),
        };
        let b = self.read_vec(len)?;
        let s =
            String::from_utf8(b).map_err(|_| self.bad("a string id that is not UTF-8".into()))?;
        self.stack.push(Item::Str(s.into()));
        Ok(())
    }

    /// After STOP: the number of scores, if the pickle was exactly one outer dict.
    fn finish(self) -> Result<u64> {
        if !matches!(self.stack.as_slice(), [Item::Outer]) {
            return Err(StageError::malformed(
                self.path,
                0,
                format!(
                    "{SHAPE}: the pickle ends with {} values on the stack (last: {:?})",
                    self.stack.len(),
                    self.stack.iter().rev().take(3).collect::<Vec<_>>()
                ),
            ));
        }
        Ok(self.n)
    }
}

/// Reads a (gzip'd) pickle of `{qid: {pid: score}}` into memory (see [`stream_pickle`]).
pub fn read_pickle(path: &Path) -> Result<Vec<Score>> {
    let mut out = Vec::new();
    stream_pickle(path, |q, d, s| {
        out.push((q.to_string(), d.to_string(), s));
        Ok(())
    })?;
    Ok(out)
}

/// What a naver triplet TSV gave: scores by id, and how many texts found no id.
#[derive(Debug, Default)]
pub struct TripletScores {
    /// `(qid, doc id, score)` of each distinct (query, doc) pair, in file order.
    pub scores: Vec<Score>,
    /// Non-empty lines read.
    pub lines: usize,
    /// Lines whose query text matches no query (skipped).
    pub unmatched_queries: usize,
    /// Lines whose positive text matches no document.
    pub unmatched_positives: usize,
    /// Lines whose negative text matches no document.
    pub unmatched_negatives: usize,
    /// A (query, doc) pair seen again with the same score (kept once).
    pub repeated_pairs: usize,
    /// A (query, doc) pair seen again with a different score (the first is kept).
    pub conflicting_pairs: usize,
    /// Texts shared by several documents or queries (the first id is used).
    pub ambiguous_texts: usize,
}

/// Text → row index of an `id, text` table; a text shared by several rows maps to the first.
fn text_index<'t>(t: &'t IdText, ambiguous: &mut usize) -> HashMap<&'t str, u32> {
    let mut m: HashMap<&str, u32> = HashMap::with_capacity(t.texts.len());
    for (i, text) in t.texts.iter().enumerate() {
        if m.contains_key(text.as_str()) {
            *ambiguous += 1;
        } else {
            m.insert(text.as_str(), i as u32);
        }
    }
    m
}

/// Reads naver's `query \t pos \t neg \t s+ \t s-` TSV, mapping texts to ids by exact match.
pub fn read_triplets(path: &Path, queries: &Path, docs: &Path) -> Result<TripletScores> {
    let mut out = TripletScores::default();
    let q = read_id_text(queries)?;
    let d = read_id_text(docs)?;
    let q_of = text_index(&q, &mut out.ambiguous_texts);
    let d_of = text_index(&d, &mut out.ambiguous_texts);
    let mut seen: HashMap<(u32, u32), f32> = HashMap::new();
    let mut lines = Lines::open(path)?;
    while let Some(line) = lines.next_line() {
        let (no, text) = line?;
        if text.is_empty() {
            continue;
        }
        let ([query, pos, neg], sp, sn) = split_triplet(path, no, text)?;
        out.lines += 1;
        let Some(&qi) = q_of.get(query) else {
            out.unmatched_queries += 1;
            continue;
        };
        for (text, s, unmatched) in [
            (pos, sp, &mut out.unmatched_positives),
            (neg, sn, &mut out.unmatched_negatives),
        ] {
            let Some(&di) = d_of.get(text) else {
                *unmatched += 1;
                continue;
            };
            match seen.get(&(qi, di)) {
                Some(prev) if (prev - s).abs() <= 1e-4 * prev.abs().max(1.0) => {
                    out.repeated_pairs += 1
                }
                Some(_) => out.conflicting_pairs += 1,
                None => {
                    seen.insert((qi, di), s);
                    out.scores
                        .push((q.ids[qi as usize].clone(), d.ids[di as usize].clone(), s));
                }
            }
        }
    }
    Ok(out)
}

/// Line `no` of a triplet TSV: its three texts (query, pos, neg) and two finite scores (s+, s-).
fn split_triplet<'t>(path: &Path, no: usize, text: &'t str) -> Result<([&'t str; 3], f32, f32)> {
    let f: Vec<&str> = text.split('\t').collect();
    if f.len() != 5 {
        return Err(StageError::malformed(
            path,
            no,
            format!(
                "expected 5 tab-separated fields (query, pos, neg, s+, s-), got {}: {}",
                f.len(),
                excerpt(text)
            ),
        ));
    }
    let score = |s: &str, which: &str| -> Result<f32> {
        s.trim()
            .parse::<f32>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| {
                StageError::malformed(
                    path,
                    no,
                    format!("{which} {} is not a finite number", excerpt(s)),
                )
            })
    };
    Ok(([f[0], f[1], f[2]], score(f[3], "s+")?, score(f[4], "s-")?))
}

/// Whether `path` looks like a triplet TSV: 5 tab-separated fields, the last two numbers.
fn looks_like_triplets(path: &Path) -> Result<bool> {
    let mut lines = Lines::open(path)?;
    while let Some(line) = lines.next_line() {
        let (_, text) = line?;
        if text.is_empty() {
            continue;
        }
        let f: Vec<&str> = text.split('\t').collect();
        return Ok(f.len() == 5 && f[3..].iter().all(|x| x.trim().parse::<f64>().is_ok()));
    }
    Ok(false)
}

/// The mined (qid, did) pairs, each marked whether it got a teacher score: by qid, then did, so
/// a score is looked up by `&str` without allocating.
type Wanted = HashMap<String, HashMap<String, bool>>;

/// Streams scores into the `teacher_scores` file, dropping or rejecting unknown ids and counting
/// coverage of mined pairs.
struct ScoreSink<'a> {
    path: &'a Path,
    sink: ParquetSink,
    teacher: &'a str,
    buf: Vec<Score>,
    docs: Option<HashSet<String>>,
    queries: Option<HashSet<String>>,
    drop_missing: bool,
    dropped_unknown_qid: u64,
    dropped_unknown_did: u64,
    wanted: Wanted,
    written: u64,
}

/// What a [`ScoreSink`] counted once finished.
struct SinkTotals {
    dropped_unknown_qid: u64,
    dropped_unknown_did: u64,
    written: u64,
    /// The mined pairs, each marked whether it got a score.
    wanted: Wanted,
}

impl<'a> ScoreSink<'a> {
    /// Creates the `teacher_scores` file for scores read from `path`; ids are checked against
    /// the `docs` and `queries` inputs except for triplets (their ids come from those artifacts).
    fn create(
        ctx: &StageContext,
        path: &'a Path,
        p: &'a DistillParams,
        format: ScoreFormat,
        wanted: Wanted,
    ) -> Result<Self> {
        let sink = ParquetSink::create(
            &ctx.output_file("teacher_scores"),
            crate::schema::teacher_scores(),
        )?;
        let ids = |key: &str| -> Result<Option<HashSet<String>>> {
            if format == ScoreFormat::Triplets {
                return Ok(None);
            }
            ctx.inputs
                .get(key)
                .map(|i| read_ids(i.path()).map(|v| v.into_iter().collect()))
                .transpose()
        };
        Ok(ScoreSink {
            path,
            sink,
            teacher: &p.teacher,
            buf: Vec::new(),
            docs: ids("docs")?,
            queries: ids("queries")?,
            drop_missing: p.on_missing == OnMissing::Drop,
            dropped_unknown_qid: 0,
            dropped_unknown_did: 0,
            wanted,
            written: 0,
        })
    }

    /// Adds one score (or drops it, or fails, when an id is unknown).
    fn push(&mut self, q: &str, d: &str, s: f32) -> Result<()> {
        for (set, id, what, dropped) in [
            (&self.queries, q, "qid", &mut self.dropped_unknown_qid),
            (&self.docs, d, "did", &mut self.dropped_unknown_did),
        ] {
            if set.as_ref().is_some_and(|set| !set.contains(id)) {
                if self.drop_missing {
                    *dropped += 1;
                    return Ok(());
                }
                return Err(StageError::malformed(
                    self.path,
                    0,
                    format!(
                        "({q}, {d}): {what} {id} is not in the {} artifact (on_missing = \"drop\" skips such scores)",
                        if what == "qid" { "queries" } else { "docs" }
                    ),
                ));
            }
        }
        if !self.wanted.is_empty() {
            if let Some(hit) = self.wanted.get_mut(q).and_then(|m| m.get_mut(d)) {
                *hit = true;
            }
        }
        self.buf.push((q.to_string(), d.to_string(), s));
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered scores.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = std::mem::take(&mut self.buf);
        self.written += b.len() as u64;
        self.sink.write_columns(vec![
            Arc::new(StringArray::from_iter_values(
                b.iter().map(|s| s.0.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                b.iter().map(|s| s.1.as_str()),
            )),
            Arc::new(Float32Array::from_iter_values(b.iter().map(|s| s.2))),
            Arc::new(StringArray::from_iter_values(
                b.iter().map(|_| self.teacher),
            )),
        ])
    }

    /// Writes the rest and closes the file.
    fn finish(mut self) -> Result<SinkTotals> {
        self.flush()?;
        let totals = SinkTotals {
            dropped_unknown_qid: self.dropped_unknown_qid,
            dropped_unknown_did: self.dropped_unknown_did,
            written: self.written,
            wanted: std::mem::take(&mut self.wanted),
        };
        self.sink.finish()?;
        Ok(totals)
    }
}

/// The format `auto` stands for with this file; any other format as given.
fn resolve_format(format: ScoreFormat, path: &Path) -> Result<ScoreFormat> {
    if format != ScoreFormat::Auto {
        return Ok(format);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    Ok(if name.contains(".pkl") || name.contains(".pickle") {
        ScoreFormat::Pickle
    } else if looks_like_triplets(path)? {
        ScoreFormat::Triplets
    } else {
        ScoreFormat::Run
    })
}

/// The mined rows of the `negatives` input (none without it), and their (qid, did) pairs, each
/// marked not yet scored.
fn read_mined(ctx: &StageContext) -> Result<(Vec<NegativesRow>, Wanted)> {
    let mut wanted = Wanted::new();
    let mut mined = Vec::new();
    if let Some(neg) = ctx.inputs.get("negatives") {
        for r in read_negatives(neg.path())? {
            let pairs = wanted.entry(r.qid.clone()).or_default();
            for d in r.pos.iter().chain(&r.neg) {
                pairs.insert(d.clone(), false);
            }
            mined.push(r);
        }
    }
    Ok((mined, wanted))
}

/// Maps a triplet TSV's texts to ids and pushes its scores; its counters go into `stats`.
fn push_triplets(
    ctx: &StageContext,
    path: &Path,
    sink: &mut ScoreSink<'_>,
    stats: &mut Map<String, Value>,
) -> Result<()> {
    let need = |key: &str| {
        ctx.input(key).map_err(|_| StageError::Param {
            key: key.into(),
            message: "a triplet TSV holds texts: give `docs` and `queries` to map them to ids"
                .into(),
        })
    };
    let t = read_triplets(path, need("queries")?.path(), need("docs")?.path())?;
    if t.scores.is_empty() {
        return Err(StageError::malformed(
            path,
            0,
            format!(
                "no triplet text matched the queries and docs artifacts ({} lines; unmatched: {} queries, {} positives, {} negatives)",
                t.lines, t.unmatched_queries, t.unmatched_positives, t.unmatched_negatives
            ),
        ));
    }
    for (q, d, s) in &t.scores {
        sink.push(q, d, *s)?;
    }
    stats.insert("triplet_lines".into(), json!(t.lines));
    stats.insert("unmatched_queries".into(), json!(t.unmatched_queries));
    stats.insert("unmatched_positives".into(), json!(t.unmatched_positives));
    stats.insert("unmatched_negatives".into(), json!(t.unmatched_negatives));
    stats.insert("repeated_pairs".into(), json!(t.repeated_pairs));
    stats.insert("conflicting_pairs".into(), json!(t.conflicting_pairs));
    stats.insert("ambiguous_texts".into(), json!(t.ambiguous_texts));
    Ok(())
}

/// Pushes the scores of a TREC/JSON run; a pair given twice is an error.
fn push_run(path: &Path, sink: &mut ScoreSink<'_>) -> Result<()> {
    let rows = read_run(path)?;
    let mut seen = HashSet::with_capacity(rows.len());
    for r in &rows {
        if !seen.insert((r.qid.as_str(), r.did.as_str())) {
            return Err(StageError::malformed(
                path,
                0,
                format!("duplicate pair ({}, {})", r.qid, r.did),
            ));
        }
    }
    for r in &rows {
        sink.push(&r.qid, &r.did, r.score as f32)?;
    }
    Ok(())
}

/// Adds the shares of mined positive and negative pairs that got a teacher score to `stats`.
fn insert_coverage(mined: &[NegativesRow], wanted: &Wanted, stats: &mut Map<String, Value>) {
    let (mut pos_n, mut pos_hit, mut neg_n, mut neg_hit) = (0usize, 0usize, 0usize, 0usize);
    let hit = |q: &str, d: &str| wanted.get(q).and_then(|m| m.get(d)) == Some(&true);
    for r in mined {
        for d in &r.pos {
            pos_n += 1;
            pos_hit += usize::from(hit(&r.qid, d));
        }
        for d in &r.neg {
            neg_n += 1;
            neg_hit += usize::from(hit(&r.qid, d));
        }
    }
    stats.insert(
        "coverage_positive_pairs".into(),
        json!(pos_hit as f64 / pos_n.max(1) as f64),
    );
    stats.insert(
        "coverage_negative_pairs".into(),
        json!(neg_hit as f64 / neg_n.max(1) as f64),
    );
}

impl TypedStage for Distill {
    type Params = DistillParams;
    const KIND: &'static str = "distill";
    const VERSION: u32 = 2;
    const DOC: &'static str = "teacher scores (CE pickle, TREC, JSON, triplet TSV) → teacher_scores Parquet + coverage of mined pairs";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "negatives" => Some(&[Holds::Negatives]),
            "docs" | "queries" => Some(&[Holds::Texts]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &DistillParams) -> Vec<String> {
        vec!["teacher_scores".into()]
    }

    fn run(&self, p: DistillParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let path = ctx.input("scores")?.path().to_path_buf();
        let format = resolve_format(p.format, &path)?;
        let started = Instant::now();
        let mut stats = Map::new();
        let (mined, wanted) = read_mined(ctx)?;
        let mut sink = ScoreSink::create(ctx, &path, &p, format, wanted)?;
        match format {
            ScoreFormat::Pickle => {
                stream_pickle(&path, |q, d, s| sink.push(q, d, s))?;
            }
            ScoreFormat::Triplets => push_triplets(ctx, &path, &mut sink, &mut stats)?,
            // `auto` is resolved above.
            ScoreFormat::Run | ScoreFormat::Auto => push_run(&path, &mut sink)?,
        }
        let totals = sink.finish()?;
        if totals.written == 0 {
            return Err(StageError::malformed(
                &path,
                0,
                format!(
                    "no teacher score was kept: the file holds none, or every one was dropped \
                     (unknown qid: {}, unknown did: {})",
                    totals.dropped_unknown_qid, totals.dropped_unknown_did
                ),
            ));
        }
        if !mined.is_empty() {
            insert_coverage(&mined, &totals.wanted, &mut stats);
        }
        stats.insert("format".into(), json!(format.to_string()));
        stats.insert("scores".into(), json!(totals.written));
        stats.insert(
            "dropped_unknown_qid".into(),
            json!(totals.dropped_unknown_qid),
        );
        stats.insert(
            "dropped_unknown_did".into(),
            json!(totals.dropped_unknown_did),
        );
        stats.insert(
            "scores_per_s".into(),
            json!(totals.written as f64 / started.elapsed().as_secs_f64().max(1e-9)),
        );
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
