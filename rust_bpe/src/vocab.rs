//! The learned vocabulary: tokens, merges and special tokens, with its file formats (our
//! versioned JSON, tiktoken's rank file, Hugging Face's `tokenizer.json`).
//!
//! Ids: 0..255 are the single bytes in byte order, learned tokens follow in merge order, special
//! tokens come last. An id is a tiktoken rank, so the vocabulary exports to tiktoken unchanged.

use std::fmt::Write as _;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pretokenize::Pattern;

/// `format` field of our JSON files.
pub const FILE_FORMAT: &str = "smallgpt-bpe";
/// `version` field of the JSON files this code writes and reads.
pub const FILE_VERSION: u64 = 1;

/// A pair of ids packed as `left << 32 | right`, the key of the merge tables: ascending keys
/// are ascending `(left, right)` order.
pub(crate) type PairKey = u64;

#[inline(always)]
pub(crate) fn pair_key(left: u32, right: u32) -> PairKey {
    (u64::from(left) << 32) | u64::from(right)
}

/// The `(left, right)` ids of a `pair_key`.
#[inline(always)]
pub(crate) fn split_key(key: PairKey) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// A byte-level BPE vocabulary; a token's id is its tiktoken rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vocab {
    pub pattern: Pattern,
    /// id -> bytes, for ids 0..tokens.len() (regular tokens only).
    pub tokens: Vec<Vec<u8>>,
    /// (left id, right id, result id) in merge order. A merge whose bytes already were a token
    /// reuses that token's id.
    pub merges: Vec<(u32, u32, u32)>,
    /// Special token strings and their ids (>= tokens.len()).
    pub specials: Vec<(String, u32)>,
}

/// GPT-2's `bytes_to_unicode`: the printable character standing for each byte in byte-level
/// BPE vocabularies (Hugging Face's `ByteLevel`). Printable Latin-1 bytes stand for themselves;
/// the 68 others map to U+0100, U+0101, ... in byte order.
pub fn byte_level_char(byte: u8) -> char {
    BYTE_LEVEL_CHARS[byte as usize]
}

const BYTE_LEVEL_CHARS: [char; 256] = byte_level_table();

const fn byte_level_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut shifted = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        let code = if printable {
            b as u32
        } else {
            shifted += 1;
            255 + shifted
        };
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// The byte-level string of a token's bytes (as in a Hugging Face vocabulary).
fn byte_level_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_level_char(b)).collect()
}

/// Checks special tokens: non-empty and distinct.
pub fn validate_specials(specials: &[String]) -> Result<(), String> {
    let mut seen = FxHashSet::default();
    for special in specials {
        if special.is_empty() {
            return Err("special tokens must be non-empty strings".to_owned());
        }
        if !seen.insert(special.as_str()) {
            return Err(format!("special token {special:?} is listed twice"));
        }
    }
    Ok(())
}

/// Builds a vocabulary merge by merge: the 256 byte tokens, then one token per merge unless the
/// merged bytes already are a token (then the merge reuses its id).
pub struct MergeRecorder {
    pattern: Pattern,
    tokens: Vec<Vec<u8>>,
    merges: Vec<(u32, u32, u32)>,
    ids: FxHashMap<Vec<u8>, u32>,
}

impl MergeRecorder {
    /// The 256 byte tokens and no merge yet.
    pub fn new(pattern: Pattern) -> MergeRecorder {
        MergeRecorder {
            pattern,
            tokens: (0..=255u8).map(|b| vec![b]).collect(),
            merges: Vec::new(),
            ids: FxHashMap::default(),
        }
    }

    /// Number of regular tokens so far.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token exists yet (never: the byte tokens are always there).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Records the merge of two existing token ids and returns the id of the merged token.
    ///
    /// Panics if an id is out of range (callers pass ids this recorder handed out).
    pub fn merge(&mut self, left: u32, right: u32) -> u32 {
        let bytes = [
            &self.tokens[left as usize][..],
            &self.tokens[right as usize],
        ]
        .concat();
        let id = match self.token_id(&bytes) {
            Some(id) => id,
            None => {
                let id = self.tokens.len() as u32;
                self.ids.insert(bytes.clone(), id);
                self.tokens.push(bytes);
                id
            }
        };
        self.merges.push((left, right, id));
        id
    }

    /// The id of the token with these bytes, if there is one.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        match bytes {
            [b] => Some(u32::from(*b)),
            _ => self.ids.get(bytes).copied(),
        }
    }

    /// The vocabulary, with the special tokens numbered after the regular tokens.
    pub fn finish(self, specials: &[String]) -> Result<Vocab, String> {
        validate_specials(specials)?;
        let first = self.tokens.len() as u32;
        Ok(Vocab {
            pattern: self.pattern,
            tokens: self.tokens,
            merges: self.merges,
            specials: specials
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), first + i as u32))
                .collect(),
        })
    }
}

/// Our JSON file, after its `format` and `version` fields were checked.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabFile {
    format: String,
    version: u64,
    /// Pre-tokenization pattern name ("gpt2", "cl100k" or "none").
    pattern: String,
    /// Special token strings; their ids follow the regular tokens, in this order.
    specials: Vec<String>,
    /// Each merge as the hex of its left and right parts' bytes, in merge order.
    merges: Vec<(String, String)>,
}

impl Vocab {
    /// The 256 byte tokens and the given special tokens (ids 256, 257, ...).
    pub fn bytes_only(pattern: Pattern, specials: &[String]) -> Result<Vocab, String> {
        MergeRecorder::new(pattern).finish(specials)
    }

    /// Number of ids: regular tokens and special tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len() + self.specials.len()
    }

    /// Our versioned JSON file: format, version, pattern name, special tokens and the merges as
    /// byte strings (hex), so the file stands alone and ids are rebuilt by replaying the merges.
    pub fn to_json(&self) -> String {
        let hex = |id: u32| to_hex(&self.tokens[id as usize]);
        let file = VocabFile {
            format: FILE_FORMAT.to_owned(),
            version: FILE_VERSION,
            pattern: self.pattern.name().to_owned(),
            specials: self.specials.iter().map(|(s, _)| s.clone()).collect(),
            merges: self
                .merges
                .iter()
                .map(|&(left, right, _)| (hex(left), hex(right)))
                .collect(),
        };
        // Serializing strings and integers cannot fail.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// Reads our JSON file, checking everything: the format and version, the pattern name, the
    /// special tokens (non-empty, distinct), and that every merge joins two tokens that exist
    /// before it and appears only once. Errors name the problem.
    pub fn from_json(text: &str) -> Result<Vocab, String> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("not a smallgpt tokenizer file: invalid JSON ({e})"))?;
        let Some(object) = value.as_object() else {
            return Err("not a smallgpt tokenizer file: the JSON is not an object".to_owned());
        };
        match object.get("format") {
            Some(Value::String(f)) if f == FILE_FORMAT => {}
            Some(other) => {
                return Err(format!(
                    "not a smallgpt tokenizer file: format is {other}, expected {FILE_FORMAT:?}"
                ))
            }
            None if object.contains_key("model") => {
                return Err(
                    "not a smallgpt tokenizer file: this looks like a Hugging Face \
                            tokenizer.json (load it with the `tokenizers` library)"
                        .to_owned(),
                )
            }
            None => return Err("not a smallgpt tokenizer file: no \"format\" field".to_owned()),
        }
        match object.get("version").and_then(Value::as_u64) {
            Some(FILE_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "unsupported smallgpt tokenizer file version {v}; this version of smallgpt \
                     reads version {FILE_VERSION}"
                ))
            }
            None => {
                return Err(
                    "invalid smallgpt tokenizer file: \"version\" must be an integer".to_owned(),
                )
            }
        }
        let file: VocabFile = serde_json::from_value(value)
            .map_err(|e| format!("invalid smallgpt tokenizer file: {e}"))?;
        let pattern = Pattern::from_name(&file.pattern)
            .map_err(|e| format!("invalid tokenizer file: {e}"))?;
        let mut recorder = MergeRecorder::new(pattern);
        let mut seen: FxHashMap<(u32, u32), usize> = FxHashMap::default();
        for (i, (left_hex, right_hex)) in file.merges.iter().enumerate() {
            let part = |hex: &str| -> Result<u32, String> {
                let bytes = from_hex(hex).map_err(|e| format!("merge {i}: {e}"))?;
                recorder.token_id(&bytes).ok_or_else(|| {
                    format!("merge {i}: part {hex:?} is not a token defined before this merge")
                })
            };
            let (left, right) = (part(left_hex)?, part(right_hex)?);
            if let Some(first) = seen.insert((left, right), i) {
                return Err(format!(
                    "merge {i} ({left_hex:?}, {right_hex:?}) repeats merge {first}"
                ));
            }
            recorder.merge(left, right);
        }
        recorder
            .finish(&file.specials)
            .map_err(|e| format!("invalid tokenizer file: {e}"))
    }

    /// tiktoken's rank file: one line `base64(token bytes) id` per regular token, in id order
    /// (special tokens are passed to tiktoken separately).
    pub fn tiktoken_ranks(&self) -> String {
        let mut out = String::new();
        for (id, bytes) in self.tokens.iter().enumerate() {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{} {id}", base64(bytes));
        }
        out
    }

    /// A Hugging Face `tokenizer.json` (BPE model with byte-level strings, our merges, the
    /// special tokens as added tokens, the pattern's pre-tokenizer and a byte-level decoder) that
    /// `tokenizers.Tokenizer.from_file` loads and that encodes like this vocabulary.
    pub fn hf_tokenizer_json(&self) -> String {
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        let pre_tokenizer = match self.pattern {
            Pattern::Gpt2 => byte_level(true),
            Pattern::Cl100k => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern.regex()},
                 "behavior": "Isolated", "invert": false},
                byte_level(false)]}),
            Pattern::Whole => byte_level(false),
        };
        let added_tokens: Vec<Value> = self
            .specials
            .iter()
            .map(|(content, id)| {
                json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let token_strings: Vec<String> = self.tokens.iter().map(|t| byte_level_string(t)).collect();
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        // The vocabulary is written by hand to keep it in id order (serde_json sorts keys).
        let vocab: Vec<String> = token_strings
            .iter()
            .enumerate()
            .map(|(id, s)| format!("{}: {id}", quote(s)))
            .collect();
        let merges: Vec<String> = self
            .merges
            .iter()
            .map(|&(l, r, _)| {
                let pair = format!(
                    "{} {}",
                    token_strings[l as usize], token_strings[r as usize]
                );
                quote(&pair)
            })
            .collect();
        format!(
            "{{\"version\": \"1.0\", \"truncation\": null, \"padding\": null, \
             \"added_tokens\": {}, \"normalizer\": null, \"pre_tokenizer\": {}, \
             \"post_processor\": null, \"decoder\": {}, \"model\": {{\"type\": \"BPE\", \
             \"dropout\": null, \"unk_token\": null, \"continuing_subword_prefix\": null, \
             \"end_of_word_suffix\": null, \"fuse_unk\": false, \"byte_fallback\": false, \
             \"ignore_merges\": false, \"vocab\": {{{}}}, \"merges\": [{}]}}}}",
            Value::Array(added_tokens),
            pre_tokenizer,
            byte_level(true),
            vocab.join(", "),
            merges.join(", ")
        )
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|c| c.is_ascii_hexdigit())
    {
        return Err(format!("{hex:?} is not the hex of a non-empty byte string"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

/// Standard base64 with padding (what tiktoken's rank files use).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{train, PieceCounts};

    fn trained() -> Vocab {
        let mut counts = PieceCounts::new(Pattern::Cl100k);
        counts.add_texts(&["Hello hello, wörld! héllo wörld 123 4567 \n\n  tabs\there 😀😀"]);
        let specials = ["<|endoftext|>".to_owned(), "<|pad|>".to_owned()];
        train(counts, 290, 1, &specials).expect("training succeeds")
    }

    #[test]
    fn byte_level_chars_are_gpt2s() {
        assert_eq!(byte_level_char(b' '), '\u{120}'); // 'Ġ'
        assert_eq!(byte_level_char(b'\n'), '\u{10A}'); // 'Ċ'
        assert_eq!(byte_level_char(0), '\u{100}');
        assert_eq!(byte_level_char(0x7F), '\u{121}');
        assert_eq!(byte_level_char(0xAD), '\u{143}');
        assert_eq!(byte_level_char(b'!'), '!');
        assert_eq!(byte_level_char(0xFF), 'ÿ');
        let distinct: FxHashSet<char> = (0..=255u8).map(byte_level_char).collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn json_round_trip_keeps_everything() {
        let vocab = trained();
        assert!(!vocab.merges.is_empty());
        assert_eq!(Vocab::from_json(&vocab.to_json()), Ok(vocab));
    }

    #[test]
    fn merge_to_an_existing_string_reuses_its_id() {
        let mut recorder = MergeRecorder::new(Pattern::Gpt2);
        let ab = recorder.merge(u32::from(b'a'), u32::from(b'b'));
        let abc = recorder.merge(ab, u32::from(b'c'));
        let bc = recorder.merge(u32::from(b'b'), u32::from(b'c'));
        assert_eq!(recorder.merge(u32::from(b'a'), bc), abc);
        let vocab = recorder
            .finish(&["<|endoftext|>".to_owned()])
            .expect("valid");
        assert_eq!(vocab.tokens.len(), 259);
        assert_eq!(vocab.merges.len(), 4);
        assert_eq!(vocab.specials, vec![("<|endoftext|>".to_owned(), 259)]);
        assert_eq!(Vocab::from_json(&vocab.to_json()), Ok(vocab));
    }

    fn load_error(text: &str) -> String {
        Vocab::from_json(text).expect_err("invalid file")
    }

    fn file_with(merges: &str, specials: &str) -> String {
        format!(
            r#"{{"format": "smallgpt-bpe", "version": 1, "pattern": "gpt2",
                "specials": {specials}, "merges": {merges}}}"#
        )
    }

    #[test]
    fn foreign_and_corrupt_files_are_rejected_with_the_reason() {
        let cases = [
            ("{not json".to_owned(), "invalid JSON"),
            ("[1, 2]".to_owned(), "not an object"),
            (r#"{"model": {"type": "BPE"}}"#.to_owned(), "Hugging Face"),
            (r#"{"format": "other"}"#.to_owned(), "format is \"other\""),
            (r#"{"version": 1}"#.to_owned(), "no \"format\" field"),
            (
                r#"{"format": "smallgpt-bpe", "version": 2}"#.to_owned(),
                "unsupported smallgpt tokenizer file version 2",
            ),
            (
                file_with("[]", "[]").replace("\"gpt2\"", "\"gpt5\""),
                "unknown pre-tokenization pattern",
            ),
            (
                file_with("[]", "[]").replace("}", r#", "extra": 1}"#),
                "extra",
            ),
            (
                file_with(r#"[["6x", "62"]]"#, "[]"),
                "\"6x\" is not the hex",
            ),
            (file_with(r#"[["", "62"]]"#, "[]"), "is not the hex"),
            (
                file_with(r#"[["6162", "63"]]"#, "[]"),
                "part \"6162\" is not a token defined before this merge",
            ),
            (
                file_with(r#"[["61", "62"], ["61", "62"]]"#, "[]"),
                "merge 1 (\"61\", \"62\") repeats merge 0",
            ),
            (file_with("[]", r#"["<a>", "<a>"]"#), "listed twice"),
            (file_with("[]", r#"[""]"#), "non-empty"),
            (
                file_with(r#"[["61"]]"#, "[]"),
                "invalid smallgpt tokenizer file",
            ),
        ];
        for (text, expected) in cases {
            let error = load_error(&text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xFF, 0xFE]), "//4=");
    }

    #[test]
    fn tiktoken_ranks_list_every_regular_token_in_id_order() {
        let vocab = trained();
        let ranks = vocab.tiktoken_ranks();
        let lines: Vec<&str> = ranks.lines().collect();
        assert_eq!(lines.len(), vocab.tokens.len());
        assert_eq!(lines[0], "AA== 0");
        assert_eq!(lines[97], "YQ== 97");
        for (id, line) in lines.iter().enumerate() {
            let expected = format!("{} {id}", base64(&vocab.tokens[id]));
            assert_eq!(*line, expected);
        }
    }

    #[test]
    fn hf_json_holds_byte_level_vocab_merges_and_specials() {
        let vocab = trained();
        let hf: Value = serde_json::from_str(&vocab.hf_tokenizer_json()).expect("valid JSON");
        let model = &hf["model"];
        assert_eq!(model["type"], "BPE");
        assert_eq!(model["vocab"]["Ġ"], 32);
        assert_eq!(
            model["vocab"].as_object().map(|m| m.len()),
            Some(vocab.tokens.len())
        );
        let merges = model["merges"].as_array().expect("merges");
        assert_eq!(merges.len(), vocab.merges.len());
        let (l, r, id) = vocab.merges[0];
        let first = format!(
            "{} {}",
            byte_level_string(&vocab.tokens[l as usize]),
            byte_level_string(&vocab.tokens[r as usize])
        );
        assert_eq!(merges[0], Value::String(first));
        assert_eq!(
            model["vocab"][byte_level_string(&vocab.tokens[id as usize])],
            id
        );
        assert_eq!(hf["added_tokens"][1]["content"], "<|pad|>");
        assert_eq!(hf["added_tokens"][1]["id"], vocab.tokens.len() + 1);
        assert_eq!(hf["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");
    }
}
