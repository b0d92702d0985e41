//! Encoding text to token ids exactly as tiktoken does, and decoding ids back to bytes.
//!
//! tiktoken's rule for a pre-token piece: if the piece's bytes are a token, that token; otherwise
//! start from single bytes and repeatedly merge the adjacent pair whose concatenated bytes form
//! the token of lowest rank (the leftmost such pair on ties). An id is a rank, so the pair table
//! maps (left id, right id) to the id of their concatenation, for every way of splitting every
//! token into two tokens: merges are found by bytes, not by the merge list, as in tiktoken.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::piece_table::PieceTable;
use crate::pretokenize::{for_each_span, split_at_safe_cuts, Pattern};
use crate::vocab::{pair_key, PairKey, Vocab};

/// Pieces up to this many bytes merge with a quadratic scan (fast for short pieces); longer ones
/// with a heap over a linked list, O(n log n).
const SHORT_PIECE: usize = 128;
const NO_RANK: u32 = u32::MAX;

/// Text is cut into chunks of about this many bytes to be encoded in parallel.
pub const PARALLEL_CHUNK: usize = 1 << 20;

/// `texts` cut into about `count` runs of consecutive texts of similar byte size, each with the
/// index of its first text; no run is empty.
fn batch_runs<T: AsRef<str>>(texts: &[T], count: usize) -> Vec<(usize, &[T])> {
    let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
    let run_bytes = total / count.max(1) + 1;
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, text) in texts.iter().enumerate() {
        bytes += text.as_ref().len();
        if bytes >= run_bytes || i + 1 == texts.len() {
            runs.push((start, &texts[start..=i]));
            (start, bytes) = (i + 1, 0);
        }
    }
    runs
}

/// A batch's texts cut for encoding: whole texts and parts of large ones, in order.
struct BatchParts<'a> {
    parts: Vec<&'a str>,
    /// The index of each part's text.
    text_of: Vec<usize>,
}

/// Texts shorter than twice this are never cut: a part pays a little for its own start.
const MIN_PART: usize = 16 << 10;

/// Buffers for the ids of large texts, kept from one batch to the next and reused once consumed.
/// A batch of large texts then touches the same memory again and again: freeing and mapping
/// megabytes per text made the allocator hand the Python lists fresh pages as well, whose page
/// faults cost more than encoding on a few cores. Small texts' buffers come from the
/// allocator's own free lists, which do this already.
#[derive(Default)]
struct IdBuffers(Mutex<Vec<Vec<u32>>>);

/// Texts of at least this many bytes get their ids' buffer from `IdBuffers`.
const REUSED_BUFFER_TEXT: usize = 64 << 10;
/// `IdBuffers` keeps at most this many ids' worth of buffers (32 MiB).
const KEPT_BUFFER_IDS: usize = 8 << 20;

impl IdBuffers {
    /// A buffer for the ids of a text of `len` bytes, empty.
    fn take(&self, len: usize) -> Vec<u32> {
        if len >= REUSED_BUFFER_TEXT {
            if let Some(mut kept) = self.0.lock().ok().and_then(|mut kept| kept.pop()) {
                kept.clear();
                return kept;
            }
        }
        Vec::with_capacity(len / 4 + 1)
    }

    /// Keeps the large ones of `buffers`, as far as the bound allows; frees the rest.
    fn give_back(&self, buffers: Vec<Vec<u32>>) {
        let mut large = buffers
            .into_iter()
            .filter(|b| b.capacity() >= REUSED_BUFFER_TEXT / 4)
            .peekable();
        if large.peek().is_none() {
            return;
        }
        if let Ok(mut kept) = self.0.lock() {
            let mut ids: usize = kept.iter().map(Vec::capacity).sum();
            for buffer in large {
                ids += buffer.capacity();
                if ids > KEPT_BUFFER_IDS {
                    break;
                }
                kept.push(buffer);
            }
        }
    }
}

/// Hands the ids of encoded runs of parts on text by text: a whole text as its one part, a cut
/// text once all its parts have arrived (runs arrive in any order), as the parts in order.
struct Joiner<'p, 'a> {
    parts: &'p BatchParts<'a>,
    /// The ids of the parts of cut texts that have arrived, by part index.
    arrived: Vec<Option<Vec<u32>>>,
    /// Parts still to come, by text (for cut texts).
    missing: FxHashMap<usize, usize>,
}

impl<'p, 'a> Joiner<'p, 'a> {
    fn new(parts: &'p BatchParts<'a>) -> Joiner<'p, 'a> {
        let mut missing = FxHashMap::default();
        for &text in &parts.text_of {
            *missing.entry(text).or_insert(0) += 1;
        }
        missing.retain(|_, count| *count > 1);
        let arrived = if missing.is_empty() {
            Vec::new()
        } else {
            vec![None; parts.parts.len()]
        };
        Joiner {
            parts,
            arrived,
            missing,
        }
    }

    /// Takes the ids of the run of parts from `first`; passes the texts they complete to
    /// `consume` and then gives their buffers back to `buffers`.
    fn add(
        &mut self,
        first: usize,
        ids: Vec<Vec<u32>>,
        buffers: &IdBuffers,
        consume: &mut impl FnMut(&Completed),
    ) {
        let text_of = &self.parts.text_of;
        let mut completed = Completed {
            texts: Vec::with_capacity(ids.len()),
            buffers: Vec::with_capacity(ids.len()),
        };
        for (part, part_ids) in (first..).zip(ids) {
            let text = text_of[part];
            let from = completed.buffers.len();
            let Some(count) = self.missing.get_mut(&text) else {
                completed.buffers.push(part_ids);
                completed.texts.push((text, from..from + 1));
                continue;
            };
            self.arrived[part] = Some(part_ids);
            *count -= 1;
            if *count == 0 {
                self.missing.remove(&text);
                let start = text_of.partition_point(|&t| t < text);
                let end = text_of.partition_point(|&t| t <= text);
                let arrived = self.arrived[start..end].iter_mut().flat_map(Option::take);
                completed.buffers.extend(arrived);
                completed.texts.push((text, from..completed.buffers.len()));
            }
        }
        if !completed.texts.is_empty() {
            consume(&completed);
        }
        buffers.give_back(completed.buffers);
    }
}

/// The texts a run of a batch completed: each one's index and its ids as one or more slices
/// (the parts of a cut text, in order), valid only during the call they are handed to.
pub struct Completed {
    texts: Vec<(usize, std::ops::Range<usize>)>,
    buffers: Vec<Vec<u32>>,
}

impl Completed {
    /// Each completed text's index in the batch and the slices whose concatenation are its ids.
    pub fn texts(&self) -> impl Iterator<Item = (usize, &[Vec<u32>])> {
        self.texts
            .iter()
            .map(|(text, range)| (*text, &self.buffers[range.clone()]))
    }
}

/// The integer type ids are written in: u32, or u16 for vocabularies of at most 65536 ids
/// (half the memory, and numpy's uint16 arrays take the buffer as it is).
pub trait Id: Copy + Send + Sync {
    /// `id` in this type; the caller makes sure it fits.
    fn from_id(id: u32) -> Self;
}

impl Id for u32 {
    #[inline(always)]
    fn from_id(id: u32) -> u32 {
        id
    }
}

impl Id for u16 {
    #[inline(always)]
    fn from_id(id: u32) -> u16 {
        id as u16
    }
}

/// Encodes text to ids and decodes ids to bytes for one vocabulary.
pub struct Encoder {
    pattern: Pattern,
    /// Regular token bytes -> id.
    token_ids: FxHashMap<Vec<u8>, u32>,
    /// The tokens of 2 to `PACKED_MAX` bytes, keyed by `pack(bytes)`: hashing and comparing one
    /// integer is much cheaper than a byte string, and most pieces are short. Each encoding
    /// state starts from a copy and adds the pieces it merges.
    token_pieces: PieceTable,
    /// `pair_key(left, right)` -> id of the token their bytes concatenate to.
    pairs: FxHashMap<PairKey, u32>,
    /// Id of each single byte.
    byte_ids: [u32; 256],
    /// `byte_pairs[a << 8 | b]`: the id of the two-byte token `[a, b]`, or NO_RANK. Every merge
    /// starts from single bytes, so its first ranks come from this 256 KiB table instead of
    /// the large pair map.
    byte_pairs: Box<[u32]>,
    /// Bytes of every id (regular and special): `bytes[offsets[id]..offsets[id + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    specials: Vec<(String, u32)>,
    /// States of finished calls, for the next ones.
    states: Mutex<Vec<EncodeState>>,
    /// Buffers for `encode_batch_each`'s ids of large texts.
    buffers: IdBuffers,
}

/// Reusable buffers of the merge loops, so that encoding allocates nothing per piece.
#[derive(Default)]
struct Scratch {
    ids: Vec<u32>,
    ranks: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    heap: BinaryHeap<Reverse<u64>>,
}

/// A piece of a batch waiting for its ids: its byte range and, for a piece of at most
/// `PACKED_MAX` bytes, its packed key and that key's table hash (0 for the others).
#[derive(Clone, Copy)]
struct Pending {
    start: usize,
    end: usize,
    key: u128,
    hash: u64,
}

/// Pieces are looked up this many at a time, their table slots prefetched as they are found.
const BATCH: usize = 64;

/// What encoding remembers between pieces, texts and calls: the ids of every short piece met
/// (tokens and merged pieces, in one table), those of the long pieces, and the buffers. The
/// encoder keeps the states of finished calls, so a call starts with the caches of earlier
/// ones (warm calls and texts encoded one after the other merge each new piece once).
struct EncodeState {
    pieces: PieceTable,
    /// Long piece -> range of its ids in `long_ids`.
    long: FxHashMap<Box<[u8]>, (usize, usize)>,
    long_ids: Vec<u32>,
    /// Bytes of the keys of `long`.
    long_bytes: usize,
    batch: Vec<Pending>,
    merged: Vec<u32>,
    scratch: Scratch,
}

/// At most this many states are kept: as many as threads encode at once, up to this.
const KEPT_STATES: usize = 16;
/// A kept state goes back to the vocabulary's own pieces once it holds this many merged pieces
/// (a table of 32 MB), and forgets its long pieces past `LONG_MAX` bytes or ids, so that kept
/// states stay bounded.
const MERGED_PIECES_MAX: usize = 1 << 19;
const LONG_MAX: usize = 1 << 22;
/// Encoding reserves room for one new piece per this many bytes of text.
const NEW_PIECE_BYTES: usize = 256;

impl EncodeState {
    fn new(pieces: PieceTable) -> EncodeState {
        EncodeState {
            pieces,
            long: FxHashMap::default(),
            long_ids: Vec::new(),
            long_bytes: 0,
            batch: Vec::with_capacity(BATCH),
            merged: Vec::new(),
            scratch: Scratch::default(),
        }
    }
}

/// An error for an id that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownId {
    pub id: u32,
    pub vocab_size: usize,
}

impl std::fmt::Display for UnknownId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown token id {} (ids run from 0 to {})",
            self.id,
            self.vocab_size.saturating_sub(1)
        )
    }
}

impl std::error::Error for UnknownId {}

impl Encoder {
    /// Builds the lookup tables for `vocab`. A token whose bytes repeat an earlier token's is
    /// never produced by encoding (tiktoken keeps one rank per byte string: the lowest).
    pub fn new(vocab: &Vocab) -> Encoder {
        let mut token_ids = FxHashMap::default();
        token_ids.reserve(vocab.tokens.len());
        for (id, token) in vocab.tokens.iter().enumerate() {
            token_ids.entry(token.clone()).or_insert(id as u32);
        }
        let mut pairs = FxHashMap::default();
        for (bytes, &id) in &token_ids {
            for split in 1..bytes.len() {
                let (left, right) = bytes.split_at(split);
                if let (Some(&l), Some(&r)) = (token_ids.get(left), token_ids.get(right)) {
                    pairs.insert(pair_key(l, r), id);
                }
            }
        }
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = token_ids.get(&[b as u8][..]).copied().unwrap_or(b as u32);
        }
        // Single bytes too, so that every piece of up to PACKED_MAX bytes takes the same path.
        let short: Vec<(u128, u32)> = token_ids
            .iter()
            .filter(|(bytes, _)| bytes.len() > 1)
            .filter_map(|(bytes, &id)| pack(bytes).map(|key| (key, id)))
            .chain((0..=255u8).map(|b| (pack(&[b]).expect("one byte"), byte_ids[b as usize])))
            .collect();
        let mut token_pieces = PieceTable::with_room(short.len());
        for (key, id) in short {
            token_pieces.insert(key, &[id]);
        }
        let mut byte_pairs = vec![NO_RANK; 1 << 16].into_boxed_slice();
        for (pair, slot) in byte_pairs.iter_mut().enumerate() {
            let bytes = [(pair >> 8) as u8, pair as u8];
            if let Some(&id) = token_ids.get(&bytes[..]) {
                *slot = id;
            }
        }
        let size = vocab.vocab_size();
        let mut by_id: Vec<&[u8]> = vec![&[]; size];
        for (id, token) in vocab.tokens.iter().enumerate() {
            by_id[id] = token;
        }
        for (text, id) in &vocab.specials {
            if let Some(slot) = by_id.get_mut(*id as usize) {
                *slot = text.as_bytes();
            }
        }
        let mut bytes = Vec::with_capacity(by_id.iter().map(|t| t.len()).sum());
        let mut offsets = Vec::with_capacity(size + 1);
        offsets.push(0);
        for token in by_id {
            bytes.extend_from_slice(token);
            offsets.push(bytes.len());
        }
        Encoder {
            pattern: vocab.pattern,
            token_ids,
            token_pieces,
            pairs,
            byte_ids,
            byte_pairs,
            bytes,
            offsets,
            specials: vocab.specials.clone(),
            states: Mutex::new(Vec::new()),
            buffers: IdBuffers::default(),
        }
    }

    /// The pre-tokenization pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Number of ids (regular and special).
    pub fn vocab_size(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Special token strings and their ids.
    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// Encodes `text` with special token strings treated as plain text.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(id_room(text.len()));
        self.with_state(|state| self.encode_ordinary_into(text, &mut out, state));
        out
    }

    /// Runs `f` with a kept state (a new one when none is free), and keeps it after.
    fn with_state<R>(&self, f: impl FnOnce(&mut EncodeState) -> R) -> R {
        let kept = self.states.lock().ok().and_then(|mut states| states.pop());
        let mut state = kept.unwrap_or_else(|| EncodeState::new(self.token_pieces.clone()));
        if state.pieces.len() > self.token_pieces.len() + MERGED_PIECES_MAX
            || state.pieces.arena_len() > LONG_MAX
        {
            state.pieces = self.token_pieces.clone();
        }
        if state.long_bytes > LONG_MAX || state.long_ids.len() > LONG_MAX {
            state.long.clear();
            state.long_ids.clear();
            state.long_bytes = 0;
        }
        let result = f(&mut state);
        if let Ok(mut states) = self.states.lock() {
            if states.len() < KEPT_STATES {
                states.push(state);
            }
        }
        result
    }

    /// Appends the ids of `text` (special token strings as plain text) to `out`.
    fn encode_ordinary_into<T: Id>(&self, text: &str, out: &mut Vec<T>, state: &mut EncodeState) {
        let bytes = text.as_bytes();
        // Room for the new pieces a long text brings: 10 MB of unseen English at a 32k
        // vocabulary brought ~44k.
        state
            .pieces
            .reserve((text.len() / NEW_PIECE_BYTES).min(MERGED_PIECES_MAX));
        state.batch.clear();
        for_each_span(self.pattern, text, |start, end| {
            let key = pack_at(bytes, start, end).unwrap_or(0);
            let hash = PieceTable::hash(key);
            state.pieces.prefetch(hash);
            state.batch.push(Pending {
                start,
                end,
                key,
                hash,
            });
            if state.batch.len() == BATCH {
                self.encode_batch_of_pieces(bytes, out, state);
            }
        });
        self.encode_batch_of_pieces(bytes, out, state);
    }

    /// Appends the ids of the pieces of `state.batch` (of `text`) to `out`, and empties it.
    #[inline(always)]
    fn encode_batch_of_pieces<T: Id>(
        &self,
        text: &[u8],
        out: &mut Vec<T>,
        state: &mut EncodeState,
    ) {
        let EncodeState {
            pieces,
            long,
            long_ids,
            long_bytes,
            batch,
            merged,
            scratch,
        } = state;
        let extend = |out: &mut Vec<T>, ids: &[u32]| out.extend(ids.iter().map(|&i| T::from_id(i)));
        for &Pending {
            start,
            end,
            key,
            hash,
        } in batch.iter()
        {
            if key != 0 {
                if let Some(ids) = pieces.get_hashed(hash, key) {
                    if let [id] = ids {
                        out.push(T::from_id(*id));
                    } else {
                        extend(out, ids);
                    }
                } else {
                    merged.clear();
                    self.merge_short(&text[start..end], merged, scratch);
                    extend(out, merged);
                    pieces.insert(key, merged);
                }
                continue;
            }
            let piece = &text[start..end];
            if let Some(&(from, to)) = long.get(piece) {
                extend(out, &long_ids[from..to]);
            } else {
                let from = long_ids.len();
                self.encode_piece(piece, long_ids, scratch);
                extend(out, &long_ids[from..]);
                long.insert(piece.into(), (from, long_ids.len()));
                *long_bytes += piece.len();
            }
        }
        batch.clear();
    }

    /// Encodes `text`; occurrences of the special tokens whose ids are in `allowed` become those
    /// ids (leftmost first, the longest at a given position), the rest of the text is ordinary.
    /// Long texts without allowed specials are encoded in parallel on the current rayon pool.
    pub fn encode_with_specials(&self, text: &str, allowed: &[u32]) -> Vec<u32> {
        if text.len() >= 2 * PARALLEL_CHUNK
            && !self.specials.iter().any(|(_, id)| allowed.contains(id))
        {
            return self.encode_ordinary_parallel(text);
        }
        self.with_state(|state| self.encode_with_specials_using(text, allowed, state))
    }

    /// `encode_with_specials` on this thread, with caches kept in `state`.
    fn encode_with_specials_using(
        &self,
        text: &str,
        allowed: &[u32],
        state: &mut EncodeState,
    ) -> Vec<u32> {
        let mut out = Vec::with_capacity(id_room(text.len()));
        self.encode_with_specials_into(text, allowed, &mut out, state);
        out
    }

    /// `encode_with_specials` on this thread, appending to `out`.
    fn encode_with_specials_into(
        &self,
        text: &str,
        allowed: &[u32],
        out: &mut Vec<u32>,
        state: &mut EncodeState,
    ) {
        let specials: Vec<(&str, u32)> = self
            .specials
            .iter()
            .filter(|(s, id)| allowed.contains(id) && !s.is_empty())
            .map(|(s, id)| (s.as_str(), *id))
            .collect();
        if specials.is_empty() {
            self.encode_ordinary_into(text, out, state);
            return;
        }
        let finders: Vec<memchr::memmem::Finder> = specials
            .iter()
            .map(|(s, _)| memchr::memmem::Finder::new(s.as_bytes()))
            .collect();
        // Next occurrence of each special at or after `start` (None: no more).
        let mut next: Vec<Option<usize>> =
            finders.iter().map(|f| f.find(text.as_bytes())).collect();
        let mut start = 0;
        loop {
            let mut best: Option<(usize, usize)> = None; // (position, special index)
            for (k, finder) in finders.iter().enumerate() {
                if matches!(next[k], Some(p) if p < start) {
                    next[k] = finder.find(&text.as_bytes()[start..]).map(|p| p + start);
                }
                if let Some(p) = next[k] {
                    let longer = |(bp, bk): (usize, usize)| {
                        p < bp || (p == bp && specials[k].0.len() > specials[bk].0.len())
                    };
                    if best.is_none_or(longer) {
                        best = Some((p, k));
                    }
                }
            }
            let Some((pos, k)) = best else { break };
            self.encode_ordinary_into(&text[start..pos], out, state);
            out.push(specials[k].1);
            start = pos + specials[k].0.len();
        }
        self.encode_ordinary_into(&text[start..], out, state);
    }

    /// The ids of each chunk (special strings as plain text), in parallel on the current
    /// rayon pool. The chunks are dealt out in runs of similar byte size, a few per thread, and
    /// each run is encoded with one `EncodeState`, so the caches stay warm from one to the next.
    /// With u16 ids, the vocabulary must have at most 65536 ids.
    pub fn encode_chunks<T: Id>(&self, chunks: &[&str]) -> Vec<Vec<T>> {
        let runs = batch_runs(chunks, 4 * rayon::current_num_threads());
        let encoded: Vec<Vec<Vec<T>>> = runs
            .par_iter()
            .map(|&(_, run)| {
                self.with_state(|state| {
                    let ids = |chunk: &&str| {
                        let mut out = Vec::with_capacity(id_room(chunk.len()));
                        self.encode_ordinary_into(chunk, &mut out, state);
                        out
                    };
                    run.iter().map(ids).collect()
                })
            })
            .collect();
        encoded.into_iter().flatten().collect()
    }

    /// The ids of `texts` (special strings as plain text) one after the other, and where each
    /// text's ids start (one offset per text, then the total), encoded in parallel on the
    /// current rayon pool. A text of at least twice `PARALLEL_CHUNK` bytes is cut at safe cuts
    /// first, so a few large texts use every thread; each text's ids are `encode_ordinary`'s.
    pub fn encode_texts<T: Id>(&self, texts: &[impl AsRef<str>]) -> (Vec<T>, Vec<usize>) {
        let mut parts: Vec<&str> = Vec::with_capacity(texts.len());
        let mut owner = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let text = text.as_ref();
            let before = parts.len();
            if text.len() >= 2 * PARALLEL_CHUNK {
                split_at_safe_cuts(self.pattern, text, PARALLEL_CHUNK, &mut parts);
            } else {
                parts.push(text);
            }
            owner.extend(std::iter::repeat_n(index, parts.len() - before));
        }
        let encoded = self.encode_chunks::<T>(&parts);
        let mut ids = Vec::with_capacity(encoded.iter().map(Vec::len).sum());
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        let mut next = encoded.iter().zip(&owner).peekable();
        for index in 0..texts.len() {
            offsets.push(ids.len());
            while let Some((part, _)) = next.next_if(|&(_, &o)| o == index) {
                ids.extend_from_slice(part);
            }
        }
        offsets.push(ids.len());
        (ids, offsets)
    }

    /// `encode_with_specials` of each text on `threads` threads, handing the texts each run
    /// completes to `consume` on the calling thread. Texts arrive in no particular order.
    ///
    /// This lets the caller turn ids into its own objects (Python lists, which only one thread
    /// can build) while encoding goes on: the calling thread is one of the `threads` and,
    /// between the runs it encodes itself, consumes the runs the other threads have finished.
    /// With one thread everything happens in order on the calling thread. A text much larger
    /// than a run is encoded in parts cut at safe pre-tokenization cuts, so a few large texts
    /// keep every thread busy; its ids are those of the whole text. The ids' buffers are reused
    /// once consumed, so the caller must copy what it keeps.
    pub fn encode_batch_each(
        &self,
        threads: usize,
        texts: &[impl AsRef<str> + Sync],
        allowed: &[u32],
        mut consume: impl FnMut(&Completed),
    ) {
        // Many small runs: whatever the others finish while the calling thread encodes its
        // last run is what remains to consume after encoding ends. One thread cuts nothing but
        // still consumes run by run, so its buffers are reused too.
        let run_count = 16 * threads.max(1);
        let parts = self.batch_parts(texts, allowed, if threads <= 1 { 1 } else { run_count });
        let runs = batch_runs(&parts.parts, run_count);
        let next_run = AtomicUsize::new(0);
        let take = || runs.get(next_run.fetch_add(1, Ordering::Relaxed));
        let buffers = &self.buffers;
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut joined = Joiner::new(&parts);
        let mut consume_run = |first: usize, ids: Vec<Vec<u32>>| {
            joined.add(first, ids, buffers, &mut consume);
        };
        // Plain threads, not a rayon pool: a pool's idle workers spin for work, taking time
        // from the threads that have it on a machine with few cores.
        std::thread::scope(|scope| {
            for _ in 1..threads {
                let (sender, take) = (sender.clone(), &take);
                scope.spawn(move || {
                    self.with_state(|state| {
                        while let Some(&(first, run)) = take() {
                            let ids = self.encode_run(run, allowed, buffers, state);
                            if sender.send((first, ids)).is_err() {
                                break;
                            }
                        }
                    })
                });
            }
            drop(sender);
            self.with_state(|state| loop {
                while let Ok((first, ids)) = receiver.try_recv() {
                    consume_run(first, ids);
                }
                let Some(&(first, run)) = take() else { break };
                consume_run(first, self.encode_run(run, allowed, buffers, state));
            });
            for (first, ids) in receiver {
                consume_run(first, ids);
            }
        });
    }

    /// The texts of a batch to be dealt out in `run_count` runs, each text whole or, when it
    /// is over twice a run's share of the bytes and holds none of the allowed specials, cut at
    /// safe cuts into parts of about that share.
    fn batch_parts<'a>(
        &self,
        texts: &'a [impl AsRef<str>],
        allowed: &[u32],
        run_count: usize,
    ) -> BatchParts<'a> {
        let total: usize = texts.iter().map(|t| t.as_ref().len()).sum();
        let share = (total / run_count).max(MIN_PART);
        let finders: Vec<memchr::memmem::Finder> = self
            .specials
            .iter()
            .filter(|(s, id)| allowed.contains(id) && !s.is_empty())
            .map(|(s, _)| memchr::memmem::Finder::new(s.as_bytes()))
            .collect();
        let mut parts = BatchParts {
            parts: Vec::with_capacity(texts.len()),
            text_of: Vec::with_capacity(texts.len()),
        };
        let mut cut = Vec::new();
        for (index, text) in texts.iter().enumerate() {
            let text = text.as_ref();
            let splittable = run_count > 1
                && text.len() > 2 * share
                && !finders.iter().any(|f| f.find(text.as_bytes()).is_some());
            cut.clear();
            if splittable {
                split_at_safe_cuts(self.pattern, text, share, &mut cut);
            } else {
                cut.push(text);
            }
            parts.parts.extend_from_slice(&cut);
            parts.text_of.extend(std::iter::repeat_n(index, cut.len()));
        }
        parts
    }

    fn encode_run(
        &self,
        run: &[impl AsRef<str>],
        allowed: &[u32],
        buffers: &IdBuffers,
        state: &mut EncodeState,
    ) -> Vec<Vec<u32>> {
        run.iter()
            .map(|text| {
                let mut ids = buffers.take(text.as_ref().len());
                self.encode_with_specials_into(text.as_ref(), allowed, &mut ids, state);
                ids
            })
            .collect()
    }

    /// Encodes `text` (special strings as plain text) on the current rayon pool, in chunks cut
    /// where pre-tokenization allows, so the ids equal `encode_ordinary(text)`. With u16 ids,
    /// the vocabulary must have at most 65536 ids.
    pub fn encode_ordinary_parallel<T: Id>(&self, text: &str) -> Vec<T> {
        let threads = rayon::current_num_threads();
        // A few chunks per thread balance the load; larger chunks keep the piece caches warm.
        let target = PARALLEL_CHUNK.max(text.len() / (4 * threads));
        let mut chunks = Vec::new();
        if threads > 1 {
            split_at_safe_cuts(self.pattern, text, target, &mut chunks);
        }
        if chunks.len() <= 1 {
            // Written straight into the result.
            let mut out = Vec::with_capacity(id_room(text.len()));
            self.with_state(|state| self.encode_ordinary_into(text, &mut out, state));
            return out;
        }
        self.encode_chunks(&chunks).concat()
    }

    /// Appends the ids of one pre-token piece.
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        if let Some(&id) = self.token_ids.get(piece) {
            out.push(id);
        } else if piece.len() <= SHORT_PIECE {
            self.merge_short(piece, out, scratch);
        } else {
            self.merge_long(piece, out, scratch);
        }
    }

    #[inline(always)]
    fn rank(&self, left: u32, right: u32) -> u32 {
        self.pairs
            .get(&pair_key(left, right))
            .copied()
            .unwrap_or(NO_RANK)
    }

    /// `rank(byte_ids[a], byte_ids[b])`: the pair of two single bytes merges into the token of
    /// their two bytes, if there is one.
    #[inline(always)]
    fn byte_pair_rank(&self, a: u8, b: u8) -> u32 {
        self.byte_pairs[(a as usize) << 8 | b as usize]
    }

    /// tiktoken's loop: find the lowest-ranked adjacent pair, merge it, update its neighbours.
    fn merge_short(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let ids = &mut scratch.ids;
        let ranks = &mut scratch.ranks;
        ids.clear();
        ids.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
        ranks.clear();
        ranks.extend(piece.windows(2).map(|w| self.byte_pair_rank(w[0], w[1])));
        loop {
            let mut best = NO_RANK;
            let mut at = 0;
            for (i, &r) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == NO_RANK {
                break;
            }
            ids[at] = best;
            ids.remove(at + 1);
            ranks.remove(at);
            if at > 0 {
                ranks[at - 1] = self.rank(ids[at - 1], ids[at]);
            }
            if at < ranks.len() {
                ranks[at] = self.rank(ids[at], ids[at + 1]);
            }
        }
        out.extend_from_slice(ids);
    }

    /// The same merges with a min-heap of (rank, position) over a doubly linked list of parts.
    /// A part keeps the index of its first byte, so heap order on ties is leftmost-first as in
    /// tiktoken. Stale heap entries are recognised because a pair's rank changes whenever one
    /// of its parts does (the concatenated bytes grow).
    fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let n = piece.len();
        let Scratch {
            ids,
            next,
            prev,
            heap,
            ..
        } = scratch;
        ids.clear();
        ids.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
        next.clear();
        next.extend(1..=n as u32);
        prev.clear();
        prev.extend((0..n as u32).map(|i| i.wrapping_sub(1)));
        heap.clear();
        let entry = |rank: u32, pos: usize| Reverse(((rank as u64) << 32) | pos as u64);
        for i in 0..n - 1 {
            let r = self.byte_pair_rank(piece[i], piece[i + 1]);
            if r != NO_RANK {
                heap.push(entry(r, i));
            }
        }
        let end = n as u32;
        while let Some(Reverse(key)) = heap.pop() {
            let (rank, pos) = ((key >> 32) as u32, (key & 0xFFFF_FFFF) as usize);
            let right = next[pos];
            // Dead parts have an id of NO_RANK; a changed pair has another rank.
            if ids[pos] == NO_RANK
                || right == end
                || self.rank(ids[pos], ids[right as usize]) != rank
            {
                continue;
            }
            let right = right as usize;
            ids[pos] = rank;
            ids[right] = NO_RANK;
            let after = next[right];
            next[pos] = after;
            if after != end {
                prev[after as usize] = pos as u32;
                let r = self.rank(rank, ids[after as usize]);
                if r != NO_RANK {
                    heap.push(entry(r, pos));
                }
            }
            let before = prev[pos];
            if before != u32::MAX {
                let r = self.rank(ids[before as usize], rank);
                if r != NO_RANK {
                    heap.push(entry(r, before as usize));
                }
            }
        }
        let mut i = 0;
        while i != n {
            out.push(ids[i]);
            i = next[i] as usize;
        }
    }

    /// The bytes of token `id`.
    pub fn id_to_bytes(&self, id: u32) -> Result<&[u8], UnknownId> {
        let i = id as usize;
        if i + 1 >= self.offsets.len() {
            return Err(UnknownId {
                id,
                vocab_size: self.vocab_size(),
            });
        }
        Ok(&self.bytes[self.offsets[i]..self.offsets[i + 1]])
    }

    /// The concatenated bytes of `ids`.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, UnknownId> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.id_to_bytes(id)?);
        }
        Ok(out)
    }
}

/// Room for the ids of a text of `bytes` bytes, reserved up front: at least as many as texts
/// have at 2 bytes a token (English at a 32k vocabulary has ~4), so that the ids are hardly
/// ever moved while they grow. Reserved pages that no id reaches are never touched, so they
/// cost address space, not memory.
fn id_room(bytes: usize) -> usize {
    bytes / 2 + 16
}

/// Byte strings up to this long are packed into one integer key.
pub(crate) const PACKED_MAX: usize = 15;

/// `bytes` (at most `PACKED_MAX` of them) and their length in one integer; distinct strings
/// give distinct keys. Hashing and comparing an integer is much cheaper than a string, and most
/// pieces are short (the trainer counts pieces under the same keys).
#[inline(always)]
pub(crate) fn pack(bytes: &[u8]) -> Option<u128> {
    if bytes.len() > PACKED_MAX {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    buf[PACKED_MAX] = bytes.len() as u8;
    Some(u128::from_le_bytes(buf))
}

/// Masks keeping the `n` low bytes of a u128, for n < 16.
static LOW_BYTES: [u128; PACKED_MAX + 1] = {
    let mut masks = [0u128; PACKED_MAX + 1];
    let mut n = 1;
    while n <= PACKED_MAX {
        masks[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    masks
};

/// `pack(&text[start..end])`, reading the bytes with one unaligned load where the text is
/// long enough.
#[inline(always)]
fn pack_at(text: &[u8], start: usize, end: usize) -> Option<u128> {
    let len = end - start;
    if len > PACKED_MAX {
        return None;
    }
    match text.get(start..start + 16) {
        Some(window) => {
            let mut buf = [0u8; 16];
            buf.copy_from_slice(window);
            Some(u128::from_le_bytes(buf) & LOW_BYTES[len] | (len as u128) << (8 * PACKED_MAX))
        }
        None => pack(&text[start..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_text::SHAKESPEARE;
    use crate::train::{train, PieceCounts};

    fn trained(pattern: Pattern, vocab_size: usize, specials: &[&str]) -> Encoder {
        let mut counts = PieceCounts::new(pattern);
        counts.add_texts(&[&SHAKESPEARE[..200_000]]);
        let specials: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        Encoder::new(&train(counts, vocab_size, 2, &specials).expect("training a test vocab"))
    }

    #[test]
    fn heap_merge_equals_the_quadratic_merge_on_every_piece() {
        let encoder = trained(Pattern::Gpt2, 800, &[]);
        let mut scratch = Scratch::default();
        let long_pieces = [
            "abracadabra".repeat(40),
            "e".repeat(300),
            "thee ".repeat(60),
        ];
        let pieces = crate::pretokenize::pieces(Pattern::Gpt2, &SHAKESPEARE[..30_000]);
        for piece in pieces
            .into_iter()
            .chain(long_pieces.iter().map(String::as_str))
        {
            let (mut short, mut long) = (Vec::new(), Vec::new());
            encoder.merge_short(piece.as_bytes(), &mut short, &mut scratch);
            encoder.merge_long(piece.as_bytes(), &mut long, &mut scratch);
            assert_eq!(short, long, "{piece:?}");
        }
    }

    #[test]
    fn encode_texts_gives_each_texts_own_ids_one_after_the_other() {
        let encoder = trained(Pattern::Gpt2, 700, &[]);
        // Small texts, an empty one, and one large enough to be cut at safe cuts.
        let large = SHAKESPEARE.repeat(1 + 2 * PARALLEL_CHUNK / SHAKESPEARE.len());
        let texts = [
            &SHAKESPEARE[..500],
            "",
            large.as_str(),
            " Grüße 😀",
            &SHAKESPEARE[9..99],
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a test pool");
        let (ids, offsets) = pool.install(|| encoder.encode_texts::<u16>(&texts));
        assert_eq!(offsets.len(), texts.len() + 1);
        assert_eq!((offsets[0], offsets[texts.len()]), (0, ids.len()));
        for (i, text) in texts.iter().enumerate() {
            let own: Vec<u16> = encoder
                .encode_ordinary(text)
                .iter()
                .map(|&id| id as u16)
                .collect();
            assert_eq!(ids[offsets[i]..offsets[i + 1]], own[..], "text {i}");
        }
    }

    #[test]
    fn decoding_gives_back_the_text() {
        let encoder = trained(Pattern::Cl100k, 600, &["<|endoftext|>"]);
        let text = "Grüße 😀, ſtrange 'S text\r\n\t 123456 — done";
        let ids = encoder.encode_ordinary(text);
        assert_eq!(encoder.decode_bytes(&ids), Ok(text.as_bytes().to_vec()));
        let unknown = encoder.vocab_size() as u32;
        assert_eq!(
            encoder.decode_bytes(&[1, unknown]),
            Err(UnknownId {
                id: unknown,
                vocab_size: encoder.vocab_size()
            })
        );
    }

    #[test]
    fn parallel_encoding_equals_sequential_encoding() {
        let encoder = trained(Pattern::Gpt2, 600, &[]);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a test pool");
        let text = SHAKESPEARE.repeat(3);
        let sequential = encoder.encode_ordinary(&text);
        let parallel: Vec<u32> = pool.install(|| encoder.encode_ordinary_parallel(&text));
        assert_eq!(parallel, sequential);
        // Written as u16 from the start: the same ids.
        let narrow: Vec<u16> = pool.install(|| encoder.encode_ordinary_parallel(&text));
        assert!(narrow
            .iter()
            .map(|&i| i as u32)
            .eq(sequential.iter().copied()));
        let one: Vec<u16> = encoder.encode_ordinary_parallel(&SHAKESPEARE[..100_000]);
        let expected = encoder.encode_ordinary(&SHAKESPEARE[..100_000]);
        assert!(one.iter().map(|&i| i as u32).eq(expected));
        let mut chunks = Vec::new();
        split_at_safe_cuts(Pattern::Gpt2, &text, 10_000, &mut chunks);
        assert!(chunks.len() > 100);
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn batch_runs_hand_every_text_over_once_whatever_the_thread_count() {
        let encoder = trained(Pattern::Gpt2, 600, &["<|endoftext|>"]);
        let eot = encoder.specials()[0].1;
        let texts: Vec<String> = SHAKESPEARE
            .lines()
            .take(4000)
            .enumerate()
            .map(|(i, line)| {
                if i % 7 == 0 {
                    format!("{line}<|endoftext|>")
                } else {
                    line.to_string()
                }
            })
            .collect();
        let expected: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| encoder.encode_with_specials(t, &[eot]))
            .collect();
        for threads in [1, 2, 5] {
            assert_eq!(
                batch_in_order(&encoder, threads, &texts, &[eot]),
                expected,
                "{threads} threads"
            );
        }
        let none: [&str; 0] = [];
        encoder.encode_batch_each(2, &none, &[], |_| panic!("no texts, no runs"));
    }

    /// `encode_batch_each` on `threads` threads, the texts put back in order.
    fn batch_in_order(
        encoder: &Encoder,
        threads: usize,
        texts: &[impl AsRef<str> + Sync],
        allowed: &[u32],
    ) -> Vec<Vec<u32>> {
        let mut got: Vec<Option<Vec<u32>>> = vec![None; texts.len()];
        encoder.encode_batch_each(threads, texts, allowed, |completed| {
            for (text, parts) in completed.texts() {
                assert!(
                    got[text].replace(parts.concat()).is_none(),
                    "text {text} twice"
                );
            }
        });
        got.into_iter()
            .map(|ids| ids.expect("every text"))
            .collect()
    }

    #[test]
    fn large_texts_of_a_batch_are_cut_and_joined_back() {
        let encoder = trained(Pattern::Gpt2, 600, &["<|endoftext|>"]);
        let eot = encoder.specials()[0].1;
        let large = SHAKESPEARE.repeat(2);
        let texts: Vec<String> = vec![
            large.clone(), // first: cut before any text was kept whole
            "a short one".into(),
            "x".into(),
            format!("{}<|endoftext|>{}", &large[..large.len() / 2], "end"),
            " ".repeat(200_000), // no safe cut: one part
            large[1000..].to_string(),
            "last".into(),
        ];
        let expected: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| encoder.encode_with_specials(t, &[eot]))
            .collect();
        for threads in [2, 3] {
            let parts = encoder.batch_parts(&texts, &[eot], 16 * threads);
            let cut = |i: usize| parts.text_of.iter().filter(|&&t| t == i).count();
            assert!(cut(0) > 4 && cut(5) > 4, "large texts are cut");
            assert_eq!((cut(3), cut(4)), (1, 1), "allowed specials, no safe cut");
            assert_eq!(parts.parts.concat(), texts.concat());
            assert_eq!(batch_in_order(&encoder, threads, &texts, &[eot]), expected);
        }
        // One thread cuts nothing but reuses the large texts' buffers from run to run.
        assert_eq!(batch_in_order(&encoder, 1, &texts, &[eot]), expected);
    }

    #[test]
    fn kept_states_give_the_ids_of_an_encoder_without_caches() {
        let encoder = trained(Pattern::Gpt2, 600, &[]);
        let uncached = |text: &str| {
            let (mut out, mut scratch) = (Vec::new(), Scratch::default());
            for piece in crate::pretokenize::pieces(Pattern::Gpt2, text) {
                encoder.encode_piece(piece.as_bytes(), &mut out, &mut scratch);
            }
            out
        };
        let (a, b) = (&SHAKESPEARE[..50_000], &SHAKESPEARE[50_000..120_000]);
        for text in [a, b, a, b] {
            assert_eq!(encoder.encode_ordinary(text), uncached(text));
        }
        // A state whose caches outgrow their bounds starts the next call without them.
        let tokens = encoder.token_pieces.len();
        encoder.with_state(|state| {
            assert!(state.pieces.len() > tokens);
            state.long.insert(Box::from(&b"a long piece"[..]), (0, 0));
            state.long_bytes = LONG_MAX + 1;
            for i in 0..=MERGED_PIECES_MAX as u32 {
                state
                    .pieces
                    .insert(pack(&i.to_le_bytes()).expect("4 bytes") | 1 << 100, &[0]);
            }
        });
        encoder.with_state(|state| {
            assert_eq!(state.pieces.len(), tokens);
            assert!(state.long.is_empty() && state.long_ids.is_empty());
        });
        assert_eq!(encoder.encode_ordinary(a), uncached(a));
    }

    #[test]
    fn allowed_specials_match_leftmost_then_longest() {
        let encoder = trained(Pattern::Gpt2, 400, &["<|a|>", "<|a|>b", "<|z|>"]);
        let id = |s: &str| {
            let found = encoder.specials().iter().find(|(t, _)| t == s);
            found.map(|&(_, id)| id).expect("a special token")
        };
        let all = [id("<|a|>"), id("<|a|>b"), id("<|z|>")];
        let ids = encoder.encode_with_specials("x<|a|>b<|a|><|z|>y", &all);
        let mut expected = encoder.encode_ordinary("x");
        expected.extend([id("<|a|>b"), id("<|a|>"), id("<|z|>")]);
        expected.extend(encoder.encode_ordinary("y"));
        assert_eq!(ids, expected);
        // Specials that are not allowed stay text.
        let text = "x<|a|>b<|z|>";
        let only_z = encoder.encode_with_specials(text, &[id("<|z|>")]);
        let mut expected = encoder.encode_ordinary("x<|a|>b");
        expected.push(id("<|z|>"));
        assert_eq!(only_z, expected);
    }
}
