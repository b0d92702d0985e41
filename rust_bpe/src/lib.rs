//! Byte-level BPE: pre-tokenization, training and encoding.
//!
//! The modules, in the order text flows through them:
//! - `pretokenize`: splitting text into pieces (GPT-2 and cl100k patterns) and safe cuts;
//!   `char_classes` is its generated Unicode table.
//! - `train`: counting pieces and learning merges as Hugging Face's `BpeTrainer` does.
//! - `vocab`: the learned vocabulary and its file formats.
//! - `stream`: reading UTF-8 text in batches cut at safe cuts (files for counting and encoding).
//! - `encode`: text to ids as tiktoken encodes, ids to bytes; `piece_table` is its piece -> ids
//!   table; `encode_file` streams a file.
//! - `decode`: incremental UTF-8 decoding of token bytes.
//! - `jsonl`: the text field of JSON Lines records, parsed in parallel; `text_batch` holds
//!   such records in one buffer.
//! - `python` (feature `python`): the `smallgpt._bpe` extension module.

mod char_classes;
pub mod decode;
pub mod encode;
pub mod encode_file;
pub mod jsonl;
mod piece_table;
pub mod pretokenize;
mod stream;
#[cfg(test)]
mod test_text;
pub mod text_batch;
pub mod train;
pub mod vocab;

#[cfg(feature = "python")]
mod python;
