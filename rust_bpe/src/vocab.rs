//! The learned vocabulary: tokens, merges and special tokens (owner: TRAIN; this is ENC's
//! placeholder holding only the contract's fields so that encode.rs compiles).

use crate::pretokenize::Pattern;

/// A byte-level BPE vocabulary; a token's id is its tiktoken rank.
pub struct Vocab {
    pub pattern: Pattern,
    /// id -> bytes, for ids 0..tokens.len() (regular tokens only).
    pub tokens: Vec<Vec<u8>>,
    /// (left id, right id, result id) in merge order.
    pub merges: Vec<(u32, u32, u32)>,
    /// Special token strings and their ids (>= tokens.len()).
    pub specials: Vec<(String, u32)>,
}

impl Vocab {
    /// Number of ids: regular tokens and special tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len() + self.specials.len()
    }
}
