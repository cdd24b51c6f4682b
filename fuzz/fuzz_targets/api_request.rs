//! The management API handler with arbitrary methods, paths, queries, claims and bodies: no panic, no 5xx.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::api_request(data);
});
