//! The Python module `smallgpt._bpe`: PyO3 bindings over the crate, compiled only with the
//! `python` feature (maturin turns it on), so `cargo test` links without libpython.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use numpy::IntoPyArray;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::decode::Utf8Stream;
use crate::encode::Encoder;
use crate::encode_file::{encode_file, FileError};
use crate::jsonl::{parse_block, BadLine};
use crate::pretokenize::{last_safe_cut, pieces, Pattern};
use crate::text_batch::TextBatch;
use crate::train::{train, PieceCounts, TrainError};
use crate::vocab::Vocab;

fn value_error(message: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(message.to_string())
}

/// `num_threads` as given, or a ValueError for 0 (None means all cores).
fn checked_threads(num_threads: Option<usize>) -> PyResult<Option<usize>> {
    match num_threads {
        Some(0) => Err(value_error(
            "num_threads must be at least 1 (or None for all cores)",
        )),
        n => Ok(n),
    }
}

/// A rayon pool of `num_threads` threads, or None (use the global pool, all cores).
fn thread_pool(num_threads: Option<usize>) -> PyResult<Option<rayon::ThreadPool>> {
    match checked_threads(num_threads)? {
        None => Ok(None),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map(Some)
            .map_err(|e| value_error(format!("cannot start {n} threads: {e}"))),
    }
}

/// Runs `f` on a new pool of `num_threads` threads (the global pool when None).
fn on_pool<R: Send>(num_threads: Option<usize>, f: impl FnOnce() -> R + Send) -> PyResult<R> {
    Ok(in_pool(&thread_pool(num_threads)?, f))
}

/// Ids as u32, or a ValueError naming the first id outside the vocabulary.
fn checked_ids(ids: &[i64], vocab_size: usize) -> PyResult<Vec<u32>> {
    ids.iter()
        .map(|&id| {
            u32::try_from(id)
                .ok()
                .filter(|&i| (i as usize) < vocab_size)
                .ok_or_else(|| {
                    value_error(format!(
                        "unknown token id {id} (ids run from 0 to {})",
                        vocab_size.saturating_sub(1)
                    ))
                })
        })
        .collect()
}

fn file_error(path: &Path, error: FileError, stopped: Option<PyErr>) -> PyErr {
    let shown = path.display();
    match error {
        FileError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(format!("no such file: {shown}"))
        }
        FileError::Io(e) => PyOSError::new_err(format!("cannot read {shown}: {e}")),
        FileError::InvalidUtf8 { offset } => value_error(format!(
            "{shown} is not UTF-8 text (bad byte at offset {offset})"
        )),
        FileError::Stopped => stopped.unwrap_or_else(|| value_error("encoding stopped")),
    }
}

/// Texts held in one Rust buffer (`TextBatch`): what `parse_jsonl` gives for a block of
/// records. Wherever a list of texts is taken (`encode_texts_to_numpy`, `add_texts`), a batch
/// stands for its texts, in order; they become Python strings only when asked for (`texts`).
#[pyclass(module = "smallgpt._bpe", name = "TextBatch", frozen)]
pub struct PyTextBatch(TextBatch);

#[pymethods]
impl PyTextBatch {
    /// The batch of `texts` (copied into one buffer).
    #[new]
    fn new(texts: Vec<PyBackedStr>) -> Self {
        Self(TextBatch::from_texts(texts.iter().map(|t| &**t)))
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }

    /// The texts as Python strings.
    fn texts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.0.iter().map(|t| PyString::new(py, t)))
    }

    /// Characters of all texts together.
    #[getter]
    fn chars(&self) -> usize {
        self.0.chars()
    }

    /// UTF-8 bytes of each text, as an int64 numpy array.
    fn byte_lengths(&self, py: Python<'_>) -> Py<PyAny> {
        let lengths: Vec<i64> = self.0.byte_lengths().map(|n| n as i64).collect();
        lengths.into_pyarray(py).into_any().unbind()
    }

    fn __repr__(&self) -> String {
        format!(
            "TextBatch({} texts, {} characters)",
            self.0.len(),
            self.0.chars()
        )
    }
}

/// One item of a list of texts: a string, or a batch standing for its texts.
enum TextItem {
    Text(PyBackedStr),
    Batch(Py<PyTextBatch>),
}

/// The items of `texts` (a list of str and `TextBatch`), or a TypeError naming the first
/// that is neither.
fn text_items(texts: &Bound<'_, PyAny>) -> PyResult<Vec<TextItem>> {
    let mut items = Vec::new();
    for (index, item) in texts.try_iter()?.enumerate() {
        let item = item?;
        if let Ok(batch) = item.cast::<PyTextBatch>() {
            items.push(TextItem::Batch(batch.clone().unbind()));
        } else if item.is_instance_of::<PyString>() {
            // Fails only for a str with no UTF-8 (lone surrogates): Python's UnicodeEncodeError.
            items.push(TextItem::Text(item.extract::<PyBackedStr>()?));
        } else {
            return Err(PyTypeError::new_err(format!(
                "texts[{index}] must be a str or a TextBatch, not {}",
                item.get_type().name()?
            )));
        }
    }
    Ok(items)
}

/// Every text of `items`, in order (a batch's texts where it stands).
fn flat_texts(items: &[TextItem]) -> Vec<&str> {
    let mut texts = Vec::with_capacity(items.len());
    for item in items {
        match item {
            TextItem::Text(text) => texts.push(&**text),
            TextItem::Batch(batch) => texts.extend(batch.get().0.iter()),
        }
    }
    texts
}

/// A vocabulary and its encoder: the core the Python `Tokenizer` wraps. Immutable, so it is
/// shared freely between threads.
#[pyclass(module = "smallgpt._bpe", name = "BpeCore", frozen)]
pub struct BpeCore {
    pub(crate) vocab: Vocab,
    pub(crate) encoder: Encoder,
    /// One Python int per id, made on first use: lists of ids are then built by reference
    /// counting instead of allocating an int per token.
    id_objects: PyOnceLock<Vec<Py<PyAny>>>,
}

/// Runs `build` with Python's cyclic garbage collector paused. Lists of ints cannot form
/// cycles, yet each new list counts towards a collection, and the collections that thousands
/// of lists set off traverse every id already stored: a fifth of `encode_batch`'s time. The
/// GIL is held throughout, so no other Python thread sees the collector paused.
fn without_gc<T>(_py: Python<'_>, build: impl FnOnce() -> T) -> T {
    /// Turns the collector back on when dropped, even if `build` panics.
    struct Resume(bool);
    impl Drop for Resume {
        fn drop(&mut self) {
            if self.0 {
                // SAFETY: only flips the collector's flag; the GIL is still held.
                unsafe { pyo3::ffi::PyGC_Enable() };
            }
        }
    }
    // SAFETY: only flips the collector's flag; the GIL is held (`_py`).
    let _resume = Resume(unsafe { pyo3::ffi::PyGC_Disable() } == 1);
    build()
}

/// The ids of consecutive slices as one iterator of known length, which `PyList::new` needs.
struct Joined<'a> {
    rest: std::iter::Flatten<std::slice::Iter<'a, Vec<u32>>>,
    left: usize,
}

impl<'a> Iterator for Joined<'a> {
    type Item = &'a u32;

    fn next(&mut self) -> Option<&'a u32> {
        let id = self.rest.next()?;
        self.left -= 1;
        Some(id)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Joined<'_> {}

impl BpeCore {
    /// Wraps a vocabulary (from training or loading) with its encoder.
    pub(crate) fn from_vocab(vocab: Vocab) -> BpeCore {
        let encoder = Encoder::new(&vocab);
        BpeCore {
            vocab,
            encoder,
            id_objects: PyOnceLock::new(),
        }
    }

    /// The ids of `parts`, one after the other, as a Python list of ints.
    fn id_list<'py>(&self, py: Python<'py>, parts: &[Vec<u32>]) -> PyResult<Bound<'py, PyList>> {
        let objects = self.id_objects.get_or_try_init(py, || {
            (0..self.encoder.vocab_size() as u32)
                .map(|id| Ok(id.into_pyobject(py)?.into_any().unbind()))
                .collect::<PyResult<Vec<_>>>()
        })?;
        let object = |&id: &u32| match objects.get(id as usize) {
            Some(object) => object.bind(py).clone(),
            None => id
                .into_pyobject(py)
                .map(|o| o.into_any())
                .unwrap_or_else(|e| match e {}),
        };
        match parts {
            [ids] => PyList::new(py, ids.iter().map(object)),
            _ => {
                let ids = Joined {
                    rest: parts.iter().flatten(),
                    left: parts.iter().map(Vec::len).sum(),
                };
                PyList::new(py, ids.map(object))
            }
        }
    }

    /// Encodes a file, calling `progress(bytes_done)` (if given) after each chunk and
    /// handing the ids to `push`. The GIL is released except inside `progress`.
    fn stream_file(
        &self,
        py: Python<'_>,
        path: &Path,
        num_threads: Option<usize>,
        progress: Option<Py<PyAny>>,
        mut push: impl FnMut(&[u32]) -> std::io::Result<()> + Send,
    ) -> PyResult<()> {
        let mut failure: Option<PyErr> = None;
        let result = py.detach(|| {
            on_pool(num_threads, || {
                encode_file(&self.encoder, path, |ids, done| {
                    if let Err(e) = push(ids) {
                        failure = Some(PyOSError::new_err(format!("cannot write tokens: {e}")));
                        return false;
                    }
                    Python::attach(|py| {
                        let called = match &progress {
                            Some(callback) => callback.call1(py, (done,)).map(drop),
                            None => Ok(()),
                        };
                        match called.and_then(|()| py.check_signals()) {
                            Ok(()) => true,
                            Err(e) => {
                                failure = Some(e);
                                false
                            }
                        }
                    })
                })
            })
        })?;
        result.map_err(|e| file_error(path, e, failure))
    }
}

#[pymethods]
impl BpeCore {
    /// Loads a vocabulary saved by `to_json`; ValueError says what is wrong with the text.
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> PyResult<BpeCore> {
        py.detach(|| Vocab::from_json(text).map(BpeCore::from_vocab))
            .map_err(value_error)
    }

    /// The vocabulary in smallgpt's versioned JSON format.
    fn to_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.vocab.to_json())
    }

    /// The regular tokens as a tiktoken rank file ("base64 id" lines).
    fn tiktoken_ranks(&self, py: Python<'_>) -> String {
        py.detach(|| self.vocab.tiktoken_ranks())
    }

    /// The vocabulary as a Hugging Face `tokenizer.json`.
    fn hf_tokenizer_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.vocab.hf_tokenizer_json())
    }

    /// Number of ids: regular tokens and special tokens.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.encoder.vocab_size()
    }

    /// Name of the pre-tokenization pattern ("gpt2", "cl100k" or "none").
    #[getter]
    fn pattern_name(&self) -> &'static str {
        self.encoder.pattern().name()
    }

    /// The regex the pre-tokenizer splits like ("" for "none").
    #[getter]
    fn pattern(&self) -> &'static str {
        self.encoder.pattern().regex()
    }

    /// (string, id) of every special token.
    #[getter]
    fn special_tokens(&self) -> Vec<(String, u32)> {
        self.encoder.specials().to_vec()
    }

    /// Ids of `text`; special strings are text except those whose ids are in `allowed`.
    #[pyo3(signature = (text, allowed=Vec::new()))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        allowed: Vec<u32>,
    ) -> PyResult<Bound<'py, PyList>> {
        let ids = py.detach(|| self.encoder.encode_with_specials(text, &allowed));
        self.id_list(py, std::slice::from_ref(&ids))
    }

    /// `encode` of each text, on `num_threads` threads (None: rayon's count, all cores).
    /// The calling thread is one of them: between the runs of texts it encodes, it builds
    /// the Python lists of the runs the others have finished, so list building (which needs
    /// the GIL) overlaps encoding instead of following it.
    #[pyo3(signature = (texts, allowed=Vec::new(), num_threads=None))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        allowed: Vec<u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let threads = checked_threads(num_threads)?.unwrap_or_else(rayon::current_num_threads);
        let mut lists: Vec<Option<Py<PyList>>> = (0..texts.len()).map(|_| None).collect();
        let mut failure: Option<PyErr> = None;
        py.detach(|| {
            self.encoder
                .encode_batch_each(threads, &texts, &allowed, |completed| {
                    Python::attach(|py| {
                        without_gc(py, || {
                            for (text, parts) in completed.texts() {
                                match self.id_list(py, parts) {
                                    Ok(list) => lists[text] = Some(list.unbind()),
                                    Err(e) => failure = Some(e),
                                }
                            }
                        })
                    })
                })
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let lists = lists
            .into_iter()
            .map(|list| list.ok_or_else(|| PyRuntimeError::new_err("a text was not encoded")))
            .collect::<PyResult<Vec<_>>>()?;
        without_gc(py, || PyList::new(py, lists))
    }

    /// Ids of `text` (special strings as text) as a numpy array, uint16 when the vocabulary
    /// fits, else uint32; long texts are encoded in parallel.
    #[pyo3(signature = (text, num_threads=None))]
    fn encode_to_numpy(
        &self,
        py: Python<'_>,
        text: &str,
        num_threads: Option<usize>,
    ) -> PyResult<Py<PyAny>> {
        let encoder = &self.encoder;
        Ok(if encoder.vocab_size() <= 1 << 16 {
            let ids = py.detach(|| on_pool(num_threads, || encoder.encode_ordinary_parallel(text)));
            Vec::<u16>::into_pyarray(ids?, py).into_any().unbind()
        } else {
            let ids = py.detach(|| on_pool(num_threads, || encoder.encode_ordinary_parallel(text)));
            Vec::<u32>::into_pyarray(ids?, py).into_any().unbind()
        })
    }

    /// The ids of all `texts` (special strings as text) one after the other as one numpy
    /// array (uint16 when the vocabulary fits, else uint32), and an int64 array of where each
    /// text's ids start, then their total; encoded in parallel with the GIL released.
    /// A `TextBatch` among `texts` stands for its texts, each with its own offset.
    #[pyo3(signature = (texts, num_threads=None))]
    fn encode_texts_to_numpy(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        num_threads: Option<usize>,
    ) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let items = text_items(texts)?;
        let texts = flat_texts(&items);
        let encoder = &self.encoder;
        let (ids, offsets) = if encoder.vocab_size() <= 1 << 16 {
            let (ids, offsets) =
                py.detach(|| on_pool(num_threads, || encoder.encode_texts::<u16>(&texts)))?;
            (ids.into_pyarray(py).into_any().unbind(), offsets)
        } else {
            let (ids, offsets) =
                py.detach(|| on_pool(num_threads, || encoder.encode_texts::<u32>(&texts)))?;
            (ids.into_pyarray(py).into_any().unbind(), offsets)
        };
        let offsets: Vec<i64> = offsets.into_iter().map(|o| o as i64).collect();
        Ok((ids, offsets.into_pyarray(py).into_any().unbind()))
    }

    /// Ids of a UTF-8 file's text as a numpy array (see `encode_to_numpy`), read in
    /// bounded chunks. `progress(bytes_done)` is called as the file is encoded.
    #[pyo3(signature = (path, num_threads=None, progress=None))]
    fn encode_file_to_numpy(
        &self,
        py: Python<'_>,
        path: PathBuf,
        num_threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if self.encoder.vocab_size() <= 1 << 16 {
            let mut out: Vec<u16> = Vec::new();
            self.stream_file(py, &path, num_threads, progress, |ids| {
                out.extend(ids.iter().map(|&i| i as u16));
                Ok(())
            })?;
            Ok(out.into_pyarray(py).into_any().unbind())
        } else {
            let mut out: Vec<u32> = Vec::new();
            self.stream_file(py, &path, num_threads, progress, |ids| {
                out.extend_from_slice(ids);
                Ok(())
            })?;
            Ok(out.into_pyarray(py).into_any().unbind())
        }
    }

    /// Appends the ids of a UTF-8 file to the raw token file `out` (little-endian uint16
    /// when the vocabulary fits, else uint32), streaming; returns the number of ids written.
    #[pyo3(signature = (path, out, num_threads=None, progress=None))]
    fn encode_file_to_bin(
        &self,
        py: Python<'_>,
        path: PathBuf,
        out: PathBuf,
        num_threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<u64> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .map_err(|e| PyOSError::new_err(format!("cannot open {}: {e}", out.display())))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let narrow = self.encoder.vocab_size() <= 1 << 16;
        let mut written = 0u64;
        let mut bytes = Vec::new();
        self.stream_file(py, &path, num_threads, progress, |ids| {
            bytes.clear();
            for &id in ids {
                if narrow {
                    bytes.extend_from_slice(&(id as u16).to_le_bytes());
                } else {
                    bytes.extend_from_slice(&id.to_le_bytes());
                }
            }
            written += ids.len() as u64;
            writer.write_all(&bytes)
        })?;
        writer
            .flush()
            .map_err(|e| PyOSError::new_err(format!("cannot write {}: {e}", out.display())))?;
        Ok(written)
    }

    /// The bytes of `ids`; ValueError names an id outside the vocabulary.
    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let ids = checked_ids(&ids, self.encoder.vocab_size())?;
        let bytes = py
            .detach(|| self.encoder.decode_bytes(&ids))
            .map_err(value_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The text of `ids`, invalid UTF-8 replaced by U+FFFD.
    fn decode(&self, py: Python<'_>, ids: Vec<i64>) -> PyResult<String> {
        let ids = checked_ids(&ids, self.encoder.vocab_size())?;
        py.detach(|| {
            self.encoder
                .decode_bytes(&ids)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .map_err(value_error)
    }

    /// The bytes of one id (a special token's are its string's).
    fn id_to_bytes<'py>(&self, py: Python<'py>, id: i64) -> PyResult<Bound<'py, PyBytes>> {
        let id = checked_ids(&[id], self.encoder.vocab_size())?[0];
        let bytes = self.encoder.id_to_bytes(id).map_err(value_error)?;
        Ok(PyBytes::new(py, bytes))
    }
}

/// Incremental UTF-8 decoding of token bytes: text is released once its characters are
/// complete.
#[pyclass(module = "smallgpt._bpe", name = "Utf8Stream")]
#[derive(Default)]
struct PyUtf8Stream {
    inner: Utf8Stream,
}

#[pymethods]
impl PyUtf8Stream {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the text they complete (possibly "").
    fn push(&mut self, data: &[u8]) -> String {
        self.inner.push(data)
    }

    /// Ends the stream: an unfinished character becomes U+FFFD.
    fn finish(&mut self) -> String {
        self.inner.finish()
    }

    /// Bytes held back because their character is not complete.
    #[getter]
    fn pending<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.pending())
    }
}

fn train_error(error: TrainError) -> PyErr {
    match &error {
        TrainError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(format!("no such file: {}", path.display()))
        }
        TrainError::Io { .. } => PyOSError::new_err(error.to_string()),
        _ => value_error(error),
    }
}

/// Pre-token counts, fed texts and files (in parallel, GIL released), then trained into a
/// `BpeCore`. Its thread pool is built once, for `num_threads` threads (None: all cores).
#[pyclass(module = "smallgpt._bpe", name = "PieceCounter")]
struct PieceCounter {
    counts: PieceCounts,
    pool: Option<rayon::ThreadPool>,
}

/// Runs `f` on `pool`, or on the global pool when None.
fn in_pool<R: Send>(pool: &Option<rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

#[pymethods]
impl PieceCounter {
    #[new]
    #[pyo3(signature = (pattern, num_threads=None))]
    fn new(pattern: &str, num_threads: Option<usize>) -> PyResult<Self> {
        let pool = thread_pool(num_threads)?;
        Ok(PieceCounter {
            counts: PieceCounts::new(parse_pattern(pattern)?),
            pool,
        })
    }

    /// Counts the pieces of each text (each pre-tokenized on its own; a `TextBatch` stands
    /// for its texts).
    fn add_texts(&mut self, py: Python<'_>, texts: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = text_items(texts)?;
        let texts = flat_texts(&items);
        let (counts, pool) = (&mut self.counts, &self.pool);
        py.detach(|| in_pool(pool, || counts.add_texts(&texts)));
        Ok(())
    }

    /// Counts the pieces of a UTF-8 file, streamed in chunks.
    fn add_file(&mut self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let (counts, pool) = (&mut self.counts, &self.pool);
        py.detach(|| in_pool(pool, || counts.add_file(&path)))
            .map_err(train_error)
    }

    /// Number of text bytes counted so far.
    #[getter]
    fn total_bytes(&self) -> u64 {
        self.counts.total_bytes()
    }

    /// Learns the merges (HF BpeTrainer's) into a vocabulary of at most `vocab_size` ids,
    /// special tokens included. The counts are used up: the counter is empty afterwards.
    fn train(
        &mut self,
        py: Python<'_>,
        vocab_size: usize,
        special_tokens: Vec<String>,
        min_frequency: u64,
    ) -> PyResult<BpeCore> {
        let empty = PieceCounts::new(self.counts.pattern());
        let counts = std::mem::replace(&mut self.counts, empty);
        py.detach(|| {
            in_pool(&self.pool, || {
                train(counts, vocab_size, min_frequency, &special_tokens)
            })
            .map(BpeCore::from_vocab)
        })
        .map_err(train_error)
    }
}

fn parse_pattern(name: &str) -> PyResult<Pattern> {
    Pattern::from_name(name).map_err(value_error)
}

/// Splits `text` into pre-token pieces with the named pattern ("gpt2", "cl100k" or "none").
#[pyfunction]
fn pretokenize(py: Python<'_>, text: &str, pattern: &str) -> PyResult<Vec<String>> {
    let pattern = parse_pattern(pattern)?;
    Ok(py.detach(|| {
        pieces(pattern, text)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }))
}

/// A bad JSONL line as Python sees it: (texts before it, line index in the block, kind,
/// detail). Kinds: "utf8" (detail: the bad byte's offset in the block), "json" (the reason),
/// "missing" (the record's sorted keys, or the name of its type when it is no object),
/// "type" (the name of the field value's type).
type BadRecord = (usize, usize, &'static str, Py<PyAny>);

fn bad_record(
    py: Python<'_>,
    position: usize,
    line: usize,
    reason: BadLine,
) -> PyResult<BadRecord> {
    let (kind, detail) = match reason {
        BadLine::NotUtf8 { offset } => ("utf8", offset.into_pyobject(py)?.into_any()),
        BadLine::NotJson { reason } => ("json", PyString::new(py, &reason).into_any()),
        BadLine::NotObject { kind } => ("missing", PyString::new(py, kind).into_any()),
        BadLine::NoField { keys } => ("missing", PyList::new(py, keys)?.into_any()),
        BadLine::NotString { kind } => ("type", PyString::new(py, kind).into_any()),
    };
    Ok((position, line, kind, detail.unbind()))
}

/// The `text_field` string of each record of `block` (whole JSON lines) as a `TextBatch`,
/// parsed in parallel with the GIL released, and the lines that hold none (see `BadRecord`),
/// in order.
#[pyfunction]
#[pyo3(signature = (block, text_field, num_threads=None))]
fn parse_jsonl(
    py: Python<'_>,
    block: &[u8],
    text_field: &str,
    num_threads: Option<usize>,
) -> PyResult<(PyTextBatch, Vec<BadRecord>)> {
    let (texts, bad) = py.detach(|| {
        on_pool(num_threads, || {
            let parsed = parse_block(block, text_field);
            (TextBatch::from_texts(&parsed.texts), parsed.bad)
        })
    })?;
    let bad = bad
        .into_iter()
        .map(|b| bad_record(py, b.position, b.line, b.reason))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((PyTextBatch(texts), bad))
}

/// The last safe cut of `text` for the named pattern, as a character index (0 if none).
#[pyfunction]
fn safe_cut(text: &str, pattern: &str) -> PyResult<usize> {
    let cut = last_safe_cut(parse_pattern(pattern)?, text);
    Ok(text[..cut].chars().count())
}

#[pymodule]
#[pyo3(name = "_bpe")]
fn bpe_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<BpeCore>()?;
    m.add_class::<PyUtf8Stream>()?;
    m.add_class::<PieceCounter>()?;
    m.add_class::<PyTextBatch>()?;
    m.add_function(wrap_pyfunction!(pretokenize, m)?)?;
    m.add_function(wrap_pyfunction!(safe_cut, m)?)?;
    m.add_function(wrap_pyfunction!(parse_jsonl, m)?)?;
    Ok(())
}
