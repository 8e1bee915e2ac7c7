//! `export`: sparse vectors → the formats other engines read: Anserini JsonVectorCollection
//! (documents), Anserini pre-tokenized query TSV, and CIFF (for PISA's ciff2pisa).

pub mod ciff;
pub mod index_ciff;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use serde_json::{json, Map};

use crate::contract::{StageContext, StageOutcome, TypedStage};
use crate::domain::SparseVector;
use crate::error::{Result, StageError};
use crate::model::TextTokenizer;
use crate::params::ParamError;
use crate::parquet_io::{for_each_sparse_batch, read_id_text, read_sparse, IdTextChunks};

/// The export stage kind.
pub struct Export;

/// The largest `scale`: `anserini_queries` repeats a token round(weight × scale) times.
const MAX_SCALE: f64 = 10_000.0;

crate::param_choice! {
    /// The file format `export` writes.
    pub enum ExportFormat {
        /// Anserini JsonVectorCollection (documents).
        AnseriniDocs = "anserini_docs",
        /// Anserini pre-tokenized query TSV (tokens repeated by weight).
        AnseriniQueries = "anserini_queries",
        /// Common Index File Format, for PISA's ciff2pisa.
        Ciff = "ciff",
    }
}

crate::stage_params! {
    /// Params of [`Export`].
    pub struct ExportParams {
        /// sparse vectors (documents, or queries for `anserini_queries`)
        input: String [Artifact],
        /// anserini_docs (JsonVectorCollection), anserini_queries (TSV, tokens repeated), ciff
        format: ExportFormat [Choice(ExportFormat::NAMES)],
        /// docs (id, text) for the `content` field
        texts: Option<String> [Artifact] = "null",
        /// model whose tokenizer names the terms
        model: String [File] = "\"conf/models/splade-tiny\"",
        /// integer weight = round(weight × scale), as Anserini expects
        scale: f64 [Float] = "100.0",
    }
}

impl TypedStage for Export {
    type Params = ExportParams;
    const KIND: &'static str = "export";
    const VERSION: u32 = 1;
    const DOC: &'static str = "sparse vectors → Anserini JsonVectorCollection / query TSV, or CIFF";

    fn accepts(&self, param: &str) -> Option<&'static [crate::contract::Holds]> {
        use crate::contract::Holds;
        match param {
            "input" => Some(&[Holds::Vectors]),
            "texts" => Some(&[Holds::Texts]),
            _ => None,
        }
    }

    fn outputs(&self, _params: &ExportParams) -> Vec<String> {
        vec!["export".into()]
    }

    fn check(&self, p: &ExportParams) -> std::result::Result<(), ParamError> {
        if !(p.scale > 0.0 && p.scale <= MAX_SCALE) {
            return Err(ParamError::new(
                "scale",
                format!(
                    "must be > 0 and at most {MAX_SCALE} (weights become round(weight × scale); \
                     Anserini uses 100), got {}",
                    p.scale
                ),
            ));
        }
        Ok(())
    }

    fn run(&self, p: ExportParams, ctx: &mut StageContext) -> Result<StageOutcome> {
        let tok = TextTokenizer::load(ctx.input("model")?.path(), 512)?;
        let input = ctx.input("input")?.path().to_path_buf();
        let scale = p.scale;
        let quant = |w: f32| (w as f64 * scale).round() as i64;
        let name = match p.format {
            ExportFormat::AnseriniDocs => "export.jsonl",
            ExportFormat::AnseriniQueries => "export.tsv",
            ExportFormat::Ciff => "export.ciff",
        };
        let path = ctx.staging_dir().join(name);
        let file = std::fs::File::create(&path).map_err(|e| StageError::io(&path, e))?;
        let mut out = std::io::BufWriter::new(file);
        let rows = match p.format {
            // CIFF lists postings term by term, so it inverts the whole collection in memory
            // (as an in-memory index build does).
            ExportFormat::Ciff => {
                let (ids, vectors) = read_sparse(&input)?;
                let bytes = ciff_bytes(&ids, &vectors, &|t| tok.token(t), &quant)?;
                out.write_all(&bytes)
                    .map_err(|e| StageError::io(&path, e))?;
                ids.len()
            }
            // The Anserini formats are one line per vector: streamed, a batch at a time.
            format => {
                let texts = ctx.inputs.get("texts").map(|t| t.path().to_path_buf());
                let mut contents = Contents::open(texts.as_deref())?;
                let mut rows = 0;
                for_each_sparse_batch(&input, 64 * 1024, |_, ids, vectors| {
                    let lines = match format {
                        ExportFormat::AnseriniDocs => {
                            let content = contents.of(&ids)?;
                            anserini_docs(&ids, &vectors, &content, &tok, &quant)?
                        }
                        _ => anserini_queries(&ids, &vectors, &tok, &quant),
                    };
                    rows += ids.len();
                    out.write_all(&lines).map_err(|e| StageError::io(&path, e))
                })?;
                rows
            }
        };
        out.flush().map_err(|e| StageError::io(&path, e))?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut stats = Map::new();
        stats.insert("rows".into(), json!(rows));
        stats.insert("bytes".into(), json!(bytes));
        Ok(StageOutcome {
            stats,
            summary: None,
        })
    }
}

/// The `content` of each exported document: read along with the vectors when the texts come in
/// the same order (the usual case: both follow the collection), else from an id → text map of
/// the whole texts artifact (built once, on the first row out of step).
enum Contents {
    None,
    Lockstep(PathBuf, IdTextChunks),
    Map(HashMap<String, String>),
}

impl Contents {
    fn open(texts: Option<&std::path::Path>) -> Result<Self> {
        Ok(match texts {
            None => Contents::None,
            Some(t) => Contents::Lockstep(t.to_path_buf(), IdTextChunks::open(t, 64 * 1024)?),
        })
    }

    /// The text of each of `ids` ("" when unknown).
    fn of(&mut self, ids: &[String]) -> Result<Vec<String>> {
        if let Contents::Lockstep(path, chunks) = self {
            let rows = chunks.next_rows(ids.len())?.unwrap_or_default();
            if rows.ids == ids {
                return Ok(rows.texts);
            }
            let all = read_id_text(path)?;
            *self = Contents::Map(all.ids.into_iter().zip(all.texts).collect());
        }
        Ok(match self {
            Contents::Map(m) => ids
                .iter()
                .map(|id| m.get(id).cloned().unwrap_or_default())
                .collect(),
            _ => vec![String::new(); ids.len()],
        })
    }
}

/// Anserini's JsonVectorCollection: one `{id, content, vector: {token: int weight}}` line per doc.
fn anserini_docs(
    ids: &[String],
    vectors: &[SparseVector],
    content: &[String],
    tok: &TextTokenizer,
    quant: &dyn Fn(f32) -> i64,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for ((id, v), text) in ids.iter().zip(vectors).zip(content) {
        let mut vector = Map::new();
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let q = quant(*w);
            if q > 0 {
                vector.insert(tok.token(*t), json!(q));
            }
        }
        let line = json!({"id": id, "content": text, "vector": vector});
        writeln!(out, "{line}").map_err(|e| StageError::Other(e.to_string()))?;
    }
    Ok(out)
}

/// Anserini's pre-tokenized query TSV: `id\ttoken token ...`, each token repeated by its weight.
fn anserini_queries(
    ids: &[String],
    vectors: &[SparseVector],
    tok: &TextTokenizer,
    quant: &dyn Fn(f32) -> i64,
) -> Vec<u8> {
    let mut out = String::new();
    for (id, v) in ids.iter().zip(vectors) {
        let mut toks = Vec::new();
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let token = tok.token(*t);
            for _ in 0..quant(*w).max(0) {
                toks.push(token.clone());
            }
        }
        out += &format!("{id}\t{}\n", toks.join(" "));
    }
    out.into_bytes()
}

/// A CIFF stream of `vectors` (doc ids = row order; tf = quantized weight; terms named by
/// `token` and sorted by name).
pub fn ciff_bytes(
    ids: &[String],
    vectors: &[SparseVector],
    token: &dyn Fn(u32) -> String,
    quant: &dyn Fn(f32) -> i64,
) -> Result<Vec<u8>> {
    let mut lists: BTreeMap<String, Vec<(u32, i32)>> = BTreeMap::new();
    let mut lengths = vec![0i64; ids.len()];
    for (d, v) in vectors.iter().enumerate() {
        for (t, w) in v.terms.iter().zip(&v.weights) {
            let q = quant(*w);
            if q > 0 {
                lists
                    .entry(token(*t))
                    .or_default()
                    .push((d as u32, q.min(i32::MAX as i64) as i32));
                lengths[d] += q;
            }
        }
    }
    let header = ciff::Header::for_collection(lists.len(), ids.len(), lengths.iter().sum());
    let mut out = Vec::new();
    let io = |e: std::io::Error| StageError::Other(format!("writing CIFF: {e}"));
    ciff::write_delimited(&mut out, &header).map_err(io)?;
    for (term, postings) in lists {
        ciff::write_delimited(&mut out, &ciff::PostingsList::gap_coded(term, &postings))
            .map_err(io)?;
    }
    for (d, (id, length)) in ids.iter().zip(lengths).enumerate() {
        ciff::write_delimited(&mut out, &ciff::DocRecord::new(d, id.clone(), length))
            .map_err(io)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdText;

    #[test]
    fn contents_follow_the_texts_in_step_or_by_id() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("texts.parquet");
        let texts = IdText {
            ids: (0..10).map(|i| format!("d{i}")).collect(),
            texts: (0..10).map(|i| format!("text {i}")).collect(),
        };
        crate::parquet_io::write_id_text(&path, &texts).unwrap();
        let ids = |r: std::ops::Range<usize>| r.map(|i| format!("d{i}")).collect::<Vec<_>>();
        let mut c = Contents::open(Some(&path)).unwrap();
        assert_eq!(c.of(&ids(0..4)).unwrap()[3], "text 3");
        assert_eq!(c.of(&ids(4..7)).unwrap(), ["text 4", "text 5", "text 6"]);
        // Out of step: looked up by id from then on.
        let shuffled = vec!["d9".to_string(), "d1".into(), "missing".into()];
        assert_eq!(c.of(&shuffled).unwrap(), ["text 9", "text 1", ""]);
        assert!(matches!(c, Contents::Map(_)));
        let mut none = Contents::open(None).unwrap();
        assert_eq!(none.of(&ids(0..2)).unwrap(), ["", ""]);
    }
}
