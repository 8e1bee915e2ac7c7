//! `index` with a memory budget through the real binary: spilled runs merged into files
//! byte-identical to the in-memory build, and a kill -9 mid-build resumes after the durable runs.

mod common;
use common::*;
use std::path::Path;

use splade_stages::parquet_io::{write_sparse, SparseVector};

/// Writes a shard directory of random SPLADE-like vectors: `sizes[i]` documents in shard `i`.
fn shards(dir: &Path, sizes: &[usize]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = 11u64;
    let mut next = || splade_stages::rng::splitmix64(&mut seed);
    let mut doc = 0usize;
    for (s, n) in sizes.iter().enumerate() {
        let mut ids = Vec::new();
        let mut vectors = Vec::new();
        for _ in 0..*n {
            let nnz = 1 + (next() % 80) as usize;
            let mut terms: Vec<u32> = (0..nnz)
                .map(|_| ((next() % 1000) * (next() % 1000) / 40) as u32)
                .collect();
            terms.sort_unstable();
            terms.dedup();
            let weights = terms
                .iter()
                .map(|_| 0.001 + (next() % 3000) as f32 / 1000.0)
                .collect();
            ids.push(format!("doc{doc}"));
            doc += 1;
            vectors.push(SparseVector { terms, weights });
        }
        write_sparse(&dir.join(format!("part-{s:05}.parquet")), &ids, &vectors).unwrap();
    }
}

fn pipeline(dir: &Path, input: &Path) -> String {
    write_pipeline(
        dir,
        "index.toml",
        &format!(
            "name = \"index\"\n\
             [stage.mem]\nkind = \"index\"\ninput = \"{0}\"\nmemory_budget = 0\n\
             [stage.spill]\nkind = \"index\"\ninput = \"{0}\"\nmemory_budget = 0.05\n",
            input.display()
        ),
    )
}

/// The bytes of an output: every file of a directory output, or the single file.
fn output_bytes(a: &Path, p: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let path = std::path::PathBuf::from(ok(a, &["path", p, target]).trim());
    if path.is_dir() {
        output_files(a, p, target)
    } else {
        vec![("file".to_string(), std::fs::read(&path).unwrap())]
    }
}

fn manifest(a: &Path, p: &str, target: &str) -> serde_json::Value {
    serde_json::from_str(&ok(a, &["inspect", p, target, "--manifest"])).unwrap()
}

#[test]
fn spilled_build_is_byte_identical_to_the_in_memory_build() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("vectors");
    // Five small shards and one that alone exceeds the budget (it is split into several runs).
    shards(&input, &[400, 400, 3000, 1, 400, 400]);
    let p = pipeline(tmp.path(), &input);
    let a = tmp.path().join("art");
    ok(&a, &["run", &p]);
    for out in ["index", "doc_ids"] {
        assert!(
            output_bytes(&a, &p, &format!("spill.{out}"))
                == output_bytes(&a, &p, &format!("mem.{out}")),
            "{out} differs from the in-memory build"
        );
    }
    let m = manifest(&a, &p, "spill.index");
    let runs = m["stats"]["spilled_runs"].as_u64().unwrap();
    assert!(runs > 7, "the 3000-doc shard is split: {}", m["stats"]);
    assert!(manifest(&a, &p, "mem.index")["stats"]
        .get("spilled_runs")
        .is_none());
    // No spill files are left in the artifact.
    let dir = ok(&a, &["path", &p, "spill.index"]);
    let artifact = Path::new(dir.trim()).parent().unwrap();
    assert!(!artifact.join("spill-runs").exists());
    ok(&a, &["verify", &p]);
}

/// `.bin` run files in any staging directory's `spill-runs`.
#[cfg(feature = "test-stages")]
fn spilled_runs(a: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(a.join(".staging")) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            std::fs::read_dir(e.path().join("spill-runs"))
                .map(|d| {
                    d.flatten()
                        .filter(|f| f.path().extension().is_some_and(|x| x == "bin"))
                        .count()
                })
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

#[cfg(feature = "test-stages")]
#[test]
fn killed_spilling_build_resumes_with_identical_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("vectors");
    shards(&input, &[300; 12]);
    let p = pipeline(tmp.path(), &input);
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", &p]);

    let a = tmp.path().join("killed");
    let mut child = splade(&a)
        .args(["run", &p, "--no-progress", "--until", "spill"])
        .env("SPLADE_TEST_INDEX_RUN_DELAY_MS", "150")
        .spawn()
        .unwrap();
    wait_for(|| spilled_runs(&a) >= 4, "four spilled runs");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The run renamed into place just before the kill may not have its resume state saved yet.
    let durable = spilled_runs(&a) as u64 - 1;
    let plan = ok(&a, &["plan", &p]);
    assert_eq!(plan_of(&plan, "spill").0, "partial", "{plan}");

    let out = ok(&a, &["run", &p]);
    assert_eq!(outcome_of(&out, "spill"), "resumed", "{out}");
    let m = manifest(&a, &p, "spill.index");
    assert!(
        m["stats"]["resumed_from_run"].as_u64().unwrap() >= durable,
        "{}",
        m["stats"]
    );
    for out in ["index", "doc_ids"] {
        assert!(
            output_bytes(&a, &p, &format!("spill.{out}"))
                == output_bytes(&reference, &p, &format!("spill.{out}")),
            "{out} differs from the uninterrupted build"
        );
        assert!(
            output_bytes(&a, &p, &format!("spill.{out}"))
                == output_bytes(&a, &p, &format!("mem.{out}")),
            "{out} differs from the in-memory build"
        );
    }
}
