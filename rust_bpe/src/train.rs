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
//! the vocabulary does not grow, as in HF. One difference remains: HF gives a byte or a learned
//! token the id of a special token spelled the same (possible only for a special token that is
//! one byte-level character, or one pre-token piece, e.g. with the `none` pattern), which
//! changes its vocabulary count and tie-breaks; here special tokens never double as regular
//! tokens.
//!
//! # How it stays fast
//! Pair counts are updated incrementally from the neighbours of each merged occurrence; a
//! max-heap holds candidate pairs with lazy deletion (an entry whose count is stale is pushed
//! back with the current count when popped), and an index maps each pair to the words that
//! may contain it, so a merge only visits those words.

use std::collections::BinaryHeap;
use std::convert::Infallible;
use std::fmt;
use std::fs::File;
use std::hash::Hash;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::encode::pack;
use crate::pretokenize::{for_each_piece, split_at_safe_cuts, Pattern};
use crate::stream::{for_each_batch, StreamError};
use crate::vocab::{
    byte_level_char, pair_key, split_key, validate_specials, MergeRecorder, PairKey, Vocab,
};

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
                "empty corpus: there is no text to train on (no texts or files were given, or \
                 all of them are empty)",
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
    counts: Tally<Box<[u8]>>,
    total_bytes: u64,
}

/// Occurrence counts of pieces: short ones under packed keys, long ones under `K` (a borrowed
/// `&str` while counting a text, owned bytes in the totals).
#[derive(Clone, Debug, PartialEq)]
struct Tally<K: Eq + Hash> {
    short: FxHashMap<u128, u64>,
    long: FxHashMap<K, u64>,
}

impl<K: Eq + Hash> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            short: FxHashMap::default(),
            long: FxHashMap::default(),
        }
    }
}

impl<'a> Tally<&'a str> {
    fn count(&mut self, piece: &'a str) {
        match pack(piece.as_bytes()) {
            Some(key) => *self.short.entry(key).or_insert(0) += 1,
            None => *self.long.entry(piece).or_insert(0) += 1,
        }
    }
}

impl Tally<Box<[u8]>> {
    /// Adds the counts of one text's tally.
    fn absorb(&mut self, other: Tally<&str>) {
        for (key, n) in other.short {
            *self.short.entry(key).or_insert(0) += n;
        }
        for (piece, n) in other.long {
            match self.long.get_mut(piece.as_bytes()) {
                Some(count) => *count += n,
                None => {
                    self.long.insert(piece.as_bytes().into(), n);
                }
            }
        }
    }

    /// Calls `f(piece bytes, count)` for every distinct piece.
    fn for_each(&self, mut f: impl FnMut(&[u8], u64)) {
        for (&key, &n) in &self.short {
            let packed = key.to_le_bytes();
            f(&packed[..packed[15] as usize], n);
        }
        for (piece, &n) in &self.long {
            f(piece, n);
        }
    }
}

impl PieceCounts {
    /// An empty count for texts pre-tokenized with `pattern`.
    pub fn new(pattern: Pattern) -> PieceCounts {
        PieceCounts {
            pattern,
            counts: Tally::default(),
            total_bytes: 0,
        }
    }

    /// The pre-tokenization pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Number of text bytes counted so far.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Counts the pieces of each text (each text is pre-tokenized on its own).
    pub fn add_texts<S: AsRef<str> + Sync>(&mut self, texts: &[S]) {
        let mut segments = Vec::new();
        for text in texts {
            split_at_safe_cuts(self.pattern, text.as_ref(), SEGMENT_BYTES, &mut segments);
        }
        self.add_segments(&segments);
    }

    /// Counts the pieces of a UTF-8 file's text, reading it in chunks so that memory stays
    /// bounded by the chunk size (plus the counts); the counts equal those of the whole text.
    pub fn add_file(&mut self, path: &Path) -> Result<(), TrainError> {
        let file = File::open(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_stream(file, path, FILE_CHUNK_BYTES)
    }

    /// Counts the pieces of the UTF-8 text read from `reader` in batches of about `chunk_bytes`
    /// (`path` names it in errors).
    fn add_stream(
        &mut self,
        reader: impl Read,
        path: &Path,
        chunk_bytes: usize,
    ) -> Result<(), TrainError> {
        let pattern = self.pattern;
        for_each_batch(reader, pattern, chunk_bytes, |text, _| {
            let mut segments = Vec::new();
            split_at_safe_cuts(pattern, text, SEGMENT_BYTES, &mut segments);
            self.add_segments(&segments);
            Ok::<(), Infallible>(())
        })
        .map_err(|e| match e {
            StreamError::Io(source) => TrainError::Io {
                path: path.to_path_buf(),
                source,
            },
            StreamError::InvalidUtf8 { offset } => TrainError::NotUtf8 {
                path: path.to_path_buf(),
                offset,
            },
            StreamError::Handler(never) => match never {},
        })
    }

    /// Counts segments (each cut at safe places) in parallel into the totals.
    fn add_segments(&mut self, segments: &[&str]) {
        let pattern = self.pattern;
        let partial: Vec<Tally<&str>> = segments
            .par_iter()
            .fold(Tally::default, |mut tally, segment| {
                for_each_piece(pattern, segment, |piece| tally.count(piece));
                tally
            })
            .collect();
        for tally in partial {
            self.counts.absorb(tally);
        }
        self.total_bytes += segments.iter().map(|s| s.len() as u64).sum::<u64>();
    }
}

/// Learns merges from counted pieces until the vocabulary (bytes + learned tokens + specials)
/// has `vocab_size` entries, no pair is left, or the best pair occurs fewer than `min_frequency`
/// times. The result may be smaller than `vocab_size`; callers warn about that. The counts are
/// consumed (freed as soon as the words are built, which lowers peak memory).
///
/// Errors: `vocab_size` below 256 + specials, invalid specials, or no counted text.
pub fn train(
    counts: PieceCounts,
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
    let mut recorder = MergeRecorder::new(counts.pattern);
    let mut state = MergeState::new(counts.counts)?;
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

/// How many words ahead of the one being merged `MergeState::merge` prefetches.
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to start loading `words[at]` into cache: the words a merge visits are scattered
/// over memory, and waiting for each one is most of the merge loop's time otherwise.
#[inline(always)]
fn prefetch(words: &[u32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(word) = words.get(at) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86_64, and a prefetch never faults nor reads into Rust values.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((word as *const u32).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (words, at);
}

/// Length and weight precede each word's symbols in `MergeState::words`.
const WORD_HEADER: usize = 3;

/// A pair's current count and the words that may contain it (maybe some no longer do).
#[derive(Default)]
struct PairStat {
    count: i64,
    words: Vec<u32>,
}

/// The words being merged and the pair statistics, in internal ids: bytes are numbered by HF's
/// order (see the module docs), learned tokens keep their vocabulary id (256 + n).
struct MergeState {
    /// Every word as `[length, weight's low 32 bits, weight's high 32 bits, symbols...]`, one
    /// after another; a word is named by the offset of its header. Words shrink in place as
    /// merges apply. Keeping a word's header beside its symbols makes a visit touch one place.
    words: Vec<u32>,
    pairs: FxHashMap<PairKey, PairStat>,
    heap: BinaryHeap<(i64, std::cmp::Reverse<PairKey>)>,
    /// byte -> internal id, and internal id (< 256) -> byte.
    byte_rank: [u32; 256],
    rank_byte: [u8; 256],
}

impl MergeState {
    fn new(counts: Tally<Box<[u8]>>) -> Result<MergeState, TrainError> {
        let mut rank_byte: [u8; 256] = std::array::from_fn(|b| b as u8);
        rank_byte.sort_by_key(|&b| byte_level_char(b));
        let mut byte_rank = [0u32; 256];
        for (rank, &b) in rank_byte.iter().enumerate() {
            byte_rank[b as usize] = rank as u32;
        }
        let mut state = MergeState {
            words: Vec::new(),
            pairs: FxHashMap::default(),
            heap: BinaryHeap::new(),
            byte_rank,
            rank_byte,
        };
        counts.for_each(|piece, count| {
            // Single-byte words have no pair and never change the merges.
            if piece.len() > 1 {
                state
                    .words
                    .extend([piece.len() as u32, count as u32, (count >> 32) as u32]);
                state
                    .words
                    .extend(piece.iter().map(|&b| state.byte_rank[b as usize]));
            }
        });
        drop(counts);
        if u32::try_from(state.words.len()).is_err() {
            return Err(TrainError::Config(
                "corpus too large: its distinct pieces hold more than 4 billion bytes".to_owned(),
            ));
        }
        let mut at = 0;
        while at < state.words.len() {
            let (len, weight) = state.word_header(at);
            let symbols = &state.words[at + WORD_HEADER..at + WORD_HEADER + len];
            for pair in symbols.windows(2) {
                let stat = state.pairs.entry(pair_key(pair[0], pair[1])).or_default();
                stat.count += weight;
                if stat.words.last() != Some(&(at as u32)) {
                    stat.words.push(at as u32);
                }
            }
            at += WORD_HEADER + len;
        }
        state.heap = state
            .pairs
            .iter()
            .map(|(&key, stat)| (stat.count, std::cmp::Reverse(key)))
            .collect();
        Ok(state)
    }

    /// Length and weight of the word whose header is at `at`.
    fn word_header(&self, at: usize) -> (usize, i64) {
        let weight = (i64::from(self.words[at + 2]) << 32) | i64::from(self.words[at + 1]);
        (self.words[at] as usize, weight)
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
        for (i, &word) in words.iter().enumerate() {
            if let Some(&ahead) = words.get(i + PREFETCH_AHEAD) {
                prefetch(&self.words, ahead as usize);
            }
            let at = word as usize;
            let (len, weight) = self.word_header(at);
            let symbols = &mut self.words[at + WORD_HEADER..at + WORD_HEADER + len];
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
            self.words[at] = write as u32;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretokenize::pieces;
    use crate::test_text::{random_text, SHAKESPEARE};

    fn specials() -> Vec<String> {
        vec!["<|endoftext|>".to_owned(), "<|pad|>".to_owned()]
    }

    fn counts_of(pattern: Pattern, texts: &[&str]) -> PieceCounts {
        let mut counts = PieceCounts::new(pattern);
        counts.add_texts(texts);
        counts
    }

    fn merged_bytes(vocab: &Vocab) -> Vec<(Vec<u8>, Vec<u8>)> {
        let bytes = |id: u32| vocab.tokens[id as usize].clone();
        vocab
            .merges
            .iter()
            .map(|&(l, r, _)| (bytes(l), bytes(r)))
            .collect()
    }

    /// Textbook BPE, recounting every pair at every step, with HF's tie-break: equal counts go
    /// to the smallest (left, right) in HF ids (bytes by byte-level character, then learned
    /// tokens by age).
    fn reference_merges(
        pattern: Pattern,
        texts: &[&str],
        learned: usize,
        min_frequency: u64,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut words: FxHashMap<Vec<Vec<u8>>, u64> = FxHashMap::default();
        for text in texts {
            for piece in pieces(pattern, text) {
                let word = piece.bytes().map(|b| vec![b]).collect();
                *words.entry(word).or_insert(0) += 1;
            }
        }
        let mut hf_id: FxHashMap<Vec<u8>, usize> = FxHashMap::default();
        let mut by_char: Vec<u8> = (0..=255).collect();
        by_char.sort_by_key(|&b| byte_level_char(b) as u32);
        for (i, b) in by_char.into_iter().enumerate() {
            hf_id.insert(vec![b], i);
        }
        let mut merges = Vec::new();
        while merges.len() < learned {
            let mut pair_counts: FxHashMap<(Vec<u8>, Vec<u8>), u64> = FxHashMap::default();
            for (word, &n) in &words {
                for w in word.windows(2) {
                    *pair_counts.entry((w[0].clone(), w[1].clone())).or_insert(0) += n;
                }
            }
            let Some((best, &count)) = pair_counts
                .iter()
                .max_by_key(|((l, r), &n)| (n, std::cmp::Reverse((hf_id[l], hf_id[r]))))
            else {
                break;
            };
            if count < min_frequency.max(1) {
                break;
            }
            let best = best.clone();
            let joined = [best.0.clone(), best.1.clone()].concat();
            let next = hf_id.len();
            hf_id.entry(joined.clone()).or_insert(next);
            words = words
                .into_iter()
                .map(|(word, n)| {
                    let mut out: Vec<Vec<u8>> = Vec::with_capacity(word.len());
                    let mut i = 0;
                    while i < word.len() {
                        if i + 1 < word.len() && word[i] == best.0 && word[i + 1] == best.1 {
                            out.push(joined.clone());
                            i += 2;
                        } else {
                            out.push(word[i].clone());
                            i += 1;
                        }
                    }
                    (out, n)
                })
                .fold(FxHashMap::default(), |mut acc, (w, n)| {
                    *acc.entry(w).or_insert(0) += n;
                    acc
                });
            merges.push(best);
        }
        merges
    }

    /// Pseudo-random text over an alphabet with ASCII, control, Latin-1 and multi-byte characters,
    /// so ties between printable and non-printable bytes occur.
    fn random_mix(seed: u64, len: usize) -> String {
        random_text("aab ba  ab\n\u{0}\u{7f}\u{ad}é€😀x.,!'s", seed, len)
    }

    #[test]
    fn merges_match_a_recounting_reference_on_pseudo_random_corpora() {
        for seed in 1..=12u64 {
            let texts = [random_mix(seed, 300), random_mix(seed + 100, 200)];
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            for pattern in [Pattern::Gpt2, Pattern::Cl100k, Pattern::Whole] {
                for min_frequency in [0, 2, 3] {
                    let vocab_size = 256 + 2 + 60;
                    let vocab = train(
                        counts_of(pattern, &texts),
                        vocab_size,
                        min_frequency,
                        &specials(),
                    )
                    .expect("training succeeds");
                    let expected = reference_merges(pattern, &texts, 60, min_frequency);
                    assert_eq!(merged_bytes(&vocab), expected, "seed {seed} {pattern:?}");
                }
            }
        }
    }

    #[test]
    fn merges_match_the_reference_on_real_text() {
        let text = &SHAKESPEARE[..20_000];
        let vocab = train(
            counts_of(Pattern::Gpt2, &[text]),
            256 + 2 + 150,
            2,
            &specials(),
        )
        .expect("training succeeds");
        assert_eq!(
            merged_bytes(&vocab),
            reference_merges(Pattern::Gpt2, &[text], 150, 2)
        );
    }

    #[test]
    fn ties_go_to_printable_bytes_before_control_bytes() {
        // Both pairs occur once; byte order would merge (0, 0) first, HF merges (a, b) first.
        let counts = counts_of(Pattern::Whole, &["\u{0}\u{0}", "ab"]);
        let vocab = train(counts, 258, 0, &[]).expect("training succeeds");
        assert_eq!(
            merged_bytes(&vocab),
            vec![(b"a".to_vec(), b"b".to_vec()), (vec![0], vec![0])]
        );
    }

    #[test]
    fn thread_count_does_not_change_the_counts_or_merges() {
        let text = &SHAKESPEARE[..200_000];
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let mut counts = PieceCounts::new(Pattern::Gpt2);
                let mut segments = Vec::new();
                split_at_safe_cuts(Pattern::Gpt2, text, 10_000, &mut segments);
                counts.add_segments(&segments);
                let tally = counts.counts.clone();
                let vocab = train(counts, 600, 2, &specials()).expect("training succeeds");
                (tally, vocab)
            })
        };
        let (counts_1, vocab_1) = run(1);
        for threads in [2, 3, 5] {
            let (counts_n, vocab_n) = run(threads);
            assert_eq!(counts_n, counts_1);
            assert_eq!(vocab_n, vocab_1);
        }
    }

    #[test]
    fn segments_pretokenize_like_the_whole_text() {
        let text = format!("{}{}", &SHAKESPEARE[..30_000], random_mix(7, 3_000));
        let spaces = " ".repeat(5_000);
        for pattern in [Pattern::Gpt2, Pattern::Cl100k, Pattern::Whole] {
            for text in [text.as_str(), spaces.as_str()] {
                let mut segments = Vec::new();
                split_at_safe_cuts(pattern, text, 1_000, &mut segments);
                assert_eq!(segments.concat(), text);
                let split: Vec<&str> = segments.iter().flat_map(|s| pieces(pattern, s)).collect();
                assert_eq!(split, pieces(pattern, text));
            }
        }
    }

    #[test]
    fn streamed_counts_equal_whole_text_counts() {
        let text = format!("{}{}", &SHAKESPEARE[..20_000], random_mix(3, 5_000));
        for pattern in [Pattern::Gpt2, Pattern::Cl100k, Pattern::Whole] {
            let whole = counts_of(pattern, &[&text]);
            for chunk in [1, 7, 997, 100_000] {
                let mut streamed = PieceCounts::new(pattern);
                streamed
                    .add_stream(text.as_bytes(), Path::new("text"), chunk)
                    .expect("valid UTF-8");
                assert_eq!(streamed.counts, whole.counts, "{pattern:?} chunk {chunk}");
                assert_eq!(streamed.total_bytes, text.len() as u64);
            }
        }
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_offset() {
        let mut bytes = "é".repeat(1_000).into_bytes();
        bytes[1_501] = 0xFF;
        let mut counts = PieceCounts::new(Pattern::Gpt2);
        match counts.add_stream(&bytes[..], Path::new("bad.txt"), 300) {
            Err(TrainError::NotUtf8 { path, offset }) => {
                assert_eq!((path, offset), (PathBuf::from("bad.txt"), 1_500));
            }
            other => panic!("expected NotUtf8, got {other:?}"),
        }
        // A character cut off by the end of the file is an error too.
        let mut counts = PieceCounts::new(Pattern::Gpt2);
        let truncated = &"aé".as_bytes()[..2];
        assert!(matches!(
            counts.add_stream(truncated, Path::new("t"), 1),
            Err(TrainError::NotUtf8 { offset: 1, .. })
        ));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let mut counts = PieceCounts::new(Pattern::Gpt2);
        let err = counts
            .add_file(Path::new("/no/such/corpus.txt"))
            .expect_err("missing file");
        assert!(matches!(&err, TrainError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound));
        assert!(err.to_string().contains("/no/such/corpus.txt"));
    }

    #[test]
    fn vocab_size_counts_bytes_learned_tokens_and_specials() {
        let counts = counts_of(Pattern::Gpt2, &[&SHAKESPEARE[..50_000]]);
        let vocab = train(counts, 300, 2, &specials()).expect("training succeeds");
        assert_eq!(vocab.vocab_size(), 300);
        assert_eq!(vocab.tokens.len(), 298);
        assert_eq!(
            vocab.specials,
            vec![
                ("<|endoftext|>".to_owned(), 298),
                ("<|pad|>".to_owned(), 299)
            ]
        );
    }

    #[test]
    fn training_stops_when_no_pair_is_frequent_enough() {
        let counts = counts_of(Pattern::Gpt2, &["ab ab ab cd cd"]);
        let vocab = train(counts, 1_000, 3, &[]).expect("training succeeds");
        // (a, b) occurs 3 times, every other pair twice.
        assert_eq!(merged_bytes(&vocab), vec![(b"a".to_vec(), b"b".to_vec())]);
        assert_eq!(vocab.vocab_size(), 257);
    }

    #[test]
    fn bad_settings_and_empty_corpora_are_errors() {
        let counts = || counts_of(Pattern::Gpt2, &["hello"]);
        let too_small = train(counts(), 257, 2, &specials()).expect_err("too small");
        assert!(too_small.to_string().contains("at least 256"));
        let twice = vec!["<|x|>".to_owned(), "<|x|>".to_owned()];
        assert!(matches!(
            train(counts(), 1_000, 2, &twice),
            Err(TrainError::Config(_))
        ));
        let empty = counts_of(Pattern::Gpt2, &["", ""]);
        assert!(matches!(
            train(empty, 1_000, 2, &[]),
            Err(TrainError::EmptyCorpus)
        ));
    }
}
