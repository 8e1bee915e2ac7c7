//! The sled store in `<root>/.store`: artifact records, per-pipeline stage status, in-stage
//! resume state, run history and the file-hash cache.
//!
//! One process owns a store at a time. Ownership is an OS file lock on `<root>/.lock` (released
//! by the kernel when the process dies, so a kill -9 needs no manual unlock); the lock file holds
//! the owner's pid and command line so a second process can say who is running.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::fingerprint::hash_file;
use crate::records::{ArtifactRecord, RunRecord, StageStatusRecord};

/// Store layout version; bumped when trees or record shapes change incompatibly.
pub const LAYOUT_VERSION: u64 = 1;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the lock.
    #[error("the artifact store {root} is in use by another splade process ({holder}); wait for it to finish or stop it")]
    Busy {
        /// The artifact root.
        root: PathBuf,
        /// Who holds it (pid and command line).
        holder: String,
    },
    /// The store could not be created or opened.
    #[error("artifact store {path}: {message}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// sled failed.
    #[error("artifact store: {0}")]
    Db(#[from] sled::Error),
    /// A record does not parse.
    #[error("artifact store: corrupt record: {0}")]
    Record(#[from] serde_json::Error),
}

/// An open store (and the lock that makes this process its only user).
pub struct Store {
    db: sled::Db,
    artifacts: sled::Tree,
    status: sled::Tree,
    resume: sled::Tree,
    runs: sled::Tree,
    hashes: sled::Tree,
    _lock: File,
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn acquire_lock(root: &Path) -> Result<File, StoreError> {
    let path = root.join(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().replace('\n', ", ");
            return Err(StoreError::Busy {
                root: root.to_path_buf(),
                holder: if holder.is_empty() {
                    "unknown process".into()
                } else {
                    holder
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(StoreError::Open {
                path,
                message: format!("cannot lock: {e}"),
            })
        }
    }
    let cmd: Vec<String> = std::env::args().collect();
    let _ = file.set_len(0);
    let _ = file.seek(SeekFrom::Start(0));
    let _ = write!(file, "pid {}\n`{}`", std::process::id(), cmd.join(" "));
    let _ = file.sync_all();
    Ok(file)
}

/// Creates a new sled database beside `dir` and renames it into place, so a kill during sled's
/// first write (its `conf` file is not written atomically) can never leave an unopenable store.
fn create_atomically(root: &Path, dir: &Path) -> Result<(), StoreError> {
    let tmp = root.join(".store.creating");
    let open_err = |e: std::io::Error| StoreError::Open {
        path: tmp.clone(),
        message: e.to_string(),
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(open_err)?;
    }
    {
        let db = sled::Config::new().path(&tmp).open()?;
        db.open_tree("meta")?
            .insert("layout", LAYOUT_VERSION.to_string().as_bytes())?;
        db.flush()?;
    }
    std::fs::rename(&tmp, dir).map_err(open_err)?;
    File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(open_err)?;
    Ok(())
}

impl Store {
    /// Opens (creating) the store under `root`, failing at once if another process owns it.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(root).map_err(|e| StoreError::Open {
            path: root.to_path_buf(),
            message: e.to_string(),
        })?;
        let lock = acquire_lock(root)?;
        let dir = root.join(".store");
        if !dir.exists() {
            create_atomically(root, &dir)?;
        }
        let db = sled::Config::new()
            .path(&dir)
            .flush_every_ms(Some(500))
            .open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("layout")? {
            Some(v) => {
                let found = String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0);
                if found != LAYOUT_VERSION {
                    return Err(StoreError::Open {
                        path: root.join(".store"),
                        message: format!(
                            "layout version {found}, this splade reads version {LAYOUT_VERSION}"
                        ),
                    });
                }
            }
            None => {
                meta.insert("layout", LAYOUT_VERSION.to_string().as_bytes())?;
            }
        }
        Ok(Store {
            artifacts: db.open_tree("artifacts")?,
            status: db.open_tree("stage_status")?,
            resume: db.open_tree("resume")?,
            runs: db.open_tree("runs")?,
            hashes: db.open_tree("hash_cache")?,
            db,
            _lock: lock,
        })
    }

    fn get_json<T: DeserializeOwned>(
        tree: &sled::Tree,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match tree.get(key)? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    fn put_json<T: Serialize>(tree: &sled::Tree, key: &[u8], v: &T) -> Result<(), StoreError> {
        tree.insert(key, serde_json::to_vec(v)?)?;
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Records a committed artifact.
    pub fn put_artifact(
        &self,
        fingerprint: &str,
        record: &ArtifactRecord,
    ) -> Result<(), StoreError> {
        Self::put_json(&self.artifacts, fingerprint.as_bytes(), record)?;
        self.flush()
    }

    /// Forgets an artifact record (gc).
    pub fn remove_artifact(&self, fingerprint: &str) -> Result<(), StoreError> {
        self.artifacts.remove(fingerprint.as_bytes())?;
        Ok(())
    }

    fn status_key(pipeline: &str, stage: &str) -> Vec<u8> {
        format!("{pipeline}\u{0}{stage}").into_bytes()
    }

    /// The last committed (or cached) state of a pipeline's stage.
    pub fn stage_status(
        &self,
        pipeline: &str,
        stage: &str,
    ) -> Result<Option<StageStatusRecord>, StoreError> {
        Self::get_json(&self.status, &Self::status_key(pipeline, stage))
    }

    /// Records a pipeline stage's current fingerprint, params and input digests.
    pub fn set_stage_status(
        &self,
        pipeline: &str,
        stage: &str,
        v: &StageStatusRecord,
    ) -> Result<(), StoreError> {
        Self::put_json(&self.status, &Self::status_key(pipeline, stage), v)
    }

    /// Every `(pipeline, stage, status)` recorded.
    pub fn all_stage_status(&self) -> Result<Vec<(String, String, StageStatusRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.status.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).to_string();
            let (p, s) = key.split_once('\u{0}').unwrap_or((&key, ""));
            out.push((p.to_string(), s.to_string(), serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// Resume state of an interrupted stage run.
    pub fn resume_state(&self, fingerprint: &str) -> Result<Option<Value>, StoreError> {
        Self::get_json(&self.resume, fingerprint.as_bytes())
    }

    /// Durably saves resume state.
    pub fn save_resume_state(&self, fingerprint: &str, v: &Value) -> Result<(), StoreError> {
        Self::put_json(&self.resume, fingerprint.as_bytes(), v)?;
        self.flush()
    }

    /// Drops resume state (after commit, or when the staging dir is gone).
    pub fn clear_resume_state(&self, fingerprint: &str) -> Result<(), StoreError> {
        self.resume.remove(fingerprint.as_bytes())?;
        Ok(())
    }

    /// All resume states.
    pub fn all_resume_states(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let mut out = Vec::new();
        for item in self.resume.iter() {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k).into(),
                serde_json::from_slice(&v)?,
            ));
        }
        Ok(out)
    }

    /// Appends or updates a run-history record keyed by its start time.
    pub fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        Self::put_json(&self.runs, &run.started_ns.to_be_bytes(), run)?;
        self.flush()
    }

    /// The last `n` runs, newest first.
    pub fn recent_runs(&self, n: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.runs.iter().rev().take(n) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// The content hash of a file, from the (path, size, mtime) cache when the file is unchanged.
    pub fn file_hash(&self, path: &Path) -> Result<String, std::io::Error> {
        let abs = path.canonicalize()?;
        let meta = std::fs::metadata(&abs)?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let key = abs.to_string_lossy().into_owned();
        if let Ok(Some(v)) = Self::get_json::<Value>(&self.hashes, key.as_bytes()) {
            if v["size"].as_u64() == Some(meta.len()) && v["mtime_ns"].as_u64() == Some(mtime) {
                if let Some(h) = v["blake3"].as_str() {
                    return Ok(h.to_string());
                }
            }
        }
        let h = hash_file(&abs)?;
        let record = serde_json::json!({"size": meta.len(), "mtime_ns": mtime, "blake3": h});
        let _ = Self::put_json(&self.hashes, key.as_bytes(), &record);
        Ok(h)
    }
}
