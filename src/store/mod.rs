//! The sled store in `<root>/.store`: artifact records, per-pipeline stage status, in-stage
//! resume state, run history and the file-hash cache.
//!
//! The store is an index of what is on disk, never the only copy (see [`disk`]): a store that
//! cannot be read is moved aside and rebuilt from the artifacts' manifests, the resume files and
//! the run files, saying so. One process writes at a time ([`lock`]); readers that find the store
//! in use, or the disk too full to open it safely ([`space`]), get a view rebuilt in memory.

mod disk;
mod lock;
mod space;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use disk::Rebuilt;
use lock::{Acquired, Role};

use crate::fingerprint::hash_file;
use crate::maintenance::human_bytes;
use crate::records::{ArtifactRecord, RunRecord, StageStatusRecord};

/// Store layout version; bumped when trees or record shapes change incompatibly.
pub const LAYOUT_VERSION: u64 = 1;

/// The hint every unreadable-store error ends with.
const REPAIR_HINT: &str =
    "`splade store repair` rebuilds the store from the artifacts on disk, losing nothing";

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
    /// The disk has no room to open the store safely.
    #[error("only {free} free on the disk holding {root}; opening the artifact store needs {needed}: free some space and rerun (nothing was written)")]
    NoSpace {
        /// The artifact root.
        root: PathBuf,
        /// Free bytes, human.
        free: String,
        /// Needed bytes, human.
        needed: String,
    },
    /// The store could not be created or opened.
    #[error("artifact store {path}: {message}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// sled failed (the cause is in the message, not chained, so it is printed once).
    #[error("artifact store: {0}; {REPAIR_HINT}")]
    Db(sled::Error),
    /// A record does not parse.
    #[error("artifact store: corrupt record: {0}; {REPAIR_HINT}")]
    Record(serde_json::Error),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Db(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Record(e)
    }
}

impl StoreError {
    /// The error without the repair hint (for messages that say what was done about it).
    fn cause(&self) -> String {
        match self {
            StoreError::Db(e) => e.to_string(),
            StoreError::Record(e) => format!("corrupt record: {e}"),
            other => other.to_string(),
        }
    }

    /// Whether the store's files are damaged (rather than busy, missing space or permissions).
    fn is_damage(&self) -> bool {
        match self {
            StoreError::Db(sled::Error::Io(e)) => matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ),
            StoreError::Db(sled::Error::Unsupported(_)) => false,
            StoreError::Db(_) | StoreError::Record(_) => true,
            _ => false,
        }
    }
}

/// The sled database and its trees.
struct Trees {
    db: sled::Db,
    artifacts: sled::Tree,
    status: sled::Tree,
    resume: sled::Tree,
    runs: sled::Tree,
    hashes: sled::Tree,
}

impl Trees {
    fn of(db: sled::Db) -> Result<Self, StoreError> {
        Ok(Trees {
            artifacts: db.open_tree("artifacts")?,
            status: db.open_tree("stage_status")?,
            resume: db.open_tree("resume")?,
            runs: db.open_tree("runs")?,
            hashes: db.open_tree("hash_cache")?,
            db,
        })
    }

    fn targets(&self) -> disk::Targets<'_> {
        disk::Targets {
            artifacts: &self.artifacts,
            status: &self.status,
            resume: &self.resume,
            runs: &self.runs,
        }
    }

    /// Reads every record once, so damage anywhere is found at open, not in the middle of a run.
    fn check_every_record(&self) -> Result<(), StoreError> {
        for tree in [&self.artifacts, &self.status, &self.resume, &self.runs] {
            for item in tree.iter() {
                let (_, v) = item?;
                serde_json::from_slice::<Value>(&v)?;
            }
        }
        for item in self.hashes.iter() {
            item?;
        }
        Ok(())
    }
}

/// An open store: the writer's (holding the lock), or a reader's view rebuilt in memory from the
/// disk while another process writes.
pub struct Store {
    root: PathBuf,
    trees: Trees,
    lock: Option<File>,
    view_of: Option<String>,
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Prints a notice about the store on stderr (never fails: a closed stderr only loses it).
fn notice(text: &str) {
    let _ = writeln!(std::io::stderr(), "note: {text}");
}

/// Creates a sled database beside `dir`, fills it from the disk, and renames it into place, so a
/// kill during creation (sled's `conf` is not written atomically) never leaves an unopenable store.
fn create_from_disk(root: &Path, dir: &Path) -> Result<Rebuilt, StoreError> {
    let tmp = root.join(".store.creating");
    let open_err = |e: std::io::Error| StoreError::Open {
        path: tmp.clone(),
        message: e.to_string(),
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(open_err)?;
    }
    let rebuilt = {
        let db = sled::Config::new().path(&tmp).open()?;
        db.open_tree("meta")?
            .insert("layout", LAYOUT_VERSION.to_string().as_bytes())?;
        let trees = Trees::of(db)?;
        let rebuilt = disk::rebuild(root, &trees.targets())?;
        trees.db.flush()?;
        rebuilt
    };
    std::fs::rename(&tmp, dir).map_err(open_err)?;
    File::open(root)
        .and_then(|f| f.sync_all())
        .map_err(open_err)?;
    Ok(rebuilt)
}

/// Opens the sled database at `dir` and checks its layout and every record.
fn open_existing(dir: &Path) -> Result<Trees, StoreError> {
    let db = open_sled(dir)?;
    let meta = db.open_tree("meta")?;
    match meta.get("layout")? {
        Some(v) => {
            let found = String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0);
            if found != LAYOUT_VERSION {
                return Err(StoreError::Open {
                    path: dir.to_path_buf(),
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
    let trees = Trees::of(db)?;
    trees.check_every_record()?;
    Ok(trees)
}

/// Opens sled at `dir`. sled's own file lock can outlive a database this process just closed
/// (its background threads let go a moment later), and only this process can hold it (we hold
/// `<root>/.lock`), so a refused lock is retried for a while.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(dir)
                .flush_every_ms(Some(500))
                .open()
        });
        match opened {
            Ok(Ok(db)) => return Ok(db),
            // sled reports it as ErrorKind::Other with this text.
            Ok(Err(sled::Error::Io(e)))
                if e.to_string().starts_with("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_secs(10) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                return Err(StoreError::Db(sled::Error::ReportableBug(
                    "sled panicked reading the store".into(),
                )))
            }
        }
    }
}

/// Moves a damaged store directory aside (kept for a bug report; `gc` removes it).
fn move_aside(root: &Path, dir: &Path) -> Result<PathBuf, StoreError> {
    let aside = root.join(format!(".store.damaged-{}", now_ns()));
    std::fs::rename(dir, &aside).map_err(|e| StoreError::Open {
        path: dir.to_path_buf(),
        message: format!("cannot move the damaged store aside: {e}"),
    })?;
    Ok(aside)
}

/// Creates `root` if needed and takes its lock as the writer, or says who holds it.
fn lock_for_writing(root: &Path) -> Result<File, StoreError> {
    create_root(root)?;
    match lock::acquire(root, Role::Writer)? {
        Acquired::Held(lock) => Ok(lock),
        Acquired::Busy(holder) => Err(StoreError::Busy {
            root: root.to_path_buf(),
            holder,
        }),
    }
}

/// Fails when the disk has no room to open the store at `root` for writing.
fn check_space(root: &Path) -> Result<(), StoreError> {
    let needed = space::needed_to_open(&root.join(".store"));
    match space::free_bytes(root) {
        Some(free) if free < needed => Err(StoreError::NoSpace {
            root: root.to_path_buf(),
            free: human_bytes(free),
            needed: human_bytes(needed),
        }),
        _ => Ok(()),
    }
}

impl Store {
    /// Opens (creating) the store under `root` for writing, failing at once if another process
    /// writes to it (waiting briefly for a reader) or the disk is too full to open it safely. A
    /// damaged store is moved aside and rebuilt from the disk.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let lock = lock_for_writing(root)?;
        check_space(root)?;
        Self::open_locked(root, lock)
    }

    /// Opens the store under `root` to look at it: the store itself when it is free and the disk
    /// has room, otherwise a view rebuilt in memory from the disk (saying why). Never writes to
    /// a store another process uses.
    pub fn open_for_reading(root: &Path) -> Result<Self, StoreError> {
        create_root(root)?;
        match lock::acquire(root, Role::Reader)? {
            Acquired::Held(lock) => match check_space(root) {
                Ok(()) => Self::open_locked(root, lock),
                Err(e) => {
                    notice(&format!("{e}; reading the artifacts on disk instead"));
                    Self::view(root, None)
                }
            },
            Acquired::Busy(holder) => Self::view(root, Some(holder)),
        }
    }

    /// Moves the store aside and rebuilds it from the disk (`splade store repair`).
    pub fn repair(root: &Path) -> Result<(Rebuilt, Option<PathBuf>), StoreError> {
        let _lock = lock_for_writing(root)?;
        let dir = root.join(".store");
        let aside = match dir.exists() {
            true => Some(move_aside(root, &dir)?),
            false => None,
        };
        Ok((create_from_disk(root, &dir)?, aside))
    }

    /// The store at `root`, whose lock this process holds: opened, created from the disk, or
    /// rebuilt when damaged.
    fn open_locked(root: &Path, lock: File) -> Result<Self, StoreError> {
        let dir = root.join(".store");
        if !dir.exists() {
            let rebuilt = create_from_disk(root, &dir)?;
            if !rebuilt.is_empty() {
                notice(&format!(
                    "no artifact store in {}: rebuilt it from the disk ({rebuilt})",
                    root.display()
                ));
            }
        }
        let trees = match open_existing(&dir) {
            Ok(trees) => trees,
            Err(e) if e.is_damage() => {
                let aside = move_aside(root, &dir)?;
                let rebuilt = create_from_disk(root, &dir)?;
                notice(&format!(
                    "the artifact store was unreadable ({}); moved it to {} and rebuilt it from the disk ({rebuilt})",
                    e.cause(),
                    aside.display()
                ));
                open_existing(&dir)?
            }
            Err(e) => return Err(e),
        };
        if disk::store_is_behind(root, &trees.targets()) {
            // The files are the truth: take what the store lacks from them.
            let rebuilt = disk::rebuild(root, &trees.targets())?;
            trees.db.flush()?;
            tracing::info!("store caught up with the disk: {rebuilt}");
        }
        Ok(Store {
            root: root.to_path_buf(),
            trees,
            lock: Some(lock),
            view_of: None,
        })
    }

    /// A store rebuilt in memory from the disk, for reading while `holder` (if any) writes.
    fn view(root: &Path, holder: Option<String>) -> Result<Self, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        let trees = Trees::of(db)?;
        disk::rebuild(root, &trees.targets())?;
        if let Some(h) = &holder {
            notice(&format!(
                "a splade process is using {} ({h}); showing what it has committed so far",
                root.display()
            ));
        }
        Ok(Store {
            root: root.to_path_buf(),
            trees,
            lock: None,
            view_of: holder,
        })
    }

    /// The process writing to the store, when this is a reader's view of it.
    pub fn in_use_by(&self) -> Option<&str> {
        self.view_of.as_deref()
    }

    /// Whether this process may write (holds the lock); a view is read-only.
    fn writes(&self) -> bool {
        self.lock.is_some()
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

    /// Writes (`Some`) or removes (`None`) the file `dir/name` a record is kept in before the
    /// store is told; a view (a reader's) writes nothing.
    fn write_file<T: Serialize>(
        &self,
        dir: PathBuf,
        name: &str,
        value: Option<&T>,
    ) -> Result<(), StoreError> {
        if !self.writes() {
            return Ok(());
        }
        let written = match value {
            Some(v) => disk::write_json(&dir, name, v),
            None => disk::remove(&dir, name),
        };
        written.map_err(|e| StoreError::Open {
            path: dir.join(name),
            message: e.to_string(),
        })
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.trees.db.flush()?;
        Ok(())
    }

    /// Records a committed artifact.
    pub fn put_artifact(
        &self,
        fingerprint: &str,
        record: &ArtifactRecord,
    ) -> Result<(), StoreError> {
        Self::put_json(&self.trees.artifacts, fingerprint.as_bytes(), record)?;
        self.flush()
    }

    /// Forgets an artifact record (gc).
    pub fn remove_artifact(&self, fingerprint: &str) -> Result<(), StoreError> {
        self.trees.artifacts.remove(fingerprint.as_bytes())?;
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
        Self::get_json(&self.trees.status, &Self::status_key(pipeline, stage))
    }

    /// Records a pipeline stage's current fingerprint, params and input digests.
    pub fn set_stage_status(
        &self,
        pipeline: &str,
        stage: &str,
        v: &StageStatusRecord,
    ) -> Result<(), StoreError> {
        let before = self.stage_status(pipeline, stage)?;
        if before.is_none_or(|b| b.fingerprint != v.fingerprint) {
            let file = disk::StatusFile {
                pipeline: pipeline.to_string(),
                stage: stage.to_string(),
                status: v.clone(),
            };
            self.write_file(
                disk::status_dir(&self.root),
                &disk::status_file(pipeline, stage),
                Some(&file),
            )?;
        }
        Self::put_json(&self.trees.status, &Self::status_key(pipeline, stage), v)
    }

    /// Every `(pipeline, stage, status)` recorded.
    pub fn all_stage_status(&self) -> Result<Vec<(String, String, StageStatusRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees.status.iter() {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).to_string();
            let (p, s) = key.split_once('\u{0}').unwrap_or((&key, ""));
            out.push((p.to_string(), s.to_string(), serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// Resume state of an interrupted stage run.
    pub fn resume_state(&self, fingerprint: &str) -> Result<Option<Value>, StoreError> {
        Self::get_json(&self.trees.resume, fingerprint.as_bytes())
    }

    /// Durably saves resume state: its file in `<root>/.resume/` first (the truth a rebuild
    /// reads), then the store.
    pub fn save_resume_state(&self, fingerprint: &str, v: &Value) -> Result<(), StoreError> {
        let name = format!("{fingerprint}.json");
        self.write_file(disk::resume_dir(&self.root), &name, Some(v))?;
        Self::put_json(&self.trees.resume, fingerprint.as_bytes(), v)?;
        self.flush()
    }

    /// Drops resume state (after commit, or when the staging dir is gone).
    pub fn clear_resume_state(&self, fingerprint: &str) -> Result<(), StoreError> {
        let name = format!("{fingerprint}.json");
        self.write_file::<Value>(disk::resume_dir(&self.root), &name, None)?;
        self.trees.resume.remove(fingerprint.as_bytes())?;
        Ok(())
    }

    /// All resume states.
    pub fn all_resume_states(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees.resume.iter() {
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
        let name = format!("{}.json", run.started_ns);
        self.write_file(disk::runs_dir(&self.root), &name, Some(run))?;
        Self::put_json(&self.trees.runs, &run.started_ns.to_be_bytes(), run)?;
        self.flush()
    }

    /// The last `n` runs, newest first.
    pub fn recent_runs(&self, n: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees.runs.iter().rev().take(n) {
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
        if let Ok(Some(v)) = Self::get_json::<Value>(&self.trees.hashes, key.as_bytes()) {
            if v["size"].as_u64() == Some(meta.len()) && v["mtime_ns"].as_u64() == Some(mtime) {
                if let Some(h) = v["blake3"].as_str() {
                    return Ok(h.to_string());
                }
            }
        }
        let h = hash_file(&abs)?;
        let record = serde_json::json!({"size": meta.len(), "mtime_ns": mtime, "blake3": h});
        let _ = Self::put_json(&self.trees.hashes, key.as_bytes(), &record);
        Ok(h)
    }
}

/// Creates the artifact root if needed.
fn create_root(root: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(root).map_err(|e| StoreError::Open {
        path: root.to_path_buf(),
        message: e.to_string(),
    })
}
