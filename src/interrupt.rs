//! Ctrl-C, SIGTERM and SIGUSR1 (a Slurm time-limit or preemption warning): stop cleanly.
//!
//! The first signal sets the cancellation flag every stage context shares. Stages that stop at
//! checkpoints (`train`) write one at their next step boundary and return "cancelled"; the
//! process waits for them, then says what was interrupted and how to continue, and exits with
//! 128 + the signal (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1). Other stages are stopped
//! where they are, exactly as by a kill: everything they committed (shards) is durable and the
//! rerun resumes from it. A second signal stops at once.
//!
//! The signal handler only counts the signal (async-signal-safe); a watcher thread acts on it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Running stages: (name, stops at checkpoints).
static RUNNING: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());
static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();
/// The stages running when the first signal came (what the exit message names).
static INTERRUPTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The rerun command of the installed handler (`None` for a worker).
static RERUN: OnceLock<Option<String>> = OnceLock::new();
/// Set by whichever thread exits first, so the message is printed once.
static EXITING: AtomicBool = AtomicBool::new(false);

/// The flag set by the first signal; the engine gives it to every stage context.
pub fn cancel_flag() -> Arc<AtomicBool> {
    CANCEL
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// Records that stage `name` started running; `cooperative` when it stops at checkpoints.
pub fn stage_started(name: &str, cooperative: bool) {
    if let Ok(mut r) = RUNNING.lock() {
        r.push((name.to_string(), cooperative));
    }
}

/// Records that stage `name` ended.
pub fn stage_ended(name: &str) {
    if let Ok(mut r) = RUNNING.lock() {
        r.retain(|(n, _)| n != name);
    }
}

/// The signal that cancelled the run, if one did.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "a signal",
    }
}

/// Installs the handlers. `rerun` is the command that continues the work, printed on the way
/// out; `None` (a Slurm worker) prints nothing and lets the caller exit once the cooperative
/// stage has returned.
pub fn install(rerun: Option<String>) {
    // SAFETY: `on_signal` only stores to atomics, which is async-signal-safe.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let _ = RERUN.set(rerun.clone());
    std::thread::spawn(move || watch(rerun));
}

/// After the engine returned: if a signal stopped the run, says so and exits 128 + signal (the
/// stages that stop at checkpoints have written theirs). Does nothing otherwise.
pub fn exit_if_interrupted() {
    if let Some(sig) = received() {
        let running = INTERRUPTED.lock().map(|r| r.clone()).unwrap_or_default();
        let rerun = RERUN.get().cloned().flatten();
        exit_interrupted(sig, &running, rerun.as_deref());
    }
}

fn watch(rerun: Option<String>) {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if COUNT.load(Ordering::SeqCst) == 0 {
            continue;
        }
        let sig = SIGNAL.load(Ordering::SeqCst);
        cancel_flag().store(true, Ordering::SeqCst);
        let running = RUNNING.lock().map(|r| r.clone()).unwrap_or_default();
        if let Ok(mut snapshot) = INTERRUPTED.lock() {
            *snapshot = running.iter().map(|(n, _)| n.clone()).collect();
        }
        let cooperative: Vec<&str> = running
            .iter()
            .filter(|(_, c)| *c)
            .map(|(n, _)| n.as_str())
            .collect();
        if !cooperative.is_empty() {
            say(
                rerun.is_some(),
                &format!(
                    "\n{}: `{}` saves its current step or shard and stops (send it again \
                     to stop now)",
                    signal_name(sig),
                    cooperative.join("`, `")
                ),
            );
            wait_for_cooperative_stages();
        }
        let names: Vec<String> = running.into_iter().map(|(n, _)| n).collect();
        exit_interrupted(sig, &names, rerun.as_deref());
    }
}

/// Waits until no checkpointing stage runs, or a second signal arrives.
fn wait_for_cooperative_stages() {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let busy = RUNNING
            .lock()
            .map(|r| r.iter().any(|(_, c)| *c))
            .unwrap_or(false);
        if !busy || COUNT.load(Ordering::SeqCst) > 1 {
            return;
        }
    }
}

fn say(enabled: bool, text: &str) {
    if enabled {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

/// Prints what was running and how to continue (when `rerun` is given), then exits 128 + sig.
/// Only the first thread to get here prints and exits; another waits for the exit.
fn exit_interrupted(sig: i32, running: &[String], rerun: Option<&str>) -> ! {
    if EXITING.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if let Some(rerun) = rerun {
        let what = if running.is_empty() {
            String::new()
        } else {
            format!(" while running `{}`", running.join("`, `"))
        };
        say(
            true,
            &format!(
                "\ninterrupted by {}{what}. Committed stages, shards and checkpoints are kept; \
                 continue with:\n  {rerun}",
                signal_name(sig)
            ),
        );
    }
    std::process::exit(128 + sig);
}
