//! The fuzz targets' inputs as regression tests: every file of
//! `fuzz/corpus/<target>/` (seeds, and any crash found by fuzzing, once
//! fixed) goes through the same function the cargo-fuzz target calls
//! (`fuzz/harness.rs`). Fuzzing itself is `make fuzz` (`scripts/fuzz.sh`).

use crate::fuzz_harness;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

/// Runs `check` on every corpus file of `target`, naming the file that
/// fails; prints what each input came to (`--nocapture`).
fn replay(target: &str, check: fn(&[u8]) -> Option<u16>) {
    let files = corpus(target);
    let mut outcomes = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("read corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        match result {
            Ok(outcome) => outcomes.push(format!(
                "{name}={}",
                outcome.map_or("-".to_string(), |s| s.to_string())
            )),
            Err(_) => panic!("{target}: {} fails", file.display()),
        }
    }
    println!(
        "{target}: {} inputs replayed: {}",
        files.len(),
        outcomes.join(" ")
    );
}

#[test]
fn standard_webhooks_corpus() {
    replay("standard_webhooks", fuzz_harness::standard_webhooks);
}

#[test]
fn api_request_corpus() {
    replay("api_request", fuzz_harness::api_request);
}

#[test]
fn inbound_request_corpus() {
    replay("inbound_request", fuzz_harness::inbound_request);
}
