//! The one error type stages return.

use std::path::PathBuf;

/// Why a stage failed. Every variant names the file (and line, where there is one) so a user can
/// find the offending input without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Reading or writing a file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory being read or written.
        path: PathBuf,
        /// The underlying I/O error (in the message, not chained, so it is printed once).
        cause: std::io::Error,
    },
    /// A user file holds something we cannot read; `line` is 1-based, 0 when unknown.
    #[error("{}: {message}", at_line(path, *line))]
    Malformed {
        /// The user file at fault.
        path: PathBuf,
        /// 1-based line number; 0 when unknown.
        line: usize,
        /// What is wrong with the input, for the user.
        message: String,
    },
    /// A Parquet/Arrow file failed to read or write, or does not have the expected schema.
    #[error("{path}: {message}")]
    Parquet {
        /// The Parquet file read or written.
        path: PathBuf,
        /// The Arrow/Parquet error, or how the schema differs from the expected one.
        message: String,
    },
    /// Params passed validation but make no sense together.
    #[error("param `{key}`: {message}")]
    Param {
        /// The param's key in the stage table.
        key: String,
        /// Why the value is rejected.
        message: String,
    },
    /// The stage stopped because cancellation was requested (Ctrl-C, SIGTERM, a Slurm
    /// preemption warning) after saving what a rerun resumes from.
    #[error("cancelled {0}; a rerun resumes from there")]
    Cancelled(String),
    /// Anything else, said plainly.
    #[error("{0}")]
    Other(String),
}

fn at_line(path: &std::path::Path, line: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}", path.display())
    }
}

impl StageError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StageError::Io {
            path: path.into(),
            cause: source,
        }
    }

    /// A malformed-input error at `path:line`.
    pub fn malformed(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        StageError::Malformed {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// A Parquet error about `path`.
    pub fn parquet(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        StageError::Parquet {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

impl From<crate::params::ParamError> for StageError {
    fn from(e: crate::params::ParamError) -> Self {
        StageError::Param {
            key: e.key,
            message: e.message,
        }
    }
}

/// Shorthand for stage results.
pub type Result<T, E = StageError> = std::result::Result<T, E>;
