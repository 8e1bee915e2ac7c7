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

/// Devices named by `[backend] kind = "flex" | "tch"` and `devices = ["cpu" | "cuda:N", ...]`.
pub fn devices_from_backend(backend: &Value) -> Result<Vec<Device>> {
    let kind = backend
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("flex");
    let names: Vec<String> = match backend.get("devices") {
        None | Some(Value::Null) => vec!["cpu".into()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("`devices` must be an array of strings".into()))?,
        Some(_) => return Err(bad("`devices` must be an array of strings".into())),
    };
    if names.is_empty() {
        return Err(bad("`devices` is empty".into()));
    }
    names.iter().map(|n| device(kind, n)).collect()
}

fn device(kind: &str, name: &str) -> Result<Device> {
    match kind {
        "flex" => {
            if name == "cpu" {
                Ok(Device::flex())
            } else {
                Err(bad(format!(
                    "backend `flex` runs on \"cpu\" only, not \"{name}\"; use kind = \"tch\" for CUDA"
                )))
            }
        }
        "tch" => tch_device(name),
        other => Err(bad(format!("unknown backend kind `{other}` (flex | tch)"))),
    }
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
