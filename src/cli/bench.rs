//! `splade bench ...`: the benchmarks of the `splade-bench` crate.

pub use splade_bench::{run as exec, BenchCommand as Command};
