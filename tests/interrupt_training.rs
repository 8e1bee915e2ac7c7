//! Ctrl-C during a training: the training writes a checkpoint at its next step (none is
//! scheduled before the end), the run exits 130 saying how to continue, and the rerun resumes
//! from that checkpoint to the weights of an uninterrupted run.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn ctrl_c_checkpoints_a_running_training_and_the_rerun_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let file = toy_training_pipeline(tmp.path(), "interrupt-train", 1000);
    let art = tmp.path().join("artifacts");
    ok(&art, &["run", &file, "--until", "mine"]);
    let child = splade(&art)
        .args(["run", &file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while logged_train_steps(&art) < 3 {
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
        stderr.contains("`train` saves its current step or shard and stops"),
        "{stderr}"
    );
    assert!(
        stderr.contains("interrupted by SIGINT while running `train`"),
        "{stderr}"
    );
    assert!(stderr.contains("continue with:"), "{stderr}");
    let stopped_at = logged_train_steps(&art);
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
