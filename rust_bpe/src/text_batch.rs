//! Many texts in one buffer: the records of a block of a corpus, kept on the Rust side so they
//! reach the encoder (or the piece counter) without becoming one Python string each.

/// Texts one after the other in one `String`, with where each ends.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TextBatch {
    text: String,
    ends: Vec<usize>,
    chars: usize,
}

impl TextBatch {
    /// The batch of `texts`, in order.
    pub fn from_texts<S: AsRef<str>>(texts: impl IntoIterator<Item = S>) -> Self {
        let mut batch = Self::default();
        for text in texts {
            batch.text.push_str(text.as_ref());
            batch.ends.push(batch.text.len());
        }
        batch.chars = count_chars(&batch.text);
        batch
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the batch holds no text.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Text `index` (panics past the end, like slice indexing).
    pub fn get(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.text[start..self.ends[index]]
    }

    /// The texts in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Characters (Unicode scalar values) of all texts together.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// UTF-8 bytes of each text.
    pub fn byte_lengths(&self) -> impl Iterator<Item = usize> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.ends.iter().zip(starts).map(|(end, start)| end - start)
    }
}

/// Characters of `text`: its bytes less the UTF-8 continuation bytes.
fn count_chars(text: &str) -> usize {
    text.bytes().filter(|&b| (b as i8) >= -0x40).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_back_its_texts_and_counts_their_characters() {
        let texts = ["naïve", "", "🦀 and text", "x"];
        let batch = TextBatch::from_texts(texts);
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.iter().collect::<Vec<_>>(), texts);
        let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
        assert_eq!(batch.chars(), chars);
        assert!(TextBatch::from_texts(Vec::<&str>::new()).is_empty());
    }
}
