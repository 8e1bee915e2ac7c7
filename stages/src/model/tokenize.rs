//! WordPiece tokenization from a model's `tokenizer.json` (offline), with our own truncation
//! and no padding (the file's own padding/truncation settings are replaced).
//!
//! A long text is not tokenized whole (a 50 MB document used to cost ~3.5 GB): growing prefixes
//! are tokenized until one holds more tokens than fit, then the text is cut after the last word
//! that fits and only that is encoded. Words are tokenized independently (the pre-tokenizer
//! splits at whitespace and punctuation, the normalizer works per character), so the result is
//! the same as truncating the whole text's tokens.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::{
    PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Result, StageError};

/// A tokenizer that yields `[CLS] ... [SEP]` id sequences of at most `max_len` tokens.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer without truncation or special tokens, for prefixes of long texts.
    plain: Tokenizer,
    /// Content tokens that fit (`max_len` less the special tokens the post-processor adds).
    content: usize,
    /// Texts of at most this many bytes are tokenized whole.
    short_bytes: usize,
    specials: HashSet<u32>,
}

/// Bytes per token of the first prefix tried (WordPiece tokens average ~4-6 bytes of English).
const PREFIX_BYTES_PER_TOKEN: usize = 16;

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
        let mut plain = inner.clone();
        plain
            .with_truncation(None)
            .map_err(|e| StageError::malformed(&path, 0, format!("truncation: {e}")))?;
        let added = inner
            .get_post_processor()
            .map(|p| p.added_tokens(false))
            .unwrap_or(0);
        let content = max_len.max(2).saturating_sub(added).max(1);
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
        Ok(TextTokenizer {
            inner,
            plain,
            content,
            short_bytes: max_len.max(2).saturating_mul(PREFIX_BYTES_PER_TOKEN),
            specials,
        })
    }

    /// Token ids of each text, with special tokens: each text cut to the words that can fit,
    /// then all of them through the tokenizers crate's batch API (in parallel).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let cut: Vec<&str> = texts
            .iter()
            .map(|t| self.fitting_prefix(t))
            .collect::<Result<_>>()?;
        match self.inner.encode_batch(cut.clone(), true) {
            Ok(encodings) => Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect()),
            // Name the text that fails: one at a time.
            Err(_) => cut.iter().map(|t| self.encode_whole(t)).collect(),
        }
    }

    /// The start of `text` that holds every token that fits (the whole text when it is short),
    /// tokenizing no more of it than that needs.
    fn fitting_prefix<'t>(&self, text: &'t str) -> Result<&'t str> {
        let mut budget = self.short_bytes;
        loop {
            if budget >= text.len() {
                return Ok(text);
            }
            let prefix = &text[..floor_char_boundary(text, budget)];
            let enc = self
                .plain
                .encode(prefix, false)
                .map_err(|e| tokenizing_failed(text, e))?;
            if let Some(cut) = self.end_of_last_fitting_word(&enc) {
                return Ok(&text[..cut]);
            }
            budget = budget.saturating_mul(2);
        }
    }

    fn encode_whole(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| tokenizing_failed(text, e))
    }

    /// Where the word holding the last token that fits ends, when the prefix `enc` was made from
    /// holds more tokens than fit and that word is complete (not the prefix's last, maybe cut,
    /// word). Byte offset into the text.
    fn end_of_last_fitting_word(&self, enc: &tokenizers::Encoding) -> Option<usize> {
        if enc.len() <= self.content {
            return None;
        }
        let words = enc.get_word_ids();
        let word = words[self.content - 1]?;
        if words.last().copied().flatten() == Some(word) {
            return None;
        }
        let last = words.iter().rposition(|w| *w == Some(word))?;
        Some(enc.get_offsets()[last].1)
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

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn tokenizing_failed(text: &str, e: tokenizers::Error) -> StageError {
    StageError::Other(format!(
        "tokenizing {:?}: {e}",
        crate::text_input::excerpt(text)
    ))
}
