//! The truth on disk the store indexes, and the rebuild of the store from it.
//!
//! Everything the store holds can be recomputed from files: artifact records from the committed
//! manifests, each pipeline stage's last fingerprint from `<root>/.status/` (or its newest
//! manifest), resume state from `<root>/.resume/`, run history from `<root>/.runs/` (each file
//! written before the store is told). Only the file-hash cache is lost; it refills as files are
//! hashed again.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::artifact::ArtifactRoot;
use crate::records::{ArtifactRecord, RunRecord, StageStatusRecord};

/// Where resume state of interrupted stages is kept, one `<fingerprint>.json` each.
pub(super) fn resume_dir(root: &Path) -> PathBuf {
    root.join(".resume")
}

/// Where run history is kept, one `<started_ns>.json` per `splade run`.
pub(super) fn runs_dir(root: &Path) -> PathBuf {
    root.join(".runs")
}

/// Where each pipeline stage's status is kept, one file per (pipeline, stage).
pub(super) fn status_dir(root: &Path) -> PathBuf {
    root.join(".status")
}

/// The status file name of a (pipeline, stage): a hash, as both names may hold any character.
pub(super) fn status_file(pipeline: &str, stage: &str) -> String {
    let key = super::Store::status_key(pipeline, stage);
    format!("{}.json", &blake3::hash(&key).to_hex()[..32])
}

/// A status file: the record with the names it belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StatusFile {
    pub pipeline: String,
    pub stage: String,
    pub status: StageStatusRecord,
}

/// Writes `value` as JSON at `dir/name` through a fsynced temporary file and a rename.
pub(super) fn write_json(
    dir: &Path,
    name: &str,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Removes `dir/name` if it exists.
pub(super) fn remove(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What a rebuild found on disk.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Committed artifacts recorded.
    pub artifacts: usize,
    /// Pipeline stages whose last artifact was recorded.
    pub stages: usize,
    /// Interrupted stages whose resume state was recorded.
    pub resumable: usize,
    /// Runs of the history recorded.
    pub runs: usize,
    /// Files that could not be read, and why (skipped).
    pub unreadable: Vec<(PathBuf, String)>,
}

impl Rebuilt {
    /// Whether the disk held anything at all.
    pub fn is_empty(&self) -> bool {
        self.artifacts + self.resumable + self.runs == 0 && self.unreadable.is_empty()
    }
}

impl fmt::Display for Rebuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} artifacts, {} pipeline stages, {} resumable stages, {} runs",
            self.artifacts, self.stages, self.resumable, self.runs
        )?;
        for (path, why) in &self.unreadable {
            write!(f, "; skipped {}: {why}", path.display())?;
        }
        Ok(())
    }
}

/// The trees a rebuild fills.
pub(super) struct Targets<'a> {
    pub artifacts: &'a sled::Tree,
    pub status: &'a sled::Tree,
    pub resume: &'a sled::Tree,
    pub runs: &'a sled::Tree,
}

/// Fills `into` from the files under `root`.
pub(super) fn rebuild(root: &Path, into: &Targets<'_>) -> Result<Rebuilt, super::StoreError> {
    let mut report = Rebuilt::default();
    record_artifacts(root, into, &mut report)?;
    record_resume_states(root, into.resume, &mut report)?;
    record_runs(root, into.runs, &mut report)?;
    Ok(report)
}

/// Artifact records from every readable manifest, and each (pipeline, stage)'s status: its
/// status file, or else its newest manifest.
fn record_artifacts(
    root: &Path,
    into: &Targets<'_>,
    report: &mut Rebuilt,
) -> Result<(), super::StoreError> {
    let artifacts = ArtifactRoot::new(root);
    let listed = artifacts.list().map_err(|e| super::StoreError::Open {
        path: root.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut newest: BTreeMap<(String, String), (u64, StageStatusRecord)> = BTreeMap::new();
    for (_, fp, dir) in listed {
        let path = dir.join("manifest.json");
        let m = match ArtifactRoot::read_manifest(&path) {
            Ok(m) => m,
            Err(e) => {
                report.unreadable.push((path, e.to_string()));
                continue;
            }
        };
        let committed_ns = m.started_at_ns + (m.seconds.max(0.0) * 1e9) as u64;
        let record = ArtifactRecord {
            kind: m.kind.clone(),
            stage: m.stage.clone(),
            pipeline: m.pipeline.clone(),
            committed_ns,
        };
        into.artifacts
            .insert(fp.as_bytes(), serde_json::to_vec(&record)?)?;
        report.artifacts += 1;
        let status = StageStatusRecord {
            fingerprint: fp.clone(),
            kind: m.kind,
            version: m.kind_version,
            params: m.params,
            inputs: m.inputs,
            recorded_ns: committed_ns,
        };
        let key = (m.pipeline, m.stage);
        if newest.get(&key).is_none_or(|(ns, _)| *ns <= committed_ns) {
            newest.insert(key, (committed_ns, status));
        }
    }
    for (_, path) in json_files(&status_dir(root)) {
        match read_json::<StatusFile>(&path) {
            Ok(f) => {
                let key = super::Store::status_key(&f.pipeline, &f.stage);
                into.status.insert(key, serde_json::to_vec(&f.status)?)?;
                report.stages += 1;
            }
            Err(why) => report.unreadable.push((path, why)),
        }
    }
    for ((pipeline, stage), (_, status)) in newest {
        // A record the store has is newer than any manifest's guess.
        let key = super::Store::status_key(&pipeline, &stage);
        if into.status.get(&key)?.is_none() {
            into.status.insert(key, serde_json::to_vec(&status)?)?;
            report.stages += 1;
        }
    }
    Ok(())
}

/// Resume states whose staging directory is still there.
fn record_resume_states(
    root: &Path,
    into: &sled::Tree,
    report: &mut Rebuilt,
) -> Result<(), super::StoreError> {
    for (fp, path) in json_files(&resume_dir(root)) {
        if !root.join(".staging").join(&fp).is_dir() {
            continue;
        }
        match read_json::<Value>(&path) {
            Ok(state) => {
                into.insert(fp.as_bytes(), serde_json::to_vec(&state)?)?;
                report.resumable += 1;
            }
            Err(why) => report.unreadable.push((path, why)),
        }
    }
    Ok(())
}

/// Run history records.
fn record_runs(
    root: &Path,
    into: &sled::Tree,
    report: &mut Rebuilt,
) -> Result<(), super::StoreError> {
    for (_, path) in json_files(&runs_dir(root)) {
        match read_json::<RunRecord>(&path) {
            Ok(run) => {
                into.insert(run.started_ns.to_be_bytes(), serde_json::to_vec(&run)?)?;
                report.runs += 1;
            }
            Err(why) => report.unreadable.push((path, why)),
        }
    }
    Ok(())
}

/// Whether the disk holds records the store lacks (sled drops a damaged log tail silently, and a
/// kill between a file's write and the store's flush loses the latter): compared by counts, which
/// costs a few directory listings.
pub(super) fn store_is_behind(root: &Path, trees: &Targets<'_>) -> bool {
    let artifacts = ArtifactRoot::new(root).list().map(|l| l.len()).unwrap_or(0);
    let resumable = json_files(&resume_dir(root))
        .iter()
        .filter(|(fp, _)| root.join(".staging").join(fp).is_dir())
        .count();
    trees.artifacts.len() < artifacts
        || trees.status.len() < json_files(&status_dir(root)).len()
        || trees.resume.len() < resumable
        || trees.runs.len() < json_files(&runs_dir(root)).len()
}

/// `(stem, path)` of every `*.json` file directly in `dir`, sorted.
fn json_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let stem = name.strip_suffix(".json")?;
            (!stem.starts_with('.')).then(|| (stem.to_string(), e.path()))
        })
        .collect();
    out.sort();
    out
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}
