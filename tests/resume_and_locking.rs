//! kill -9 mid-stage, then rerun: committed shards are skipped and the artifact is byte-identical
//! to an uninterrupted run. A second concurrent run is refused at once, naming the first.
#![cfg(feature = "test-stages")]

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn slow_pipeline(dir: &Path, delay_ms: u64) -> String {
    write_pipeline(
        dir,
        "slow.toml",
        &format!(
            "name = \"slow\"\n\
             [stage.a]\nkind = \"slow_shards\"\nshards = 8\nrows_per_shard = 500\ndelay_ms = {delay_ms}\n\
             [stage.b]\nkind = \"slow_shards\"\nshards = 3\ndelay_ms = 0\ninput = \"a.shards\"\n"
        ),
    )
}

#[test]
fn killed_stage_resumes_after_committed_shards_with_identical_output() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(tmp.path(), 150);
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", &pipeline]);

    let a = tmp.path().join("killed");
    let mut child = splade(&a).args(["run", &pipeline]).spawn().unwrap();
    wait_for(
        || committed_shards(&a, "shards") >= 3,
        "three committed shards",
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // A shard renamed into place just before the kill may not have its resume state saved yet.
    let committed = committed_shards(&a, "shards") as i64 - 1;

    let plan = ok(&a, &["plan", &pipeline]);
    let (status, line) = plan_of(&plan, "a");
    assert_eq!(status, "partial", "{plan}");
    assert!(line.contains("will resume from"), "{line}");

    let out = ok(&a, &["run", &pipeline]);
    assert_eq!(outcome_of(&out, "a"), "resumed", "{out}");
    assert_eq!(outcome_of(&out, "b"), "executed", "{out}");
    let manifest = ok(&a, &["inspect", &pipeline, "a.shards", "--manifest"]);
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let resumed_from = m["stats"]["resumed_from"].as_i64().unwrap();
    assert!(
        resumed_from >= committed && resumed_from >= 2,
        "skipped committed shards: {manifest}"
    );
    assert_eq!(
        m["stats"]["shards_computed"].as_i64().unwrap(),
        8 - resumed_from
    );

    assert_eq!(
        output_files(&a, &pipeline, "a.shards"),
        output_files(&reference, &pipeline, "a.shards")
    );
    assert_eq!(
        output_files(&a, &pipeline, "b.shards"),
        output_files(&reference, &pipeline, "b.shards")
    );
    ok(&a, &["verify", &pipeline]);
    let again = ok(&a, &["run", &pipeline]);
    assert!(again.contains("0 executed"), "{again}");
}

#[test]
fn kill_at_many_moments_always_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(tmp.path(), 20);
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", &pipeline]);
    let a = tmp.path().join("chaos");
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 90, 150, 230, 320] {
        let mut child = splade(&a)
            .args(["run", &pipeline, "--no-progress"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        // The store must open and plan must work after every kill.
        ok(&a, &["plan", &pipeline]);
    }
    ok(&a, &["run", &pipeline]);
    assert_eq!(
        output_files(&a, &pipeline, "a.shards"),
        output_files(&reference, &pipeline, "a.shards")
    );
    assert_eq!(
        output_files(&a, &pipeline, "b.shards"),
        output_files(&reference, &pipeline, "b.shards")
    );
    ok(&a, &["verify"]);
}

#[test]
fn second_run_is_refused_at_once_and_the_first_is_unaffected() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(tmp.path(), 150);
    let a = tmp.path().join("art");
    let first = splade(&a)
        .args(["run", &pipeline])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || committed_shards(&a, "shards") >= 1,
        "the first run to start working",
    );
    let t0 = Instant::now();
    let second = run(&a, &["run", &pipeline]);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "refusal must be immediate"
    );
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    let pid = first.id().to_string();
    assert!(
        err.contains("in use by another splade process") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "first run unaffected");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(outcome_of(&stdout, "a"), "executed");
    let again = ok(&a, &["run", &pipeline]);
    assert!(again.contains("0 executed"), "{again}");
}

#[test]
fn failed_stage_keeps_committed_work_and_force_recomputes() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(tmp.path(), 0);
    let a = tmp.path().join("art");
    let err = fails(&a, &["run", &pipeline, "--set", "a.fail_at=5"]);
    assert!(err.contains("failing at shard 5"), "{err}");
    let plan = ok(&a, &["plan", &pipeline, "--set", "a.fail_at=5"]);
    assert_eq!(plan_of(&plan, "a").0, "partial", "{plan}");
    assert_eq!(plan_of(&plan, "b").0, "stale", "{plan}");
    // --force starts the stage from scratch.
    let out = ok(&a, &["run", &pipeline, "--force", "a"]);
    assert_eq!(outcome_of(&out, "a"), "executed");
    let forced = ok(&a, &["run", &pipeline, "--force", "b"]);
    assert_eq!(outcome_of(&forced, "a"), "cached");
    assert_eq!(outcome_of(&forced, "b"), "executed");
}

/// A panic inside a stage (a bug) fails that stage like an error: the run ends with status 1
/// and the shards committed before it are kept for the rerun (it used to hang the scheduler).
#[test]
fn a_panicking_stage_fails_cleanly_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(tmp.path(), 0);
    let a = tmp.path().join("art");
    let out = run(&a, &["run", &pipeline, "--set", "a.panic_at=3"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(outcome_of(&stdout, "a"), "FAILED", "{stdout}");
    assert!(
        stdout.contains("panicked (a bug): simulated bug at shard 3"),
        "{stdout}"
    );
    assert_eq!(outcome_of(&stdout, "b"), "skipped", "{stdout}");
    let plan = ok(&a, &["plan", &pipeline, "--set", "a.panic_at=3"]);
    assert_eq!(plan_of(&plan, "a").0, "partial", "{plan}");
    assert!(plan.contains("\"done\":3"), "{plan}");
}

#[test]
fn independent_stages_run_concurrently_with_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        "par.toml",
        "name = \"par\"\n\
         [stage.x]\nkind = \"slow_shards\"\nshards = 4\ndelay_ms = 250\nseed = 1\n\
         [stage.y]\nkind = \"slow_shards\"\nshards = 4\ndelay_ms = 250\nseed = 2\n\
         [stage.z]\nkind = \"slow_shards\"\nshards = 1\ndelay_ms = 0\ninput = \"x.shards\"\n",
    );
    let a = tmp.path().join("art");
    let out = ok(&a, &["run", &pipeline, "--jobs", "2"]);
    for s in ["x", "y", "z"] {
        assert_eq!(outcome_of(&out, s), "executed", "{out}");
    }
    // x and y ran at the same time: their [start, end] intervals overlap.
    let span = |stage: &str| {
        let m: serde_json::Value = serde_json::from_str(&ok(
            &a,
            &[
                "inspect",
                &pipeline,
                &format!("{stage}.shards"),
                "--manifest",
            ],
        ))
        .unwrap();
        let start = m["started_at_ns"].as_u64().unwrap() as f64 / 1e9;
        (start, start + m["seconds"].as_f64().unwrap())
    };
    let (x0, x1) = span("x");
    let (y0, y1) = span("y");
    assert!(
        x0 < y1 && y0 < x1,
        "x [{x0}, {x1}] and y [{y0}, {y1}] should overlap"
    );
}

/// Ctrl-C (or SIGTERM) during a run: the process says what was interrupted and how to continue,
/// exits 130, and the rerun resumes after the committed shards.
#[test]
fn interrupted_run_says_how_to_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = slow_pipeline(tmp.path(), 150);
    let a = tmp.path().join("art");
    let child = splade(&a)
        .args(["run", &pipeline, "--no-progress"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || committed_shards(&a, "shards") >= 2,
        "two committed shards",
    );
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGINT while running `a`")
            && stderr.contains("continue with:")
            && stderr.contains(&format!("run {pipeline}")),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(outcome_of(&stdout, "a"), "stopped", "{stdout}");
    // The stage stopped at a shard boundary: the shard in flight was finished and recorded.
    assert!(
        stderr.contains("`a` saves its current step or shard and stops"),
        "{stderr}"
    );
    let files = committed_shards(&a, "shards");
    let plan = ok(&a, &["plan", &pipeline]);
    assert!(
        plan.contains(&format!("\"done\":{files}")),
        "{files} files: {plan}"
    );
    let rerun = ok(&a, &["run", &pipeline]);
    assert_eq!(outcome_of(&rerun, "a"), "resumed", "{rerun}");
}
