//! The table from short pre-token pieces to their ids that encoding looks every piece up in.
//!
//! One open-addressed table holds both the pieces that are tokens (filled in once per
//! vocabulary) and the pieces merged so far (added as encoding meets them), so a piece costs
//! one probe whatever it is. An entry is 32 bytes, 32-aligned, and holds its key and up to
//! three ids, so a probe that hits at its first slot reads one cache line; longer id lists
//! live in the table's arena. Encoding computes a piece's slot when the pre-tokenizer yields
//! it and prefetches the line, then probes a batch of pieces later, so the cache misses of a
//! batch overlap instead of stalling one after the other.

/// Ids kept in the entry itself.
const INLINE: usize = 3;

/// Empty slots have key 0: no packed piece is 0 (its length byte is at least 1).
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Entry {
    key: u128,
    /// Up to `INLINE` ids, or (for longer lists) `ids[0]` = the list's start in the arena.
    ids: [u32; INLINE],
    len: u32,
}

/// Packed piece keys (see `encode::pack`) -> ids, with linear probing at a load of at most 1/2.
#[derive(Clone)]
pub(crate) struct PieceTable {
    entries: Vec<Entry>,
    /// 64 - log2(entries.len()): a hash's top bits are its slot.
    shift: u32,
    filled: usize,
    arena: Vec<u32>,
}

impl PieceTable {
    /// An empty table with room for `count` pieces before it grows.
    pub(crate) fn with_room(count: usize) -> PieceTable {
        let size = (2 * count).next_power_of_two().max(1 << 10);
        PieceTable {
            entries: vec![Entry::default(); size],
            shift: 64 - size.trailing_zeros(),
            filled: 0,
            arena: Vec::new(),
        }
    }

    /// Number of pieces held.
    pub(crate) fn len(&self) -> usize {
        self.filled
    }

    /// Number of ids held in the arena (for pieces of more than `INLINE` ids).
    pub(crate) fn arena_len(&self) -> usize {
        self.arena.len()
    }

    /// The hash of `key` that places it: its top bits are its first slot.
    #[inline(always)]
    pub(crate) fn hash(key: u128) -> u64 {
        let (low, high) = (key as u64, (key >> 64) as u64);
        (low ^ high.rotate_left(23).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[inline(always)]
    fn slot(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// Asks the CPU to start loading the first slot of the key hashed to `hash`, so that a
    /// later `get_hashed` finds it in cache.
    #[inline(always)]
    pub(crate) fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let entry: *const Entry = &self.entries[self.slot(hash)];
            // SAFETY: a prefetch is a hint with no effect on memory; the address is a live entry.
            unsafe {
                std::arch::x86_64::_mm_prefetch(entry.cast::<i8>(), std::arch::x86_64::_MM_HINT_T0)
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The ids of the piece packed as `key` (not 0), if the table holds it.
    #[cfg(test)]
    pub(crate) fn get(&self, key: u128) -> Option<&[u32]> {
        self.get_hashed(Self::hash(key), key)
    }

    /// The ids of the piece packed as `key` (not 0), whose hash is `hash`, if the table holds it.
    #[inline(always)]
    pub(crate) fn get_hashed(&self, hash: u64, key: u128) -> Option<&[u32]> {
        let mask = self.entries.len() - 1;
        let mut slot = self.slot(hash);
        loop {
            let entry = &self.entries[slot];
            if entry.key == key {
                let len = entry.len as usize;
                return Some(if len <= INLINE {
                    &entry.ids[..len]
                } else {
                    let start = entry.ids[0] as usize;
                    &self.arena[start..start + len]
                });
            }
            if entry.key == 0 {
                return None;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Grows the table at once, if need be, to hold `additional` more pieces without growing
    /// again (growing step by step rehashes and touches every smaller table on the way).
    pub(crate) fn reserve(&mut self, additional: usize) {
        while 2 * (self.filled + additional) > self.entries.len() {
            self.grow();
        }
    }

    /// Adds the piece packed as `key` (not 0, not held yet) with its ids (at least one).
    pub(crate) fn insert(&mut self, key: u128, ids: &[u32]) {
        if 2 * (self.filled + 1) > self.entries.len() {
            self.grow();
        }
        let mut entry = Entry {
            key,
            len: ids.len() as u32,
            ..Entry::default()
        };
        if ids.len() <= INLINE {
            entry.ids[..ids.len()].copy_from_slice(ids);
        } else {
            entry.ids[0] = self.arena.len() as u32;
            self.arena.extend_from_slice(ids);
        }
        self.place(entry);
        self.filled += 1;
    }

    fn place(&mut self, entry: Entry) {
        let mask = self.entries.len() - 1;
        let mut slot = self.slot(Self::hash(entry.key));
        while self.entries[slot].key != 0 {
            slot = (slot + 1) & mask;
        }
        self.entries[slot] = entry;
    }

    fn grow(&mut self) {
        let size = 2 * self.entries.len();
        let old = std::mem::replace(&mut self.entries, vec![Entry::default(); size]);
        self.shift -= 1;
        for entry in old.into_iter().filter(|e| e.key != 0) {
            self.place(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::pack;
    use std::collections::HashMap;

    #[test]
    fn holds_every_piece_through_growth_with_inline_and_arena_ids() {
        let mut table = PieceTable::with_room(4);
        let mut expected: HashMap<u128, Vec<u32>> = HashMap::new();
        for i in 0u32..5000 {
            let piece = format!("p{i}");
            let key = pack(piece.as_bytes()).expect("a short piece");
            let ids: Vec<u32> = (0..=(i % 6)).map(|k| i * 7 + k).collect();
            table.insert(key, &ids);
            expected.insert(key, ids);
        }
        assert_eq!(table.len(), 5000);
        for (key, ids) in &expected {
            table.prefetch(PieceTable::hash(*key));
            assert_eq!(table.get(*key), Some(&ids[..]));
        }
        for absent in ["q1", "p5000", "p1 "] {
            let key = pack(absent.as_bytes()).expect("a short piece");
            assert_eq!(table.get(key), None, "{absent:?}");
        }
    }
}
