//! Encoding a file in bounded memory: it is read in batches cut at safe pre-tokenization cuts,
//! and each batch is encoded in parallel chunks on the current rayon pool.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::encode::{Encoder, PARALLEL_CHUNK};
use crate::pretokenize::{last_safe_cut, split_at_safe_cuts};

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
    let mut file = File::open(path)?;
    let batch = batch_bytes();
    let mut buf: Vec<u8> = Vec::with_capacity(batch);
    let mut done: u64 = 0;
    let mut want = batch;
    let mut eof = false;
    loop {
        while buf.len() < want && !eof {
            let filled = buf.len();
            buf.resize(want, 0);
            let n = read_some(&mut file, &mut buf[filled..])?;
            buf.truncate(filled + n);
            eof = n == 0;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(text) => text,
            Err(e) if e.error_len().is_none() && !eof => {
                // A character split at the end of what was read: its rest comes next time.
                std::str::from_utf8(&buf[..e.valid_up_to()]).map_err(|_| {
                    FileError::InvalidUtf8 {
                        offset: done + e.valid_up_to() as u64,
                    }
                })?
            }
            Err(e) => {
                return Err(FileError::InvalidUtf8 {
                    offset: done + e.valid_up_to() as u64,
                })
            }
        };
        let end = if eof {
            text.len()
        } else {
            last_safe_cut(encoder.pattern(), text)
        };
        if end == 0 && !eof {
            // No safe cut yet (e.g. a huge run without spaces): read more.
            want = buf.len() * 2;
            continue;
        }
        let mut chunks = Vec::new();
        split_at_safe_cuts(encoder.pattern(), &text[..end], PARALLEL_CHUNK, &mut chunks);
        let ids = encoder.encode_batch(&chunks, &[]);
        let mut bytes_done = done;
        for (chunk, chunk_ids) in chunks.iter().zip(&ids) {
            bytes_done += chunk.len() as u64;
            if !sink(chunk_ids, bytes_done) {
                return Err(FileError::Stopped);
            }
        }
        buf.drain(..end);
        done += end as u64;
        want = batch;
        if eof && buf.is_empty() {
            return Ok(());
        }
    }
}

/// Reads into `buf`, retrying on interruption; 0 means end of file.
fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::Pattern;
    use crate::train::{train, PieceCounts};

    const SHAKESPEARE: &str = include_str!("../../python/smallgpt/assets/tinyshakespeare.txt");

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
