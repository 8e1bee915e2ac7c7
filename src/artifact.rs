//! Artifacts on disk: `<root>/<kind>/<fingerprint>/` with `manifest.json`, staging directories,
//! atomic commit, lookup and verification.
//!
//! Invariant: a directory at `<root>/<kind>/<fp>/` always holds a complete artifact, because the
//! manifest is written inside the staging directory (after every file is fsynced) and the whole
//! directory is then renamed into place. A directory without a manifest is never read.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::fingerprint::{combine, hash_file, walk_files, Fingerprint};

/// One file of an artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub blake3: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// One named output: its path inside the artifact and its content digest (what downstream
/// fingerprints are computed from).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputEntry {
    pub path: String,
    pub digest: String,
    #[serde(default)]
    pub rows: Option<u64>,
}

/// `manifest.json`: everything known about an artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub kind_version: u32,
    pub fingerprint: String,
    pub pipeline: String,
    pub stage: String,
    pub params: Value,
    pub inputs: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, OutputEntry>,
    pub files: Vec<FileEntry>,
    pub started_at_ns: u64,
    pub seconds: f64,
    pub stats: Map<String, Value>,
    #[serde(default)]
    pub summary: Option<String>,
    pub tool_version: String,
}

/// What a verification found wrong with one file.
#[derive(Debug, Clone)]
pub struct Corruption {
    pub file: PathBuf,
    pub problem: String,
}

/// The artifact root directory and its layout.
#[derive(Debug, Clone)]
pub struct ArtifactRoot {
    pub root: PathBuf,
}

/// Errors of artifact handling (with paths).
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unreadable manifest: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("stage did not write its output `{output}` (expected {expected})")]
    MissingOutput { output: String, expected: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), ArtifactError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

impl ArtifactRoot {
    /// The root at `root` (created on first commit).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ArtifactRoot { root: root.into() }
    }

    /// Where a committed artifact lives.
    pub fn dir(&self, kind: &str, fp: &Fingerprint) -> PathBuf {
        self.root.join(kind).join(&fp.0)
    }

    /// Where a stage run writes before commit.
    pub fn staging(&self, fp: &Fingerprint) -> PathBuf {
        self.root.join(".staging").join(&fp.0)
    }

    fn trash(&self) -> PathBuf {
        self.root.join(".trash")
    }

    /// The committed artifact for `fp`, if there is one.
    pub fn find(&self, kind: &str, fp: &Fingerprint) -> Result<Option<Manifest>, ArtifactError> {
        let path = self.dir(kind, fp).join("manifest.json");
        if !path.is_file() {
            return Ok(None);
        }
        Self::read_manifest(&path).map(Some)
    }

    /// Reads one manifest file.
    pub fn read_manifest(path: &Path) -> Result<Manifest, ArtifactError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        serde_json::from_str(&text).map_err(|e| ArtifactError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Every committed artifact directory: `(kind, fingerprint, dir)`.
    pub fn list(&self) -> Result<Vec<(String, String, PathBuf)>, ArtifactError> {
        let mut out = Vec::new();
        let Ok(kinds) = std::fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for kind in kinds.flatten() {
            let name = kind.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !kind.path().is_dir() {
                continue;
            }
            for fp in std::fs::read_dir(kind.path())
                .map_err(io(&kind.path()))?
                .flatten()
            {
                if fp.path().join("manifest.json").is_file() {
                    out.push((
                        name.clone(),
                        fp.file_name().to_string_lossy().to_string(),
                        fp.path(),
                    ));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Hashes, describes and fsyncs every file in `staging`, writes the manifest, and renames the
    /// directory into place (replacing an existing artifact of the same fingerprint for --force).
    #[allow(clippy::too_many_arguments)]
    pub fn commit(
        &self,
        staging: &Path,
        kind: &str,
        fp: &Fingerprint,
        outputs: &[String],
        mut manifest: Manifest,
    ) -> Result<Manifest, ArtifactError> {
        let mut files = Vec::new();
        for rel in walk_files(staging).map_err(io(staging))? {
            let path = staging.join(&rel);
            if rel.ends_with(".tmp") || rel == "manifest.json" {
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
            let size = std::fs::metadata(&path).map_err(io(&path))?.len();
            let blake3 = hash_file(&path).map_err(io(&path))?;
            let (rows, schema) = if rel.ends_with(".parquet") {
                match splade_stages::parquet_io::describe_file(&path) {
                    Ok((r, s)) => (Some(r), Some(s)),
                    Err(_) => (None, None),
                }
            } else {
                (None, None)
            };
            files.push(FileEntry {
                path: rel,
                size,
                blake3,
                rows,
                schema,
            });
        }
        let mut out_entries = BTreeMap::new();
        for name in outputs {
            let file = format!("{name}.parquet");
            let prefix = format!("{name}/");
            let (path, members): (String, Vec<&FileEntry>) = if staging.join(&file).is_file() {
                (
                    file.clone(),
                    files.iter().filter(|f| f.path == file).collect(),
                )
            } else if staging.join(name).is_dir() {
                (
                    name.clone(),
                    files
                        .iter()
                        .filter(|f| f.path.starts_with(&prefix))
                        .collect(),
                )
            } else if let Some(f) = files
                .iter()
                .find(|f| !f.path.contains('/') && f.path.split('.').next() == Some(name.as_str()))
            {
                (f.path.clone(), vec![f])
            } else {
                return Err(ArtifactError::MissingOutput {
                    output: name.clone(),
                    expected: format!("{file} or {name}/"),
                });
            };
            let digest = combine(
                &members
                    .iter()
                    .map(|f| (f.path.clone(), f.blake3.clone()))
                    .collect::<Vec<_>>(),
            );
            let rows = members.iter().map(|f| f.rows).sum::<Option<u64>>();
            out_entries.insert(name.clone(), OutputEntry { path, digest, rows });
        }
        manifest.files = files;
        manifest.outputs = out_entries;
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| ArtifactError::Manifest {
            path: staging.join("manifest.json"),
            message: e.to_string(),
        })?;
        splade_stages::contract::write_atomically(&staging.join("manifest.json"), &text).map_err(
            |e| ArtifactError::Io {
                path: staging.join("manifest.json"),
                source: std::io::Error::other(e.to_string()),
            },
        )?;
        fsync_dir(staging)?;
        let final_dir = self.dir(kind, fp);
        let parent = final_dir.parent().expect("artifact dir has a parent");
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        if final_dir.exists() {
            let trash = self.trash();
            std::fs::create_dir_all(&trash).map_err(io(&trash))?;
            let old = trash.join(format!("{}-{}", fp.0, crate::store::now_ns()));
            std::fs::rename(&final_dir, &old).map_err(io(&final_dir))?;
            std::fs::rename(staging, &final_dir).map_err(io(&final_dir))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(staging, &final_dir).map_err(io(&final_dir))?;
        }
        fsync_dir(parent)?;
        Ok(manifest)
    }

    /// Rehashes every file of an artifact against its manifest.
    pub fn verify(&self, dir: &Path, manifest: &Manifest) -> Vec<Corruption> {
        self.verify_files(dir, manifest.files.iter())
    }

    /// Rehashes only the files of one output.
    pub fn verify_output(&self, dir: &Path, manifest: &Manifest, output: &str) -> Vec<Corruption> {
        let Some(entry) = manifest.outputs.get(output) else {
            return vec![Corruption {
                file: dir.to_path_buf(),
                problem: format!("manifest lists no output `{output}`"),
            }];
        };
        let prefix = format!("{}/", entry.path);
        self.verify_files(
            dir,
            manifest
                .files
                .iter()
                .filter(|f| f.path == entry.path || f.path.starts_with(&prefix)),
        )
    }

    fn verify_files<'a>(
        &self,
        dir: &Path,
        files: impl Iterator<Item = &'a FileEntry>,
    ) -> Vec<Corruption> {
        let mut out = Vec::new();
        for f in files {
            let path = dir.join(&f.path);
            let problem = match std::fs::metadata(&path) {
                Err(e) => Some(format!("missing ({e})")),
                Ok(m) if m.len() != f.size => {
                    Some(format!("size {} bytes, manifest says {}", m.len(), f.size))
                }
                Ok(_) => match hash_file(&path) {
                    Err(e) => Some(format!("unreadable ({e})")),
                    Ok(h) if h != f.blake3 => Some("content changed (blake3 mismatch)".into()),
                    Ok(_) => None,
                },
            };
            if let Some(problem) = problem {
                out.push(Corruption {
                    file: path,
                    problem,
                });
            }
        }
        out
    }
}
