//! The pipeline's `[backend]` table → burn devices.

use burn::tensor::Device;
use serde_json::Value;

use crate::error::{Result, StageError};

fn bad(message: String) -> StageError {
    StageError::Param {
        key: "backend".into(),
        message,
    }
}

/// Checks a `[backend]` table without opening any device, so `splade plan` can reject what no
/// stage could run: an unknown kind, `tch` in a build without the `tch` feature, devices that are
/// not a non-empty list of `"cpu"` / `"cuda:N"`, CUDA on `flex`. Whether `cuda:N` exists is only
/// known when a stage opens it. `threads` must be from 1 to 4096. The error's key is `kind`,
/// `devices` or `threads`.
pub fn check_backend(backend: &Value) -> std::result::Result<(), crate::params::ParamError> {
    use crate::params::ParamError;
    let kind = match backend.get("kind") {
        None | Some(Value::Null) => "flex",
        Some(Value::String(k)) => k.as_str(),
        Some(_) => {
            return Err(ParamError::new(
                "kind",
                "must be a string: \"flex\" or \"tch\"",
            ))
        }
    };
    match kind {
        "flex" => {}
        "tch" if cfg!(feature = "tch") => {}
        "tch" => {
            return Err(ParamError::new(
                "kind",
                "this build has no libtorch backend; rebuild with `--features tch` (see docs/backends.md)",
            ))
        }
        other => {
            return Err(ParamError::new(
                "kind",
                format!(
                    "unknown backend kind `{other}` (flex | tch){}",
                    crate::params::did_you_mean(other, ["flex", "tch"].into_iter())
                ),
            ))
        }
    }
    match backend.get("threads") {
        None | Some(Value::Null) => {}
        Some(t) if t.as_u64().is_some_and(|t| (1..=4096).contains(&t)) => {}
        Some(t) => {
            return Err(ParamError::new(
                "threads",
                format!("must be an integer from 1 to 4096 (threads a stage may use), got {t}"),
            ))
        }
    }
    let names: Vec<&str> = match backend.get("devices") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(_) => Vec::new(),
    };
    let given = backend
        .get("devices")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if names.is_empty() || names.len() != given {
        return Err(ParamError::new(
            "devices",
            "must be a non-empty array of device names (\"cpu\", \"cuda:0\", ...)",
        ));
    }
    for name in names {
        let cuda = name
            .strip_prefix("cuda:")
            .is_some_and(|i| i.parse::<usize>().is_ok());
        match (kind, name, cuda) {
            (_, "cpu", _) | ("tch", _, true) => {}
            ("flex", _, true) => {
                return Err(ParamError::new(
                    "devices",
                    format!("backend `flex` runs on \"cpu\" only, not \"{name}\"; use kind = \"tch\" for CUDA"),
                ))
            }
            _ => {
                return Err(ParamError::new(
                    "devices",
                    format!("unknown device \"{name}\" (\"cpu\" or \"cuda:N\")"),
                ))
            }
        }
    }
    Ok(())
}

/// Devices named by `[backend] kind = "flex" | "tch"` and `devices = ["cpu" | "cuda:N", ...]`,
/// after the same checks `splade plan` makes ([`check_backend`]).
pub fn devices_from_backend(backend: &Value) -> Result<Vec<Device>> {
    check_backend(backend).map_err(|e| bad(format!("`{}` {}", e.key, e.message)))?;
    let tch = backend.get("kind").and_then(Value::as_str) == Some("tch");
    let names: Vec<&str> = match backend.get("devices").and_then(Value::as_array) {
        Some(a) => a.iter().filter_map(Value::as_str).collect(),
        None => vec!["cpu"],
    };
    names
        .into_iter()
        .map(|n| {
            let device = if tch { tch_device(n)? } else { Device::flex() };
            opened(n, device)
        })
        .collect()
}

/// `device` after allocating one value on it, so that a `cuda:N` this machine lacks fails here,
/// naming it, instead of as a backend panic in the middle of a stage.
fn opened(name: &str, device: Device) -> Result<Device> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        burn::tensor::Tensor::<1>::zeros([1], &device).into_data();
    });
    std::panic::set_hook(quiet);
    probe.map(|_| device).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("the backend failed");
        bad(format!(
            "`devices`: device \"{name}\" cannot be used on this machine: {}",
            backend_reason(why)
        ))
    })
}

/// The first line of a backend panic's message, without the `unwrap` wording around it:
/// libtorch's errors carry a C++ backtrace of dozens of frames after it.
fn backend_reason(panic: &str) -> &str {
    let reason = panic
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(panic);
    let end = [reason.find("\\n"), reason.find('\n')]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(reason.len());
    reason[..end].trim_end()
}

#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch_device(name: &str) -> Result<Device> {
    if name == "cpu" {
        return Ok(Device::libtorch());
    }
    match name
        .strip_prefix("cuda:")
        .and_then(|i| i.parse::<usize>().ok())
    {
        Some(i) => Ok(Device::libtorch_cuda(i)),
        None => Err(bad(format!(
            "device \"{name}\" is neither \"cpu\" nor \"cuda:N\""
        ))),
    }
}

#[cfg(not(feature = "tch"))]
fn tch_device(_name: &str) -> Result<Device> {
    Err(bad(
        "this build has no libtorch backend; rebuild with `--features tch` (see docs/backends.md)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::backend_reason;

    #[test]
    fn a_libtorch_panic_is_cut_to_its_first_line() {
        let panic = "called `Result::unwrap()` on an `Err` value: Torch(\"Found no NVIDIA driver on \
                     your system.\\nException raised from device_count_impl at CUDAFunctions.cpp:40\\n\
                     frame #0: c10::Error::Error\")";
        assert_eq!(
            backend_reason(panic),
            "Torch(\"Found no NVIDIA driver on your system."
        );
        assert_eq!(backend_reason("out of memory\nframe #0"), "out of memory");
        assert_eq!(backend_reason("plain"), "plain");
    }
}
