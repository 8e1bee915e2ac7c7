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
    /// Path of the file relative to the artifact directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the file's bytes (hex).
    pub blake3: String,
    /// Row count, for a readable Parquet file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Columns as `name: type, ...`, for a readable Parquet file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// One named output: its path inside the artifact and its content digest (what downstream
/// fingerprints are computed from).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputEntry {
    /// The output's file or shard directory, relative to the artifact directory.
    pub path: String,
    /// Combined digest of the output's files (relative paths and blake3s).
    pub digest: String,
    /// Total rows of its files (`None` unless every file is readable Parquet).
    #[serde(default)]
    pub rows: Option<u64>,
}

/// `manifest.json`: everything known about an artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Stage kind that produced the artifact (`ingest`, `encode`, ...).
    pub kind: String,
    /// Version of the stage kind's implementation.
    pub kind_version: u32,
    /// The stage's fingerprint (the artifact directory's name).
    pub fingerprint: String,
    /// Name of the pipeline the stage ran in.
    pub pipeline: String,
    /// Name of the stage in that pipeline.
    pub stage: String,
    /// Canonical params, defaults filled.
    pub params: Value,
    /// Input key → content digest.
    pub inputs: BTreeMap<String, String>,
    /// Output name → its path, digest and rows.
    pub outputs: BTreeMap<String, OutputEntry>,
    /// Every file of the artifact (except `manifest.json`).
    pub files: Vec<FileEntry>,
    /// When the stage started (Unix time, nanoseconds).
    pub started_at_ns: u64,
    /// Seconds the stage ran.
    pub seconds: f64,
    /// Statistics the stage reported.
    pub stats: Map<String, Value>,
    /// Human summary the stage reported, printed at the end of runs that reach it.
    #[serde(default)]
    pub summary: Option<String>,
    /// Version of the `splade` tool that wrote the artifact.
    pub tool_version: String,
    /// blake3 of the manifest's text as written without this field (the file's last field),
    /// checked on every read: an edited or damaged manifest is reported, never trusted. Absent
    /// in manifests written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A manifest from its file's bytes, checked against its digest.
fn parse_manifest(bytes: Vec<u8>) -> Result<Manifest, String> {
    let text = String::from_utf8(bytes).map_err(|_| "not valid UTF-8 (the file is damaged)")?;
    check_seal(&text)?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// Every field a manifest has ever had.
const MANIFEST_FIELDS: [&str; 15] = [
    "kind",
    "kind_version",
    "fingerprint",
    "pipeline",
    "stage",
    "params",
    "inputs",
    "outputs",
    "files",
    "started_at_ns",
    "seconds",
    "stats",
    "summary",
    "tool_version",
    "digest",
];

/// A manifest without a readable digest field: accepted only as one written before digests
/// existed, i.e. with no digest and no field a manifest never had (a damaged byte in the digest
/// field's name would otherwise pass as an old manifest).
fn check_unsealed(text: &str) -> Result<(), String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return Ok(()); // not JSON: reading it reports that
    };
    if fields.contains_key("digest") {
        return Err("its digest field is damaged".into());
    }
    match fields
        .keys()
        .find(|k| !MANIFEST_FIELDS.contains(&k.as_str()))
    {
        Some(k) => Err(format!("unknown field `{k}` (edited or damaged)")),
        None => Ok(()),
    }
}

/// The field a manifest's digest is written in: the last one of the file.
const DIGEST_FIELD: &str = ",\n  \"digest\": \"";

/// blake3 (32 hex chars) of a manifest's text as written without its digest field.
fn text_digest(body: &[u8]) -> String {
    blake3::hash(body).to_hex()[..32].to_string()
}

/// The manifest text `body` (pretty JSON ending in `\n}`) with its digest as the last field.
fn seal(body: &[u8]) -> Vec<u8> {
    let digest = text_digest(body);
    let mut out = body[..body.len() - 2].to_vec();
    out.extend_from_slice(format!("{DIGEST_FIELD}{digest}\"\n}}").as_bytes());
    out
}

/// Checks a manifest's text against its digest field: `Ok(())` when they agree or when the
/// manifest has none (written before digests existed).
fn check_seal(text: &str) -> Result<(), String> {
    let Some(at) = text.rfind(DIGEST_FIELD) else {
        return check_unsealed(text);
    };
    let rest = &text[at + DIGEST_FIELD.len()..];
    let Some(written) = rest
        .strip_suffix("\"\n}")
        .or_else(|| rest.strip_suffix("\"\n}\n"))
    else {
        return Err("its digest field is damaged".into());
    };
    let body = format!("{}\n}}", &text[..at]);
    if text_digest(body.as_bytes()) == written {
        Ok(())
    } else {
        Err("its content no longer matches the digest written with it (edited or damaged)".into())
    }
}

/// What a verification found wrong with one file.
#[derive(Debug, Clone)]
pub struct Corruption {
    /// The file (or artifact directory) concerned.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

/// The artifact root directory and its layout.
#[derive(Debug, Clone)]
pub struct ArtifactRoot {
    /// The artifact root directory.
    pub root: PathBuf,
}

/// Errors of artifact handling (with paths).
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A filesystem operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The I/O error (in the message, not chained, so it is printed once).
        cause: std::io::Error,
    },
    /// A manifest could not be read or written.
    #[error("{path}: unreadable manifest: {message}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The (de)serialization error.
        message: String,
    },
    /// A committed artifact's files no longer match its manifest.
    #[error("{dir}: corrupt artifact: {problem}")]
    Damaged {
        /// The artifact directory.
        dir: PathBuf,
        /// The first mismatch found.
        problem: String,
    },
    /// A declared output was not found in the staging directory.
    #[error("stage did not write its output `{output}` (expected {expected})")]
    MissingOutput {
        /// The output's name.
        output: String,
        /// The paths that were looked for.
        expected: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |cause| ArtifactError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Fsyncs, hashes and describes every file in `staging`, dropping leftovers (`*.tmp`, an old
/// `manifest.json`).
fn describe_staged_files(staging: &Path) -> Result<Vec<FileEntry>, ArtifactError> {
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
        let (rows, schema) = match rel.ends_with(".parquet") {
            true => match splade_stages::parquet_io::describe_file(&path) {
                Ok((r, s)) => (Some(r), Some(s)),
                Err(_) => (None, None),
            },
            false => (None, None),
        };
        files.push(FileEntry {
            path: rel,
            size,
            blake3,
            rows,
            schema,
        });
    }
    Ok(files)
}

/// Output `name`: its file (`name.parquet`, or another `name.*` file) or shard directory
/// (`name/`), with the digest and row count of its files.
fn output_entry(
    staging: &Path,
    name: &str,
    files: &[FileEntry],
) -> Result<OutputEntry, ArtifactError> {
    let file = format!("{name}.parquet");
    let prefix = format!("{name}/");
    let (path, members): (String, Vec<&FileEntry>) = if staging.join(&file).is_file() {
        (
            file.clone(),
            files.iter().filter(|f| f.path == file).collect(),
        )
    } else if staging.join(name).is_dir() {
        (
            name.to_string(),
            files
                .iter()
                .filter(|f| f.path.starts_with(&prefix))
                .collect(),
        )
    } else if let Some(f) = files
        .iter()
        .find(|f| !f.path.contains('/') && f.path.split('.').next() == Some(name))
    {
        (f.path.clone(), vec![f])
    } else {
        return Err(ArtifactError::MissingOutput {
            output: name.to_string(),
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
    Ok(OutputEntry { path, digest, rows })
}

/// Writes `manifest.json` into `staging` atomically and fsyncs the directory.
fn write_manifest(staging: &Path, manifest: &Manifest) -> Result<(), ArtifactError> {
    let path = staging.join("manifest.json");
    let bad = |e: serde_json::Error| ArtifactError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    };
    let mut plain = manifest.clone();
    plain.digest = None;
    let text = seal(&serde_json::to_vec_pretty(&plain).map_err(bad)?);
    splade_stages::contract::write_atomically(&path, &text).map_err(|e| ArtifactError::Io {
        path: path.clone(),
        cause: std::io::Error::other(e.to_string()),
    })?;
    fsync_dir(staging)
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

    /// The committed artifact for `fp`, if there is one: its manifest, checked against its
    /// digest, and its files against the manifest's sizes (cheap: no file is read).
    pub fn find(&self, kind: &str, fp: &Fingerprint) -> Result<Option<Manifest>, ArtifactError> {
        let dir = self.dir(kind, fp);
        let path = dir.join("manifest.json");
        if !path.is_file() {
            return Ok(None);
        }
        let manifest = Self::read_manifest(&path)?;
        if let Some(problem) = Self::size_mismatch(&dir, &manifest) {
            return Err(ArtifactError::Damaged { dir, problem });
        }
        Ok(Some(manifest))
    }

    /// The first file of `manifest` missing from `dir` or of another size.
    fn size_mismatch(dir: &Path, manifest: &Manifest) -> Option<String> {
        manifest
            .files
            .iter()
            .find_map(|f| match std::fs::metadata(dir.join(&f.path)) {
                Err(e) => Some(format!("{}: missing ({e})", f.path)),
                Ok(m) if m.len() != f.size => Some(format!(
                    "{}: size {} bytes, manifest says {}",
                    f.path,
                    m.len(),
                    f.size
                )),
                Ok(_) => None,
            })
    }

    /// Reads one manifest file, checking it against the digest written with it.
    pub fn read_manifest(path: &Path) -> Result<Manifest, ArtifactError> {
        let bad = |message: String| ArtifactError::Manifest {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(io(path))?;
        parse_manifest(bytes).map_err(bad)
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
    pub fn commit(
        &self,
        staging: &Path,
        kind: &str,
        fp: &Fingerprint,
        outputs: &[String],
        mut manifest: Manifest,
    ) -> Result<Manifest, ArtifactError> {
        manifest.files = describe_staged_files(staging)?;
        manifest.outputs = outputs
            .iter()
            .map(|name| Ok((name.clone(), output_entry(staging, name, &manifest.files)?)))
            .collect::<Result<_, ArtifactError>>()?;
        write_manifest(staging, &manifest)?;
        self.move_into_place(staging, kind, fp)?;
        Ok(manifest)
    }

    /// Renames the staging directory to the artifact's directory (an existing one goes to the
    /// trash first) and fsyncs the parent.
    fn move_into_place(
        &self,
        staging: &Path,
        kind: &str,
        fp: &Fingerprint,
    ) -> Result<(), ArtifactError> {
        let final_dir = self.dir(kind, fp);
        let parent = final_dir.parent().unwrap_or(&self.root);
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
        fsync_dir(parent)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_manifest_text_detects_any_edit() {
        let body = b"{\n  \"a\": 1.5\n}";
        let sealed = String::from_utf8(seal(body)).unwrap();
        assert!(sealed.contains("\"digest\""));
        assert_eq!(check_seal(&sealed), Ok(()));
        assert!(check_seal(&sealed.replace("1.5", "2.5")).is_err());
        // Older manifests without a digest are read as they are.
        assert_eq!(check_seal("{\n  \"kind\": \"x\"\n}"), Ok(()));
        assert!(check_seal("{\n  \"kinb\": \"x\"\n}").is_err());
    }

    /// Every single-bit flip anywhere in a real manifest file is refused (found by the chaos
    /// suite: a flip in the digest field's name used to pass as an old, unsealed manifest).
    #[test]
    fn every_bit_flip_of_a_manifest_is_detected() {
        let mut files = vec![FileEntry {
            path: "run.parquet".into(),
            size: 1234,
            blake3: "ab".repeat(16),
            rows: Some(10),
            schema: Some("qid: Utf8, score: Float64".into()),
        }];
        files.push(files[0].clone());
        let m = Manifest {
            kind: "retrieve".into(),
            kind_version: 2,
            fingerprint: "0123456789abcdef0123456789abcdef".into(),
            pipeline: "toy".into(),
            stage: "retrieve".into(),
            params: serde_json::json!({"k": 1000, "queries": "encode_q.vectors"}),
            inputs: BTreeMap::from([("index".into(), "cd".repeat(16))]),
            outputs: BTreeMap::new(),
            files,
            started_at_ns: 1_796_000_000_000_000_000,
            seconds: 0.25,
            stats: Map::new(),
            summary: Some("retrieve: 50 queries".into()),
            tool_version: "0.1.0".into(),
            digest: None,
        };
        let sealed = seal(&serde_json::to_vec_pretty(&m).unwrap());
        assert!(parse_manifest(sealed.clone()).is_ok());
        for at in 0..sealed.len() {
            for bit in 0..8 {
                let mut flipped = sealed.clone();
                flipped[at] ^= 1 << bit;
                assert!(
                    parse_manifest(flipped).is_err(),
                    "flip of bit {bit} at byte {at} ({:?}) passed",
                    sealed[at] as char
                );
            }
        }
    }
}
