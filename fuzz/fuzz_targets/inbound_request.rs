//! The inbound provider routes (Stripe-Signature, Twilio form bodies and signatures, WhatsApp) with arbitrary requests, signed or not: no panic, no 5xx.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = harness::inbound_request(data);
});
