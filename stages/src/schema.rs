//! The Arrow schemas of the artifacts stages exchange (ARCHITECTURE.md "Parquet schemas").
//! Ids are strings everywhere; nothing assumes integer ids.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// `id: utf8, text: utf8` — documents and queries.
pub fn id_text() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]))
}

/// `qid: utf8, did: utf8, rel: int32` — relevance judgments.
pub fn qrels() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("qid", DataType::Utf8, false),
        Field::new("did", DataType::Utf8, false),
        Field::new("rel", DataType::Int32, false),
    ]))
}

/// `qid: utf8, did: utf8, rank: uint32, score: float64` — a ranked run.
pub fn run() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("qid", DataType::Utf8, false),
        Field::new("did", DataType::Utf8, false),
        Field::new("rank", DataType::UInt32, false),
        Field::new("score", DataType::Float64, false),
    ]))
}

/// `metric: utf8, value: float64` — a metrics summary.
pub fn metrics() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// `qid: utf8, metric: utf8, value: float64` — per-query metric values.
pub fn per_query_metrics() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("qid", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// `id: utf8, terms: list<uint32>, weights: list<float32>` — SPLADE sparse vectors, terms ascending.
pub fn sparse_vectors() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new_list("terms", Field::new("item", DataType::UInt32, true), false),
        Field::new_list(
            "weights",
            Field::new("item", DataType::Float32, true),
            false,
        ),
    ]))
}

/// `qid, pos: list<utf8>, neg: list<utf8>, neg_rank: list<uint32>, source` — mined negatives.
pub fn negatives() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("qid", DataType::Utf8, false),
        Field::new_list("pos", Field::new("item", DataType::Utf8, true), false),
        Field::new_list("neg", Field::new("item", DataType::Utf8, true), false),
        Field::new_list(
            "neg_rank",
            Field::new("item", DataType::UInt32, true),
            false,
        ),
        Field::new("source", DataType::Utf8, false),
    ]))
}

/// `qid: utf8, did: utf8, score: float32, teacher: utf8` — teacher (cross-encoder) scores.
pub fn teacher_scores() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("qid", DataType::Utf8, false),
        Field::new("did", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("teacher", DataType::Utf8, false),
    ]))
}
