//! The OS file lock on `<root>/.lock`: one process at a time opens the sled store.
//!
//! The kernel releases the lock when its holder dies, so a kill -9 needs no manual unlock. The
//! lock file names its holder (pid, command line, and whether it only reads) so a second process
//! can say who is running. A writer that finds a reader holding the lock waits for it briefly (a
//! reader holds it for one short command); a reader that finds it held reads the disk instead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::StoreError;

/// What a process wants the store for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Runs stages or removes artifacts.
    Writer,
    /// Only looks (`plan`, `status`, `inspect`, `path`, `verify`, `gc --dry-run`).
    Reader,
}

/// The outcome of trying to lock.
pub(super) enum Acquired {
    /// This process holds the lock.
    Held(File),
    /// Another process holds it (its description).
    Busy(String),
}

/// Marks the holder line of a process that only reads.
const READING: &str = "(reading)";

/// How long a writer waits for a reader to finish.
const READER_WAIT: Duration = Duration::from_secs(15);

/// Locks `<root>/.lock` for `role`: a writer waits for readers, never for another writer.
pub(super) fn acquire(root: &Path, role: Role) -> Result<Acquired, StoreError> {
    let path = root.join(".lock");
    let open_err = |message: String| StoreError::Open {
        path: path.clone(),
        message,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| open_err(e.to_string()))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = holder_of(&mut file);
                let a_reader = holder.is_empty() || holder.contains(READING);
                if role == Role::Writer && a_reader && started.elapsed() < READER_WAIT {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let holder = if holder.is_empty() {
                    "unknown process".to_string()
                } else {
                    holder
                };
                return Ok(Acquired::Busy(holder));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(open_err(format!("cannot lock: {e}")))
            }
        }
    }
    write_holder(&mut file, role);
    Ok(Acquired::Held(file))
}

/// The holder's description from the lock file, on one line.
fn holder_of(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut holder);
    holder.trim().replace('\n', ", ")
}

/// Writes this process's pid, role and command line into the lock file.
fn write_holder(file: &mut File, role: Role) {
    let cmd: Vec<String> = std::env::args().collect();
    let role = match role {
        Role::Writer => String::new(),
        Role::Reader => format!(" {READING}"),
    };
    let _ = file.set_len(0);
    let _ = file.seek(SeekFrom::Start(0));
    let _ = write!(
        file,
        "pid {}{role}\n`{}`",
        std::process::id(),
        cmd.join(" ")
    );
    let _ = file.sync_all();
}
