//! The passages a training run draws from, written once to a scratch file in the staging
//! directory and memory-mapped: 8.8M MS MARCO passages (~2.9 GB of text) then cost the process
//! only the pages its batches touch (clean file pages the kernel may drop again), not 2.9 GB of
//! heap. The file is rewritten at every start, so a killed run leaves nothing to trust.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use memmap2::Mmap;

use crate::domain::packed_span;
use crate::error::{Result, StageError};
use crate::parquet_io::try_for_each_id_text;

/// Texts by row number, read from a memory-mapped file.
pub struct MappedTexts {
    /// `None` when every kept text is empty (a zero-length file cannot be mapped).
    map: Option<Mmap>,
    /// Row `i` spans `ends[i-1]..ends[i]` of the file (0 for the first row).
    ends: Vec<u64>,
}

impl MappedTexts {
    /// Copies the texts of the rows of the `id, text` artifact at `source` that `select` keeps
    /// into `scratch` and maps it. `select(id, row)` is asked for every row in file order and
    /// answers whether to keep it as row `row` (the number of rows kept before it).
    pub fn build(
        source: &Path,
        scratch: &Path,
        mut select: impl FnMut(&str, u32) -> bool,
    ) -> Result<Self> {
        let io = |e| StageError::io(scratch, e);
        // Opened for reading too: the same handle is mapped at the end.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(scratch)
            .map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut ends = Vec::new();
        let mut written = 0u64;
        try_for_each_id_text(source, |id, text| {
            if select(id, ends.len() as u32) {
                out.write_all(text.as_bytes()).map_err(io)?;
                written += text.len() as u64;
                ends.push(written);
            }
            Ok(())
        })?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        ends.shrink_to_fit();
        let map = if written == 0 {
            None
        } else {
            // SAFETY: the file is this run's own scratch file, written above and never modified
            // while mapped (a rerun recreates it only after this run's process has ended).
            Some(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        Ok(MappedTexts { map, ends })
    }

    /// The text of row `i` (panics when `i` is not a kept row, like slice indexing). Bytes that
    /// are not UTF-8, possible only if the file was changed under the run, come back replaced.
    pub fn text(&self, i: usize) -> Cow<'_, str> {
        let span = packed_span(&self.ends, i);
        match &self.map {
            Some(map) => String::from_utf8_lossy(&map[span]),
            None => Cow::Borrowed(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_io::ParquetSink;
    use crate::schema;
    use arrow::array::StringArray;
    use std::sync::Arc;

    fn id_text(path: &Path, rows: &[(&str, &str)]) {
        let mut sink = ParquetSink::create(path, schema::id_text()).unwrap();
        sink.write_columns(vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ])
        .unwrap();
        sink.finish().unwrap();
    }

    #[test]
    fn kept_rows_read_back_in_order_with_their_row_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("docs.parquet");
        id_text(
            &src,
            &[
                ("a", "first"),
                ("b", "skipped"),
                ("c", ""),
                ("d", "naïve café"),
            ],
        );
        let mut asked = Vec::new();
        let t = MappedTexts::build(&src, &tmp.path().join("texts.bin"), |id, row| {
            asked.push((id.to_string(), row));
            id != "b"
        })
        .unwrap();
        assert_eq!(
            asked,
            [("a", 0), ("b", 1), ("c", 1), ("d", 2)]
                .map(|(i, r)| (i.to_string(), r))
                .to_vec()
        );
        assert_eq!(t.ends.len(), 3);
        assert_eq!(t.text(0), "first");
        assert_eq!(t.text(1), "");
        assert_eq!(t.text(2), "naïve café");
    }

    #[test]
    fn only_empty_texts_need_no_mapping() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("docs.parquet");
        id_text(&src, &[("a", ""), ("b", "")]);
        let t = MappedTexts::build(&src, &tmp.path().join("texts.bin"), |_, _| true).unwrap();
        assert_eq!((t.ends.len(), t.text(1).as_ref()), (2, ""));
    }

    #[test]
    fn an_unwritable_scratch_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("docs.parquet");
        id_text(&src, &[("a", "x")]);
        let scratch = tmp.path().join("missing-dir").join("texts.bin");
        let err = MappedTexts::build(&src, &scratch, |_, _| true)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing-dir"), "{err}");
    }
}
