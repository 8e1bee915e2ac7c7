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

/// The most `.parquet` shards any staging directory under `artifacts` holds in its `output`
/// subdirectory (in-progress `.tmp` files excluded).
pub fn committed_shards(artifacts: &Path, output: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(artifacts.join(".staging")) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            std::fs::read_dir(e.path().join(output))
                .map(|d| {
                    d.flatten()
                        .filter(|f| f.path().extension().is_some_and(|x| x == "parquet"))
                        .count()
                })
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Polls `cond` every 10 ms, failing the test after 120 s.
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `(file name, bytes)` of every file of a directory output, sorted, for byte-for-byte comparisons.
pub fn output_files(artifacts: &Path, pipeline: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    dir_files(&PathBuf::from(
        ok(artifacts, &["path", pipeline, target]).trim(),
    ))
}

/// `(file name, bytes)` of every file in `dir`, sorted by name.
pub fn dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("output directory")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read output file"),
            )
        })
        .collect();
    files.sort();
    files
}

/// Every record batch of a Parquet file (a table output read back for assertions).
pub fn parquet_batches(path: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let file = std::fs::File::open(path).expect("open Parquet file");
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("Parquet footer")
        .build()
        .expect("Parquet reader")
        .map(|b| b.expect("record batch"))
        .collect()
}

/// The first of `candidates` (programs) that runs `probe` successfully, for tests that use an
/// outside tool when the machine has it and say they skipped otherwise.
pub fn first_runnable(candidates: &[String], probe: &[&str]) -> Option<String> {
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .find(|c| {
            Command::new(c)
                .args(probe)
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .cloned()
}

/// Runs an outside tool and returns its stdout; fails the test with its stderr if it fails.
pub fn tool_stdout(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start the tool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `splade ARGS --json` (a `plan` or `run`) and returns its JSON lines by stage name.
pub fn json_states(
    artifacts: &Path,
    args: &[&str],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut args = args.to_vec();
    args.push("--json");
    ok(artifacts, &args)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            (v["stage"].as_str().unwrap_or_default().to_string(), v)
        })
        .collect()
}

/// The short fingerprints of the toy run printed in README ("What the toy run prints").
pub fn readme_toy_fingerprints() -> std::collections::BTreeMap<String, String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let block = readme
        .split("$ cargo run --release -- run pipelines/toy.toml\n")
        .nth(1)
        .expect("README shows the toy run");
    block
        .lines()
        .skip(1) // "pipeline `toy` (27 stages, ...)"
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[0].to_string(), f[3].to_string()))
        })
        .collect()
}

/// Says why a check is skipped: on stderr, and appended to the file `SPLADE_SKIPPED` names
/// (`.ci/run` prints that list at the end, so a skipped check is never silent in CI).
pub fn skip(reason: &str) {
    eprintln!("skipped: {reason}");
    if let Some(path) = std::env::var_os("SPLADE_SKIPPED") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let test = std::thread::current().name().unwrap_or("?").to_string();
            let _ = writeln!(f, "{test}: {reason}");
        }
    }
}

/// A `splade` command run in `dir` (pipelines resolve relative to it), artifacts in
/// `dir/artifacts`.
pub fn splade_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_splade"));
    c.current_dir(dir)
        .arg("--artifacts")
        .arg(dir.join("artifacts"))
        .env_remove("RUST_LOG")
        .env_remove("SPLADE_ARTIFACTS");
    c
}

/// Links `names` of the repository (`conf`, `pipelines`, ...) into `dir`, for tests that run
/// from a directory of their own.
pub fn link_repo(dir: &Path, names: &[&str]) {
    for name in names {
        std::os::unix::fs::symlink(repo().join(name), dir.join(name)).expect("symlink");
    }
}

/// A 40-step toy training (on `pipelines/toy-mining.toml`'s negatives, dropout on) named `name`,
/// checkpointing every `checkpoint_every` steps.
pub fn toy_training_pipeline(dir: &Path, name: &str, checkpoint_every: u32) -> String {
    write_pipeline(
        dir,
        "train.toml",
        &format!(
            "name = \"{name}\"\ninclude = [\"pipelines/toy-mining.toml\"]\n\
             [stage.train]\nkind = \"train\"\nnegatives = \"mine.negatives\"\ndocs = \"ingest.docs\"\n\
             queries = \"ingest.train_queries\"\nmodel = \"conf/models/splade-tiny\"\nsteps = 40\n\
             batch_size = 4\nmax_length = 32\nquery_max_length = 12\n\
             checkpoint_every = {checkpoint_every}\ndropout = 0.1\n"
        ),
    )
}

/// Steps a running training has logged so far (its staging directory's train log).
pub fn logged_train_steps(artifacts: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(artifacts.join(".staging")) else {
        return 0;
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("train_log.jsonl")).ok())
        .map(|t| t.lines().count())
        .max()
        .unwrap_or(0)
}

/// Every committed artifact under `root`: `kind/fingerprint/file` → bytes, for all files but the
/// manifest (which records timings). Two roots that ran the same pipeline compare equal.
pub fn artifact_bytes(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)
            .expect("read artifact dir")
            .flatten()
        {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if rel.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if e.file_name() != "manifest.json" {
                out.insert(rel, std::fs::read(&path).expect("read artifact file"));
            }
        }
    }
    out
}

/// Asserts two artifact roots hold the same artifacts, byte for byte (naming the first that
/// differs rather than dumping bytes).
pub fn assert_same_artifacts(reference: &Path, other: &Path) {
    let a = artifact_bytes(reference);
    let b = artifact_bytes(other);
    let names_a: Vec<&String> = a.keys().collect();
    let names_b: Vec<&String> = b.keys().collect();
    assert_eq!(names_a, names_b, "artifact files differ");
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs from the reference run");
    }
}

/// A small deterministic generator (xorshift64*) for randomized trials with a printed seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Sends `signal` to a child process.
pub fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}
