//! The stages of the splade pipeline.
//!
//! This crate knows *what* is computed: the stage contract ([`Stage`], [`StageContext`]), the
//! Parquet schemas every artifact follows ([`schema`]), readers for the formats users bring
//! (MS MARCO TSV, BEIR jsonl, TREC/JSON qrels and runs), and one module per stage kind. It knows
//! nothing about sled, TOML files or the command line: the engine in the `splade` package drives
//! stages only through the contract.

pub mod bm25;
pub mod contract;
pub mod distill;
pub mod domain;
pub mod encode;
pub mod error;
pub mod evaluate;
pub mod export;
pub mod index;
pub mod ingest;
pub mod mine;
pub mod model;
pub mod params;
pub mod parquet_io;
pub mod registry;
pub mod report;
pub mod retrieve;
pub mod rng;
pub mod schema;
pub mod sharded;
pub mod teacher;
pub mod text_input;
pub mod train;

#[cfg(feature = "test-stages")]
pub mod slow_shards;

/// The arrow crate our schemas are written in, for tools that build batches.
pub use arrow;
pub use contract::{
    InputSlot, ResolvedInput, ResumeStore, Stage, StageContext, StageOutcome, TypedStage,
};
pub use error::StageError;
pub use params::{ParamError, ParamSpec, ParamType, StageParams};
pub use registry::Registry;
