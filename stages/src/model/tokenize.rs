//! WordPiece tokenization from a model's `tokenizer.json` (offline), with our own truncation
//! and no padding (the file's own padding/truncation settings are replaced).

use std::collections::HashSet;
use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Result, StageError};

/// A tokenizer that yields `[CLS] ... [SEP]` id sequences of at most `max_len` tokens.
pub struct TextTokenizer {
    inner: Tokenizer,
    specials: HashSet<u32>,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`, truncating to `max_len` tokens (special tokens included).
    pub fn load(dir: &Path, max_len: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(StageError::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no tokenizer.json in the model directory",
                ),
            ));
        }
        let mut inner = Tokenizer::from_file(&path)
            .map_err(|e| StageError::malformed(&path, 0, format!("cannot load tokenizer: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len.max(2),
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| StageError::malformed(&path, 0, format!("truncation: {e}")))?;
        let specials = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        Ok(TextTokenizer { inner, specials })
    }

    /// Token ids of each text, with special tokens.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.inner
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| {
                        StageError::Other(format!(
                            "tokenizing {:?}: {e}",
                            crate::text_input::excerpt(t)
                        ))
                    })
            })
            .collect()
    }

    /// Ids of special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]...).
    pub fn special_ids(&self) -> &HashSet<u32> {
        &self.specials
    }

    /// The token string of an id.
    pub fn token(&self, id: u32) -> String {
        self.inner
            .id_to_token(id)
            .unwrap_or_else(|| format!("[{id}]"))
    }
}
