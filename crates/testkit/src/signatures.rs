//! Signature checks written from the specifications, independent of the
//! platform's own signing code: `X-Signature` (hex HMAC-SHA256 keyed with the
//! secret string) and Standard Webhooks (`webhook-signature`).

use crate::receiver::Received;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Checks every signature header of a delivery against `secret`
/// (`whsec_...`). Returns what is wrong, if anything.
pub fn verify_delivery(req: &Received, secret: &str) -> Result<(), String> {
    let body = &req.body;
    let expected = format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])));
    let got = req.header("x-signature").ok_or("no X-Signature")?;
    if got != expected {
        return Err(format!("X-Signature mismatch: {got} != {expected}"));
    }
    verify_standard(req, secret)
}

/// Checks the Standard Webhooks headers: some `v1,` entry must match.
pub fn verify_standard(req: &Received, secret: &str) -> Result<(), String> {
    let id = req.header("webhook-id").ok_or("no webhook-id")?;
    let ts = req
        .header("webhook-timestamp")
        .ok_or("no webhook-timestamp")?;
    let sigs = req
        .header("webhook-signature")
        .ok_or("no webhook-signature")?;
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("secret lacks whsec_")?)
        .map_err(|e| format!("secret not base64: {e}"))?;
    let expected = format!(
        "v1,{}",
        STANDARD.encode(hmac(
            &key,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", &req.body]
        ))
    );
    if sigs.split(' ').any(|s| s == expected) {
        Ok(())
    } else {
        Err(format!("no webhook-signature entry matches (got {sigs})"))
    }
}
