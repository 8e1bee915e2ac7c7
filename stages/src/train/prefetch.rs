//! The training batches, each prepared (sampled and tokenized) on a background thread while the
//! devices compute the one before it.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::examples::TrainingSet;
use super::step::TokenizedBatch;
use crate::error::{Result, StageError};
use crate::model::TextTokenizer;

/// Micro-batch `i` of the example stream, with micro-batch `i + 1` prepared ahead. A batch is a
/// pure function of its index, so prefetching changes no result and a resume needs no state.
pub struct BatchSource {
    inputs: Arc<Inputs>,
    ahead: Mutex<Option<(u64, JoinHandle<Result<TokenizedBatch>>)>>,
}

struct Inputs {
    set: Arc<TrainingSet>,
    query_tok: TextTokenizer,
    doc_tok: TextTokenizer,
    batch_size: usize,
}

impl Inputs {
    fn make(&self, index: u64) -> Result<TokenizedBatch> {
        let examples = self
            .set
            .examples(index * self.batch_size as u64, self.batch_size);
        TokenizedBatch::new(&examples, &self.query_tok, &self.doc_tok)
    }
}

impl BatchSource {
    /// Batches of `batch_size` examples of `set`, tokenized by copies of the two tokenizers.
    pub fn new(
        set: Arc<TrainingSet>,
        query_tok: &TextTokenizer,
        doc_tok: &TextTokenizer,
        batch_size: usize,
    ) -> Self {
        BatchSource {
            inputs: Arc::new(Inputs {
                set,
                query_tok: query_tok.clone(),
                doc_tok: doc_tok.clone(),
                batch_size,
            }),
            ahead: Mutex::new(None),
        }
    }

    /// Micro-batch `index` (the prefetched one when it is that), and starts preparing the next.
    pub fn batch(&self, index: u64) -> Result<TokenizedBatch> {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        let batch = match ahead.take() {
            Some((i, handle)) if i == index => handle
                .join()
                .map_err(|_| StageError::Other(format!("preparing micro-batch {i} panicked")))??,
            _ => self.inputs.make(index)?,
        };
        let inputs = Arc::clone(&self.inputs);
        let next = index + 1;
        let handle = std::thread::Builder::new()
            .name("train-batches".into())
            .spawn(move || inputs.make(next))
            .map_err(|e| StageError::Other(format!("starting the batch thread: {e}")))?;
        *ahead = Some((next, handle));
        Ok(batch)
    }
}
