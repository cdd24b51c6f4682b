//! The keys that sign and check portal tokens.
//!
//! In AWS the signing key secret holds one RSA private key in PEM, which
//! signs, and may hold RSA public keys in PEM after it, which only check.
//! A key thus rotates with no moment when a live session is refused: first
//! every instance learns the next key's public half, then the next key
//! signs while the old one's public half still checks, and last the old one
//! goes (README, "Rotating the portal signing key"). Each key's id (`kid`) is
//! its RFC 7638 thumbprint, so the token says which key signed it.
//!
//! In `webhooks dev` one HS256 secret signs and checks.

use super::{AUDIENCE, TOKEN_USE};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Fewest bits of an RSA key that signs or checks portal tokens.
pub const MIN_RSA_BITS: usize = 2048;

/// Clock difference allowed on `nbf` between the instance that signed a
/// token and the one that checks it. `exp` gets none.
const NBF_LEEWAY_SECONDS: u64 = 5;

/// Why the signing key secret cannot be used. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error(
        "the portal signing key secret holds no PEM block: it must be an RSA private key in \
         PEM, optionally followed by RSA public keys in PEM"
    )]
    NoPem,
    #[error(
        "the portal signing key secret holds text outside its PEM blocks (store the PEM text \
         itself as the secret string, not JSON)"
    )]
    TextOutsidePem,
    #[error("the portal signing key secret has a {0} block that does not end")]
    Unterminated(String),
    #[error(
        "the portal signing key secret has a {0} block; only PRIVATE KEY, RSA PRIVATE KEY, \
         PUBLIC KEY and RSA PUBLIC KEY blocks are understood"
    )]
    UnsupportedBlock(String),
    #[error("the portal signing key is not an RSA private key in PEM")]
    NotRsaPrivateKey,
    #[error("a public key in the portal signing key secret is not an RSA public key in PEM")]
    NotRsaPublicKey,
    #[error("the portal signing key secret must hold exactly one private key, not {0}")]
    PrivateKeyCount(usize),
    #[error(
        "a portal key of {0} bits is too small: use an RSA key of {MIN_RSA_BITS} bits or more"
    )]
    TooSmall(usize),
    #[error("the portal signing key cannot be encoded")]
    Unencodable,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Genuine, but its `exp` has passed.
    Expired,
    /// Not a portal token of this issuer: bad signature, unknown key,
    /// another issuer, audience or use, not yet valid, or malformed.
    Invalid,
}

/// What a valid portal token says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PortalClaims {
    /// The one org the session acts for.
    pub org_id: String,
    /// Space-separated scopes (`webhooks:manage`).
    pub scope: String,
    /// Unix seconds from which it is refused.
    pub exp: i64,
    token_use: String,
}

/// The key that signs, and every key that checks.
pub struct PortalKeys {
    algorithm: Algorithm,
    signing: EncodingKey,
    /// `kid` of the signing key (RS256 only).
    signing_kid: Option<String>,
    checking: Vec<CheckingKey>,
}

struct CheckingKey {
    /// `None` only for the one HS256 key of `webhooks dev`.
    kid: Option<String>,
    key: DecodingKey,
}

impl std::fmt::Debug for PortalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalKeys")
            .field("algorithm", &self.algorithm)
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

impl PortalKeys {
    /// One shared secret signs and checks (HS256; `webhooks dev`).
    pub fn hs256(secret: &[u8]) -> Self {
        PortalKeys {
            algorithm: Algorithm::HS256,
            signing: EncodingKey::from_secret(secret),
            signing_kid: None,
            checking: vec![CheckingKey {
                kid: None,
                key: DecodingKey::from_secret(secret),
            }],
        }
    }

    /// The keys of a signing key secret: exactly one RSA private key
    /// (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`), which signs, and
    /// any number of RSA public keys (`PUBLIC KEY` or `RSA PUBLIC KEY`),
    /// which also check; every key of at least [`MIN_RSA_BITS`].
    pub fn from_pem(text: &str) -> Result<Self, SigningKeyError> {
        use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
        use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let mut private = Vec::new();
        let mut public = Vec::new();
        for (label, block) in pem_blocks(text)? {
            match label {
                "PRIVATE KEY" => private.push(
                    rsa::RsaPrivateKey::from_pkcs8_pem(block)
                        .map_err(|_| SigningKeyError::NotRsaPrivateKey)?,
                ),
                "RSA PRIVATE KEY" => private.push(
                    rsa::RsaPrivateKey::from_pkcs1_pem(block)
                        .map_err(|_| SigningKeyError::NotRsaPrivateKey)?,
                ),
                "PUBLIC KEY" => public.push(
                    rsa::RsaPublicKey::from_public_key_pem(block)
                        .map_err(|_| SigningKeyError::NotRsaPublicKey)?,
                ),
                "RSA PUBLIC KEY" => public.push(
                    rsa::RsaPublicKey::from_pkcs1_pem(block)
                        .map_err(|_| SigningKeyError::NotRsaPublicKey)?,
                ),
                other => return Err(SigningKeyError::UnsupportedBlock(other.to_string())),
            }
        }
        let private = match <[_; 1]>::try_from(private) {
            Ok([key]) => key,
            Err(keys) => return Err(SigningKeyError::PrivateKeyCount(keys.len())),
        };
        let signer = private.to_public_key();
        let der = private
            .to_pkcs1_der()
            .map_err(|_| SigningKeyError::Unencodable)?;
        let mut checking: Vec<CheckingKey> = Vec::new();
        for key in std::iter::once(&signer).chain(&public) {
            let checked = rsa_checking_key(key)?;
            if !checking.iter().any(|k| k.kid == checked.kid) {
                checking.push(checked);
            }
        }
        Ok(PortalKeys {
            algorithm: Algorithm::RS256,
            signing: EncodingKey::from_rsa_der(der.as_bytes()),
            signing_kid: checking[0].kid.clone(),
            checking,
        })
    }

    /// The ids of the keys that check, the signing key's first (none for
    /// HS256).
    pub fn key_ids(&self) -> Vec<&str> {
        self.checking
            .iter()
            .filter_map(|k| k.kid.as_deref())
            .collect()
    }

    /// The signing key's id, which its tokens carry (RS256 only).
    pub fn signing_key_id(&self) -> Option<&str> {
        self.signing_kid.as_deref()
    }

    /// `claims`, signed.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(self.algorithm);
        header.kid = self.signing_kid.clone();
        jsonwebtoken::encode(&header, claims, &self.signing)
    }

    /// The claims of `token` when it is a portal token of `issuer`, signed
    /// by one of these keys, for the portal audience, already valid (`nbf`,
    /// a few seconds' leeway) and not yet expired at `now` (`exp`, none).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        now: i64,
    ) -> Result<PortalClaims, TokenRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRefusal::Invalid)?;
        if header.alg != self.algorithm {
            return Err(TokenRefusal::Invalid);
        }
        let key = match (header.kid.as_deref(), self.checking.as_slice()) {
            (Some(kid), keys) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            (None, [only]) if only.kid.is_none() => Some(only),
            (None, _) => None,
        }
        .ok_or(TokenRefusal::Invalid)?;
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = NBF_LEEWAY_SECONDS;
        let claims = jsonwebtoken::decode::<PortalClaims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenRefusal::Expired,
                _ => TokenRefusal::Invalid,
            })?
            .claims;
        if claims.token_use != TOKEN_USE || claims.org_id.trim().is_empty() {
            return Err(TokenRefusal::Invalid);
        }
        if claims.exp <= now {
            return Err(TokenRefusal::Expired);
        }
        Ok(claims)
    }
}

/// A public key that checks RS256 tokens, named by its thumbprint.
fn rsa_checking_key(key: &rsa::RsaPublicKey) -> Result<CheckingKey, SigningKeyError> {
    use rsa::traits::PublicKeyParts;
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(SigningKeyError::TooSmall(bits));
    }
    let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
    Ok(CheckingKey {
        kid: Some(key_id(&n, &e)),
        key: DecodingKey::from_rsa_raw_components(&n, &e),
    })
}

/// The RFC 7638 thumbprint of an RSA public key (modulus and exponent, big
/// endian): base64url of the SHA-256 of its canonical JWK.
pub fn key_id(n: &[u8], e: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use sha2::Digest as _;
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(e),
        URL_SAFE_NO_PAD.encode(n)
    );
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()))
}

/// The PEM blocks of `text` as (label, whole block), in order; nothing but
/// whitespace may lie between them.
fn pem_blocks(text: &str) -> Result<Vec<(&str, &str)>, SigningKeyError> {
    const BEGIN: &str = "-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        if !rest[..start].trim().is_empty() {
            return Err(SigningKeyError::TextOutsidePem);
        }
        let after = &rest[start + BEGIN.len()..];
        let label = after
            .find("-----")
            .map(|end| &after[..end])
            .filter(|l| {
                !l.is_empty()
                    && l.len() <= 40
                    && l.bytes().all(|b| b.is_ascii_uppercase() || b == b' ')
            })
            .ok_or(SigningKeyError::NoPem)?;
        let end_marker = format!("-----END {label}-----");
        let end = rest[start..]
            .find(&end_marker)
            .ok_or_else(|| SigningKeyError::Unterminated(label.to_string()))?;
        let block_end = start + end + end_marker.len();
        blocks.push((label, &rest[start..block_end]));
        rest = &rest[block_end..];
    }
    if !rest.trim().is_empty() {
        return Err(if blocks.is_empty() {
            SigningKeyError::NoPem
        } else {
            SigningKeyError::TextOutsidePem
        });
    }
    if blocks.is_empty() {
        return Err(SigningKeyError::NoPem);
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    #[test]
    fn key_ids_are_rfc_7638_thumbprints() {
        // The example of RFC 7638, section 3.1.
        let n = URL_SAFE_NO_PAD.decode("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw").unwrap();
        let e = URL_SAFE_NO_PAD.decode("AQAB").unwrap();
        assert_eq!(
            key_id(&n, &e),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn pem_blocks_are_split_and_anything_else_is_refused() {
        let a = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----";
        let b = "-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----";
        let both = format!("\n{a}\n\n{b}\n");
        assert_eq!(
            pem_blocks(&both).unwrap(),
            vec![("PRIVATE KEY", a), ("PUBLIC KEY", b)]
        );
        assert_eq!(pem_blocks(""), Err(SigningKeyError::NoPem));
        assert_eq!(pem_blocks("not a pem"), Err(SigningKeyError::NoPem));
        assert_eq!(
            pem_blocks(&format!(r#"{{"key": "{a}"}}"#)),
            Err(SigningKeyError::TextOutsidePem)
        );
        assert_eq!(
            pem_blocks(&format!("{a}\ntrailing")),
            Err(SigningKeyError::TextOutsidePem)
        );
        assert_eq!(
            pem_blocks("-----BEGIN PRIVATE KEY-----\nAAAA"),
            Err(SigningKeyError::Unterminated("PRIVATE KEY".into()))
        );
        assert_eq!(
            pem_blocks("-----BEGIN private-----\nAAAA\n-----END private-----"),
            Err(SigningKeyError::NoPem)
        );
    }

    #[test]
    fn dev_tokens_check_with_their_secret_only() {
        let keys = PortalKeys::hs256(b"dev");
        let now = chrono::Utc::now().timestamp();
        let mut claims = Map::new();
        for (k, v) in [
            ("iss", Value::from("dev-portal")),
            ("aud", Value::from(AUDIENCE)),
            ("org_id", Value::from("org_a")),
            ("scope", Value::from("webhooks:manage")),
            ("token_use", Value::from(TOKEN_USE)),
            ("nbf", Value::from(now)),
            ("exp", Value::from(now + 60)),
        ] {
            claims.insert(k.into(), v);
        }
        let token = keys.sign(&claims).unwrap();
        assert_eq!(
            keys.verify(&token, "dev-portal", now).unwrap().org_id,
            "org_a"
        );
        assert_eq!(
            PortalKeys::hs256(b"other").verify(&token, "dev-portal", now),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(
            keys.verify(&token, "elsewhere", now),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(
            keys.verify(&token, "dev-portal", now + 60),
            Err(TokenRefusal::Expired)
        );
        assert!(keys.key_ids().is_empty());
    }
}
