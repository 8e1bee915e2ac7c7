//! Helpers for end-to-end tests: run the real `splade` binary on real files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (tests run the binary from here so pipeline paths resolve).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `splade` command rooted at the repository, with artifacts under `artifacts`.
pub fn splade(artifacts: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_splade"));
    c.current_dir(repo())
        .arg("--artifacts")
        .arg(artifacts)
        .env_remove("RUST_LOG")
        .env_remove("SPLADE_ARTIFACTS");
    c
}

/// Runs `splade ARGS` and returns its output.
pub fn run(artifacts: &Path, args: &[&str]) -> Output {
    splade(artifacts).args(args).output().expect("spawn splade")
}

/// Runs and asserts success; returns stdout.
pub fn ok(artifacts: &Path, args: &[&str]) -> String {
    let out = run(artifacts, args);
    assert!(
        out.status.success(),
        "splade {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs and asserts failure; returns stderr.
pub fn fails(artifacts: &Path, args: &[&str]) -> String {
    let out = run(artifacts, args);
    assert!(
        !out.status.success(),
        "splade {args:?} should have failed\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The status word a `splade run` printed for `stage` (executed / cached / resumed / FAILED).
pub fn outcome_of(stdout: &str, stage: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            if f.next() == Some(stage) {
                f.nth(1).map(String::from)
            } else {
                None
            }
        })
        .unwrap_or_else(|| panic!("no line for stage {stage} in:\n{stdout}"))
}

/// The status column of `splade plan` for `stage`, and the whole line.
pub fn plan_of(stdout: &str, stage: &str) -> (String, String) {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no plan line for {stage} in:\n{stdout}"));
    (
        line.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string(),
        line.to_string(),
    )
}

/// Writes a pipeline file into `dir` and returns its path as a string.
pub fn write_pipeline(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write pipeline");
    p.to_string_lossy().into_owned()
}
