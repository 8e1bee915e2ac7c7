//! Ctrl-C during a training: the training writes a checkpoint at its next step (none is
//! scheduled before the end), the run exits 130 saying how to continue, and the rerun resumes
//! from that checkpoint to the weights of an uninterrupted run.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn training_pipeline(dir: &Path) -> String {
    write_pipeline(
        dir,
        "train.toml",
        "name = \"interrupt-train\"\ninclude = [\"pipelines/toy-mining.toml\"]\n\
         [stage.train]\nkind = \"train\"\nnegatives = \"mine.negatives\"\ndocs = \"ingest.docs\"\n\
         queries = \"ingest.train_queries\"\nmodel = \"conf/models/splade-tiny\"\nsteps = 40\n\
         batch_size = 4\nmax_length = 32\nquery_max_length = 12\ncheckpoint_every = 1000\n\
         dropout = 0.1\n",
    )
}

fn logged_steps(art: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(art.join(".staging")) else {
        return 0;
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("train_log.jsonl")).ok())
        .map(|t| t.lines().count())
        .max()
        .unwrap_or(0)
}

#[test]
fn ctrl_c_checkpoints_a_running_training_and_the_rerun_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = training_pipeline(tmp.path());
    let art = tmp.path().join("artifacts");
    ok(&art, &["run", &file, "--until", "mine"]);
    let child = splade(&art)
        .args(["run", &file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while logged_steps(&art) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "training never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("`train` writes a checkpoint at its next step"),
        "{stderr}"
    );
    assert!(
        stderr.contains("interrupted by SIGINT while running `train`"),
        "{stderr}"
    );
    assert!(stderr.contains("continue with:"), "{stderr}");
    let stopped_at = logged_steps(&art);
    assert!(stopped_at < 40, "stopped before the end: {stopped_at}");

    let rerun = ok(&art, &["run", &file]);
    assert_eq!(outcome_of(&rerun, "train"), "resumed", "{rerun}");
    let local = tmp.path().join("uninterrupted");
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
