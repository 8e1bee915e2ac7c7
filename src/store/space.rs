//! Free space on the disk holding the store: sled writes a snapshot and log segments as soon as
//! it opens, and a write that fails half-way (a full disk) leaves files it cannot read back. So
//! no command opens the store for writing before it knows the disk has room.

use std::path::Path;

/// Room sled needs beyond the store's current size to open and record a few stages.
const HEADROOM: u64 = 2 << 20;

/// Bytes an unprivileged process may still write on the filesystem of `path` (`None` when the
/// system cannot say).
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` a properly sized out-param.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return None;
    }
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// What opening the store at `store_dir` for writing needs free: its size again plus headroom
/// (sled may rewrite its snapshot and start a new log segment).
pub(super) fn needed_to_open(store_dir: &Path) -> u64 {
    crate::maintenance::dir_size(store_dir).saturating_add(HEADROOM)
}
