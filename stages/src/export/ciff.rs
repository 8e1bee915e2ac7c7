//! CIFF (Common Index File Format, Lin et al. 2020): length-delimited protobuf messages — one
//! `Header`, then every `PostingsList` (terms sorted, doc ids gap-coded, tf = impact), then every
//! `DocRecord`. PISA's `ciff2pisa` and Anserini read it.

use std::io::{Read, Write};

use prost::Message;

/// CIFF header.
#[derive(Clone, PartialEq, Message)]
pub struct Header {
    /// CIFF format version (1).
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// Postings lists in this file.
    #[prost(int32, tag = "2")]
    pub num_postings_lists: i32,
    /// Doc records in this file.
    #[prost(int32, tag = "3")]
    pub num_docs: i32,
    /// Postings lists (terms) in the original index.
    #[prost(int32, tag = "4")]
    pub total_postings_lists: i32,
    /// Documents in the original collection.
    #[prost(int32, tag = "5")]
    pub total_docs: i32,
    /// Sum of all document lengths (here: of all impacts).
    #[prost(int64, tag = "6")]
    pub total_terms_in_collection: i64,
    /// Mean document length (`total_terms_in_collection / total_docs`).
    #[prost(double, tag = "7")]
    pub average_doclength: f64,
    /// Free-text note on where the index comes from.
    #[prost(string, tag = "8")]
    pub description: String,
}

/// One posting: doc id gap (absolute for the first) and term frequency (here: the impact).
#[derive(Clone, PartialEq, Message)]
pub struct Posting {
    /// Doc id gap from the previous posting (absolute for the first).
    #[prost(int32, tag = "1")]
    pub docid: i32,
    /// Term frequency; here the quantized impact (≥ 1).
    #[prost(int32, tag = "2")]
    pub tf: i32,
}

/// One term's postings.
#[derive(Clone, PartialEq, Message)]
pub struct PostingsList {
    /// The term (token string).
    #[prost(string, tag = "1")]
    pub term: String,
    /// Document frequency: postings in the list.
    #[prost(int64, tag = "2")]
    pub df: i64,
    /// Collection frequency: sum of the postings' `tf`.
    #[prost(int64, tag = "3")]
    pub cf: i64,
    /// Postings in ascending doc id order, gap-coded.
    #[prost(message, repeated, tag = "4")]
    pub postings: Vec<Posting>,
}

/// One document.
#[derive(Clone, PartialEq, Message)]
pub struct DocRecord {
    /// Internal doc id (0-based; row order of the export).
    #[prost(int32, tag = "1")]
    pub docid: i32,
    /// The document's id in the collection.
    #[prost(string, tag = "2")]
    pub collection_docid: String,
    /// Document length; here the sum of its impacts.
    #[prost(int32, tag = "3")]
    pub doclength: i32,
}

impl Header {
    /// The header of a whole collection: `n_lists` lists, `n_docs` documents whose lengths sum
    /// to `total`.
    pub fn for_collection(n_lists: usize, n_docs: usize, total: i64) -> Self {
        Header {
            version: 1,
            num_postings_lists: n_lists as i32,
            num_docs: n_docs as i32,
            total_postings_lists: n_lists as i32,
            total_docs: n_docs as i32,
            total_terms_in_collection: total,
            average_doclength: total as f64 / n_docs.max(1) as f64,
            description: "splade export".into(),
        }
    }
}

impl PostingsList {
    /// `term`'s list from its `(doc, tf)` postings in doc order: gap-coded, with df and cf.
    pub fn gap_coded(term: String, postings: &[(u32, i32)]) -> Self {
        let mut prev = 0;
        let coded = postings
            .iter()
            .map(|&(doc, tf)| {
                let gap = doc - prev;
                prev = doc;
                Posting {
                    docid: gap as i32,
                    tf,
                }
            })
            .collect();
        PostingsList {
            term,
            df: postings.len() as i64,
            cf: postings.iter().map(|p| p.1 as i64).sum(),
            postings: coded,
        }
    }
}

impl DocRecord {
    /// Document `docid`, named `collection_docid`, its length clamped to i32.
    pub fn new(docid: usize, collection_docid: String, length: i64) -> Self {
        DocRecord {
            docid: docid as i32,
            collection_docid,
            doclength: length.min(i32::MAX as i64) as i32,
        }
    }
}

/// Writes one length-delimited message.
pub fn write_delimited<M: Message, W: Write>(w: &mut W, m: &M) -> std::io::Result<()> {
    w.write_all(&m.encode_length_delimited_to_vec())
}

/// Reads every length-delimited message of a CIFF stream.
pub fn read_all<R: Read>(
    r: &mut R,
) -> std::io::Result<(Header, Vec<PostingsList>, Vec<DocRecord>)> {
    let mut bytes = Vec::new();
    r.read_to_end(&mut bytes)?;
    let mut buf = bytes.as_slice();
    let bad = |e: prost::DecodeError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let header = Header::decode_length_delimited(&mut buf).map_err(bad)?;
    let mut lists = Vec::with_capacity(header.num_postings_lists.max(0) as usize);
    for _ in 0..header.num_postings_lists {
        lists.push(PostingsList::decode_length_delimited(&mut buf).map_err(bad)?);
    }
    let mut docs = Vec::with_capacity(header.num_docs.max(0) as usize);
    for _ in 0..header.num_docs {
        docs.push(DocRecord::decode_length_delimited(&mut buf).map_err(bad)?);
    }
    Ok((header, lists, docs))
}
