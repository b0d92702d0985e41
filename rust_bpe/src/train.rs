//! BPE training: counting pre-token pieces (in parallel, streaming files in chunks) and learning
//! merges exactly as Hugging Face `tokenizers`' `BpeTrainer` learns them for a byte-level
//! alphabet.
//!
//! # The merge rule (what "exactly" means)
//! Each distinct piece is a word of single-byte symbols, weighted by its number of occurrences.
//! At every step the pair of adjacent symbols with the highest weighted count is merged into a
//! new symbol in every word, scanning each word left to right (so `a a a` becomes `aa a`).
//! Training stops when the vocabulary (256 bytes + learned tokens + special tokens) reaches
//! `vocab_size`, when no pair is left, or when the best count is below `min_frequency`.
//!
//! Ties between pairs of equal count go to the smallest pair `(left, right)` of HF ids, left
//! first. HF numbers the special tokens first, then the 256 byte symbols in the order of their
//! byte-level *characters' code points* (GPT-2's `bytes_to_unicode`: the printable bytes
//! `!`..`~`, `¡`..`¬`, `®`..`ÿ` keep their value, the 68 others map to U+0100.. in byte order),
//! then learned tokens in creation order. So among single bytes, the printable ones come first
//! in byte order, then the others (0x00..0x20, 0x7F..0xA0, 0xAD) in byte order; learned tokens
//! rank after every byte, older before newer. The loop below numbers symbols in that order
//! internally, so comparing internal ids is HF's tie-break.
//!
//! When a merged string already exists (two merge paths to the same bytes) its id is reused and
//! the vocabulary does not grow, as in HF.
//!
//! # How it stays fast
//! Pair counts are updated incrementally from the neighbours of each merged occurrence; a
//! max-heap holds candidate pairs with lazy deletion (an entry whose count is stale is pushed
//! back with the current count when popped), and an index maps each pair to the words that
//! may contain it, so a merge only visits those words.

use std::collections::BinaryHeap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::pretokenize::{for_each_piece, last_safe_cut, Pattern};
use crate::vocab::{byte_level_char, validate_specials, MergeRecorder, Vocab};

/// Texts longer than this are split (at safe cuts) into segments counted in parallel.
const SEGMENT_BYTES: usize = 1 << 20;
/// Bytes read from a file per step when streaming it.
const FILE_CHUNK_BYTES: usize = 8 << 20;

/// Why training could not run.
#[derive(Debug)]
pub enum TrainError {
    /// A setting is invalid; the message names it.
    Config(String),
    /// There was no text to learn from.
    EmptyCorpus,
    /// A file could not be opened or read.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not UTF-8 text; `offset` is the byte offset of the first invalid byte.
    NotUtf8 { path: PathBuf, offset: u64 },
}

impl fmt::Display for TrainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainError::Config(message) => f.write_str(message),
            TrainError::EmptyCorpus => f.write_str(
                "empty corpus: the training texts contain no characters; pass at least one \
                 non-empty text",
            ),
            TrainError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TrainError::NotUtf8 { path, offset } => write!(
                f,
                "{}: not UTF-8 text (invalid byte at offset {offset})",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TrainError {}

/// The distinct pre-token pieces of a corpus and how often each occurs.
///
/// Counting uses the current rayon thread pool; the counts never depend on how many threads
/// there are.
pub struct PieceCounts {
    pattern: Pattern,
    counts: FxHashMap<Box<[u8]>, u64>,
    total_bytes: u64,
}

impl PieceCounts {
    /// An empty count for texts pre-tokenized with `pattern`.
    pub fn new(pattern: Pattern) -> PieceCounts {
        PieceCounts {
            pattern,
            counts: FxHashMap::default(),
            total_bytes: 0,
        }
    }

    /// The pre-tokenization pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Number of distinct pieces seen so far.
    pub fn distinct_pieces(&self) -> usize {
        self.counts.len()
    }

    /// Number of text bytes counted so far.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Counts the pieces of each text (each text is pre-tokenized on its own).
    pub fn add_texts<S: AsRef<str> + Sync>(&mut self, texts: &[S]) {
        let mut segments = Vec::new();
        for text in texts {
            split_segments(self.pattern, text.as_ref(), &mut segments);
        }
        self.add_segments(&segments);
    }

    /// Counts the pieces of a UTF-8 file's text, reading it in chunks so that memory stays
    /// bounded by the chunk size (plus the counts); the counts equal those of the whole text.
    pub fn add_file(&mut self, path: &Path) -> Result<(), TrainError> {
        let io_error = |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_error)?;
        let mut buf: Vec<u8> = Vec::with_capacity(FILE_CHUNK_BYTES);
        // File offset of buf[0], and length of buf's prefix already checked to be UTF-8.
        let mut buf_offset = 0u64;
        let mut valid = 0usize;
        loop {
            let read = (&mut file)
                .take(FILE_CHUNK_BYTES as u64)
                .read_to_end(&mut buf)
                .map_err(io_error)?;
            let at_end = read == 0;
            match std::str::from_utf8(&buf[valid..]) {
                Ok(_) => valid = buf.len(),
                // An incomplete character at the end is completed by the next read.
                Err(e) if e.error_len().is_none() && !at_end => valid += e.valid_up_to(),
                Err(e) => {
                    return Err(TrainError::NotUtf8 {
                        path: path.to_path_buf(),
                        offset: buf_offset + (valid + e.valid_up_to()) as u64,
                    })
                }
            }
            let text = std::str::from_utf8(&buf[..valid]).map_err(|e| TrainError::NotUtf8 {
                path: path.to_path_buf(),
                offset: buf_offset + e.valid_up_to() as u64,
            })?;
            let cut = if at_end {
                text.len()
            } else {
                last_safe_cut(self.pattern, text)
            };
            if cut > 0 {
                let mut segments = Vec::new();
                split_segments(self.pattern, &text[..cut], &mut segments);
                self.add_segments(&segments);
                buf.drain(..cut);
                buf_offset += cut as u64;
                valid -= cut;
            }
            if at_end {
                return Ok(());
            }
        }
    }

    /// Counts segments (each cut at safe places) in parallel into the totals.
    fn add_segments(&mut self, segments: &[&str]) {
        let pattern = self.pattern;
        let partial: Vec<FxHashMap<&str, u64>> = segments
            .par_iter()
            .fold(FxHashMap::default, |mut map, segment| {
                for_each_piece(pattern, segment, |piece| {
                    *map.entry(piece).or_insert(0) += 1
                });
                map
            })
            .collect();
        for map in partial {
            for (piece, n) in map {
                match self.counts.get_mut(piece.as_bytes()) {
                    Some(count) => *count += n,
                    None => {
                        self.counts.insert(piece.as_bytes().into(), n);
                    }
                }
            }
        }
        self.total_bytes += segments.iter().map(|s| s.len() as u64).sum::<u64>();
    }
}

/// Appends `text` to `out` as segments of about `SEGMENT_BYTES`, cut only where pre-tokenizing
/// the segments separately gives the pieces of the whole text.
fn split_segments<'a>(pattern: Pattern, text: &'a str, out: &mut Vec<&'a str>) {
    let mut rest = text;
    while rest.len() > SEGMENT_BYTES {
        let mut window = SEGMENT_BYTES;
        let cut = loop {
            if window >= rest.len() {
                break rest.len();
            }
            let end = floor_char_boundary(rest, window);
            let cut = last_safe_cut(pattern, &rest[..end]);
            if cut > 0 {
                break cut;
            }
            // No safe cut in this window (a long run of spaces, or the `none` pattern).
            window *= 2;
        };
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() {
        out.push(rest);
    }
}

/// Largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Learns merges from counted pieces until the vocabulary (bytes + learned tokens + specials)
/// has `vocab_size` entries, no pair is left, or the best pair occurs fewer than `min_frequency`
/// times. The result may be smaller than `vocab_size`; callers warn about that.
///
/// Errors: `vocab_size` below 256 + specials, invalid specials, or no counted text.
pub fn train(
    counts: &PieceCounts,
    vocab_size: usize,
    min_frequency: u64,
    specials: &[String],
) -> Result<Vocab, TrainError> {
    validate_specials(specials).map_err(TrainError::Config)?;
    let floor = 256 + specials.len();
    if vocab_size < floor {
        return Err(TrainError::Config(format!(
            "vocab_size={vocab_size} is too small: it must be at least 256 (the byte tokens) + \
             {} special tokens = {floor}",
            specials.len()
        )));
    }
    if counts.total_bytes == 0 {
        return Err(TrainError::EmptyCorpus);
    }
    let mut state = MergeState::new(counts);
    let mut recorder = MergeRecorder::new(counts.pattern);
    let target = vocab_size - specials.len();
    while recorder.len() < target {
        let Some((left, right)) = state.best_pair(min_frequency) else {
            break;
        };
        let result = recorder.merge(state.external(left), state.external(right));
        state.merge(left, right, result);
    }
    recorder.finish(specials).map_err(TrainError::Config)
}

/// A pair of internal symbol ids packed as `left << 32 | right`: ascending keys are HF's
/// ascending `(left, right)` order.
type PairKey = u64;

fn pair_key(left: u32, right: u32) -> PairKey {
    (u64::from(left) << 32) | u64::from(right)
}

fn split_key(key: PairKey) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// A pair's current count and the words that may contain it (maybe some no longer do).
#[derive(Default)]
struct PairStat {
    count: i64,
    words: Vec<u32>,
}

/// The words being merged and the pair statistics, in internal ids: bytes are numbered by HF's
/// order (see the module docs), learned tokens keep their vocabulary id (256 + n).
struct MergeState {
    /// The symbols of every word, one after another; word `w` occupies
    /// `symbols[starts[w]..starts[w] + lens[w]]` (it shrinks as merges apply).
    symbols: Vec<u32>,
    starts: Vec<u32>,
    lens: Vec<u32>,
    weights: Vec<i64>,
    pairs: FxHashMap<PairKey, PairStat>,
    heap: BinaryHeap<(i64, std::cmp::Reverse<PairKey>)>,
    /// byte -> internal id, and internal id (< 256) -> byte.
    byte_rank: [u32; 256],
    rank_byte: [u8; 256],
}

impl MergeState {
    fn new(counts: &PieceCounts) -> MergeState {
        let mut rank_byte: [u8; 256] = std::array::from_fn(|b| b as u8);
        rank_byte.sort_by_key(|&b| byte_level_char(b));
        let mut byte_rank = [0u32; 256];
        for (rank, &b) in rank_byte.iter().enumerate() {
            byte_rank[b as usize] = rank as u32;
        }
        let mut state = MergeState {
            symbols: Vec::new(),
            starts: Vec::new(),
            lens: Vec::new(),
            weights: Vec::new(),
            pairs: FxHashMap::default(),
            heap: BinaryHeap::new(),
            byte_rank,
            rank_byte,
        };
        // Single-byte words have no pair and never change the merges.
        let words = counts.counts.iter().filter(|(piece, _)| piece.len() > 1);
        for (piece, &count) in words {
            let word = state.starts.len() as u32;
            state.starts.push(state.symbols.len() as u32);
            state.lens.push(piece.len() as u32);
            state.weights.push(count as i64);
            let start = state.symbols.len();
            state
                .symbols
                .extend(piece.iter().map(|&b| state.byte_rank[b as usize]));
            for i in start..state.symbols.len() - 1 {
                let key = pair_key(state.symbols[i], state.symbols[i + 1]);
                let stat = state.pairs.entry(key).or_default();
                stat.count += count as i64;
                if stat.words.last() != Some(&word) {
                    stat.words.push(word);
                }
            }
        }
        state.heap = state
            .pairs
            .iter()
            .map(|(&key, stat)| (stat.count, std::cmp::Reverse(key)))
            .collect();
        state
    }

    /// The vocabulary id of an internal id.
    fn external(&self, id: u32) -> u32 {
        if id < 256 {
            u32::from(self.rank_byte[id as usize])
        } else {
            id
        }
    }

    /// The internal id of a vocabulary id.
    fn internal(&self, id: u32) -> u32 {
        if id < 256 {
            self.byte_rank[id as usize]
        } else {
            id
        }
    }

    /// The pair to merge next: highest count, then smallest pair; None when no pair occurs at
    /// least `max(min_frequency, 1)` times.
    fn best_pair(&mut self, min_frequency: u64) -> Option<(u32, u32)> {
        while let Some((count, std::cmp::Reverse(key))) = self.heap.pop() {
            let current = self.pairs.get(&key).map_or(0, |stat| stat.count);
            if current != count {
                if current > 0 {
                    self.heap.push((current, std::cmp::Reverse(key)));
                }
                continue;
            }
            if count < 1 || (count as u64) < min_frequency {
                return None;
            }
            return Some(split_key(key));
        }
        None
    }

    /// Replaces every occurrence of `(left, right)` with `result` (a vocabulary id) and updates
    /// the pair counts, the index and the heap.
    fn merge(&mut self, left: u32, right: u32, result: u32) {
        let merged = self.internal(result);
        let key = pair_key(left, right);
        let words = self
            .pairs
            .remove(&key)
            .map(|stat| stat.words)
            .unwrap_or_default();
        let mut created: Vec<PairKey> = Vec::new();
        for &word in &words {
            let w = word as usize;
            let start = self.starts[w] as usize;
            let len = self.lens[w] as usize;
            let weight = self.weights[w];
            let symbols = &mut self.symbols[start..start + len];
            let (mut read, mut write) = (0, 0);
            while read < len {
                if read + 1 < len && symbols[read] == left && symbols[read + 1] == right {
                    if write > 0 {
                        let prev = symbols[write - 1];
                        add_count(&mut self.pairs, pair_key(prev, left), -weight, word);
                        add_count(&mut self.pairs, pair_key(prev, merged), weight, word);
                        created.push(pair_key(prev, merged));
                    }
                    if read + 2 < len {
                        let next = symbols[read + 2];
                        add_count(&mut self.pairs, pair_key(right, next), -weight, word);
                        add_count(&mut self.pairs, pair_key(merged, next), weight, word);
                        created.push(pair_key(merged, next));
                    }
                    symbols[write] = merged;
                    read += 2;
                } else {
                    symbols[write] = symbols[read];
                    read += 1;
                }
                write += 1;
            }
            self.lens[w] = write as u32;
        }
        // A merge like (a, a) in "a a a" decrements its own pair through a neighbour.
        self.pairs.remove(&key);
        created.sort_unstable();
        created.dedup();
        for new_key in created {
            if let Some(stat) = self.pairs.get(&new_key) {
                if stat.count > 0 {
                    self.heap.push((stat.count, std::cmp::Reverse(new_key)));
                }
            }
        }
    }
}

/// Adds `delta` to a pair's count; a pair gaining occurrences records `word` in its index.
#[inline]
fn add_count(pairs: &mut FxHashMap<PairKey, PairStat>, key: PairKey, delta: i64, word: u32) {
    if delta > 0 {
        let stat = pairs.entry(key).or_default();
        stat.count += delta;
        if stat.words.last() != Some(&word) {
            stat.words.push(word);
        }
    } else if let Some(stat) = pairs.get_mut(&key) {
        stat.count += delta;
        // No word holds the pair any more: drop it (and its word list) to save memory.
        if stat.count == 0 {
            pairs.remove(&key);
        }
    }
}
