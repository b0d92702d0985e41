//! Encoding a file in bounded memory: it is read in batches cut at safe pre-tokenization cuts,
//! and each batch is encoded in parallel chunks on the current rayon pool.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::encode::{Encoder, PARALLEL_CHUNK};
use crate::pretokenize::split_at_safe_cuts;
use crate::stream::{for_each_batch, StreamError};

/// Text read per batch: enough chunks to keep every thread busy, at most 32 MB.
fn batch_bytes() -> usize {
    PARALLEL_CHUNK * (2 * rayon::current_num_threads()).clamp(4, 32)
}

/// Why encoding a file stopped.
#[derive(Debug)]
pub enum FileError {
    Io(io::Error),
    /// The file is not UTF-8: the byte offset of the first bad sequence.
    InvalidUtf8 {
        offset: u64,
    },
    /// The sink asked to stop.
    Stopped,
}

impl From<io::Error> for FileError {
    fn from(e: io::Error) -> Self {
        FileError::Io(e)
    }
}

/// Encodes the file at `path` as `encode_ordinary` would encode its whole text, passing the ids
/// to `sink` in order, batch by batch, with the number of file bytes encoded so far. The sink
/// returns false to stop (then `FileError::Stopped`). Memory: one batch of text and its ids.
pub fn encode_file(
    encoder: &Encoder,
    path: &Path,
    mut sink: impl FnMut(&[u32], u64) -> bool,
) -> Result<(), FileError> {
    let file = File::open(path)?;
    let pattern = encoder.pattern();
    for_each_batch(file, pattern, batch_bytes(), |text, done| {
        let mut chunks = Vec::new();
        split_at_safe_cuts(pattern, text, PARALLEL_CHUNK, &mut chunks);
        let ids = encoder.encode_chunks::<u32>(&chunks);
        let mut bytes_done = done;
        for (chunk, chunk_ids) in chunks.iter().zip(&ids) {
            bytes_done += chunk.len() as u64;
            if !sink(chunk_ids, bytes_done) {
                return Err(FileError::Stopped);
            }
        }
        Ok(())
    })
    .map_err(|e| match e {
        StreamError::Io(e) => FileError::Io(e),
        StreamError::InvalidUtf8 { offset } => FileError::InvalidUtf8 { offset },
        StreamError::Handler(e) => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::Pattern;
    use crate::test_text::SHAKESPEARE;
    use crate::train::{train, PieceCounts};

    fn encode_path(encoder: &Encoder, path: &Path) -> Result<Vec<u32>, FileError> {
        let mut ids = Vec::new();
        encode_file(encoder, path, |chunk, _| {
            ids.extend_from_slice(chunk);
            true
        })?;
        Ok(ids)
    }

    #[test]
    fn streamed_file_encodes_like_its_whole_text() {
        let mut counts = PieceCounts::new(Pattern::Cl100k);
        counts.add_texts(&[SHAKESPEARE]);
        let vocab = train(counts, 700, 2, &[]).expect("training a test vocab");
        let encoder = Encoder::new(&vocab);
        // Longer than one batch, with multi-byte characters across read boundaries.
        let text = format!("{}ÿ😀é\n", SHAKESPEARE).repeat(6);
        let dir = std::env::temp_dir().join(format!("rust_bpe_encode_file_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("text.txt");
        std::fs::write(&path, &text).expect("writing the test file");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a test pool");
        let streamed = pool.install(|| encode_path(&encoder, &path));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            streamed.expect("encoding the file"),
            encoder.encode_ordinary(&text)
        );
    }
}
