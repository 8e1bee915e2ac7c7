//! `splade inspect`: any Parquet artifact through Polars — schema, head, describe, SQL.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use polars::prelude::*;

fn ctx<T>(r: PolarsResult<T>, what: impl std::fmt::Display) -> Result<T> {
    r.map_err(|e| anyhow!("{what}: {e}"))
}

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct InspectRequest {
    /// Print the column names and types.
    pub schema: bool,
    /// Print the first N rows.
    pub head: Option<usize>,
    /// Print summary statistics of every column.
    pub describe: bool,
    /// SQL query over the output (table `t`, also named after the output).
    pub sql: Option<String>,
    /// Most rows to print of a table (SQL results).
    pub rows: usize,
}

fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    splade_stages::parquet_io::parquet_files(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A lazy scan over an output (one file or a shard directory).
pub fn scan(path: &Path) -> Result<LazyFrame> {
    let files = parquet_files(path)?;
    if files.is_empty() {
        bail!("{} holds no Parquet files", path.display());
    }
    let frames = files
        .iter()
        .map(|f| {
            ctx(
                LazyFrame::scan_parquet(
                    PlRefPath::new(f.to_string_lossy().as_ref()),
                    Default::default(),
                ),
                format!("scanning {}", f.display()),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    if frames.len() == 1 {
        return Ok(frames.into_iter().next().expect("one frame"));
    }
    ctx(concat(frames, UnionArgs::default()), "concatenating shards")
}

fn set_print_limits(rows: usize) {
    // Polars reads its table format from the environment.
    std::env::set_var("POLARS_FMT_MAX_ROWS", rows.to_string());
    std::env::set_var("POLARS_FMT_STR_LEN", "60");
    std::env::set_var("POLARS_FMT_MAX_COLS", "20");
    std::env::set_var("POLARS_TABLE_WIDTH", "160");
}

/// Prints what `req` asks for about the output at `path`, named `name` in SQL.
pub fn inspect(path: &Path, name: &str, req: &InspectRequest) -> Result<()> {
    set_print_limits(req.rows.max(1));
    let lf = scan(path)?;
    let nothing_asked = !req.schema && req.head.is_none() && !req.describe && req.sql.is_none();
    if req.schema || nothing_asked {
        let schema = ctx(lf.clone().collect_schema(), "reading schema")?;
        println!("{} ({})", name, path.display());
        for (col, dtype) in schema.iter() {
            println!("  {col}: {dtype}");
        }
    }
    if let Some(n) = req.head.or(if nothing_asked { Some(10) } else { None }) {
        set_print_limits(n.max(1));
        let df = ctx(lf.clone().limit(n as IdxSize).collect(), "reading rows")?;
        println!("{df}");
    }
    if req.describe {
        describe(&lf)?;
    }
    if let Some(q) = &req.sql {
        let mut sql = polars::sql::SQLContext::new();
        sql.register("t", lf.clone());
        sql.register(name, lf);
        let df = ctx(
            sql.execute(q).and_then(|lf| lf.collect()),
            format!("SQL: {q}\n(the table is `t` or `{name}`)"),
        )?;
        println!("{df}");
    }
    Ok(())
}

fn describe(lf: &LazyFrame) -> Result<()> {
    let schema = ctx(lf.clone().collect_schema(), "reading schema")?;
    let mut exprs: Vec<Expr> = vec![len().alias("rows")];
    let mut rows: Vec<(String, String, Vec<&'static str>)> = Vec::new();
    for (name, dtype) in schema.iter() {
        let n = name.as_str();
        let c = || col(n);
        exprs.push(
            c().null_count()
                .cast(DataType::Float64)
                .alias(format!("{n}\u{1}nulls")),
        );
        let stats: Vec<&'static str> = if dtype.is_primitive_numeric() {
            exprs.push(
                c().cast(DataType::Float64)
                    .mean()
                    .alias(format!("{n}\u{1}mean")),
            );
            exprs.push(
                c().cast(DataType::Float64)
                    .std(1)
                    .alias(format!("{n}\u{1}std")),
            );
            exprs.push(
                c().cast(DataType::Float64)
                    .min()
                    .alias(format!("{n}\u{1}min")),
            );
            exprs.push(
                c().cast(DataType::Float64)
                    .median()
                    .alias(format!("{n}\u{1}median")),
            );
            exprs.push(
                c().cast(DataType::Float64)
                    .max()
                    .alias(format!("{n}\u{1}max")),
            );
            vec!["nulls", "mean", "std", "min", "median", "max"]
        } else if dtype == &DataType::String {
            let l = || c().str().len_chars().cast(DataType::Float64);
            exprs.push(
                c().n_unique()
                    .cast(DataType::Float64)
                    .alias(format!("{n}\u{1}unique")),
            );
            exprs.push(l().mean().alias(format!("{n}\u{1}mean_len")));
            exprs.push(l().min().alias(format!("{n}\u{1}min_len")));
            exprs.push(l().max().alias(format!("{n}\u{1}max_len")));
            vec!["nulls", "unique", "mean_len", "min_len", "max_len"]
        } else if matches!(dtype, DataType::List(_)) {
            let l = || c().list().len().cast(DataType::Float64);
            exprs.push(l().mean().alias(format!("{n}\u{1}mean_len")));
            exprs.push(l().min().alias(format!("{n}\u{1}min_len")));
            exprs.push(l().max().alias(format!("{n}\u{1}max_len")));
            vec!["nulls", "mean_len", "min_len", "max_len"]
        } else {
            vec!["nulls"]
        };
        rows.push((n.to_string(), dtype.to_string(), stats));
    }
    let df = ctx(lf.clone().select(exprs).collect(), "computing statistics")?;
    let get = |name: &str| -> String {
        df.column(name)
            .ok()
            .and_then(|s| s.get(0).ok().map(|v| v.to_string()))
            .unwrap_or_else(|| "-".into())
    };
    println!("rows: {}", get("rows"));
    for (name, dtype, stats) in rows {
        let parts: Vec<String> = stats
            .iter()
            .map(|s| {
                let v = get(&format!("{name}\u{1}{s}"));
                let v = v
                    .parse::<f64>()
                    .map(|f| {
                        if f.fract() == 0.0 && f.abs() < 1e15 {
                            format!("{f:.0}")
                        } else {
                            format!("{f:.4}")
                        }
                    })
                    .unwrap_or(v);
                format!("{s}={v}")
            })
            .collect();
        println!("  {name} ({dtype}): {}", parts.join("  "));
    }
    Ok(())
}
