//! Reading UTF-8 text in bounded memory: batches that end at safe pre-tokenization cuts, so the
//! pieces of the batches taken one by one are those of the whole text. The file encoder and the
//! trainer's piece counter both read files this way.

use std::io::{self, Read};

use crate::pretokenize::{last_safe_cut, Pattern};

/// Why reading stopped early.
#[derive(Debug)]
pub(crate) enum StreamError<E> {
    Io(io::Error),
    /// The text is not UTF-8: the stream offset of the first bad byte.
    InvalidUtf8 {
        offset: u64,
    },
    /// The batch handler's own error.
    Handler(E),
}

/// Reads `reader` to its end in batches of about `batch` bytes and calls `handle(text, offset)`
/// on each batch's text, which ends at the last safe cut read so far (or at the end of the
/// stream) and starts at byte `offset` of the stream. A batch grows while no safe cut appears.
/// An empty stream is one empty batch. Memory: one batch of bytes.
pub(crate) fn for_each_batch<E>(
    mut reader: impl Read,
    pattern: Pattern,
    batch: usize,
    mut handle: impl FnMut(&str, u64) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    let mut buf: Vec<u8> = Vec::with_capacity(batch);
    let mut done: u64 = 0;
    let mut want = batch;
    let mut eof = false;
    loop {
        if buf.len() < want && !eof {
            // `read_to_end` retries interrupted reads and does not zero the buffer first; it
            // stops short of `missing` only at the end of the stream.
            let missing = (want - buf.len()) as u64;
            let read = (&mut reader)
                .take(missing)
                .read_to_end(&mut buf)
                .map_err(StreamError::Io)?;
            eof = (read as u64) < missing;
        }
        let text = utf8_prefix(&buf, eof).map_err(|at| StreamError::InvalidUtf8 {
            offset: done + at as u64,
        })?;
        let end = if eof {
            text.len()
        } else {
            last_safe_cut(pattern, text)
        };
        if end == 0 && !eof {
            // No safe cut yet (e.g. a huge run without spaces): read more.
            want = buf.len() * 2;
            continue;
        }
        handle(&text[..end], done).map_err(StreamError::Handler)?;
        buf.drain(..end);
        done += end as u64;
        want = batch;
        if eof && buf.is_empty() {
            return Ok(());
        }
    }
}

/// The longest prefix of `bytes` that is UTF-8 text; an incomplete character at the end is left
/// out (its rest comes with the next read) unless `at_end`. Err: offset of the first bad byte.
fn utf8_prefix(bytes: &[u8], at_end: bool) -> Result<&str, usize> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text),
        // `valid_up_to` ends a UTF-8 prefix, so this conversion cannot fail.
        Err(e) if e.error_len().is_none() && !at_end => {
            Ok(std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default())
        }
        Err(e) => Err(e.valid_up_to()),
    }
}
