//! Training data: tokenizer, corpora, pages, and the deterministic page sampler.
//!
//! A corpus is one flat token stream (documents joined by the end-of-text token). Page `i` is
//! tokens `[i * seq_len, i * seq_len + seq_len + 1)`: `seq_len` inputs and their shifted
//! targets. Sources: the embedded default (Rust documentation, tokenised with the embedded BPE
//! tokenizer), a folder of `.txt` / `.jsonl` files, or a folder of pre-tokenised uint32 `.npy`
//! shards (the Python network's format).

pub mod sampler;
pub mod source;

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

pub use sampler::PageSampler;
pub use source::DataSource;

/// The embedded default corpus (see assets/corpus/README.md for its source and licence).
pub static EMBEDDED_CORPUS_GZ: &[u8] = include_bytes!("../../../assets/corpus/corpus.jsonl.gz");
/// Byte-level BPE tokenizer (vocabulary 4096) trained on the embedded corpus.
pub static EMBEDDED_TOKENIZER: &[u8] = include_bytes!("../../../assets/tokenizer.json");
/// Separator between documents in a token stream.
pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("{path}: line {line}: {reason}")]
    Jsonl {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: not a uint32 .npy array: {reason}")]
    Npy { path: String, reason: String },
    #[error("no usable files (*.txt, *.jsonl or *.npy) in {0}")]
    Empty(String),
    #[error("corpus of {tokens} tokens is too short for pages of {seq_len} tokens")]
    TooShort { tokens: usize, seq_len: i64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn load_tokenizer(path: Option<&Path>) -> Result<Tokenizer, DataError> {
    let t = match path {
        Some(p) => Tokenizer::from_file(p),
        None => Tokenizer::from_bytes(EMBEDDED_TOKENIZER),
    };
    t.map_err(|e| DataError::Tokenizer(e.to_string()))
}

/// Parse JSONL text: the `text` field of every non-empty line.
fn jsonl_texts(reader: impl BufRead, path: &str) -> Result<Vec<String>, DataError> {
    let mut docs = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| DataError::Jsonl {
            path: path.into(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| DataError::Jsonl {
            path: path.into(),
            line: i + 1,
            reason,
        };
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let text = v
            .get("text")
            .and_then(|t| t.as_str())
            .ok_or_else(|| bad("no string field \"text\"".into()))?;
        docs.push(text.to_string());
    }
    Ok(docs)
}

/// Documents of the embedded corpus, in order.
pub fn embedded_documents() -> Result<Vec<String>, DataError> {
    jsonl_texts(
        BufReader::new(GzDecoder::new(EMBEDDED_CORPUS_GZ)),
        "embedded corpus",
    )
}

fn sorted_files(dir: &Path, ext: &[&str]) -> Result<Vec<PathBuf>, DataError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| ext.contains(&e))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Documents from a folder: each `.txt` file is one document, each `.jsonl` line with a
/// `text` field is one; files in sorted name order.
pub fn text_dir_documents(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut docs = Vec::new();
    for path in sorted_files(dir, &["txt", "jsonl"])? {
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        if path.extension().is_some_and(|e| e == "txt") {
            let mut s = String::new();
            BufReader::new(file)
                .read_to_string(&mut s)
                .map_err(io_err(&path))?;
            docs.push(s);
        } else {
            docs.extend(jsonl_texts(
                BufReader::new(file),
                &path.display().to_string(),
            )?);
        }
    }
    if docs.is_empty() {
        return Err(DataError::Empty(dir.display().to_string()));
    }
    Ok(docs)
}

/// Tokens of pre-tokenised uint32 `.npy` shards (any shape, flattened), sorted by name.
pub fn npy_dir_tokens(dir: &Path) -> Result<Vec<u32>, DataError> {
    let mut tokens = Vec::new();
    for path in sorted_files(dir, &["npy"])? {
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let bad = |reason: String| DataError::Npy {
            path: path.display().to_string(),
            reason,
        };
        let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(e.to_string()))?;
        let dtype = npy.dtype();
        if dtype != npyz::DType::new_scalar("<u4".parse().expect("type string")) {
            return Err(bad(format!("dtype {}", dtype.descr())));
        }
        let data: Vec<u32> = npy.into_vec().map_err(|e| bad(e.to_string()))?;
        tokens.extend(data);
    }
    if tokens.is_empty() {
        return Err(DataError::Empty(dir.display().to_string()));
    }
    Ok(tokens)
}

/// Tokenise documents into one stream, each followed by the end-of-text token.
pub fn tokenize_documents(tok: &Tokenizer, docs: &[String]) -> Result<Vec<u32>, DataError> {
    let eot = tok
        .token_to_id(END_OF_TEXT)
        .ok_or_else(|| DataError::Tokenizer(format!("tokenizer has no {END_OF_TEXT} token")))?;
    let encodings = tok
        .encode_batch(docs.iter().map(|d| d.as_str()).collect::<Vec<_>>(), false)
        .map_err(|e| DataError::Tokenizer(e.to_string()))?;
    let mut tokens = Vec::new();
    for e in encodings {
        tokens.extend_from_slice(e.get_ids());
        tokens.push(eot);
    }
    Ok(tokens)
}

/// The embedded corpus as tokens. Tokenising takes seconds, so the result is cached under
/// `$TEMPLAR_CACHE/tokens/` (or the system temp dir), keyed by the corpus and tokenizer bytes.
pub fn embedded_tokens() -> Result<Arc<Vec<u32>>, DataError> {
    let mut h = Sha256::new();
    h.update(EMBEDDED_CORPUS_GZ);
    h.update(EMBEDDED_TOKENIZER);
    let key = hex::encode(&h.finalize()[..12]);
    let dir = std::env::var_os("TEMPLAR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("tokens");
    let path = dir.join(format!("embedded-{key}.u32"));
    if let Ok(bytes) = std::fs::read(&path)
        && bytes.len() % 4 == 0
        && !bytes.is_empty()
    {
        let tokens = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        return Ok(Arc::new(tokens));
    }
    let tokens = tokenize_documents(&load_tokenizer(None)?, &embedded_documents()?)?;
    // Best effort: a cache that cannot be written only costs time. Temp file + rename keeps
    // concurrent test processes from reading a half-written file.
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    let tmp = dir.join(format!(".embedded-{key}.{}.tmp", std::process::id()));
    if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&tmp, bytes).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
    Ok(Arc::new(tokens))
}

/// Train a byte-level BPE tokenizer on documents (how `assets/tokenizer.json` was made).
pub fn train_tokenizer(docs: &[String], vocab_size: usize) -> Result<Tokenizer, DataError> {
    use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, TokenizerBuilder};
    let err = |e: tokenizers::Error| DataError::Tokenizer(e.to_string());
    let mut trainer = BpeTrainerBuilder::new()
        .show_progress(false)
        .vocab_size(vocab_size)
        .min_frequency(2)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .build();
    let mut tok = TokenizerBuilder::<
        BPE,
        tokenizers::NormalizerWrapper,
        ByteLevel,
        ByteLevel,
        ByteLevel,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
    .with_post_processor(Some(ByteLevel::new(false, true, true)))
    .with_decoder(Some(ByteLevel::new(false, true, true)))
    .build()
    .map_err(err)?;
    tok.train(&mut trainer, docs.iter()).map_err(err)?;
    Ok(Tokenizer::from(tok))
}

/// A token stream cut into pages of `seq_len + 1` tokens.
#[derive(Clone)]
pub struct Pages {
    tokens: Arc<Vec<u32>>,
    seq_len: i64,
    identity: Arc<str>,
}

impl Pages {
    pub fn new(tokens: Arc<Vec<u32>>, seq_len: i64) -> Result<Self, DataError> {
        if seq_len < 1 || tokens.len() < seq_len as usize + 1 {
            return Err(DataError::TooShort {
                tokens: tokens.len(),
                seq_len,
            });
        }
        let mut h = Sha256::new();
        for chunk in tokens.chunks(1 << 16) {
            h.update(
                chunk
                    .iter()
                    .flat_map(|t| t.to_le_bytes())
                    .collect::<Vec<u8>>(),
            );
        }
        let identity = hex::encode(h.finalize()).into();
        Ok(Self {
            tokens,
            seq_len,
            identity,
        })
    }

    /// Hex SHA-256 of the token stream: nodes on different data (another corpus, tokenizer or
    /// shard set) have different identities, and it is part of the hyperparameter digest
    /// their payloads carry, so they reject each other instead of silently disagreeing.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn num_pages(&self) -> u64 {
        ((self.tokens.len() - 1) / self.seq_len as usize) as u64
    }

    pub fn page(&self, i: u64) -> &[u32] {
        let start = i as usize * self.seq_len as usize;
        &self.tokens[start..start + self.seq_len as usize + 1]
    }

    /// The given pages as one int64 tensor [pages.len(), seq_len + 1].
    pub fn batch(&self, pages: &[u64], device: Device) -> Tensor {
        let flat: Vec<i64> = pages
            .iter()
            .flat_map(|&p| self.page(p).iter().map(|&t| t as i64))
            .collect();
        let batch = Tensor::from_slice(&flat).view([pages.len() as i64, self.seq_len + 1]);
        match device {
            // Page-locked and copied without waiting: a window's batches are all prepared
            // before its first step, so the copies overlap the GPU's work.
            Device::Cuda(_) => batch
                .f_pin_memory(device)
                .map(|pinned| pinned.to_device_(device, Kind::Int64, true, false))
                .unwrap_or_else(|_| batch.to_device(device)),
            _ => batch,
        }
    }

    /// Largest token id + 1 (the model's vocabulary must cover it).
    pub fn vocab_needed(&self) -> u32 {
        self.tokens.iter().copied().max().map_or(0, |m| m + 1)
    }
}

/// Micro-batches of one window: batch b holds pages[(b * batch_size + i) mod pages.len()].
pub fn window_batches(pages: &[u64], batches: u64, batch_size: i64) -> Vec<Vec<u64>> {
    if pages.is_empty() {
        return Vec::new();
    }
    (0..batches as usize)
        .map(|b| {
            (0..batch_size as usize)
                .map(|i| pages[(b * batch_size as usize + i) % pages.len()])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_round_trips_text() {
        let tok = load_tokenizer(None).unwrap();
        assert_eq!(tok.get_vocab_size(true), 4096);
        for text in [
            "fn main() { println!(\"Hello, world!\"); }",
            "Ownership rules: each value has an owner.\n\tTabs, ünïcödé and 数字 too.",
        ] {
            let enc = tok.encode(text, false).unwrap();
            assert!(enc.get_ids().len() < text.len(), "BPE compresses text");
            assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        }
    }

    #[test]
    fn embedded_corpus_tokenises_into_pages() {
        let docs = embedded_documents().unwrap();
        assert!(docs.len() > 500);
        let tokens = embedded_tokens().unwrap();
        assert!(tokens.len() > 500_000, "{} tokens", tokens.len());
        let pages = Pages::new(tokens.clone(), 64).unwrap();
        assert!(pages.vocab_needed() <= 4096);
        let b = pages.batch(&[0, 5], Device::Cpu);
        assert_eq!(b.size(), vec![2, 65]);
        // Page 1 starts where page 0's inputs end: its first token is page 0's last.
        assert_eq!(pages.page(1)[0], pages.page(0)[64]);
    }

    #[test]
    fn text_and_jsonl_folders_load_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.jsonl"),
            "{\"text\": \"second\"}\n\n{\"text\": \"third\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.txt"), "first").unwrap();
        std::fs::write(dir.path().join("ignored.bin"), "x").unwrap();
        assert_eq!(
            text_dir_documents(dir.path()).unwrap(),
            ["first", "second", "third"]
        );
        std::fs::write(dir.path().join("c.jsonl"), "{\"title\": 1}\n").unwrap();
        let err = text_dir_documents(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::Jsonl { line: 1, .. }), "{err}");
    }

    #[test]
    fn npy_shards_load_and_wrong_dtypes_are_rejected() {
        use npyz::WriterBuilder;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, data: &[u32]| {
            let mut buf = Vec::new();
            {
                let mut w = npyz::WriteOptions::<u32>::new()
                    .default_dtype()
                    .shape(&[data.len() as u64])
                    .writer(&mut buf)
                    .begin_nd()
                    .unwrap();
                w.extend(data.iter().copied()).unwrap();
                w.finish().unwrap();
            }
            std::fs::write(dir.path().join(name), buf).unwrap();
        };
        write("shard_001.npy", &[4, 5, 6]);
        write("shard_000.npy", &[1, 2, 3]);
        assert_eq!(npy_dir_tokens(dir.path()).unwrap(), [1, 2, 3, 4, 5, 6]);
        let mut buf = Vec::new();
        {
            let mut w = npyz::WriteOptions::<f64>::new()
                .default_dtype()
                .shape(&[2])
                .writer(&mut buf)
                .begin_nd()
                .unwrap();
            w.extend([1.0f64, 2.0]).unwrap();
            w.finish().unwrap();
        }
        std::fs::write(dir.path().join("shard_002.npy"), buf).unwrap();
        assert!(matches!(
            npy_dir_tokens(dir.path()),
            Err(DataError::Npy { .. })
        ));
        std::fs::write(dir.path().join("shard_002.npy"), b"garbage").unwrap();
        assert!(matches!(
            npy_dir_tokens(dir.path()),
            Err(DataError::Npy { .. })
        ));
    }

    #[test]
    fn window_batches_cycle_through_the_pages() {
        assert_eq!(
            window_batches(&[1, 2, 3], 2, 2),
            vec![vec![1, 2], vec![3, 1]]
        );
        assert!(window_batches(&[], 2, 2).is_empty());
    }
}
