//! Byte-level BPE: pre-tokenization, training and encoding.
//! The Python bindings live in `python.rs` and are compiled only with the `python` feature.

#[cfg(feature = "python")]
mod python;
