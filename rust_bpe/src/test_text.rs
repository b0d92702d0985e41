//! Test inputs shared by the modules' tests.

/// A real English text of about 1 MB.
pub(crate) const SHAKESPEARE: &str =
    include_str!("../../python/smallgpt/assets/tinyshakespeare.txt");

/// `len` characters of `alphabet` drawn by an xorshift64 generator started from `seed | 1`.
pub(crate) fn random_text(alphabet: &str, seed: u64, len: usize) -> String {
    let alphabet: Vec<char> = alphabet.chars().collect();
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            alphabet[(state % alphabet.len() as u64) as usize]
        })
        .collect()
}
