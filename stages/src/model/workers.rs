//! One worker thread per device: the stages' way to compute on several devices at once.
//!
//! Each worker runs inside its own rayon pool of `threads / devices` threads (flex's intra-op
//! parallelism; libtorch's is set to the same count on each pool thread), so two CPU "devices"
//! on two cores really run side by side instead of fighting over one pool. With one device no thread is started; the job runs in that device's
//! pool.
//!
//! `SPLADE_DEVICE_TRACE=FILE` appends one JSON line per job (`label`, `device`, `start_ns`,
//! `end_ns`, wall-clock nanoseconds) so that overlapping per-device spans can be shown.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use burn::tensor::Device;

use crate::error::{Result, StageError};

/// Gives libtorch `n` intra-op threads on the calling thread (its OpenMP count is per thread, so
/// every worker thread sets its own); flex computes in the worker's rayon pool and needs nothing.
fn limit_backend_threads(n: usize) {
    #[cfg(feature = "tch")]
    tch::set_num_threads(n.min(i32::MAX as usize) as i32);
    #[cfg(not(feature = "tch"))]
    let _ = n;
}

/// Devices, each with the thread pool its worker computes in.
pub struct DeviceWorkers {
    devices: Vec<Device>,
    pools: Vec<rayon::ThreadPool>,
}

impl DeviceWorkers {
    /// Workers for `devices` sharing `threads` CPU threads evenly (at least one each).
    pub fn new(devices: Vec<Device>, threads: usize) -> Result<Self> {
        if devices.is_empty() {
            return Err(StageError::Other("no device to compute on".into()));
        }
        let per_device = (threads / devices.len()).max(1);
        let pools = (0..devices.len())
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(per_device)
                    .thread_name(move |t| format!("device-{i}-{t}"))
                    .start_handler(move |_| limit_backend_threads(per_device))
                    .build()
                    .map_err(|e| StageError::Other(format!("starting device {i}'s pool: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DeviceWorkers { devices, pools })
    }

    /// The devices, the first being the main one.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Always false: there is at least one device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Runs `job(i)` for the first `n` devices at once (one thread each); results in device
    /// order. A panicking job is reported as an error, not re-raised.
    pub fn each<T: Send>(
        &self,
        label: &str,
        n: usize,
        job: impl Fn(usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        self.on_devices(label, n, |i| traced(label, i, || job(i)))
    }

    fn on_devices<T: Send>(
        &self,
        label: &str,
        n: usize,
        job: impl Fn(usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let n = n.min(self.devices.len());
        if n <= 1 {
            return (0..n).map(|i| self.pools[i].install(|| job(i))).collect();
        }
        let job = &job;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let pool = &self.pools[i];
                    scope.spawn(move || pool.install(|| job(i)))
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    h.join().map_err(|_| {
                        StageError::Other(format!("the worker of device {i} panicked ({label})"))
                    })?
                })
                .collect()
        })
    }

    /// Runs `job(device, item)` for items `0..items`, each taken by whichever worker is free;
    /// results in item order. Stops handing out items after the first error.
    pub fn pull<T: Send>(
        &self,
        label: &str,
        items: usize,
        job: impl Fn(usize, usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let next = AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let per_worker = self.on_devices(label, self.len().min(items.max(1)), |device| {
            let mut done = Vec::new();
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(done);
                }
                let item = next.fetch_add(1, Ordering::Relaxed);
                if item >= items {
                    return Ok(done);
                }
                match traced(label, device, || job(device, item)) {
                    Ok(out) => done.push((item, out)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
        })?;
        let mut slots: Vec<Option<T>> = (0..items).map(|_| None).collect();
        for (item, out) in per_worker.into_iter().flatten() {
            slots[item] = Some(out);
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.ok_or_else(|| StageError::Other(format!("item {i} was not computed"))))
            .collect()
    }
}

static TRACE: Mutex<Option<std::fs::File>> = Mutex::new(None);

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Runs `f`, appending its span to `SPLADE_DEVICE_TRACE` when that is set.
fn traced<T>(label: &str, device: usize, f: impl FnOnce() -> T) -> T {
    let Some(path) = std::env::var_os("SPLADE_DEVICE_TRACE") else {
        return f();
    };
    let start = now_ns();
    let out = f();
    let end = now_ns();
    let line = format!(
        "{{\"label\":{},\"device\":{device},\"start_ns\":{start},\"end_ns\":{end}}}\n",
        serde_json::Value::String(label.to_string())
    );
    if let Ok(mut guard) = TRACE.lock() {
        if guard.is_none() {
            *guard = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok();
        }
        if let Some(file) = guard.as_mut() {
            // A trace is a diagnostic: failing to write one never fails the stage.
            let _ = file.write_all(line.as_bytes());
        }
    }
    out
}
