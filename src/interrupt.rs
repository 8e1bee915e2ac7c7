//! Ctrl-C and SIGTERM during `splade run`: instead of dying silently, the process says which
//! stages were running, that their committed shards and checkpoints are kept, and how to
//! continue, then exits with the conventional status (130 for SIGINT, 143 for SIGTERM).
//!
//! The signal handler only records the signal (async-signal-safe); a watcher thread prints and
//! exits. Stages are interrupted where they are, exactly as by a kill: everything they committed
//! (shards, checkpoints) is durable, and the rerun resumes from it. Cooperative cancellation at
//! step/shard boundaries (writing a checkpoint first) is not implemented yet.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static RUNNING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records that stage `name` started running (shown if the run is interrupted).
pub fn stage_started(name: &str) {
    if let Ok(mut r) = RUNNING.lock() {
        r.push(name.to_string());
    }
}

/// Records that stage `name` ended.
pub fn stage_ended(name: &str) {
    if let Ok(mut r) = RUNNING.lock() {
        r.retain(|n| n != name);
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handlers for a run; `rerun` is the command that continues it.
pub fn install(rerun: String) {
    // SAFETY: `on_signal` only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig == 0 {
            continue;
        }
        let name = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        let running = RUNNING.lock().map(|r| r.join("`, `")).unwrap_or_default();
        let what = if running.is_empty() {
            String::new()
        } else {
            format!(" while running `{running}`")
        };
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\ninterrupted by {name}{what}. Committed stages, shards and checkpoints are kept; \
             continue with:\n  {rerun}"
        );
        std::process::exit(128 + sig);
    });
}
