//! `templar-node tokenizer train`: a byte-level BPE tokenizer from the embedded corpus or a
//! folder of text.

use crate::data;
use std::path::Path;

pub fn train_tokenizer(vocab: usize, text: Option<&Path>, out: &Path) -> anyhow::Result<()> {
    let docs = match text {
        Some(dir) => data::text_dir_documents(dir)?,
        None => data::embedded_documents()?,
    };
    let tok = data::train_tokenizer(&docs, vocab)?;
    tok.save(out, false)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    println!(
        "wrote {} (vocabulary {})",
        out.display(),
        tok.get_vocab_size(true)
    );
    Ok(())
}
