//! Where `encode_ordinary`'s time goes, stage by stage, on one thread:
//! `cargo run --release -p rust_bpe --example encode_stages -- VOCAB.json TEXT.txt`.
//!
//! Prints the time of pre-tokenization alone, then of whole encodes (first and second call in
//! this process); the difference is the merge stage and writing the ids. Beside the wall clock,
//! the thread's CPU time (from /proc/thread-self/schedstat), which time-slicing with other
//! processes on a shared machine does not inflate, and the page faults of each stage.

use std::time::Instant;

use rust_bpe::encode::Encoder;
use rust_bpe::pretokenize::for_each_span;
use rust_bpe::vocab::Vocab;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [vocab_path, text_path] = &args[..] else {
        return Err("usage: encode_stages VOCAB.json TEXT.txt".into());
    };
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
    let encoder = Encoder::new(&Vocab::from_json(&read(vocab_path)?)?);
    let text = read(text_path)?;
    let mb = text.len() as f64 / 1e6;
    let report = |stage: &str, (start, cpu, faults): (Instant, f64, u64)| {
        let s = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let faults = minor_faults() - faults;
        println!(
            "{stage:<28} {:7.1} ms {:7.1} ms CPU {:7.1} MB/s of CPU {faults:7} page faults",
            s * 1e3,
            cpu * 1e3,
            mb / cpu
        );
    };
    let now = || (Instant::now(), cpu_seconds(), minor_faults());
    for call in ["first", "second"] {
        let start = now();
        let mut pieces = 0usize;
        for_each_span(encoder.pattern(), &text, |_, _| pieces += 1);
        report(&format!("pre-tokenize ({call})"), start);
        let start = now();
        let ids = encoder.encode_ordinary(&text);
        report(&format!("encode_ordinary ({call})"), start);
        println!("{pieces} pieces, {} ids", ids.len());
    }
    Ok(())
}

/// Minor page faults of this process so far (field 10 of /proc/self/stat; 0 where unreadable).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    rest.split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// CPU time of this thread in seconds (0 where /proc/thread-self/schedstat is unreadable).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let nanos: u64 = stat
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    nanos as f64 / 1e9
}
