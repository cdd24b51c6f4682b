//! Keyed hashes and constant-time comparisons shared by the verifiers.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// An HMAC-SHA256 keyed with `key`'s bytes.
pub(crate) fn hmac_sha256(key: &str) -> Option<Hmac<Sha256>> {
    // HMAC takes keys of any length; the error case cannot happen.
    Hmac::<Sha256>::new_from_slice(key.as_bytes()).ok()
}

/// An HMAC-SHA1 keyed with `key`'s bytes.
pub(crate) fn hmac_sha1(key: &str) -> Option<Hmac<Sha1>> {
    Hmac::<Sha1>::new_from_slice(key.as_bytes()).ok()
}

/// Whether two strings are equal, in time independent of where they differ
/// and of their lengths (both are hashed first).
pub(crate) fn strings_equal(a: &str, b: &str) -> bool {
    let a = Sha256::digest(a.as_bytes());
    let b = Sha256::digest(b.as_bytes());
    a.ct_eq(&b).into()
}

/// Whether `bytes` hashes to `expected_hex` (SHA-256, hex in either case),
/// compared in constant time.
pub(crate) fn sha256_matches_hex(bytes: &[u8], expected_hex: &str) -> bool {
    let Ok(expected) = hex::decode(expected_hex.trim()) else {
        return false;
    };
    let actual = Sha256::digest(bytes);
    actual[..].ct_eq(&expected[..]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_strings() {
        assert!(strings_equal("token", "token"));
        assert!(!strings_equal("token", "tokem"));
        assert!(!strings_equal("token", "token2"));
        assert!(!strings_equal("", "x"));
    }

    #[test]
    fn checks_body_hashes() {
        // SHA-256 of "abc" (FIPS 180-2 test vector).
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(sha256_matches_hex(b"abc", abc));
        assert!(sha256_matches_hex(b"abc", &abc.to_uppercase()));
        assert!(!sha256_matches_hex(b"abd", abc));
        assert!(!sha256_matches_hex(b"abc", "not hex"));
        assert!(!sha256_matches_hex(b"abc", &abc[..62]));
    }
}
