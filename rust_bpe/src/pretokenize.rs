//! Pre-tokenization: splitting text into the pieces that BPE encodes independently.
//!
//! A hand-written scanner reproduces Python `regex.findall(pattern, text)` exactly for the GPT-2
//! and cl100k (GPT-4) split patterns. Each pattern is an ordered alternation: at each position the
//! first alternative that matches wins, so the scanner tests the alternatives in the same order.
//! Character classes come from `char_classes.rs`, generated from the `regex` module itself.

use crate::char_classes::{BLOCKS, BLOCK_INDEX, BLOCK_SHIFT};

/// A pre-tokenization pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// GPT-2's pattern.
    Gpt2,
    /// cl100k_base's (GPT-4's) pattern.
    Cl100k,
    /// No pre-tokenization: the whole text is one piece.
    Whole,
}

const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const CL100K_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Pattern {
    /// Parses a pattern name: "gpt2", "cl100k" or "none".
    pub fn from_name(name: &str) -> Result<Pattern, String> {
        match name {
            "gpt2" => Ok(Pattern::Gpt2),
            "cl100k" => Ok(Pattern::Cl100k),
            "none" => Ok(Pattern::Whole),
            other => Err(format!(
                "unknown pre-tokenization pattern {other:?}; expected \"gpt2\", \"cl100k\" or \"none\""
            )),
        }
    }

    /// The name `from_name` accepts for this pattern.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Gpt2 => "gpt2",
            Pattern::Cl100k => "cl100k",
            Pattern::Whole => "none",
        }
    }

    /// The regular expression this pattern splits exactly like ("" for `Whole`).
    pub fn regex(self) -> &'static str {
        match self {
            Pattern::Gpt2 => GPT2_REGEX,
            Pattern::Cl100k => CL100K_REGEX,
            Pattern::Whole => "",
        }
    }
}

/// Character classes of the patterns: `\p{L}`, `\p{N}`, `\s`, and everything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Other = 0,
    Letter = 1,
    Number = 2,
    Space = 3,
}

const CLASSES: [Class; 4] = [Class::Other, Class::Letter, Class::Number, Class::Space];

/// The class of any code point, from the generated trie.
#[inline(always)]
const fn class_of(cp: u32) -> Class {
    let block = BLOCK_INDEX[(cp >> BLOCK_SHIFT) as usize] as usize;
    let low = cp & ((1 << BLOCK_SHIFT) - 1);
    let byte = BLOCKS[block][(low >> 2) as usize];
    CLASSES[((byte >> ((low & 3) * 2)) & 3) as usize]
}

/// Classes of the ASCII characters, so that ASCII text never walks the trie.
static ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Other; 128];
    let mut i = 0;
    while i < 128 {
        table[i] = class_of(i as u32);
        i += 1;
    }
    table
};

/// The code point starting at byte `i` of valid UTF-8 (a non-ASCII lead byte), and its length.
#[inline(always)]
fn decode_multibyte(b: &[u8], i: usize) -> (u32, usize) {
    let b0 = b[i] as u32;
    if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (b[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        let cp = ((b0 & 0x0F) << 12) | ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F);
        (cp, 3)
    } else {
        let cp = ((b0 & 0x07) << 18)
            | ((b[i + 1] as u32 & 0x3F) << 12)
            | ((b[i + 2] as u32 & 0x3F) << 6)
            | (b[i + 3] as u32 & 0x3F);
        (cp, 4)
    }
}

/// The class and byte length of the character at byte `i`.
#[inline(always)]
fn char_at(b: &[u8], i: usize) -> (Class, usize) {
    let b0 = b[i];
    if b0 < 0x80 {
        (ASCII_CLASS[b0 as usize], 1)
    } else {
        let (cp, len) = decode_multibyte(b, i);
        (class_of(cp), len)
    }
}

/// The class of the character at byte `i`, or None at the end of the text.
#[inline(always)]
fn class_at(b: &[u8], i: usize) -> Option<Class> {
    (i < b.len()).then(|| char_at(b, i).0)
}

/// End of the run of characters of class `class` starting at byte `i`.
#[inline(always)]
fn run_end(b: &[u8], mut i: usize, class: Class) -> usize {
    while i < b.len() {
        let b0 = b[i];
        if b0 < 0x80 {
            if ASCII_CLASS[b0 as usize] != class {
                break;
            }
            i += 1;
        } else {
            let (cp, len) = decode_multibyte(b, i);
            if class_of(cp) != class {
                break;
            }
            i += len;
        }
    }
    i
}

/// End of at most three `\p{N}` characters starting at byte `i` (cl100k's `\p{N}{1,3}`).
#[inline(always)]
fn number_end_max3(b: &[u8], mut i: usize) -> usize {
    for _ in 0..3 {
        match (i < b.len()).then(|| char_at(b, i)) {
            Some((Class::Number, len)) => i += len,
            _ => break,
        }
    }
    i
}

/// Skips `[\r\n]*` from byte `i`.
#[inline(always)]
fn newlines_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
        i += 1;
    }
    i
}

/// End of the contraction (`'s|'t|'re|'ve|'m|'ll|'d`) starting at byte `i`, if one does. With
/// `fold`, letters match case-insensitively as `regex`'s `(?i)` does: simple case folding, under
/// which 's' also matches U+017F LATIN SMALL LETTER LONG S.
#[inline(always)]
fn contraction_end(b: &[u8], i: usize, fold: bool) -> Option<usize> {
    if b[i] != b'\'' {
        return None;
    }
    let rest = &b[i + 1..];
    let first = *rest.first()?;
    let lower = |x: u8| if fold { x.to_ascii_lowercase() } else { x };
    match lower(first) {
        b's' | b't' | b'm' | b'd' => Some(2),
        b'r' | b'v' => (rest.get(1).map(|&x| lower(x)) == Some(b'e')).then_some(3),
        b'l' => (rest.get(1).map(|&x| lower(x)) == Some(b'l')).then_some(3),
        0xC5 if fold && rest.get(1) == Some(&0xBF) => Some(3),
        _ => None,
    }
    .map(|len| i + len)
}

/// For a whitespace run starting at byte `start`: its end, the start of its last character,
/// whether it has more than one character, and the end of its last '\r' or '\n' if any.
struct SpaceRun {
    end: usize,
    last_start: usize,
    several: bool,
    last_newline_end: Option<usize>,
}

#[inline(always)]
fn space_run(b: &[u8], start: usize) -> SpaceRun {
    let mut i = start;
    let mut last_start = start;
    let mut last_newline_end = None;
    while i < b.len() {
        let (c, len) = char_at(b, i);
        if c != Class::Space {
            break;
        }
        if b[i] == b'\n' || b[i] == b'\r' {
            last_newline_end = Some(i + 1);
        }
        last_start = i;
        i += len;
    }
    SpaceRun {
        end: i,
        last_start,
        several: last_start > start,
        last_newline_end,
    }
}

/// `\s+(?!\S)|\s+` over a whitespace run: all of it before the end of the text; otherwise all but
/// its last character (which then leads the next piece), or the single character.
#[inline(always)]
fn trailing_space_end(run: &SpaceRun, text_len: usize) -> usize {
    if run.end == text_len || !run.several {
        run.end
    } else {
        run.last_start
    }
}

/// End of the GPT-2 piece starting at byte `s` (< text length).
#[inline(always)]
fn gpt2_piece_end(b: &[u8], s: usize) -> usize {
    if let Some(end) = contraction_end(b, s, false) {
        return end;
    }
    let (class, len) = char_at(b, s);
    match class {
        Class::Space => {
            // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+` with the optional space.
            if b[s] == b' ' {
                if let Some(next) = class_at(b, s + 1) {
                    if next != Class::Space {
                        return run_end(b, s + 1, next);
                    }
                }
            }
            trailing_space_end(&space_run(b, s), b.len())
        }
        other => run_end(b, s + len, other),
    }
}

/// End of the cl100k piece starting at byte `s` (< text length).
#[inline(always)]
fn cl100k_piece_end(b: &[u8], s: usize) -> usize {
    if let Some(end) = contraction_end(b, s, true) {
        return end;
    }
    let (class, len) = char_at(b, s);
    match class {
        Class::Letter => run_end(b, s + len, Class::Letter),
        Class::Number => number_end_max3(b, s),
        Class::Other => {
            // `[^\r\n\p{L}\p{N}]?\p{L}+`, else ` ?[^\s\p{L}\p{N}]+[\r\n]*`.
            if class_at(b, s + len) == Some(Class::Letter) {
                return run_end(b, s + len, Class::Letter);
            }
            newlines_end(b, run_end(b, s + len, Class::Other))
        }
        Class::Space => {
            let newline = b[s] == b'\n' || b[s] == b'\r';
            match class_at(b, s + len) {
                Some(Class::Letter) if !newline => return run_end(b, s + len, Class::Letter),
                Some(Class::Other) if b[s] == b' ' => {
                    return newlines_end(b, run_end(b, s + 1, Class::Other));
                }
                _ => {}
            }
            let run = space_run(b, s);
            // `\s*[\r\n]+` ends at the run's last newline.
            match run.last_newline_end {
                Some(end) => end,
                None => trailing_space_end(&run, b.len()),
            }
        }
    }
}

/// Byte flags of the GPT-2 block scanner: ASCII letter, digit, ' ', other ASCII whitespace, and
/// "slow" (an apostrophe, which may start a contraction, or a byte of a non-ASCII character).
const F_LETTER: u8 = 1;
const F_DIGIT: u8 = 2;
const F_SPACE: u8 = 4;
const F_WHITE: u8 = 8;
const F_SLOW: u8 = 16;
/// '\r' or '\n' (also `F_WHITE`): cl100k treats line breaks apart from other whitespace.
const F_NEWLINE: u8 = 32;

static BYTE_FLAGS: [u8; 256] = {
    let mut table = [F_SLOW; 256];
    let mut i = 0;
    while i < 128 {
        table[i] = match ASCII_CLASS[i] {
            Class::Letter => F_LETTER,
            Class::Number => F_DIGIT,
            Class::Space if i == b' ' as usize => F_SPACE,
            Class::Space if i == b'\n' as usize || i == b'\r' as usize => F_WHITE | F_NEWLINE,
            Class::Space => F_WHITE,
            Class::Other if i == b'\'' as usize => F_SLOW,
            Class::Other => 0,
        };
        i += 1;
    }
    table
};

/// Bytes per block of the GPT-2 block scanner (one bit each in a u64).
const BLOCK: usize = 64;

/// Masks of the `BLOCK` bytes at `at` (bit j for byte `at + j`): letters, digits, ' ', other
/// whitespace, line breaks and slow bytes, as `BYTE_FLAGS` gives them.
#[derive(Debug, Default, PartialEq, Eq)]
struct BlockMasks {
    letter: u64,
    digit: u64,
    space: u64,
    white: u64,
    newline: u64,
    slow: u64,
    /// The bytes of the three-byte punctuation marks U+2010..U+2027 (dashes, quotation marks,
    /// daggers, bullets, the ellipsis; `is_wide_punctuation`) that lie whole in the block: GPT-2
    /// treats them as it treats ASCII punctuation, and English text is full of them.
    wide_punct: u64,
}

/// Whether `bytes` starts with one of U+2010..U+2027 in UTF-8 (E2 80 90..A7): dashes,
/// quotation marks, daggers, bullets, leaders and the ellipsis, all punctuation (no letter,
/// number or whitespace among them; U+2028 and U+2029, which are whitespace, lie just past).
#[inline(always)]
fn is_wide_punctuation(bytes: &[u8]) -> bool {
    matches!(bytes, [0xE2, 0x80, 0x90..=0xA7, ..])
}

/// The bytes of whole `is_wide_punctuation` marks, from the masks of their three bytes: bit j of
/// `lead` for E2 at j, of `second` for 80, of `last` for 90..A7.
#[inline(always)]
fn wide_punct_bytes(lead: u64, second: u64, last: u64) -> u64 {
    let starts = lead & second >> 1 & last >> 2;
    starts | starts << 1 | starts << 2
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn block_masks(b: &[u8], at: usize) -> BlockMasks {
    block_masks_by_table(b, at)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn block_masks_by_table(b: &[u8], at: usize) -> BlockMasks {
    let mut m = BlockMasks::default();
    let (mut lead, mut second, mut last) = (0, 0, 0);
    for (j, &byte) in b[at..at + BLOCK].iter().enumerate() {
        let flags = BYTE_FLAGS[byte as usize];
        let bit = |flag: u8| u64::from(flags & flag != 0) << j;
        m.letter |= bit(F_LETTER);
        m.digit |= bit(F_DIGIT);
        m.space |= bit(F_SPACE);
        m.white |= bit(F_WHITE);
        m.newline |= bit(F_NEWLINE);
        m.slow |= bit(F_SLOW);
        lead |= u64::from(byte == 0xE2) << j;
        second |= u64::from(byte == 0x80) << j;
        last |= u64::from((0x90..=0xA7).contains(&byte)) << j;
    }
    m.wide_punct = wide_punct_bytes(lead, second, last);
    m
}

/// `block_masks_by_table` with SSE2 (every x86-64 CPU has it), 16 bytes per compare.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_masks(b: &[u8], at: usize) -> BlockMasks {
    use std::arch::x86_64::*;
    let block = &b[at..at + BLOCK];
    let mut m = BlockMasks::default();
    let (mut lead, mut second, mut last) = (0, 0, 0);
    // SAFETY: SSE2 is part of x86-64, so these instructions exist on every CPU this runs on;
    // each load reads the 16 bytes of one chunk, with no alignment needed.
    unsafe {
        let splat = |x: u8| _mm_set1_epi8(x as i8);
        // Signed compares: bytes >= 0x80 are negative, below every bound.
        let within = |x: __m128i, low: u8, high: u8| {
            _mm_and_si128(
                _mm_cmpgt_epi8(x, splat(low - 1)),
                _mm_cmpgt_epi8(splat(high + 1), x),
            )
        };
        let bits = |x: __m128i| _mm_movemask_epi8(x) as u16 as u64;
        for (k, chunk) in block.chunks_exact(16).enumerate() {
            let x = _mm_loadu_si128(chunk.as_ptr().cast());
            let shift = 16 * k;
            m.letter |= bits(within(_mm_or_si128(x, splat(0x20)), b'a', b'z')) << shift;
            m.digit |= bits(within(x, b'0', b'9')) << shift;
            m.space |= bits(_mm_cmpeq_epi8(x, splat(b' '))) << shift;
            m.white |= bits(within(x, 0x09, 0x0d)) << shift;
            m.newline |= bits(_mm_or_si128(
                _mm_cmpeq_epi8(x, splat(b'\n')),
                _mm_cmpeq_epi8(x, splat(b'\r')),
            )) << shift;
            m.slow |= bits(_mm_or_si128(x, _mm_cmpeq_epi8(x, splat(b'\'')))) << shift;
            lead |= bits(_mm_cmpeq_epi8(x, splat(0xE2))) << shift;
            second |= bits(_mm_cmpeq_epi8(x, splat(0x80))) << shift;
            last |= bits(within(x, 0x90, 0xA7)) << shift;
        }
    }
    m.wide_punct = wide_punct_bytes(lead, second, last);
    m
}

/// Bit j set where piece boundaries fall at `at + j`, for a block of `BLOCK` bytes at `at` with
/// masks `m` and no slow byte in it, in the 3 bytes before it or in the one after it. Within
/// plain ASCII, GPT-2's pieces are runs of letters, digits or other characters, each led by at
/// most one ' ', and runs of whitespace, of which a run followed by a non-space leaves its last
/// character to the next piece (that character leads it if it is ' ', else it is a piece
/// alone). So a boundary falls before i where:
/// - i and i-1 are non-space of different classes;
/// - i is non-space after whitespace other than ' ';
/// - i is whitespace after a non-space;
/// - i is the last of two or more whitespace characters, followed by a non-space.
///
/// (Contractions would end a piece inside a letter run, hence the 3 plain bytes before.)
#[inline(always)]
fn gpt2_block_boundaries(b: &[u8], at: usize, m: &BlockMasks) -> u64 {
    // The flags of the bytes before and after the block (the text's start counts as a
    // non-space of no class: a piece starts at 0 anyway).
    let before = if at > 0 {
        BYTE_FLAGS[b[at - 1] as usize]
    } else {
        0
    };
    let after = BYTE_FLAGS[b[at + BLOCK] as usize];
    let prev = |mask: u64, flag: u8| mask << 1 | u64::from(before & flag != 0);
    let any_space = m.space | m.white;
    let non = !any_space;
    let prev_non = !prev(any_space, F_SPACE | F_WHITE);
    let next_non = !(any_space >> 1 | u64::from(after & (F_SPACE | F_WHITE) != 0) << 63);
    let class_change = (m.letter ^ prev(m.letter, F_LETTER)) | (m.digit ^ prev(m.digit, F_DIGIT));
    (non & prev_non & class_change)
        | (non & prev(m.white, F_WHITE))
        | (any_space & prev_non)
        | (any_space & !prev_non & next_non)
}

/// GPT-2's pieces of `b`: blocks of plain ASCII through `gpt2_block_boundaries`, the rest
/// (and the pieces that run out of a block into other text) through the scanner.
#[inline(always)]
fn gpt2_spans(b: &[u8], mut f: impl FnMut(usize, usize)) {
    // `start`: where the current piece starts; `at`: the next block to try, never before it.
    let (mut start, mut at) = (0, 0);
    // The scanner goes on until `start` reaches this (past the last slow byte seen).
    let mut scan_until = 0;
    while start < b.len() {
        if start >= scan_until && at + BLOCK < b.len() {
            let m = block_masks(b, at);
            // Wide punctuation is plain here: GPT-2 splits it as ASCII punctuation (it has no
            // contraction, and the flags of one of its bytes read as punctuation's).
            let slow = m.slow & !m.wide_punct;
            let plain = |bytes: &[u8]| {
                is_wide_punctuation(bytes)
                    || bytes.iter().all(|&x| BYTE_FLAGS[x as usize] & F_SLOW == 0)
            };
            let edges = !plain(&b[at.saturating_sub(3)..at])
                || !(plain(&b[at + BLOCK..at + BLOCK + 1])
                    || is_wide_punctuation(&b[at + BLOCK..]));
            if slow == 0 && !edges {
                let mut bits = gpt2_block_boundaries(b, at, &m);
                while bits != 0 {
                    let end = at + bits.trailing_zeros() as usize;
                    if end > start {
                        f(start, end);
                        start = end;
                    }
                    bits &= bits - 1;
                }
                at += BLOCK;
                continue;
            }
            // Blocks resume past the last slow byte (and the 3 bytes a contraction may take).
            scan_until = if slow != 0 {
                at + 64 - slow.leading_zeros() as usize + 3
            } else {
                at + BLOCK + 5
            };
        }
        let end = gpt2_piece_end(b, start);
        f(start, end);
        start = end;
        at = at.max(start);
    }
}

/// Bit j set where a cl100k piece starts at `at + j`, for the first `n` bytes of a block whose
/// masks are `m`, plain ASCII without an apostrophe, when a piece starts at `at` (bit 0). `after`
/// holds the flags of the byte at `at + n` if that byte is plain too. Only the starts that these
/// bytes settle are set; the caller goes on from the last one.
///
/// Within plain ASCII (L letters, D digits, P other non-space, S whitespace, NL '\r' '\n'),
/// cl100k's pieces are: a letter run led by at most one P or non-NL S character; digit runs cut
/// every 3 digits; a P run (led by a ' ') with the NL run right after it; and whitespace runs,
/// cut after their last NL and before their last character when it is not an NL (that character
/// then leads the next piece, or stands alone). A P leads the letters after it only when it
/// starts its own piece: it is a run of one P, not led by a ' '. Since a piece starts at `at`,
/// nothing before `at` matters: the bytes before it cannot join what follows.
#[inline(always)]
fn cl100k_block_starts(m: &BlockMasks, n: u32, after: Option<u8>) -> u64 {
    let valid = u64::MAX >> (64 - n);
    let (letter, digit) = (m.letter & valid, m.digit & valid);
    let (space, newline) = (m.space & valid, m.newline & valid);
    let white = (m.space | m.white) & valid;
    let punct = valid & !(letter | digit | white);
    let quiet = white & !newline;
    // Flags of the byte after the last one, at bit n - 1.
    let last = 1u64 << (n - 1);
    let after_has = |flag: u8| after.map_or(0, |f| if f & flag != 0 { last } else { 0 });

    let letter_start = letter & !(letter << 1);
    let next_letter_start = letter_start >> 1 | (after_has(F_LETTER) & !letter);
    let leads_letters = next_letter_start & (quiet | (punct & !(punct << 1) & !(space << 1)));
    // Line breaks right after a P run belong to its piece.
    let absorbed = (newline.wrapping_add(newline & punct << 1) ^ newline) & newline;
    let runs = white & !absorbed;
    let next_not_white = !(white >> 1) & !after_has(F_SPACE | F_WHITE);
    let quiet_end = quiet & next_not_white;
    // The quiet characters after a run's last NL: those whose quiet stretch reaches its end.
    let (q, e) = (quiet.reverse_bits(), quiet_end.reverse_bits());
    let final_quiet = ((q.wrapping_add(e) ^ q) & q).reverse_bits();

    let mut digit_starts = 0u64;
    let mut rest = digit;
    while rest != 0 {
        let first = rest.trailing_zeros();
        let len = (!(rest >> first)).trailing_zeros();
        for k in (0..len).step_by(3) {
            digit_starts |= 1 << (first + k);
        }
        rest &= !((u64::MAX >> (64 - len)) << first);
    }

    let mut starts = (letter_start & !(leads_letters << 1))
        | (punct & !(punct << 1) & !(space << 1))
        | digit_starts
        | (runs & !(runs << 1))
        | (final_quiet & !(final_quiet << 1))
        | quiet_end;
    // A whitespace run reaching the last byte may go on: its inside is left to the next call.
    let goes_on = after.is_none_or(|f| f & (F_SPACE | F_WHITE) != 0);
    if goes_on && white & last != 0 {
        let run = (white << (64 - n)).leading_ones();
        starts &= u64::MAX >> (63 - (n - run));
    }
    starts & valid
}

/// cl100k's pieces of `b`: plain ASCII through `cl100k_block_starts`, a block at a time from
/// the last piece start, the rest (and pieces longer than a block) through the scanner.
#[inline(always)]
fn cl100k_spans(b: &[u8], mut f: impl FnMut(usize, usize)) {
    let mut start = 0;
    // The scanner goes on until `start` reaches this (past a stretch of slow bytes).
    let mut scan_until = 0;
    while start < b.len() {
        if start >= scan_until && start + BLOCK < b.len() {
            let at = start;
            let m = block_masks(b, at);
            let n = m.slow.trailing_zeros().min(BLOCK as u32);
            if n >= 8 {
                let after = if n == BLOCK as u32 {
                    Some(BYTE_FLAGS[b[at + BLOCK] as usize]).filter(|f| f & F_SLOW == 0)
                } else {
                    None
                };
                let mut bits = cl100k_block_starts(&m, n, after) & !1;
                if bits != 0 {
                    while bits != 0 {
                        let end = at + bits.trailing_zeros() as usize;
                        f(start, end);
                        start = end;
                        bits &= bits - 1;
                    }
                    continue;
                }
            } else {
                // Past the slow stretch (and the 3 bytes a contraction may take after it).
                let slow_run = (!(m.slow >> n)).trailing_zeros();
                scan_until = at + (n + slow_run) as usize + 3;
            }
        }
        let end = cl100k_piece_end(b, start);
        f(start, end);
        start = end;
    }
}

/// Calls `f` for each pre-token piece of `text`, in order; the pieces concatenate to `text`.
#[inline]
pub fn for_each_piece<'a>(pattern: Pattern, text: &'a str, mut f: impl FnMut(&'a str)) {
    // Pieces end on character boundaries: every scanner branch advances by whole characters.
    for_each_span(pattern, text, |start, end| f(&text[start..end]));
}

/// Calls `f(start, end)` with the byte range of each pre-token piece of `text`, in order.
#[inline]
pub fn for_each_span(pattern: Pattern, text: &str, mut f: impl FnMut(usize, usize)) {
    let b = text.as_bytes();
    // One loop per pattern, each calling its scanner directly so that it is inlined.
    match pattern {
        Pattern::Gpt2 => gpt2_spans(b, f),
        Pattern::Cl100k => cl100k_spans(b, f),
        Pattern::Whole => {
            if !b.is_empty() {
                f(0, b.len());
            }
        }
    }
}

/// The pieces of `text` as a vector (for tests and the Python `pretokenize` helper).
pub fn pieces(pattern: Pattern, text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for_each_piece(pattern, text, |p| out.push(p));
    out
}

/// Largest byte index `i <= text.len()` (0 if none) at which `text` may be cut so that
/// `pieces(text[..i])` followed by `pieces(text[i..])` equals `pieces(text)`, whatever follows
/// `text`. Used to stream files in chunks.
///
/// A cut is safe where the scanner of the whole text ends a piece at `i`, and the scanner of the
/// prefix alone ends its last piece at `i` the same way. Two rules guarantee that for both
/// patterns (the scanner only looks forward, so the pieces after `i` are unaffected):
/// - after a letter and before a non-letter: every piece holding the letter is a letter run or a
///   contraction, which ends at `i` whether the text goes on with a non-letter or stops;
/// - after a lone '\n' (non-whitespace on both sides): that '\n' is a piece of its own with the
///   preceding text or the tail of a punctuation piece (`[\r\n]*` of cl100k), in the prefix as in
///   the whole text, and no piece starts with '\n' and goes on.
///
/// `Whole` has no safe cut.
pub fn last_safe_cut(pattern: Pattern, text: &str) -> usize {
    if pattern == Pattern::Whole {
        return 0;
    }
    let mut iter = text.char_indices().rev().peekable();
    // Walking backwards: `next` is the character at the candidate cut, `prev` the one before it.
    let mut next: Option<char> = None;
    while let Some((i, c)) = iter.next() {
        if let Some(after) = next {
            let after_class = class_of(after as u32);
            let here = class_of(c as u32);
            let cut = i + c.len_utf8();
            if here == Class::Letter && after_class != Class::Letter {
                return cut;
            }
            if c == '\n' && after_class != Class::Space {
                let before = iter.peek().map(|&(_, p)| class_of(p as u32));
                if before != Some(Class::Space) {
                    return cut;
                }
            }
        }
        next = Some(c);
    }
    0
}

/// Appends `text` to `out` as consecutive chunks of about `target` bytes, cut only at safe cuts,
/// so that the pieces (and ids) of the chunks taken separately are those of the whole text. A
/// chunk grows past `target` until a safe cut appears (or the text ends); the last chunk is
/// the rest of the text, "" when `text` is empty.
pub fn split_at_safe_cuts<'a>(
    pattern: Pattern,
    text: &'a str,
    target: usize,
    out: &mut Vec<&'a str>,
) {
    let mut rest = text;
    while rest.len() > target {
        let mut window = target;
        let cut = loop {
            let end = floor_char_boundary(rest, window);
            let cut = last_safe_cut(pattern, &rest[..end]);
            if cut > 0 || end == rest.len() {
                break cut;
            }
            // No safe cut in this window (a long run of spaces, or the `none` pattern).
            window = window.saturating_mul(2);
        };
        if cut == 0 {
            break;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
}

/// The largest char boundary of `s` at or below `i` (`i` is clamped to `s.len()`).
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_text::{random_text, SHAKESPEARE};

    const MIXED: &str = "Grüße, Welt! Ça va? 今日は良い天気です。\nПривет, мир 123,456.78 ٣٤٥ Ⅻ\n\
        \t\tindented 'S 'll 'RE ſ émoji 😀👍🏽 🇫🇷\r\n\r\n  x  \u{a0}y\u{3000}z\u{85}w \n\nend's.\n";
    const FOLLOWERS: [&str; 10] = ["", " ", "\n", "a", "'s", "1", ".", "\n\n", "  x", "\u{301}"];

    fn pieces_owned(pattern: Pattern, text: &str) -> Vec<String> {
        pieces(pattern, text)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Cuts every prefix `text[..j]` at its last safe cut and checks that the pieces of the two
    /// halves, with various continuations after the prefix, are those of the uncut text.
    fn check_cuts(pattern: Pattern, text: &str, step: usize) -> usize {
        let mut cuts_found = 0;
        let ends: Vec<usize> = (0..=text.len())
            .step_by(step)
            .filter(|&j| text.is_char_boundary(j))
            .collect();
        for j in ends {
            let prefix = &text[..j];
            let cut = last_safe_cut(pattern, prefix);
            assert!(cut <= j && prefix.is_char_boundary(cut));
            cuts_found += usize::from(cut > 0);
            let rests = FOLLOWERS.iter().map(|f| f.to_string());
            for rest in rests.chain([text[j..].to_string()]) {
                let whole = format!("{prefix}{rest}");
                let mut halves = pieces_owned(pattern, &whole[..cut]);
                halves.extend(pieces_owned(pattern, &whole[cut..]));
                assert_eq!(
                    halves,
                    pieces_owned(pattern, &whole),
                    "cut {cut} of {prefix:?}"
                );
            }
        }
        cuts_found
    }

    #[test]
    fn pattern_names_round_trip() {
        for p in [Pattern::Gpt2, Pattern::Cl100k, Pattern::Whole] {
            assert_eq!(Pattern::from_name(p.name()), Ok(p));
        }
        assert!(Pattern::from_name("gpt4").is_err());
    }

    #[test]
    fn pieces_concatenate_to_the_text() {
        for pattern in [Pattern::Gpt2, Pattern::Cl100k, Pattern::Whole] {
            for text in [MIXED, &SHAKESPEARE[..20_000], "", " ", "\n"] {
                assert_eq!(pieces(pattern, text).concat(), text);
            }
        }
    }

    #[test]
    fn safe_cuts_keep_the_pieces_of_real_text() {
        let text = &SHAKESPEARE[..3_000];
        for pattern in [Pattern::Gpt2, Pattern::Cl100k] {
            assert!(check_cuts(pattern, text, 3) > 0);
        }
    }

    #[test]
    fn safe_cuts_keep_the_pieces_of_multilingual_text() {
        for pattern in [Pattern::Gpt2, Pattern::Cl100k] {
            assert!(check_cuts(pattern, MIXED, 1) > 0);
        }
    }

    #[test]
    fn safe_cuts_keep_the_pieces_of_pseudo_random_text() {
        let alphabet = " \t\n\r\u{b}\u{c}\u{85}\u{a0}\u{3000}'sStTlLrReEdDſ.!-aZ09٣½é中😀\u{301}";
        // 300 texts of 40 characters, consecutive draws of one generator.
        let chars: Vec<char> = random_text(alphabet, 0x9E37_79B9_7F4A_7C15, 300 * 40)
            .chars()
            .collect();
        for text in chars.chunks(40) {
            let text: String = text.iter().collect();
            for pattern in [Pattern::Gpt2, Pattern::Cl100k] {
                check_cuts(pattern, &text, 1);
            }
        }
    }

    /// The pieces of `text` from a scanner alone (`gpt2_piece_end` or `cl100k_piece_end`),
    /// piece after piece.
    fn scanned(text: &str, piece_end: fn(&[u8], usize) -> usize) -> Vec<&str> {
        let (b, mut start, mut out) = (text.as_bytes(), 0, Vec::new());
        while start < b.len() {
            let end = piece_end(b, start);
            out.push(&text[start..end]);
            start = end;
        }
        out
    }

    /// Asserts that `pattern`'s pieces (through its blocks) equal its scanner's, on `texts`
    /// shifted by 0 to 3 bytes (so that blocks start at other places) and on the first `lens`
    /// bytes of `base` repeated, followed by each of `endings`.
    fn assert_blocks_split_as_scanned(
        pattern: Pattern,
        piece_end: fn(&[u8], usize) -> usize,
        texts: &[&str],
        base: &str,
        lens: std::ops::Range<usize>,
        endings: &[&str],
    ) {
        for text in texts {
            for offset in 0..4 {
                let Some(text) = text.get(offset..) else {
                    continue;
                };
                assert_eq!(
                    pieces(pattern, text),
                    scanned(text, piece_end),
                    "offset {offset}"
                );
            }
        }
        for ending in endings {
            for len in lens.clone() {
                let text = format!("{}{ending}", &base.repeat(10)[..len]);
                assert_eq!(
                    pieces(pattern, &text),
                    scanned(&text, piece_end),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn block_masks_agree_with_the_byte_table() {
        let bytes: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        for at in (0..bytes.len() - BLOCK).step_by(7) {
            assert_eq!(
                block_masks(&bytes, at),
                block_masks_by_table(&bytes, at),
                "{at}"
            );
        }
        for byte in 0..128u8 {
            let class = ASCII_CLASS[byte as usize];
            let flags = BYTE_FLAGS[byte as usize];
            assert_eq!(flags & F_LETTER != 0, class == Class::Letter, "{byte}");
            assert_eq!(flags & F_DIGIT != 0, class == Class::Number, "{byte}");
            assert_eq!(
                flags & (F_SPACE | F_WHITE) != 0,
                class == Class::Space,
                "{byte}"
            );
        }
    }

    #[test]
    fn gpt2_blocks_split_as_the_scanner_does() {
        // Long plain ASCII stretches (blocks), broken by contractions, non-ASCII characters and
        // whitespace runs of every kind, in every position relative to a block's edges; wide
        // punctuation (plain in blocks) beside the characters of E2 80 xx just outside it (U+200F
        // and U+2028, whitespace) and its own bytes apart.
        let alphabet =
            "aaaaaeeettnnZ  \n\n\t\r\u{b}\u{1c}0129..,;!-_()'sStTdDlLrReEvVmMé中😀\u{a0}\u{85}";
        let text = random_text(alphabet, 0x2545_F491_4F6C_DD1D, 60_000);
        let plain_heavy = random_text("abcdefgh   \n\t012.,;()", 7, 60_000);
        let wide = random_text(
            "aaaaeettnn   \n\n\t01.,'s“”’‘—\u{2010}\u{2027}\u{2028}\u{200f}\u{2030}\u{a0}é",
            13,
            60_000,
        );
        let cut_marks = "ab “cd” e—f’s \u{2028}".repeat(3000);
        let texts = [
            text.as_str(),
            plain_heavy.as_str(),
            wide.as_str(),
            cut_marks.as_str(),
            &SHAKESPEARE[..100_000],
            MIXED,
        ];
        let endings = [
            "  ",
            "\n\n",
            " x",
            "'s",
            "ab\n ",
            "a\u{a0}",
            "“a",
            " —",
            "\u{2028}a",
            "’s",
        ];
        assert_blocks_split_as_scanned(
            Pattern::Gpt2,
            gpt2_piece_end,
            &texts,
            "ab cd\t\t  ef 12",
            60..140,
            &endings,
        );
    }

    #[test]
    fn cl100k_blocks_split_as_the_scanner_does() {
        // Every rule of the block path at every place in a block: letters led by punctuation
        // or whitespace, punctuation runs with line breaks after them, digit runs of every
        // length, whitespace runs with and without line breaks, before contractions and
        // non-ASCII characters (which end the plain stretch a block reads).
        let alphabet =
            "aaaeetnZ    \n\n\r\t\u{b}\u{1c}0000129..,;!-()'sStTdDlLrReEvVmMé中😀\u{a0}\u{85}٣";
        let text = random_text(alphabet, 0x2545_F491_4F6C_DD1D, 80_000);
        let plain = random_text("abcdefgh   \n\n\r\t01234567.,;()!", 11, 80_000);
        let runs = random_text("ab  \n\n\t.1", 5, 80_000);
        let texts = [
            text.as_str(),
            plain.as_str(),
            runs.as_str(),
            &SHAKESPEARE[..100_000],
            MIXED,
        ];
        let endings = [
            "  ", "\n\n", " \n ", " x", ".\n", "'s", "123456", "ab\n ", "a\u{a0}", " é", ".é",
        ];
        assert_blocks_split_as_scanned(
            Pattern::Cl100k,
            cl100k_piece_end,
            &texts,
            "ab cd\t\t  ef 1234.\n\n(x) ",
            50..140,
            &endings,
        );
    }

    #[test]
    fn whole_pattern_is_never_cut() {
        assert_eq!(last_safe_cut(Pattern::Whole, "some text\nmore text"), 0);
        assert_eq!(pieces(Pattern::Whole, "a b\nc"), vec!["a b\nc"]);
    }

    #[test]
    fn text_without_a_safe_cut_gives_zero() {
        for pattern in [Pattern::Gpt2, Pattern::Cl100k] {
            assert_eq!(last_safe_cut(pattern, "     "), 0);
            assert_eq!(last_safe_cut(pattern, "abc"), 0);
            assert_eq!(last_safe_cut(pattern, ""), 0);
        }
    }
}
