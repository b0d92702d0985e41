use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_bpe")]
fn bpe_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
