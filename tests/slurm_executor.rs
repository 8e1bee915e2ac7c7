//! The Slurm executor against a real Slurm (tests/slurm/start.sh brings up a single-node cluster;
//! `.ci/run` starts it and sets SPLADE_REQUIRE_SLURM=1 so these never skip there): artifacts
//! byte-identical to a local run, a failing job reported with its id, state and log, a training
//! job preempted with SIGUSR1 that checkpoints, is resubmitted and ends with the weights of an
//! uninterrupted run, and a driver killed with -9 that re-attaches to its running job.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a Slurm cluster answers; without one the tests say why and pass (unless required).
fn slurm_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).lines().any(|s| {
                    s.starts_with("idle") || s.starts_with("mix") || s.starts_with("alloc")
                })
        });
    if !up {
        assert!(
            std::env::var_os("SPLADE_REQUIRE_SLURM").is_none(),
            "SPLADE_REQUIRE_SLURM is set but no Slurm node answers `sinfo` (tests/slurm/start.sh)"
        );
        skip("no Slurm cluster answers `sinfo` (start one with tests/slurm/start.sh)");
    }
    up
}

const FAST: &str = "executor.poll_seconds=0.2";

fn slurm_run(artifacts: &Path, pipeline: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", pipeline, "--executor", "slurm", "--set", FAST];
    args.extend(extra);
    run(artifacts, &args)
}

/// Every file of every committed artifact, by relative path (manifests, which hold timings, aside).
fn artifact_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with('.') || rel == "store" {
                continue;
            }
            if path.is_dir() {
                walk(&path, root, out);
            } else if !rel.ends_with("manifest.json") {
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn retrieval_pipeline(dir: &Path) -> String {
    write_pipeline(
        dir,
        "p.toml",
        "name = \"slurm-retrieval\"\n\
         [stage.ingest]\nkind = \"ingest\"\ndocs = \"pipelines/data/toy/collection.tsv\"\n\
         queries = { dev = \"pipelines/data/toy/queries.dev.tsv\" }\n\
         qrels = { dev = \"pipelines/data/toy/qrels.dev.trec\" }\n\
         [stage.bm25]\nkind = \"bm25\"\ninput = \"ingest.docs\"\n\
         [stage.bm25_index]\nkind = \"index\"\ninput = \"bm25.vectors\"\n\
         [stage.bow]\nkind = \"encode\"\ninput = \"ingest.dev_queries\"\nmode = \"bag_of_words\"\nmax_length = 64\n\
         [stage.encode_queries]\nkind = \"encode\"\ninput = \"ingest.dev_queries\"\nmax_length = 32\n\
         [stage.retrieve]\nkind = \"retrieve\"\nindex = \"bm25_index.index\"\nqueries = \"bow.vectors\"\nk = 100\n\
         [stage.evaluate]\nkind = \"evaluate\"\nrun = \"retrieve.run\"\nqrels = \"ingest.dev_qrels\"\n",
    )
}

#[test]
fn the_toy_retrieval_pipeline_on_slurm_gives_the_bytes_of_a_local_run() {
    if !slurm_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The toy retrieval pipeline as shipped: splade-tiny and BM25, 11 stages.
    let file = "pipelines/toy-retrieval.toml";
    let local = tmp.path().join("local");
    let remote = tmp.path().join("slurm");
    ok(&local, &["run", file]);
    let out = slurm_run(&remote, file, &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (artifact_files(&local), artifact_files(&remote));
    assert_eq!(
        a.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        b.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "the same artifacts (fingerprints) and files"
    );
    assert!(a == b, "every output file is byte-identical");
    // Nothing is left in the job directories once committed, and a rerun is all cached.
    let jobs = remote.join(".jobs");
    assert!(!jobs.exists() || std::fs::read_dir(&jobs).unwrap().next().is_none());
    let states = json_states(&remote, &["run", file, "--executor", "slurm"]);
    assert!(
        states.values().all(|v| v["state"] == "cached"),
        "{states:?}"
    );
}

#[test]
fn sharded_stages_run_as_job_arrays_with_the_same_bytes() {
    if !slurm_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = retrieval_pipeline(tmp.path());
    let mut text = std::fs::read_to_string(&file).unwrap();
    text = text.replace(
        "max_length = 32\n",
        "max_length = 32\nshard_size = 7\n[stage.encode_queries.slurm]\narray_tasks = 4\n",
    );
    text = text.replace(
        "k = 100\n",
        "k = 100\nbatch_size = 9\n[stage.retrieve.slurm]\narray_tasks = 3\n",
    );
    let file = write_pipeline(tmp.path(), "arrays.toml", &text);
    let local = tmp.path().join("local");
    let remote = tmp.path().join("slurm");
    ok(&local, &["run", &file]);
    let mut d = driver(&remote, &file);
    let status = d.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(d.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("submitted a job array").count(),
        2,
        "{stderr}"
    );
    let (a, b) = (artifact_files(&local), artifact_files(&remote));
    assert_eq!(a.len(), b.len());
    assert!(a == b, "every output file is byte-identical");
    let shards = b
        .iter()
        .filter(|(n, _)| n.starts_with("encode/") && n.contains("/vectors/part-"))
        .count();
    assert!(
        shards > 8,
        "50 queries in shards of 7, plus the bag of words: {shards}"
    );
}

#[test]
fn a_failing_job_names_its_id_state_and_log_and_commits_nothing() {
    if !slurm_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        tmp.path(),
        "p.toml",
        "name = \"slurm-fail\"\n[stage.x]\nkind = \"slow_shards\"\nshards = 4\ndelay_ms = 0\nfail_at = 2\n",
    );
    let art = tmp.path().join("artifacts");
    let out = slurm_run(&art, &file, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Slurm job "), "{err}");
    assert!(err.contains("FAILED"), "{err}");
    assert!(err.contains("last lines of"), "{err}");
    assert!(
        err.contains("stage `x` failed"),
        "the log tail holds the worker's error: {err}"
    );
    assert!(!art.join("slow_shards").exists(), "nothing committed");
}

/// The newest job id recorded for the only stage with a job directory.
fn recorded_jobs(art: &Path) -> Vec<u64> {
    let Ok(dirs) = std::fs::read_dir(art.join(".jobs")) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read(d.path().join("submitted.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .flat_map(|v| {
            v["jobs"]
                .as_array()
                .map(|a| a.iter().filter_map(|j| j.as_u64()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

fn job_state(id: u64) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", &id.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("JobState="))
        .unwrap_or("?")
        .to_string()
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the first job recorded under `art` is RUNNING.
fn wait_for_running_job(art: &Path) {
    wait_until("the job to run", Duration::from_secs(60), || {
        recorded_jobs(art)
            .first()
            .is_some_and(|id| job_state(*id) == "RUNNING")
    });
}

fn driver(art: &Path, file: &str) -> std::process::Child {
    splade(art)
        .args(["run", file, "--executor", "slurm", "--set", FAST])
        .env("RUST_LOG", "splade=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_driver_killed_and_rerun_reattaches_to_its_running_job() {
    if !slurm_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        tmp.path(),
        "p.toml",
        "name = \"slurm-reattach\"\n[stage.x]\nkind = \"slow_shards\"\nshards = 6\ndelay_ms = 500\n",
    );
    let art = tmp.path().join("artifacts");
    let mut first = driver(&art, &file);
    wait_for_running_job(&art);
    first.kill().unwrap(); // SIGKILL: the driver dies, the job keeps running
    first.wait().unwrap();
    let status = ok(&art, &["status"]);
    assert!(
        status.contains("Slurm jobs of stages not committed yet") && status.contains("RUNNING"),
        "{status}"
    );
    let out = ok(&art, &["run", &file, "--executor", "slurm", "--set", FAST]);
    assert_eq!(outcome_of(&out, "x"), "resumed", "{out}");
    assert_eq!(
        recorded_jobs(&art).len(),
        0,
        "job directory removed after the commit"
    );
    let local = tmp.path().join("local");
    ok(&local, &["run", &file]);
    assert!(artifact_files(&art) == artifact_files(&local));
}

#[test]
fn a_preempted_training_checkpoints_is_resubmitted_and_ends_identical() {
    if !slurm_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = toy_training_pipeline(tmp.path(), "slurm-train", 10);
    let art = tmp.path().join("artifacts");
    // Everything up to the training locally; the training on Slurm.
    ok(&art, &["run", &file, "--until", "mine"]);
    let mut d = driver(&art, &file);
    wait_for_running_job(&art);
    wait_until("a few training steps", Duration::from_secs(120), || {
        logged_train_steps(&art) >= 3
    });
    let first = recorded_jobs(&art)[0];
    let signalled = Command::new("scancel")
        .args(["--signal=USR1", "--batch", &first.to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let status = d.wait().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(d.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(d.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(outcome_of(&stdout, "train"), "executed", "{stdout}");
    // Two jobs: the one stopped at a checkpoint (exit 3: FAILED to Slurm), and the one that
    // resumed from it.
    assert!(stderr.contains("resubmitting"), "{stderr}");
    assert_eq!(job_state(first), "FAILED");
    let local = tmp.path().join("local");
    ok(&local, &["run", &file]);
    let weights = |root: &Path| {
        let dir = PathBuf::from(ok(root, &["path", &file, "train.model"]).trim());
        std::fs::read(dir.join("model.safetensors")).unwrap()
    };
    assert!(
        weights(&art) == weights(&local),
        "weights of an uninterrupted run"
    );
}
