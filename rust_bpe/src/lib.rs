//! Byte-level BPE: pre-tokenization, training and encoding.
//! The Python bindings at the end of this file are compiled only with the `python` feature.

mod char_classes;
pub mod pretokenize;
pub mod vocab;

#[cfg(feature = "python")]
mod python {
    use pyo3::prelude::*;

    use crate::pretokenize::{pieces, Pattern};

    /// Splits `text` into pre-token pieces with the named pattern ("gpt2", "cl100k" or "none").
    #[pyfunction]
    fn pretokenize(py: Python<'_>, text: &str, pattern: &str) -> PyResult<Vec<String>> {
        let pattern =
            Pattern::from_name(pattern).map_err(pyo3::exceptions::PyValueError::new_err)?;
        Ok(py.detach(|| {
            pieces(pattern, text)
                .into_iter()
                .map(str::to_owned)
                .collect()
        }))
    }

    #[pymodule]
    #[pyo3(name = "_bpe")]
    fn bpe_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add_function(wrap_pyfunction!(pretokenize, m)?)?;
        Ok(())
    }
}
