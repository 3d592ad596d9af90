//! Where a node's tokens come from: the corpus built into the binary, a folder of text
//! documents, or pre-tokenised shards. `train` and network nodes (`run`) choose alike; nodes
//! of one network must choose the same data (the corpus identity is part of the payload
//! digest, so others' payloads are rejected otherwise).

use super::DataError;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the training tokens come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The corpus built into the binary.
    Embedded,
    /// A folder of .txt / .jsonl documents, tokenised with this tokenizer.json (default: the
    /// embedded tokenizer).
    Text {
        dir: PathBuf,
        tokenizer: Option<PathBuf>,
    },
    /// A folder of pre-tokenised uint32 .npy shards.
    Npy(PathBuf),
}

impl DataSource {
    pub fn tokens(&self) -> Result<Arc<Vec<u32>>, DataError> {
        Ok(match self {
            DataSource::Embedded => super::embedded_tokens()?,
            DataSource::Npy(dir) => Arc::new(super::npy_dir_tokens(dir)?),
            DataSource::Text { dir, tokenizer } => {
                let tok = super::load_tokenizer(tokenizer.as_deref())?;
                let docs = super::text_dir_documents(dir)?;
                Arc::new(super::tokenize_documents(&tok, &docs)?)
            }
        })
    }
}
