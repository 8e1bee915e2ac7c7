//! SPLADE encoders in burn: BERT and DistilBERT masked-LM networks built from Hugging Face model
//! directories, the SPLADE activation and pooling, tokenization, and backend/device selection.

pub mod backend;
pub mod config;
pub mod dropout;
pub mod encoder;
pub mod export;
pub mod loader;
pub mod network;
pub mod precision;
pub mod text_encoder;
pub mod tokenize;
pub mod workers;

pub use backend::devices_from_backend;
pub use config::{Arch, ModelConfig};
pub use encoder::{Pooling, SpladeEncoder};
pub use network::MlmEncoder;
pub use precision::Precision;
pub use tokenize::TextTokenizer;
pub use workers::DeviceWorkers;

/// Vocabulary size of BERT's uncased WordPiece tokenizer (bert-base-uncased, SPLADE's models).
pub const BERT_VOCAB_SIZE: usize = 30522;
