//! `splade status`, `splade gc` and `splade verify`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use crate::artifact::ArtifactRoot;
use crate::engine::{Engine, StageState};
use crate::records::{join_reasons, RunResult};
use crate::store::{now_ns, Store};

/// Bytes of a file, or of every file under a directory (0 when it cannot be read).
pub(crate) fn dir_size(dir: &Path) -> u64 {
    if dir.is_file() {
        return std::fs::metadata(dir).map(|m| m.len()).unwrap_or(0);
    }
    crate::fingerprint::walk_files(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Bytes as a short human figure.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ago(ns: u64) -> String {
    let secs = now_ns().saturating_sub(ns) / 1_000_000_000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// Prints recent runs, interrupted work, and (with a pipeline) each stage's artifact.
pub fn status(root: &Path, store: &Store, engine: Option<&Engine>) -> Result<()> {
    let artifacts = ArtifactRoot::new(root);
    if let Some(e) = engine {
        println!(
            "pipeline `{}` ({})",
            e.pipeline.name,
            e.pipeline.file.display()
        );
        for entry in e.plan()? {
            let name = &entry.name;
            match entry.state {
                StageState::Cached { fp, manifest, .. } => {
                    let dir = artifacts.dir(&manifest.kind, &fp);
                    let rows: Vec<String> = manifest
                        .outputs
                        .iter()
                        .map(|(o, v)| match v.rows {
                            Some(r) => format!("{o}: {r} rows"),
                            None => o.clone(),
                        })
                        .collect();
                    println!(
                        "  {name:<22} cached   {}  {}  took {:.2}s  made {}  [{}]",
                        dir.display(),
                        human_bytes(dir_size(&dir)),
                        manifest.seconds,
                        ago(manifest.started_at_ns),
                        rows.join(", ")
                    );
                }
                StageState::Partial { state, .. } => {
                    println!("  {name:<22} partial  resume state {state}")
                }
                StageState::Stale { reasons, .. } => {
                    println!("  {name:<22} stale    {}", join_reasons(&reasons))
                }
            }
        }
        println!();
    }
    let runs = store.recent_runs(10)?;
    if let Some(holder) = store.in_use_by() {
        print_run_in_progress(root, holder, runs.first());
    }
    let resume = store.all_resume_states()?;
    if !resume.is_empty() {
        match store.in_use_by() {
            Some(_) => println!("resumable work (checkpoints and committed shards so far):"),
            None => println!("interrupted work (resumes on the next run):"),
        }
        for (fp, state) in resume {
            println!("  {fp}  {state}");
        }
        println!();
    }
    print_slurm_jobs(root)?;
    let on_disk = artifacts.list()?;
    let total: u64 = on_disk.iter().map(|(_, _, d)| dir_size(d)).sum();
    println!(
        "{} artifacts, {} in {}",
        on_disk.len(),
        human_bytes(total),
        root.display()
    );
    if !runs.is_empty() {
        println!("recent runs:");
    }
    for (i, r) in runs.into_iter().enumerate() {
        let started = r.started_ns;
        let result = match r.result {
            // The newest run of a store another process holds is that process's run.
            RunResult::Running if i == 0 && store.in_use_by().is_some() => "running",
            // Otherwise nobody holds the lock, so a run still marked running died unfinished.
            RunResult::Running => "interrupted",
            RunResult::Ok => "ok",
            RunResult::Failed => "failed",
        };
        let n = |what: &str| {
            r.stages
                .iter()
                .filter(|s| s.outcome.starts_with(what))
                .count()
        };
        let secs = r
            .ended_ns
            .map(|e| format!("{:.2}s", e.saturating_sub(started) as f64 / 1e9))
            .unwrap_or_else(|| "-".into());
        println!(
            "  {:<8} {:<12} {:<11} {:>8}  executed {} resumed {} cached {} failed {}",
            ago(started),
            r.pipeline,
            result,
            secs,
            n("executed"),
            n("resumed"),
            n("cached"),
            n("failed")
        );
    }
    Ok(())
}

/// Prints the run another process is doing: its stages running now (with their resume state and
/// what they have written so far) and those that ended.
fn print_run_in_progress(root: &Path, holder: &str, newest: Option<&crate::records::RunRecord>) {
    println!("in progress: {holder}");
    let Some(run) = newest.filter(|r| r.result == RunResult::Running) else {
        println!();
        return;
    };
    println!(
        "  pipeline `{}` ({}), started {}",
        run.pipeline,
        run.file,
        ago(run.started_ns)
    );
    for s in &run.running {
        let staging = root.join(".staging").join(&s.fingerprint);
        println!(
            "  running  {:<22} started {}, {} written so far",
            s.stage,
            ago(s.started_ns),
            human_bytes(dir_size(&staging))
        );
    }
    for s in &run.stages {
        println!("  ended    {:<22} {}", s.stage, s.outcome);
    }
    println!();
}

/// Removes artifacts that no recorded pipeline stage points at, staging dirs without resume
/// state, and trash. With `dry_run`, only prints what would go.
pub fn gc(root: &Path, store: &Store, dry_run: bool) -> Result<()> {
    let artifacts = ArtifactRoot::new(root);
    let referenced: HashSet<String> = store
        .all_stage_status()?
        .into_iter()
        .map(|(_, _, v)| v.fingerprint)
        .collect();
    let resumable: HashSet<String> = store
        .all_resume_states()?
        .into_iter()
        .map(|(fp, _)| fp)
        .collect();
    let mut doomed = Vec::new();
    for (kind, fp, dir) in artifacts.list()? {
        if !referenced.contains(&fp) {
            doomed.push((format!("artifact {kind}/{fp}"), dir, Some(fp)));
        }
    }
    match store.in_use_by() {
        // Its staging directories are being written; only the running process knows which.
        Some(holder) => println!("(in use by {holder}: staging directories are not listed)"),
        None => doomed.extend(abandoned_staging(root, &resumable)),
    }
    if root.join(".trash").is_dir() {
        doomed.push(("trash".into(), root.join(".trash"), None));
    }
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".store.damaged-") {
            doomed.push((format!("damaged store copy {name}"), e.path(), None));
        }
    }
    let mut freed = 0;
    for (what, dir, fp) in &doomed {
        let size = dir_size(dir);
        freed += size;
        println!(
            "{} {what} ({})",
            if dry_run { "would remove" } else { "removing" },
            human_bytes(size)
        );
        if !dry_run {
            if dir.is_dir() {
                std::fs::remove_dir_all(dir)?;
            } else {
                std::fs::remove_file(dir)?;
            }
            if let Some(fp) = fp {
                store.remove_artifact(fp)?;
            }
        }
    }
    store.flush()?;
    println!(
        "{} {} in {} entries",
        if dry_run { "would free" } else { "freed" },
        human_bytes(freed),
        doomed.len()
    );
    Ok(())
}

/// Staging directories no resume state points at, and resume files whose staging is gone.
fn abandoned_staging(
    root: &Path,
    resumable: &HashSet<String>,
) -> Vec<(String, std::path::PathBuf, Option<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join(".staging"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let fp = e.file_name().to_string_lossy().to_string();
        if !resumable.contains(&fp) {
            out.push((format!("abandoned staging {fp}"), e.path(), None));
        }
    }
    for e in std::fs::read_dir(root.join(".resume"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let fp = name.trim_end_matches(".json");
        if !root.join(".staging").join(fp).is_dir() {
            out.push((format!("stale resume file {name}"), e.path(), None));
        }
    }
    out
}

/// Rehashes artifacts (a pipeline's current ones, or all); prints each and returns whether all
/// are intact.
pub fn verify(root: &ArtifactRoot, engine: Option<&Engine>) -> Result<bool> {
    let mut targets = Vec::new();
    let mut corrupt_manifests = 0usize;
    match engine {
        Some(e) => {
            for entry in e.plan()? {
                let name = entry.name;
                match entry.state {
                    StageState::Cached { fp, manifest, .. } => {
                        targets.push((name, root.dir(&manifest.kind, &fp), Some(*manifest)))
                    }
                    StageState::Stale { reasons, .. }
                        if reasons.iter().any(|r| {
                            matches!(r, crate::records::StaleReason::CorruptManifest(_))
                        }) =>
                    {
                        println!("  {name:<22} CORRUPT  {}", join_reasons(&reasons));
                        corrupt_manifests += 1;
                    }
                    other => println!("  {name:<22} {:<8} (no artifact to verify)", other.label()),
                }
            }
        }
        None => {
            for (kind, fp, dir) in root.list()? {
                targets.push((format!("{kind}/{}", &fp[..12.min(fp.len())]), dir, None));
            }
        }
    }
    let mut ok = corrupt_manifests == 0;
    for (name, dir, manifest) in targets {
        let manifest = match manifest {
            Some(m) => m,
            None => match ArtifactRoot::read_manifest(&dir.join("manifest.json")) {
                Ok(m) => m,
                Err(e) => {
                    ok = false;
                    println!("  {name:<22} CORRUPT  {e}");
                    continue;
                }
            },
        };
        let bad = root.verify(&dir, &manifest);
        if bad.is_empty() {
            println!(
                "  {name:<22} ok       {} files, {}",
                manifest.files.len(),
                dir.display()
            );
        } else {
            ok = false;
            for c in bad {
                println!("  {name:<22} CORRUPT  {}: {}", c.file.display(), c.problem);
            }
        }
    }
    Ok(ok)
}

/// The Slurm jobs of stages not committed yet (their job directories under `.jobs/`), with the
/// state Slurm reports now.
fn print_slurm_jobs(root: &Path) -> Result<()> {
    use crate::executor::slurm::{job_states, Submitted};
    use crate::executor::worker::{JobDir, JobSpec};
    let Ok(dirs) = std::fs::read_dir(root.join(".jobs")) else {
        return Ok(());
    };
    let mut lines = Vec::new();
    for dir in dirs.flatten() {
        let jobs = JobDir(dir.path());
        let Ok(Some(submitted)) = JobDir::read_json::<Submitted>(&jobs.submitted_file()) else {
            continue;
        };
        let stage = JobDir::read_json::<JobSpec>(&jobs.spec_file())
            .ok()
            .flatten()
            .or_else(|| {
                JobDir::read_json::<JobSpec>(&jobs.array_spec_file())
                    .ok()
                    .flatten()
            })
            .map(|s| s.stage)
            .unwrap_or_else(|| "?".into());
        let ids = submitted
            .arrays
            .iter()
            .map(|id| (id, "array"))
            .chain(submitted.jobs.iter().map(|id| (id, "job")));
        for (id, what) in ids {
            let states: Vec<String> = job_states(*id)
                .unwrap_or_default()
                .into_iter()
                .map(|i| i.state)
                .collect();
            let state = if states.is_empty() {
                "not known to Slurm any more".to_string()
            } else {
                states.join(" ")
            };
            lines.push(format!("  {stage:<22} {what:<5} {id:<10} {state}"));
        }
    }
    if !lines.is_empty() {
        println!("Slurm jobs of stages not committed yet:");
        for l in lines {
            println!("{l}");
        }
        println!();
    }
    Ok(())
}
