//! Incremental UTF-8 decoding of a byte stream, for printing tokens as they are generated.

/// Turns a stream of byte chunks into text, emitting a character only once all its bytes have
/// arrived. Invalid bytes become U+FFFD exactly as a one-shot lossy decode of the whole stream
/// (Python's `errors="replace"`) would produce them.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes` and returns the text completed by them (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        let mut pos = 0;
        loop {
            match std::str::from_utf8(&self.pending[pos..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    pos = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid_end = pos + e.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(&self.pending[pos..valid_end]));
                    match e.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            pos = valid_end + bad;
                        }
                        // An incomplete character at the end: wait for its other bytes.
                        None => {
                            pos = valid_end;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..pos);
        text
    }

    /// Ends the stream: the bytes of an unfinished character become U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }

    /// Bytes held back because their character is not complete yet.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_bytewise(bytes: &[u8]) -> String {
        let mut stream = Utf8Stream::default();
        let mut text: String = bytes.iter().map(|b| stream.push(&[*b])).collect();
        text.push_str(&stream.finish());
        text
    }

    #[test]
    fn bytewise_stream_equals_lossy_decode() {
        let cases: [&[u8]; 7] = [
            "héllo wörld 😀 中文".as_bytes(),
            b"\xf0\x9f\x98",
            b"a\xffb\xc3",
            b"\xe2\x82\xac\xe2\x82",
            b"\xf0\x80\x80\x80",
            b"\xed\xa0\x80x",
            b"\xc3\x28\xa0\xa1",
        ];
        for bytes in cases {
            assert_eq!(stream_bytewise(bytes), String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn incomplete_character_is_held_back() {
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(&[0xF0, 0x9F]), "");
        assert_eq!(stream.pending(), &[0xF0, 0x9F]);
        assert_eq!(stream.push(&[0x98, 0x80, b'!']), "😀!");
    }
}
