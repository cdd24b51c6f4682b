//! Endpoint signing secrets: `whsec_` followed by standard base64 of the key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use std::fmt;

const PREFIX: &str = "whsec_";
const GENERATED_KEY_BYTES: usize = 32;
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 64;

/// A signing secret. Its `Debug` form never shows the value, so it cannot
/// leak through logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    key: Vec<u8>,
}

/// Why a user-supplied secret was refused. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("secret must start with 'whsec_'")]
    MissingPrefix,
    #[error("secret must be 'whsec_' followed by standard base64")]
    NotBase64,
    #[error("secret key must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {0}")]
    WrongLength(usize),
}

impl Secret {
    /// A fresh secret: `whsec_` + base64 of 32 random bytes.
    pub fn generate() -> Secret {
        let mut key = vec![0u8; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        let value = format!("{PREFIX}{}", STANDARD.encode(&key));
        Secret { value, key }
    }

    /// Accepts `whsec_` + base64 of 24 to 64 bytes.
    pub fn parse(value: &str) -> Result<Secret, SecretError> {
        let encoded = value
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::WrongLength(key.len()));
        }
        Ok(Secret {
            value: value.to_string(),
            key,
        })
    }

    /// The whole secret string, as shown to its owner. `X-Signature` is keyed
    /// with these bytes.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The decoded key that keys the Standard Webhooks signature.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_parse_back() {
        let s = Secret::generate();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(s.key().len(), 32);
        assert_eq!(Secret::parse(s.expose()).unwrap(), s);
        assert_ne!(Secret::generate(), s);
    }

    #[test]
    fn user_secrets_are_checked() {
        assert_eq!(Secret::parse("abc"), Err(SecretError::MissingPrefix));
        assert_eq!(Secret::parse("whsec_!!!"), Err(SecretError::NotBase64));
        let short = format!("whsec_{}", STANDARD.encode([1u8; 23]));
        assert_eq!(Secret::parse(&short), Err(SecretError::WrongLength(23)));
        let long = format!("whsec_{}", STANDARD.encode([1u8; 65]));
        assert_eq!(Secret::parse(&long), Err(SecretError::WrongLength(65)));
        for n in [24, 64] {
            let ok = format!("whsec_{}", STANDARD.encode(vec![7u8; n]));
            assert_eq!(Secret::parse(&ok).unwrap().key().len(), n);
        }
    }

    #[test]
    fn debug_hides_the_value() {
        let s = Secret::generate();
        assert!(!format!("{s:?}").contains(&s.expose()[6..]));
    }
}
