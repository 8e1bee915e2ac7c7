//! Opening user text files: plain or gzip (by magic bytes, so a misnamed `.gz` still reads), with
//! 1-based line numbers for error messages.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Result, StageError};

/// Opens `path` for buffered reading, transparently gunzipping.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path).map_err(|e| StageError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| StageError::io(path, e))?;
    let file = File::open(path).map_err(|e| StageError::io(path, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 20, file)))
    }
}

/// Iterates the lines of a text file as `(line_number, line)` without the trailing `\n`/`\r\n`.
/// A read error (e.g. a truncated gzip, invalid UTF-8) is reported with the path and line.
pub struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    line: usize,
    buf: String,
}

impl Lines {
    /// Opens `path` (plain or gzip).
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Lines {
            path: path.to_path_buf(),
            reader: open(path)?,
            line: 0,
            buf: String::new(),
        })
    }

    /// The next line, or `None` at end of file.
    pub fn next_line(&mut self) -> Option<Result<(usize, &str)>> {
        self.buf.clear();
        self.line += 1;
        match self.reader.read_line(&mut self.buf) {
            Ok(0) => None,
            Ok(_) => {
                let trimmed = self.buf.trim_end_matches(['\n', '\r']);
                Some(Ok((self.line, trimmed)))
            }
            Err(e) => Some(Err(StageError::malformed(
                &self.path,
                self.line,
                format!("cannot read line: {e}"),
            ))),
        }
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Shortens `text` for an error message.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}
