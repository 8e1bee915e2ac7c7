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

use arrow::array::{Float32Array, StringArray};
use serde_json::{json, Map, Value};

use crate::contract::{Stage, StageContext, StageOutcome};
use crate::error::{Result, StageError};
use crate::ingest::formats::read_run;
use crate::params::{ParamSpec, ParamType};
use crate::parquet_io::{read_id_text, read_ids, read_negatives, ParquetSink};
use crate::text_input::{excerpt, Lines};

/// The distill stage kind.
pub struct Distill;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "scores",
        ParamType::File,
        "teacher scores: .pkl(.gz) {qid: {pid: score}}, TREC run, run JSON, or 5-column triplet TSV",
    ),
    ParamSpec::with_default(
        "format",
        ParamType::Choice(&["auto", "pickle", "run", "triplets"]),
        "\"auto\"",
        "auto: pickle for *.pkl*/*.pickle*, triplets when the first line has 5 tab-separated fields ending in two numbers, else a TREC/JSON run",
    ),
    ParamSpec::with_default(
        "teacher",
        ParamType::Str,
        "\"teacher\"",
        "name stored in the `teacher` column",
    ),
    ParamSpec::with_default(
        "negatives",
        ParamType::Artifact,
        "null",
        "mined negatives, for the coverage report",
    ),
    ParamSpec::with_default(
        "docs",
        ParamType::Artifact,
        "null",
        "the collection: maps triplet texts to ids; otherwise every did is checked against it",
    ),
    ParamSpec::with_default(
        "queries",
        ParamType::Artifact,
        "null",
        "the training queries: maps triplet texts to ids; otherwise every qid is checked against them",
    ),
    ParamSpec::with_default(
        "on_missing",
        ParamType::Choice(&["error", "drop"]),
        "\"error\"",
        "a qid/did not in `queries`/`docs`: fail naming it, or drop the score (counted in the manifest)",
    ),
];

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
    fn id(&self) -> Option<Arc<str>> {
        match self {
            Item::Int(i) => Some(i.to_string().into()),
            Item::Str(s) => Some(s.clone()),
            _ => None,
        }
    }
}

struct PickleReader<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> PickleReader<R> {
    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }
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

/// Streams a (gzip'd) pickle of `{qid: {pid: score}}` with int or str keys, calling `f(qid, pid,
/// score)` for every score in file order; returns the number of scores. Memory stays at one
/// inner dict plus the pickle memo (tiny for int keys; str keys are memoized by the pickler).
pub fn stream_pickle(path: &Path, mut f: impl FnMut(&str, &str, f32) -> Result<()>) -> Result<u64> {
    let mut r = PickleReader {
        inner: crate::text_input::open(path)?,
        pos: 0,
    };
    let shape = "expected a pickle of {qid: {pid: score}} (int or str ids, float scores)";
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u64, Item> = HashMap::new();
    let mut seen_qids: HashSet<Arc<str>> = HashSet::new();
    let mut current_dids: HashSet<Arc<str>> = HashSet::new();
    let mut n = 0u64;
    loop {
        let at = r.pos;
        let io = |e: std::io::Error, at: u64| {
            StageError::malformed(
                path,
                0,
                format!("not a readable pickle (truncated gzip?) at byte {at} of the unpickled stream: {e}"),
            )
        };
        let bad = |m: String| StageError::malformed(path, 0, format!("byte {at}: {m}"));
        let [code] = r.bytes::<1>().map_err(|e| io(e, at))?;
        let push_memo = |memo: &mut HashMap<u64, Item>, idx: u64, stack: &[Item]| -> Result<()> {
            let top = stack
                .last()
                .ok_or_else(|| bad("memo put on an empty stack".into()))?;
            // Dicts are remembered only as such: a later reference to one is rejected.
            memo.insert(idx, top.clone());
            Ok(())
        };
        match code {
            op::PROTO => {
                r.bytes::<1>().map_err(|e| io(e, at))?;
            }
            op::FRAME => {
                r.bytes::<8>().map_err(|e| io(e, at))?;
            }
            op::STOP => break,
            op::MARK => stack.push(Item::Mark),
            op::EMPTY_DICT => match stack.last() {
                None => stack.push(Item::Outer),
                Some(k) => {
                    let qid = k.id().ok_or_else(|| {
                        bad(format!("{shape}: a dict that is not the value of a qid"))
                    })?;
                    // Deeper nesting is caught when the items are set: an inner dict's values
                    // must be numbers, the outer dict's values inner dicts.
                    if !matches!(stack.first(), Some(Item::Outer)) {
                        return Err(bad(format!("{shape}: a dict outside the outer dict")));
                    }
                    if !seen_qids.insert(qid.clone()) {
                        return Err(bad(format!("duplicate qid {qid}")));
                    }
                    current_dids.clear();
                    stack.push(Item::Inner(qid));
                }
            },
            op::SETITEM | op::SETITEMS => {
                let start = if code == op::SETITEM {
                    stack.len().checked_sub(2)
                } else {
                    stack.iter().rposition(|i| matches!(i, Item::Mark))
                }
                .ok_or_else(|| bad(format!("{shape}: SETITEM(S) without its items")))?;
                let items: Vec<Item> = stack.drain(start..).collect();
                let items = if code == op::SETITEMS {
                    &items[1..]
                } else {
                    &items[..]
                };
                if items.len() % 2 != 0 {
                    return Err(bad(format!("{shape}: odd number of dict items")));
                }
                match stack.last() {
                    Some(Item::Inner(qid)) => {
                        for kv in items.chunks(2) {
                            let did = kv[0].id().ok_or_else(|| {
                                bad(format!(
                                    "{shape}: qid {qid}: key {:?} is not an int or str id",
                                    kv[0]
                                ))
                            })?;
                            let score = match kv[1] {
                                Item::Float(x) => x,
                                Item::Int(i) => i as f64,
                                ref other => {
                                    return Err(bad(format!(
                                        "{shape}: ({qid}, {did}): score {other:?} is not a number"
                                    )))
                                }
                            };
                            if !score.is_finite() {
                                return Err(bad(format!(
                                    "({qid}, {did}): score {score} is not finite"
                                )));
                            }
                            if !current_dids.insert(did.clone()) {
                                return Err(bad(format!("duplicate pair ({qid}, {did})")));
                            }
                            f(qid, &did, score as f32)?;
                            n += 1;
                        }
                    }
                    Some(Item::Outer) => {
                        for kv in items.chunks(2) {
                            if kv[0].id().is_none() || !matches!(kv[1], Item::Inner(_)) {
                                return Err(bad(format!(
                                    "{shape}: outer item {:?}: {:?}",
                                    kv[0], kv[1]
                                )));
                            }
                        }
                    }
                    _ => {
                        return Err(bad(format!(
                            "{shape}: SETITEM(S) on something that is not a dict"
                        )))
                    }
                }
            }
            op::BINPUT => {
                let [i] = r.bytes::<1>().map_err(|e| io(e, at))?;
                push_memo(&mut memo, u64::from(i), &stack)?;
            }
            op::LONG_BINPUT => {
                let i = u32::from_le_bytes(r.bytes::<4>().map_err(|e| io(e, at))?);
                push_memo(&mut memo, u64::from(i), &stack)?;
            }
            op::MEMOIZE => {
                let i = memo.len() as u64;
                push_memo(&mut memo, i, &stack)?;
            }
            op::BINGET | op::LONG_BINGET => {
                let i = if code == op::BINGET {
                    u64::from(r.bytes::<1>().map_err(|e| io(e, at))?[0])
                } else {
                    u64::from(u32::from_le_bytes(r.bytes::<4>().map_err(|e| io(e, at))?))
                };
                match memo.get(&i) {
                    Some(v @ (Item::Int(_) | Item::Str(_) | Item::Float(_))) => {
                        stack.push(v.clone())
                    }
                    Some(_) => return Err(bad(format!("{shape}: a shared dict reference"))),
                    None => return Err(bad(format!("memo entry {i} was never stored"))),
                }
            }
            op::BININT => stack.push(Item::Int(i64::from(i32::from_le_bytes(
                r.bytes::<4>().map_err(|e| io(e, at))?,
            )))),
            op::BININT1 => stack.push(Item::Int(i64::from(
                r.bytes::<1>().map_err(|e| io(e, at))?[0],
            ))),
            op::BININT2 => stack.push(Item::Int(i64::from(u16::from_le_bytes(
                r.bytes::<2>().map_err(|e| io(e, at))?,
            )))),
            op::LONG1 => {
                let [len] = r.bytes::<1>().map_err(|e| io(e, at))?;
                let b = r.vec(u64::from(len)).map_err(|e| io(e, at))?;
                if b.len() > 8 {
                    return Err(bad(format!("{shape}: an integer id wider than 64 bits")));
                }
                let neg = b.last().is_some_and(|x| x & 0x80 != 0);
                let mut le = [if neg { 0xff } else { 0 }; 8];
                le[..b.len()].copy_from_slice(&b);
                stack.push(Item::Int(i64::from_le_bytes(le)));
            }
            op::BINFLOAT => stack.push(Item::Float(f64::from_be_bytes(
                r.bytes::<8>().map_err(|e| io(e, at))?,
            ))),
            op::BINUNICODE
            | op::SHORT_BINUNICODE
            | op::BINUNICODE8
            | op::SHORT_BINBYTES
            | op::BINBYTES => {
                let len = match code {
                    op::SHORT_BINUNICODE | op::SHORT_BINBYTES => {
                        u64::from(r.bytes::<1>().map_err(|e| io(e, at))?[0])
                    }
                    op::BINUNICODE8 => u64::from_le_bytes(r.bytes::<8>().map_err(|e| io(e, at))?),
                    _ => u64::from(u32::from_le_bytes(r.bytes::<4>().map_err(|e| io(e, at))?)),
                };
                let b = r.vec(len).map_err(|e| io(e, at))?;
                let s = String::from_utf8(b)
                    .map_err(|_| bad("a string id that is not UTF-8".into()))?;
                stack.push(Item::Str(s.into()));
            }
            other => {
                return Err(bad(format!(
                    "{shape}: pickle opcode {:?} (0x{other:02x}) is outside that shape",
                    other as char
                )))
            }
        }
    }
    if !matches!(stack.as_slice(), [Item::Outer]) {
        return Err(StageError::malformed(
            path,
            0,
            format!(
                "{shape}: the pickle ends with {} values on the stack (last: {:?})",
                stack.len(),
                stack.iter().rev().take(3).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(n)
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
    pub scores: Vec<Score>,
    pub lines: usize,
    pub unmatched_queries: usize,
    pub unmatched_positives: usize,
    pub unmatched_negatives: usize,
    /// A (query, doc) pair seen again with the same score (kept once).
    pub repeated_pairs: usize,
    /// A (query, doc) pair seen again with a different score (the first is kept).
    pub conflicting_pairs: usize,
    /// Texts shared by several documents or queries (the first id is used).
    pub ambiguous_texts: usize,
}

/// Text → row index of an `id, text` table; a text shared by several rows maps to the first.
fn text_index<'t>(
    t: &'t crate::parquet_io::IdText,
    ambiguous: &mut usize,
) -> HashMap<&'t str, u32> {
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
        let (sp, sn) = (score(f[3], "s+")?, score(f[4], "s-")?);
        out.lines += 1;
        let Some(&qi) = q_of.get(f[0]) else {
            out.unmatched_queries += 1;
            continue;
        };
        for (text, s, unmatched) in [
            (f[1], sp, &mut out.unmatched_positives),
            (f[2], sn, &mut out.unmatched_negatives),
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
    wanted: HashMap<(String, String), bool>,
    written: u64,
}

impl ScoreSink<'_> {
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
            if let Some(hit) = self.wanted.get_mut(&(q.to_string(), d.to_string())) {
                *hit = true;
            }
        }
        self.buf.push((q.to_string(), d.to_string(), s));
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

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
}

impl Stage for Distill {
    fn kind(&self) -> &'static str {
        "distill"
    }
    fn version(&self) -> u32 {
        2
    }
    fn doc(&self) -> &'static str {
        "teacher scores (CE pickle, TREC, JSON, triplet TSV) → teacher_scores Parquet + coverage of mined pairs"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn outputs(&self, _params: &Value) -> Vec<String> {
        vec!["teacher_scores".into()]
    }

    fn run(&self, ctx: &mut StageContext) -> Result<StageOutcome> {
        let teacher: String = ctx.param("teacher")?;
        let format: String = ctx.param("format")?;
        let on_missing: String = ctx.param("on_missing")?;
        let path = ctx.input("scores")?.path().to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let format = match format.as_str() {
            "auto" if name.contains(".pkl") || name.contains(".pickle") => "pickle".to_string(),
            "auto" if looks_like_triplets(&path)? => "triplets".to_string(),
            "auto" => "run".to_string(),
            f => f.to_string(),
        };
        let started = std::time::Instant::now();
        let mut stats = Map::new();
        let mut wanted: HashMap<(String, String), bool> = HashMap::new();
        let mut mined = Vec::new();
        if let Some(neg) = ctx.inputs.get("negatives") {
            for r in read_negatives(neg.path())? {
                for d in &r.pos {
                    wanted.insert((r.qid.clone(), d.clone()), false);
                }
                for d in &r.neg {
                    wanted.insert((r.qid.clone(), d.clone()), false);
                }
                mined.push(r);
            }
        }
        let ids = |key: &str| -> Result<Option<HashSet<String>>> {
            ctx.inputs
                .get(key)
                .map(|i| read_ids(i.path()).map(|v| v.into_iter().collect()))
                .transpose()
        };
        let triplets = format == "triplets";
        let mut sink = ScoreSink {
            path: &path,
            sink: ParquetSink::create(
                &ctx.output_file("teacher_scores"),
                crate::schema::teacher_scores(),
            )?,
            teacher: &teacher,
            buf: Vec::new(),
            // Triplet ids come from these artifacts, so they need no check.
            docs: if triplets { None } else { ids("docs")? },
            queries: if triplets { None } else { ids("queries")? },
            drop_missing: on_missing == "drop",
            dropped_unknown_qid: 0,
            dropped_unknown_did: 0,
            wanted,
            written: 0,
        };
        match format.as_str() {
            "pickle" => {
                stream_pickle(&path, |q, d, s| sink.push(q, d, s))?;
            }
            "triplets" => {
                let need = |key: &str| {
                    ctx.input(key).map_err(|_| StageError::Param {
                        key: key.into(),
                        message: "a triplet TSV holds texts: give `docs` and `queries` to map them to ids".into(),
                    })
                };
                let t = read_triplets(&path, need("queries")?.path(), need("docs")?.path())?;
                if t.scores.is_empty() {
                    return Err(StageError::malformed(
                        &path,
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
            }
            _ => {
                let rows = read_run(&path)?;
                let mut seen = HashSet::with_capacity(rows.len());
                for r in &rows {
                    if !seen.insert((r.qid.as_str(), r.did.as_str())) {
                        return Err(StageError::malformed(
                            &path,
                            0,
                            format!("duplicate pair ({}, {})", r.qid, r.did),
                        ));
                    }
                }
                for r in &rows {
                    sink.push(&r.qid, &r.did, r.score)?;
                }
            }
        }
        sink.flush()?;
        let (dq, dd, written) = (
            sink.dropped_unknown_qid,
            sink.dropped_unknown_did,
            sink.written,
        );
        let wanted = std::mem::take(&mut sink.wanted);
        sink.sink.finish()?;
        if !mined.is_empty() {
            let (mut pos_n, mut pos_hit, mut neg_n, mut neg_hit) = (0usize, 0usize, 0usize, 0usize);
            let hit = |q: &str, d: &str| wanted.get(&(q.to_string(), d.to_string())) == Some(&true);
            for r in &mined {
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
        stats.insert("format".into(), json!(format));
        stats.insert("scores".into(), json!(written));
        stats.insert("dropped_unknown_qid".into(), json!(dq));
        stats.insert("dropped_unknown_did".into(), json!(dd));
        stats.insert(
            "scores_per_s".into(),
            json!(written as f64 / started.elapsed().as_secs_f64().max(1e-9)),
        );
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}
