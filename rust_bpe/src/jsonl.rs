//! JSON Lines: the text field of each record of a block of whole lines, parsed in parallel on
//! the current rayon pool, with the place and the reason of every line that holds no text.
//!
//! A line is read as Python's `json.loads` reads it (the reference the tests compare with):
//! blank lines hold no record, a UTF-8 byte-order mark is dropped, `NaN`, `Infinity` and
//! `-Infinity` are numbers, and of repeated keys the last one counts.

use std::borrow::Cow;
use std::fmt;

use rayon::prelude::*;
use serde::de::Visitor;
use serde::de::{Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess};

/// Why a line holds no text.
#[derive(Debug, Clone, PartialEq)]
pub enum BadLine {
    /// Not UTF-8: the byte offset of the first bad sequence, from the start of the block.
    NotUtf8 { offset: usize },
    /// Not JSON: the parser's reason, with the column.
    NotJson { reason: String },
    /// Not a JSON object: what it is, by Python's type name ("list", "str", ...).
    NotObject { kind: &'static str },
    /// An object without the field: its keys, sorted.
    NoField { keys: Vec<String> },
    /// The field holds no string: what it holds, by Python's type name.
    NotString { kind: &'static str },
}

/// A line that holds no text: `position` texts of the block come before it; `line` counts the
/// block's lines from 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Bad {
    pub position: usize,
    pub line: usize,
    pub reason: BadLine,
}

/// The texts of a block's records, in order, and its bad lines.
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    pub texts: Vec<Cow<'a, str>>,
    pub bad: Vec<Bad>,
}

/// Bytes a segment parsed on one thread holds at least: enough to outweigh the hand-over.
const MIN_SEGMENT: usize = 64 << 10;

/// The `field` of each line of `block` (whole lines: split at `\n`, the last one may lack it).
pub fn parse_block<'a>(block: &'a [u8], field: &str) -> Parsed<'a> {
    let target = (block.len() / (4 * rayon::current_num_threads())).max(MIN_SEGMENT);
    let mut segments = Vec::new();
    let mut start = 0;
    while start < block.len() {
        let end = match memchr::memchr(b'\n', &block[(start + target).min(block.len())..]) {
            Some(at) if start + target < block.len() => start + target + at + 1,
            _ => block.len(),
        };
        segments.push((start, &block[start..end]));
        start = end;
    }
    let parsed: Vec<(Parsed<'a>, usize)> = segments
        .par_iter()
        .map(|&(offset, segment)| parse_segment(segment, offset, field))
        .collect();
    let mut all = Parsed::default();
    let mut lines = 0;
    for (part, line_count) in parsed {
        let before = all.texts.len();
        all.bad.extend(part.bad.into_iter().map(|bad| Bad {
            position: bad.position + before,
            line: bad.line + lines,
            reason: bad.reason,
        }));
        all.texts.extend(part.texts);
        lines += line_count;
    }
    all
}

/// The lines of one segment (which starts at byte `offset` of the block) and their count.
fn parse_segment<'a>(segment: &'a [u8], offset: usize, field: &str) -> (Parsed<'a>, usize) {
    let mut parsed = Parsed::default();
    let mut start = 0;
    let mut line = 0;
    while start < segment.len() {
        let end =
            memchr::memchr(b'\n', &segment[start..]).map_or(segment.len(), |at| start + at + 1);
        match parse_line(&segment[start..end], field) {
            Ok(Some(text)) => parsed.texts.push(text),
            Ok(None) => {}
            Err(reason) => parsed.bad.push(Bad {
                position: parsed.texts.len(),
                line,
                reason: match reason {
                    BadLine::NotUtf8 { offset: at } => BadLine::NotUtf8 {
                        offset: offset + start + at,
                    },
                    other => other,
                },
            }),
        }
        start = end;
        line += 1;
    }
    (parsed, line)
}

/// The text of one line; None for a blank line. A `NotUtf8` offset counts from the line start.
pub fn parse_line<'a>(line: &'a [u8], field: &str) -> Result<Option<Cow<'a, str>>, BadLine> {
    if line.iter().all(|b| b" \t\n\r\x0b\x0c".contains(b)) {
        return Ok(None);
    }
    let text = std::str::from_utf8(line).map_err(|e| BadLine::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut error = match read_record(text, field) {
        Ok(record) => return record_text(record, text),
        Err(error) => error,
    };
    let mut patched = text.to_owned();
    loop {
        patched = python_number(&patched, &error).ok_or_else(|| BadLine::NotJson {
            reason: json_reason(&error),
        })?;
        match read_record(&patched, field) {
            Ok(record) => {
                return record_text(record, &patched).map(|t| t.map(|t| Cow::Owned(t.into_owned())))
            }
            Err(e) => error = e,
        }
    }
}

/// What a record holds at `field`.
enum Record<'a> {
    Text(Cow<'a, str>),
    NotString(&'static str),
    NoField,
    NotObject(&'static str),
}

fn read_record<'a>(text: &'a str, field: &str) -> serde_json::Result<Record<'a>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let record = RecordSeed { field }.deserialize(&mut de)?;
    de.end()?;
    Ok(record)
}

/// The text of a parsed record of `line` (whose keys a record without the field lists).
fn record_text<'a>(record: Record<'a>, line: &str) -> Result<Option<Cow<'a, str>>, BadLine> {
    match record {
        Record::Text(text) => Ok(Some(text)),
        Record::NotString(kind) => Err(BadLine::NotString { kind }),
        Record::NotObject(kind) => Err(BadLine::NotObject { kind }),
        Record::NoField => {
            let keys = (&mut serde_json::Deserializer::from_str(line))
                .deserialize_map(Keys)
                .map_err(|e| BadLine::NotJson {
                    reason: json_reason(&e),
                })?;
            Err(BadLine::NoField { keys })
        }
    }
}

/// serde_json's message without its " at line 1" (a line is parsed alone).
fn json_reason(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let reason = message
        .split_once(" at line ")
        .map_or(message.as_str(), |(reason, _)| reason);
    format!("{reason} at column {}", error.column())
}

/// Python's `json` reads `NaN`, `Infinity` and `-Infinity` as floats; serde_json stops there.
/// The line with the literal where the error is replaced by a float of the same length (so
/// later columns stay), or None when the error is anything else.
fn python_number(text: &str, error: &serde_json::Error) -> Option<String> {
    // Where a value was expected (a literal) or a number began ("-Infinity"); never inside a
    // string, where "NaN" is text.
    let reason = error.to_string();
    let at_value = reason.starts_with("expected value") || reason.starts_with("invalid number");
    if !error.is_syntax() || !at_value || error.column() == 0 {
        return None;
    }
    let at = error.column() - 1;
    for (literal, float) in [
        ("-Infinity", "-0.000000"),
        ("Infinity", "0.000000"),
        ("NaN", "0.0"),
    ] {
        // serde_json stops on the literal's first byte, or after a minus sign.
        for start in [at.saturating_sub(1), at] {
            let end = start + literal.len();
            if text.get(start..end) == Some(literal)
                && !text[end..].starts_with(|c: char| c.is_ascii_digit() || ".eE+-".contains(c))
            {
                return Some(format!("{}{float}{}", &text[..start], &text[end..]));
            }
        }
    }
    None
}

/// Reads a record, keeping only `field`'s value (the last one, if repeated).
struct RecordSeed<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = Record<'de>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Record<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = Record<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<'de>, A::Error> {
        let mut found = Record::NoField;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if *key == *self.field.as_bytes() {
                found = match map.next_value::<Value<'de>>()? {
                    Value::Text(text) => Record::Text(text),
                    Value::Other(kind) => Record::NotString(kind),
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Record<'de>, A::Error> {
        ValueKind.visit_seq(seq).map(Record::NotObject)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Record<'de>, E> {
        Ok(Record::NotObject("str"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Record<'de>, E> {
        Ok(Record::NotObject("bool"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Record<'de>, E> {
        Ok(Record::NotObject("int"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Record<'de>, E> {
        Ok(Record::NotObject("int"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Record<'de>, E> {
        Ok(Record::NotObject("float"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Record<'de>, E> {
        Ok(Record::NotObject("NoneType"))
    }
}

/// An object key's bytes, borrowed from the line when it has no escapes. Read as bytes, a key
/// may hold a lone surrogate escape (as WTF-8), as Python's `json` allows.
struct Key<'a>(Cow<'a, [u8]>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_bytes(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// The keys of an object as text (bytes that are no UTF-8, from a lone surrogate, as U+FFFD),
/// sorted, each once.
struct Keys;

impl<'de> Visitor<'de> for Keys {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut keys = std::collections::BTreeSet::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            keys.insert(String::from_utf8_lossy(&key).into_owned());
            map.next_value::<IgnoredAny>()?;
        }
        Ok(keys.into_iter().collect())
    }
}

/// The field's value: its text, or the Python name of what it is instead.
enum Value<'a> {
    Text(Cow<'a, str>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value::Text(Cow::Owned(v)))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value<'de>, E> {
        ValueKind.visit_bool(v).map(Value::Other)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value<'de>, E> {
        ValueKind.visit_i64(v).map(Value::Other)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value<'de>, E> {
        ValueKind.visit_u64(v).map(Value::Other)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value<'de>, E> {
        ValueKind.visit_f64(v).map(Value::Other)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value<'de>, E> {
        ValueKind.visit_unit().map(Value::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value<'de>, A::Error> {
        ValueKind.visit_seq(seq).map(Value::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value<'de>, A::Error> {
        ValueKind.visit_map(map).map(Value::Other)
    }
}

/// Skips a value that is not text, naming it as Python names its type.
struct ValueKind;

impl<'de> Visitor<'de> for ValueKind {
    type Value = &'static str;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<&'static str, E> {
        Ok("str")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<&'static str, E> {
        Ok("bool")
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<&'static str, E> {
        Ok("int")
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<&'static str, E> {
        Ok("int")
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<&'static str, E> {
        Ok("float")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<&'static str, E> {
        Ok("NoneType")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<&'static str, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok("list")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<&'static str, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok("dict")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &str) -> Result<Option<String>, BadLine> {
        parse_line(line.as_bytes(), "text").map(|t| t.map(Cow::into_owned))
    }

    #[test]
    fn the_field_is_read_with_escapes_and_the_last_repeat_wins() {
        assert_eq!(
            text(r#"{"id": 1, "text": "a\nb \u00e9 \ud83d\ude00"}"#),
            Ok(Some("a\nb é 😀".into()))
        );
        assert_eq!(
            text(r#"{"text": 1, "te\u0078t": "last"}"#),
            Ok(Some("last".into()))
        );
        assert_eq!(
            text("\u{feff}{\"text\": \"bom\"}\r\n"),
            Ok(Some("bom".into()))
        );
        assert_eq!(text(" \t\r\n"), Ok(None));
    }

    #[test]
    fn lone_surrogates_pass_in_keys_and_other_values_but_are_no_text() {
        assert_eq!(
            text(r#"{"\ud800": "\udc00", "text": "ok"}"#),
            Ok(Some("ok".into()))
        );
        assert_eq!(
            text(r#"{"\ud800": 1}"#),
            Err(BadLine::NoField {
                keys: vec!["\u{fffd}".repeat(3)]
            })
        );
        assert!(matches!(
            text(r#"{"text": "a\ud800"}"#),
            Err(BadLine::NotJson { .. })
        ));
    }

    #[test]
    fn python_numbers_are_numbers_where_python_reads_them() {
        assert_eq!(
            text(r#"{"a": NaN, "b": [-Infinity, Infinity], "text": "ok"}"#),
            Ok(Some("ok".into()))
        );
        assert_eq!(
            text(r#"{"text": NaN}"#),
            Err(BadLine::NotString { kind: "float" })
        );
        assert!(matches!(
            text(r#"{"text": NaN1}"#),
            Err(BadLine::NotJson { .. })
        ));
        assert!(matches!(
            text(r#"{"text": "NaN" NaN}"#),
            Err(BadLine::NotJson { .. })
        ));
        // An invalid escape just before "NaN" in a string is no number to patch.
        assert!(matches!(
            text(r#"{"text": "\udc4NaN"}"#),
            Err(BadLine::NotJson { .. })
        ));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!(
            text(r#"{"body": "x", "id": 1, "body": 2}"#),
            Err(BadLine::NoField {
                keys: vec!["body".into(), "id".into()]
            })
        );
        assert_eq!(
            text(r#"["text"]"#),
            Err(BadLine::NotObject { kind: "list" })
        );
        assert_eq!(text(r#""text""#), Err(BadLine::NotObject { kind: "str" }));
        assert_eq!(
            text(r#"{"text": null}"#),
            Err(BadLine::NotString { kind: "NoneType" })
        );
        assert_eq!(
            text(r#"{"text": {"a": 1}}"#),
            Err(BadLine::NotString { kind: "dict" })
        );
        match text(r#"{"text": "a"} x"#) {
            Err(BadLine::NotJson { reason }) => {
                assert!(reason.ends_with("at column 15"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_line(b"{\"text\": \"caf\xe9\"}", "text"),
            Err(BadLine::NotUtf8 { offset: 13 })
        );
    }

    #[test]
    fn a_block_gives_its_texts_in_order_and_places_its_bad_lines() {
        let mut block = Vec::new();
        for i in 0..20_000 {
            block.extend_from_slice(format!("{{\"text\": \"doc {i}\"}}\n").as_bytes());
            if i % 5000 == 1 {
                block.extend_from_slice(b"{broken\n\n");
            }
        }
        block.extend_from_slice(b"{\"text\": \"\xff\"}"); // the last line may lack its newline
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a test pool");
        let parsed = pool.install(|| parse_block(&block, "text"));
        let expected: Vec<String> = (0..20_000).map(|i| format!("doc {i}")).collect();
        assert_eq!(parsed.texts, expected);
        let places: Vec<(usize, usize)> = parsed.bad.iter().map(|b| (b.position, b.line)).collect();
        assert_eq!(
            places,
            [
                (2, 2),
                (5002, 5004),
                (10002, 10006),
                (15002, 15008),
                (20000, 20008)
            ]
        );
        assert_eq!(
            parsed.bad[4].reason,
            BadLine::NotUtf8 {
                offset: block.len() - 3
            }
        );
    }
}
