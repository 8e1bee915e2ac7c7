//! The chaos suite: faults at random moments over the toy pipeline (kill -9, SIGINT, SIGTERM, a
//! closed stdout, a damaged or deleted store, a flipped manifest byte, a truncated artifact
//! file), and a full disk. After every fault `plan` works and a disturbed run ended the way it
//! should (killed, or status 130/143 saying how to continue, or SIGPIPE; never a panic); a
//! damaged artifact is reported `corrupt` and recomputed by `--force`. Each episode starts from an
//! empty root and ends when a run completes: its artifacts must be byte-identical to an
//! undisturbed run's.
//!
//! `SPLADE_CHAOS_TRIALS` (default 8) and `SPLADE_CHAOS_SEED` (default 1) size a run; the figures
//! in docs/robustness.md come from larger runs of this same test.

mod common;
use common::*;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const TOY: &str = "pipelines/toy-retrieval.toml";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Committed manifests under `root`, sorted.
fn manifests(root: &Path) -> Vec<PathBuf> {
    splade::artifact::ArtifactRoot::new(root)
        .list()
        .unwrap()
        .into_iter()
        .map(|(_, _, dir)| dir.join("manifest.json"))
        .collect()
}

/// The stage a manifest belongs to.
fn stage_of(manifest: &Path) -> String {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    m["stage"].as_str().unwrap().to_string()
}

/// Runs the pipeline and disturbs it after `after`: returns what was done.
fn disturbed_run(a: &Path, fault: &str, after: Duration) -> String {
    let mut child = splade(a)
        .args(["run", TOY, "--no-progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if fault == "closed stdout" {
        // Read one line, then close the pipe: the next line the run writes meets a closed stdout.
        let mut first = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let _ = stdout.read_line(&mut first);
        drop(stdout);
    } else {
        std::thread::sleep(after);
        let sig = match fault {
            "kill -9" => libc::SIGKILL,
            "SIGINT" => libc::SIGINT,
            _ => libc::SIGTERM,
        };
        signal(&child, sig);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{fault}: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    match (fault, out.status.code(), out.status.signal()) {
        (_, Some(0), _) => format!("{fault}: the run had finished"),
        ("kill -9", None, Some(9)) => "kill -9".into(),
        // A signal before `run` installed its handler ends it the default way.
        ("SIGINT", None, Some(2)) | ("SIGTERM", None, Some(15)) => {
            format!("{fault}: arrived before the handler was installed")
        }
        ("closed stdout", None, Some(13)) => "closed stdout: ended by SIGPIPE".into(),
        ("SIGINT", Some(130), _) | ("SIGTERM", Some(143), _) => {
            assert!(
                stderr.contains("interrupted by") && stderr.contains("continue with:"),
                "{fault}: {stderr}"
            );
            format!("{fault}: said how to continue")
        }
        other => panic!("{fault}: unexpected end {other:?}\n{stderr}"),
    }
}

/// Damages something on disk and checks `plan` and the run see it; returns what was done.
fn damage_on_disk(a: &Path, fault: &str, rng: &mut Rng) -> String {
    match fault {
        "store damage" => {
            if a.join(".store/db").is_file() {
                std::fs::write(a.join(".store/db"), b"damaged").unwrap();
            }
            "store damaged".into()
        }
        "store deleted" => {
            let _ = std::fs::remove_dir_all(a.join(".store"));
            "store deleted".into()
        }
        _ => {
            let all = manifests(a);
            if all.is_empty() {
                return format!("{fault}: nothing committed yet");
            }
            let manifest = &all[rng.below(all.len() as u64) as usize];
            let stage = stage_of(manifest);
            let target = if fault == "manifest flip" {
                manifest.clone()
            } else {
                let files: Vec<PathBuf> = artifact_bytes(manifest.parent().unwrap())
                    .keys()
                    .map(|rel| manifest.parent().unwrap().join(rel))
                    .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
                    .collect();
                if files.is_empty() {
                    return format!("{fault}: no file to truncate");
                }
                files[rng.below(files.len() as u64) as usize].clone()
            };
            let mut bytes = std::fs::read(&target).unwrap();
            if fault == "manifest flip" {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            } else {
                bytes.truncate(bytes.len() / 2);
            }
            std::fs::write(&target, bytes).unwrap();
            let plan = ok(a, &["plan", TOY]);
            assert_eq!(
                plan_of(&plan, &stage).0,
                "corrupt",
                "{fault} in {stage}: {plan}"
            );
            let err = fails(a, &["run", TOY]);
            assert!(err.contains(&format!("--force {stage}")), "{fault}: {err}");
            ok(a, &["run", TOY, "--force", &stage, "--until", &stage]);
            format!("{fault} in `{stage}`: reported corrupt, recomputed with --force")
        }
    }
}

#[test]
fn random_faults_over_the_toy_pipeline_lose_nothing() {
    let trials = env_u64("SPLADE_CHAOS_TRIALS", 8);
    let seed = env_u64("SPLADE_CHAOS_SEED", 1);
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let t0 = Instant::now();
    ok(&reference, &["run", TOY]);
    let full_ms = t0.elapsed().as_millis() as u64;

    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let faults = [
        "kill -9",
        "kill -9",
        "kill -9",
        "SIGINT",
        "SIGTERM",
        "closed stdout",
        "store damage",
        "store deleted",
        "manifest flip",
        "truncated file",
    ];
    // An episode starts from an empty artifact root and ends when a run completes undisturbed;
    // its artifacts must then equal the reference's. Every fault lands on unfinished work.
    let mut episode = 0;
    let mut a = tmp.path().join("episode-0");
    let mut log = Vec::new();
    for _ in 0..trials {
        let fault = faults[rng.below(faults.len() as u64) as usize];
        let what = match fault {
            "kill -9" | "SIGINT" | "SIGTERM" | "closed stdout" => {
                let after = Duration::from_millis(rng.below(full_ms));
                disturbed_run(&a, fault, after)
            }
            _ => damage_on_disk(&a, fault, &mut rng),
        };
        // Whatever happened, the store opens and the plan is readable.
        ok(&a, &["plan", TOY]);
        let finished = what.ends_with("the run had finished");
        log.push(format!("episode {episode}: {what}"));
        if finished {
            assert_same_artifacts(&reference, &a);
            ok(&a, &["verify"]);
            episode += 1;
            a = tmp.path().join(format!("episode-{episode}"));
        }
    }
    ok(&a, &["run", TOY]);
    assert_same_artifacts(&reference, &a);
    ok(&a, &["verify"]);
    eprintln!(
        "chaos: {trials} faults in {} episodes (seed {seed}), all recovered:\n  {}",
        episode + 1,
        log.join("\n  ")
    );
}

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, bytes: u64) -> Option<Mounted> {
    std::fs::create_dir_all(at).ok()?;
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| Mounted(at.to_path_buf()))
}

fn remount(at: &Path, bytes: u64) {
    let status = std::process::Command::new("mount")
        .args(["-o", &format!("remount,size={bytes}")])
        .arg(at)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Names and sizes of the store's files (to show a command left them alone).
fn store_files(root: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(root.join(".store"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    (e.file_name().to_string_lossy().to_string(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn a_full_disk_fails_cleanly_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    ok(&reference, &["run", TOY]);
    let needed: u64 = artifact_bytes(&reference)
        .values()
        .map(|b| b.len() as u64)
        .sum();
    let disk = tmp.path().join("disk");
    let Some(mounted) = mount_tmpfs(&disk, needed * 3 / 4) else {
        skip("the full-disk case mounts a small tmpfs, which needs root (CAP_SYS_ADMIN)");
        return;
    };
    let a = mounted.0.join("artifacts");
    let failed = run(&a, &["run", TOY, "--no-progress"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device") || stderr.contains("free on the disk"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No space left on device").count().min(1),
        stderr.matches("No space left on device").count(),
        "said once: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // While the disk is still full, looking works and writes nothing to the store.
    let before = store_files(&a);
    let status = run(&a, &["status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    ok(&a, &["plan", TOY]);
    assert_eq!(store_files(&a), before, "a reader wrote to the store");

    remount(&mounted.0, needed * 4 + (16 << 20));
    ok(&a, &["run", TOY, "--no-progress"]);
    assert_same_artifacts(&reference, &a);
    ok(&a, &["verify"]);
}
