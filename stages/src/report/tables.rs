//! The report's artifacts (wide table, tidy scores, comparisons) and its terminal summary.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};

use super::results::{Comparison, Comparisons, Evaluations};
use super::{ReportParams, Test, TestOptions};
use crate::error::Result;
use crate::parquet_io::ParquetSink;

/// The label of the row holding the mean over datasets.
pub const MEAN_ROW: &str = "mean";

/// Writes the wide table: a row per dataset and a `mean` row, a `metric/system` column each.
pub fn write_table(path: &Path, ev: &Evaluations) -> Result<u64> {
    let mut fields = vec![Field::new("dataset", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut labels: Vec<&str> = ev.datasets.iter().map(String::as_str).collect();
    labels.push(MEAN_ROW);
    columns.push(Arc::new(StringArray::from(labels)));
    for m in 0..ev.metrics.len() {
        for s in 0..ev.systems.len() {
            fields.push(Field::new(
                format!("{}/{}", ev.metrics[m], ev.systems[s]),
                DataType::Float64,
                true,
            ));
            let mut values: Vec<Option<f64>> = (0..ev.datasets.len())
                .map(|d| ev.cell(d, s, m).map(|c| c.mean()))
                .collect();
            values.push(ev.mean_over_datasets(s, m).map(|(v, _)| v));
            columns.push(Arc::new(Float64Array::from(values)));
        }
    }
    let mut sink = ParquetSink::create(path, Arc::new(Schema::new(fields)))?;
    sink.write_columns(columns)?;
    sink.finish()
}

/// Writes the tidy table: one row per dataset, system and metric that was evaluated.
pub fn write_scores(path: &Path, ev: &Evaluations) -> Result<u64> {
    let (mut ds, mut ss, mut ms, mut vs, mut qs) = (vec![], vec![], vec![], vec![], vec![]);
    for d in 0..ev.datasets.len() {
        for s in 0..ev.systems.len() {
            for m in 0..ev.metrics.len() {
                if let Some(c) = ev.cell(d, s, m) {
                    ds.push(ev.datasets[d].as_str());
                    ss.push(ev.systems[s].as_str());
                    ms.push(ev.metrics[m].as_str());
                    vs.push(c.mean());
                    qs.push(c.values.len() as u64);
                }
            }
        }
    }
    let schema = Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("system", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("queries", DataType::UInt64, false),
    ]);
    let mut sink = ParquetSink::create(path, Arc::new(schema))?;
    sink.write_columns(vec![
        Arc::new(StringArray::from(ds)),
        Arc::new(StringArray::from(ss)),
        Arc::new(StringArray::from(ms)),
        Arc::new(Float64Array::from(vs)),
        Arc::new(UInt64Array::from(qs)),
    ])?;
    sink.finish()
}

/// Writes one row per comparison; `significant` uses `test`'s corrected p-value below `alpha`.
pub fn write_comparisons(path: &Path, c: &Comparisons, alpha: f64, test: Test) -> Result<u64> {
    let rows = &c.rows;
    let text = |f: fn(&Comparison) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let float = |f: fn(&Comparison) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let nullable = |name: &str| Field::new(name, DataType::Float64, true);
    let schema = Schema::new(vec![
        Field::new("dataset", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("baseline", DataType::Utf8, false),
        Field::new("system", DataType::Utf8, false),
        nullable("baseline_value"),
        nullable("system_value"),
        nullable("delta"),
        Field::new("queries", DataType::UInt64, false),
        nullable("t_statistic"),
        nullable("p_t_test"),
        nullable("p_randomization"),
        Field::new("randomization_exact", DataType::Boolean, false),
        nullable("p_t_test_corrected"),
        nullable("p_randomization_corrected"),
        Field::new("significant", DataType::Boolean, false),
    ]);
    let mut sink = ParquetSink::create(path, Arc::new(schema))?;
    sink.write_columns(vec![
        text(|c| &c.dataset),
        text(|c| &c.metric),
        text(|c| &c.baseline),
        text(|c| &c.system),
        float(|c| Some(c.baseline_value)),
        float(|c| Some(c.system_value)),
        float(|c| Some(c.system_value - c.baseline_value)),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|c| c.queries as u64),
        )),
        float(|c| c.t_statistic),
        float(|c| c.p_t_test),
        float(|c| c.p_randomization),
        Arc::new(BooleanArray::from(
            rows.iter()
                .map(|c| c.randomization_exact)
                .collect::<Vec<_>>(),
        )),
        float(|c| c.p_t_test_corrected),
        float(|c| c.p_randomization_corrected),
        Arc::new(BooleanArray::from(
            rows.iter()
                .map(|c| is_significant(c, alpha, test))
                .collect::<Vec<_>>(),
        )),
    ])?;
    sink.finish()
}

/// True when `test`'s corrected p-value is below `alpha`.
pub fn is_significant(c: &Comparison, alpha: f64, test: Test) -> bool {
    let p = match test {
        Test::TTest => c.p_t_test_corrected,
        Test::Randomization => c.p_randomization_corrected,
    };
    p.is_some_and(|p| p < alpha)
}

/// The terminal table: one block per metric, datasets down, systems across, `*` where a system
/// differs significantly from the baseline.
pub fn format_report(
    title: &str,
    ev: &Evaluations,
    comparisons: &Comparisons,
    p: &ReportParams,
    opts: &TestOptions,
) -> String {
    let test = match p.test {
        Test::TTest => "paired t-test",
        Test::Randomization => "randomization test",
    };
    let correction = match p.correction {
        super::Correction::Holm => ", Holm-corrected per dataset",
        super::Correction::Bonferroni => ", Bonferroni-corrected per dataset",
        super::Correction::None => "",
    };
    let mut out = String::new();
    for (m, metric) in ev.metrics.iter().enumerate() {
        if m > 0 {
            out += "\n";
        }
        out += &format!(
            "{title}: {metric} ({} datasets; * = p < {} vs {}, {test}{correction})\n",
            ev.datasets.len(),
            p.alpha,
            opts.baseline
        );
        let mut rows = vec![std::iter::once("dataset".to_string())
            .chain(ev.systems.iter().map(|s| format!("{s} ")))
            .collect::<Vec<_>>()];
        for (d, dataset) in ev.datasets.iter().enumerate() {
            let mut row = vec![dataset.clone()];
            for (s, system) in ev.systems.iter().enumerate() {
                let star = significant_vs_baseline(
                    comparisons,
                    dataset,
                    metric,
                    &opts.baseline,
                    system,
                    p,
                );
                row.push(match ev.cell(d, s, m) {
                    Some(c) => format!("{:.4}{}", c.mean(), if star { "*" } else { " " }),
                    None => "- ".into(),
                });
            }
            rows.push(row);
        }
        let mut mean_row = vec![MEAN_ROW.to_string()];
        for s in 0..ev.systems.len() {
            mean_row.push(match ev.mean_over_datasets(s, m) {
                Some((v, n)) if n == ev.datasets.len() => format!("{v:.4} "),
                Some((v, n)) => format!("{v:.4} (of {n})"),
                None => "- ".into(),
            });
        }
        rows.push(mean_row);
        out += &align(&rows);
    }
    out
}

/// Rows as lines: the first column left-aligned, the others right-aligned, two spaces apart.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(" ");
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                line += &format!(" {cell:<w$}", w = widths[0]);
            } else {
                line += &format!("  {cell:>w$}", w = widths[c]);
            }
        }
        out += line.trim_end();
        out += "\n";
    }
    out
}

fn significant_vs_baseline(
    c: &Comparisons,
    dataset: &str,
    metric: &str,
    baseline: &str,
    system: &str,
    p: &ReportParams,
) -> bool {
    c.find(dataset, metric, baseline, system)
        .or_else(|| c.find(dataset, metric, system, baseline))
        .is_some_and(|row| is_significant(row, p.alpha, p.test))
}
