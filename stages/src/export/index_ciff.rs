//! CIFF streamed from a built inverted index: one posting list in memory at a time, so a
//! collection larger than memory (an index built under a `memory_budget`) can still be handed to
//! PISA's `ciff2pisa`. The bytes equal [`super::ciff_bytes`] of the vectors the index was built
//! from, quantized as the index quantizes them.

use std::io::Write;

use super::ciff;
use crate::error::{Result, StageError};
use crate::index::reader::{InvertedIndex, END};

/// Writes `index` as CIFF to `out`: terms named by `token` and sorted by name, doc ids in index
/// order named by `doc_id`, tf = impact, doc length = the sum of a document's impacts.
pub fn write_index_ciff<W: Write>(
    index: &InvertedIndex,
    token: &dyn Fn(u32) -> String,
    doc_id: &dyn Fn(u32) -> String,
    out: &mut W,
) -> Result<()> {
    let terms = terms_by_name(index, token);
    let lengths = doc_lengths(index, &terms);
    let io = |e: std::io::Error| StageError::Other(format!("writing CIFF: {e}"));
    let header = ciff::Header::for_collection(terms.len(), lengths.len(), lengths.iter().sum());
    ciff::write_delimited(out, &header).map_err(io)?;
    for (name, term) in terms {
        ciff::write_delimited(out, &postings_list(index, term, name)).map_err(io)?;
    }
    for (d, length) in lengths.into_iter().enumerate() {
        ciff::write_delimited(out, &ciff::DocRecord::new(d, doc_id(d as u32), length))
            .map_err(io)?;
    }
    Ok(())
}

/// The index's terms with postings, with their names, sorted by name.
fn terms_by_name(index: &InvertedIndex, token: &dyn Fn(u32) -> String) -> Vec<(String, u32)> {
    let mut terms: Vec<(String, u32)> = (0..index.n_terms())
        .filter(|t| index.term(*t).is_some())
        .map(|t| (token(t), t))
        .collect();
    terms.sort();
    terms
}

/// Calls `visit(doc, impact)` for each posting of `term`, in doc order.
fn for_each_posting(index: &InvertedIndex, term: u32, mut visit: impl FnMut(u32, u32)) {
    if let Some(meta) = index.term(term) {
        let mut c = index.cursor(meta);
        while c.doc() != END {
            visit(c.doc(), c.impact());
            c.next();
        }
    }
}

/// Each document's length: the sum of its impacts (a first pass over every list).
fn doc_lengths(index: &InvertedIndex, terms: &[(String, u32)]) -> Vec<i64> {
    let mut lengths = vec![0i64; index.n_docs as usize];
    for (_, term) in terms {
        for_each_posting(index, *term, |d, impact| {
            if let Some(l) = lengths.get_mut(d as usize) {
                *l += impact as i64;
            }
        });
    }
    lengths
}

/// One term's list, doc ids gap-coded.
fn postings_list(index: &InvertedIndex, term: u32, name: String) -> ciff::PostingsList {
    let mut postings = Vec::new();
    for_each_posting(index, term, |d, impact| postings.push((d, impact as i32)));
    ciff::PostingsList::gap_coded(name, &postings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SparseVector;
    use crate::index::build::{build, quantize};

    /// Pseudo-random vectors (splitmix64) over 30 terms, so lists span several 128-posting
    /// blocks, with a tenth of the weights small enough to quantize to 0, an empty document and
    /// a trailing run of empty documents.
    fn vectors() -> Vec<SparseVector> {
        let mut state = 7u64;
        let mut draw = |n: u64| crate::rng::splitmix64(&mut state) % n;
        let mut docs: Vec<SparseVector> = (0..700)
            .map(|_| {
                let mut terms: Vec<u32> = (0..draw(40) + 1).map(|_| draw(30) as u32).collect();
                terms.sort_unstable();
                terms.dedup();
                let weights = terms
                    .iter()
                    .map(|_| match draw(10) {
                        0 => 0.001,
                        _ => draw(3000) as f32 / 1000.0 + 0.01,
                    })
                    .collect();
                SparseVector { terms, weights }
            })
            .collect();
        for d in [5, 697, 698, 699] {
            docs[d] = SparseVector {
                terms: vec![],
                weights: vec![],
            };
        }
        docs
    }

    #[test]
    fn equals_the_ciff_of_the_vectors_the_index_was_built_from() {
        let tmp = tempfile::tempdir().unwrap();
        let docs = vectors();
        let stats = build(tmp.path(), &docs, 30, 0.0).unwrap();
        let index = InvertedIndex::open(tmp.path()).unwrap();
        let ids: Vec<String> = (0..docs.len()).map(|d| format!("doc{d}")).collect();
        let quant = |w: f32| quantize(w, stats.scale) as i64;
        let want = super::super::ciff_bytes(&ids, &docs, &|t| t.to_string(), &quant).unwrap();
        let mut got = Vec::new();
        write_index_ciff(&index, &|t| t.to_string(), &|d| format!("doc{d}"), &mut got).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "CIFF from the index differs from CIFF of the vectors"
        );
        // And it reads back: every list, several blocks long, and the empty documents' records
        // with length 0.
        let (header, lists, records) = ciff::read_all(&mut got.as_slice()).unwrap();
        assert_eq!(header.num_docs, 700);
        assert!(lists.len() == 30 && lists.windows(2).all(|w| w[0].term < w[1].term));
        assert!(
            lists.iter().all(|l| l.df > 2 * 128),
            "a list fits one block"
        );
        assert_eq!(records.len(), 700);
        assert!([5, 697, 698, 699]
            .iter()
            .all(|&d| records[d].doclength == 0));
        assert!(
            stats.dropped_postings > 0,
            "no impact quantized to 0: the test misses a case"
        );
    }
}
