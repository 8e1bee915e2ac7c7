//! Readers for the collection, query, qrels and run formats IR users bring.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Result, StageError};
use crate::parquet_io::{Qrel, RunRow};
use crate::text_input::{excerpt, Lines};

/// Which file layout an `id, text` source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// `id<TAB>text[<TAB>more...]`, extra columns joined with spaces (MS MARCO, naver raw.tsv).
    Tsv,
    /// One JSON object per line with `_id`, `text` and optional `title` (BEIR).
    Jsonl,
}

/// Resolves a docs/queries source: a file, or a directory holding naver's `raw.tsv` or BEIR's
/// `corpus.jsonl` / `queries.jsonl`.
pub fn resolve_text_source(path: &Path, beir_name: &str) -> Result<(PathBuf, TextFormat)> {
    if path.is_dir() {
        for (name, fmt) in [
            ("raw.tsv", TextFormat::Tsv),
            ("raw.tsv.gz", TextFormat::Tsv),
            (beir_name, TextFormat::Jsonl),
        ] {
            let candidate = path.join(name);
            if candidate.is_file() {
                return Ok((candidate, fmt));
            }
        }
        return Err(StageError::malformed(
            path,
            0,
            format!("directory holds neither raw.tsv nor {beir_name}"),
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let fmt = if name.ends_with(".jsonl") || name.ends_with(".json") {
        TextFormat::Jsonl
    } else {
        TextFormat::Tsv
    };
    Ok((path.to_path_buf(), fmt))
}

/// Streams `(id, text)` rows of a TSV or BEIR jsonl file into `emit`, rejecting malformed lines
/// and duplicate ids (the error lists the first few duplicates with their lines).
pub fn read_id_text(
    path: &Path,
    format: TextFormat,
    mut emit: impl FnMut(&str, &str) -> Result<()>,
) -> Result<u64> {
    let mut lines = Lines::open(path)?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut duplicates: Vec<String> = Vec::new();
    let mut rows = 0u64;
    while let Some(next) = lines.next_line() {
        let (line_no, line) = next?;
        if line.trim().is_empty() {
            continue;
        }
        let (id, text) = match format {
            TextFormat::Tsv => parse_tsv_line(path, line_no, line)?,
            TextFormat::Jsonl => parse_jsonl_line(path, line_no, line)?,
        };
        if let Some(first) = seen.get(&id) {
            if duplicates.len() < 5 {
                duplicates.push(format!("`{id}` (lines {first} and {line_no})"));
            } else if duplicates.len() == 5 {
                duplicates.push("...".into());
            }
            continue;
        }
        seen.insert(id.clone(), line_no);
        emit(&id, &text)?;
        rows += 1;
    }
    if !duplicates.is_empty() {
        return Err(StageError::malformed(
            path,
            0,
            format!("duplicate ids: {}", duplicates.join(", ")),
        ));
    }
    Ok(rows)
}

fn parse_tsv_line(path: &Path, line_no: usize, line: &str) -> Result<(String, String)> {
    let mut fields = line.split('\t');
    let id = fields.next().unwrap_or_default().trim();
    let rest: Vec<&str> = fields.collect();
    if id.is_empty() || rest.is_empty() {
        return Err(StageError::malformed(
            path,
            line_no,
            format!("expected `id<TAB>text`, got {}", excerpt(line)),
        ));
    }
    let text = rest
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Ok((id.to_string(), text))
}

fn json_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_jsonl_line(path: &Path, line_no: usize, line: &str) -> Result<(String, String)> {
    let v: Value = serde_json::from_str(line).map_err(|e| {
        StageError::malformed(
            path,
            line_no,
            format!("invalid JSON ({e}): {}", excerpt(line)),
        )
    })?;
    let id = v
        .get("_id")
        .or_else(|| v.get("id"))
        .and_then(json_id)
        .ok_or_else(|| {
            StageError::malformed(path, line_no, format!("no `_id` field: {}", excerpt(line)))
        })?;
    let text = v.get("text").and_then(Value::as_str).ok_or_else(|| {
        StageError::malformed(
            path,
            line_no,
            format!("no string `text` field: {}", excerpt(line)),
        )
    })?;
    let title = v.get("title").and_then(Value::as_str).unwrap_or("").trim();
    let text = if title.is_empty() {
        text.trim().to_string()
    } else {
        format!("{title} {}", text.trim())
    };
    Ok((id, text))
}

fn is_json_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".json")
}

fn read_json_file(path: &Path) -> Result<Value> {
    let mut reader = crate::text_input::open(path)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text)
        .map_err(|e| StageError::malformed(path, 0, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| StageError::malformed(path, e.line(), e.to_string()))
}

/// Reads qrels: naver JSON `{qid: {did: rel}}`, TREC `qid iter did rel`, or BEIR
/// `query-id<TAB>corpus-id<TAB>score` with a header line. Duplicate (qid, did) pairs are an error.
pub fn read_qrels(path: &Path) -> Result<Vec<Qrel>> {
    let mut out = Vec::new();
    if is_json_file(path) {
        let v = read_json_file(path)?;
        let map = v
            .as_object()
            .ok_or_else(|| StageError::malformed(path, 1, "expected {qid: {did: rel}}"))?;
        for (qid, docs) in map {
            let docs = docs.as_object().ok_or_else(|| {
                StageError::malformed(path, 0, format!("qid `{qid}`: expected {{did: rel}}"))
            })?;
            for (did, rel) in docs {
                let rel = rel
                    .as_i64()
                    .or_else(|| rel.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                    .and_then(|r| i32::try_from(r).ok())
                    .ok_or_else(|| {
                        StageError::malformed(
                            path,
                            0,
                            format!("qid `{qid}` did `{did}`: relevance {rel} is not an integer"),
                        )
                    })?;
                out.push(Qrel {
                    qid: qid.clone(),
                    did: did.clone(),
                    rel,
                });
            }
        }
    } else {
        let mut lines = Lines::open(path)?;
        // The format is decided once, by the first judgment line, and every line must fit it:
        // a 3-field line in a TREC file is an error, not a BEIR judgment (doc "0", rel = did).
        let mut format: Option<(usize, usize)> = None; // (fields, line that decided)
        while let Some(next) = lines.next_line() {
            let (line_no, line) = next?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            if let Some((n, decided)) = format {
                if fields.len() != n {
                    let name = if n == 4 {
                        "TREC `qid 0 did rel`"
                    } else {
                        "BEIR `qid did rel`"
                    };
                    return Err(StageError::malformed(
                        path,
                        line_no,
                        format!(
                            "this file is {name} qrels (decided by line {decided}) but this line \
                             has {} fields: {}",
                            fields.len(),
                            excerpt(line)
                        ),
                    ));
                }
            }
            let (qid, did, rel) = match fields.len() {
                4 => (fields[0], fields[2], fields[3]),
                3 => (fields[0], fields[1], fields[2]),
                _ => {
                    return Err(StageError::malformed(
                        path,
                        line_no,
                        format!(
                            "expected `qid 0 did rel` (TREC) or `qid did rel` (BEIR), got {}",
                            excerpt(line)
                        ),
                    ))
                }
            };
            let rel = match rel.parse::<i32>() {
                Ok(r) => r,
                Err(_) if line_no == 1 && fields.len() == 3 => {
                    format = Some((3, line_no)); // BEIR header
                    continue;
                }
                Err(_) => {
                    return Err(StageError::malformed(
                        path,
                        line_no,
                        format!("relevance `{rel}` is not an integer: {}", excerpt(line)),
                    ))
                }
            };
            format.get_or_insert((fields.len(), line_no));
            out.push(Qrel {
                qid: qid.into(),
                did: did.into(),
                rel,
            });
        }
    }
    check_unique_pairs(path, out.iter().map(|q| (q.qid.as_str(), q.did.as_str())))?;
    Ok(out)
}

/// Reads a run: TREC `qid Q0 did rank score tag` or naver JSON `{qid: {did: score}}` (ranks are
/// then assigned by score, ties by did descending as trec_eval orders them). NaN/inf scores and
/// duplicate (qid, did) pairs are errors.
pub fn read_run(path: &Path) -> Result<Vec<RunRow>> {
    let mut out = Vec::new();
    if is_json_file(path) {
        let v = read_json_file(path)?;
        let map = v
            .as_object()
            .ok_or_else(|| StageError::malformed(path, 1, "expected {qid: {did: score}}"))?;
        for (qid, docs) in map {
            let docs = docs.as_object().ok_or_else(|| {
                StageError::malformed(path, 0, format!("qid `{qid}`: expected {{did: score}}"))
            })?;
            let mut rows: Vec<RunRow> = Vec::with_capacity(docs.len());
            for (did, score) in docs {
                let score = score.as_f64().filter(|s| s.is_finite()).ok_or_else(|| {
                    StageError::malformed(
                        path,
                        0,
                        format!("qid `{qid}` did `{did}`: score {score} is not a finite number"),
                    )
                })?;
                rows.push(RunRow {
                    qid: qid.clone(),
                    did: did.clone(),
                    rank: 0,
                    score,
                });
            }
            rows.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.did.cmp(&a.did)));
            for (i, r) in rows.iter_mut().enumerate() {
                r.rank = i as u32 + 1;
            }
            out.extend(rows);
        }
    } else {
        let mut lines = Lines::open(path)?;
        while let Some(next) = lines.next_line() {
            let (line_no, line) = next?;
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() {
                continue;
            }
            if fields.len() != 6 {
                return Err(StageError::malformed(
                    path,
                    line_no,
                    format!(
                        "expected `qid Q0 did rank score tag`, got {}",
                        excerpt(line)
                    ),
                ));
            }
            let rank = fields[3].parse::<u32>().map_err(|_| {
                StageError::malformed(
                    path,
                    line_no,
                    format!("rank `{}` is not a non-negative integer", fields[3]),
                )
            })?;
            let score = fields[4]
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite())
                .ok_or_else(|| {
                    StageError::malformed(
                        path,
                        line_no,
                        format!("score `{}` is not a finite number", fields[4]),
                    )
                })?;
            out.push(RunRow {
                qid: fields[0].into(),
                did: fields[2].into(),
                rank,
                score,
            });
        }
    }
    check_unique_pairs(path, out.iter().map(|r| (r.qid.as_str(), r.did.as_str())))?;
    Ok(out)
}

fn check_unique_pairs<'a>(
    path: &Path,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut dups = Vec::new();
    for (q, d) in pairs {
        if !seen.insert((q, d)) && dups.len() < 5 {
            dups.push(format!("({q}, {d})"));
        }
    }
    if dups.is_empty() {
        Ok(())
    } else {
        Err(StageError::malformed(
            path,
            0,
            format!("duplicate (qid, did) pairs: {}", dups.join(", ")),
        ))
    }
}
