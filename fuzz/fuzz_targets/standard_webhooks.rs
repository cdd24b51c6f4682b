//! Standard Webhooks header verification (webhook-signature, X-Signature) with arbitrary header strings, ids, timestamps and secrets.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::standard_webhooks(data);
});
