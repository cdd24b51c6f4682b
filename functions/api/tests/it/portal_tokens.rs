//! How `/portal-api` checks a portal token by itself (no gateway authorizer
//! in front of it): every claim must fit, keys rotate with no window, and a
//! signing key secret that cannot be used turns the portal off, never the
//! API. The same against Secrets Manager (moto): tests/it/portal_secret.rs.

use crate::portal::{bearer, token_of, ISSUER, TEST_KEY};
use crate::support::{local_world, request, TestSystem, MANAGE, ORG};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use std::time::Duration;
use webhooks_aws::runtime_secret::ProviderSecret;
use webhooks_fn_api::portal::keys::{PortalKeys, SigningKeyError, MIN_RSA_BITS};
use webhooks_fn_api::portal::{PortalIssuer, AUDIENCE};

const NEXT_KEY: &str = include_str!("fixtures/portal-test-key-2.pem");
const SMALL_KEY: &str = include_str!("fixtures/portal-test-key-1024.pem");

/// The public half of a private key, in PEM (`PUBLIC KEY`).
fn public_pem(private_pem: &str) -> String {
    rsa::RsaPrivateKey::from_pkcs8_pem(private_pem)
        .expect("a test key")
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encodes")
}

fn kid_of(private_pem: &str) -> String {
    PortalKeys::from_pem(private_pem)
        .expect("a test key")
        .signing_key_id()
        .expect("RS256 keys have ids")
        .to_string()
}

/// A token signed with `private_pem` whose header and claims are the
/// genuine ones with `change` applied.
fn crafted(private_pem: &str, change: impl FnOnce(&mut Header, &mut Value)) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid_of(private_pem));
    let mut claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("portal:{ORG}"), "org_id": ORG,
        "scope": MANAGE, "token_use": "portal", "iat": now, "nbf": now, "exp": now + 600,
    });
    change(&mut header, &mut claims);
    let key = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem).expect("a test key");
        EncodingKey::from_rsa_der(private.to_pkcs1_der().expect("encodes").as_bytes())
    };
    jsonwebtoken::encode(&header, &claims, &key).expect("signed")
}

fn rs256_world() -> TestSystem {
    let mut w = local_world();
    w.api = w
        .api
        .with_portal(PortalIssuer::rs256_pem(TEST_KEY, ISSUER).expect("the test key loads"));
    w
}

async fn status(w: &TestSystem, token: &str) -> u16 {
    w.send(bearer("GET", "/portal-api/v1/endpoints", "", token))
        .await
        .status
}

#[tokio::test]
async fn every_claim_of_a_portal_token_must_fit() {
    let w = rs256_world();
    // The genuine token, built the way the refused ones below are.
    assert_eq!(status(&w, &crafted(TEST_KEY, |_, _| {})).await, 200);
    let now = chrono::Utc::now().timestamp();
    let refused: Vec<(&str, String)> = vec![
        (
            "another issuer",
            crafted(TEST_KEY, |_, c| {
                c["iss"] = json!("https://evil.example.com/portal")
            }),
        ),
        (
            "no issuer",
            crafted(TEST_KEY, |_, c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        (
            "another audience",
            crafted(TEST_KEY, |_, c| c["aud"] = json!("webhooks-api")),
        ),
        (
            "no audience",
            crafted(TEST_KEY, |_, c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "another use",
            crafted(TEST_KEY, |_, c| c["token_use"] = json!("access")),
        ),
        (
            "no use",
            crafted(TEST_KEY, |_, c| {
                c.as_object_mut().unwrap().remove("token_use");
            }),
        ),
        (
            "not yet valid",
            crafted(TEST_KEY, |_, c| c["nbf"] = json!(now + 60)),
        ),
        (
            "no nbf",
            crafted(TEST_KEY, |_, c| {
                c.as_object_mut().unwrap().remove("nbf");
            }),
        ),
        (
            "expired",
            crafted(TEST_KEY, |_, c| c["exp"] = json!(now - 1)),
        ),
        (
            "no org",
            crafted(TEST_KEY, |_, c| {
                c.as_object_mut().unwrap().remove("org_id");
            }),
        ),
        (
            "empty org",
            crafted(TEST_KEY, |_, c| c["org_id"] = json!(" ")),
        ),
        ("no kid", crafted(TEST_KEY, |h, _| h.kid = None)),
        (
            "another kid",
            crafted(TEST_KEY, |h, _| h.kid = Some(kid_of(NEXT_KEY))),
        ),
        ("a key it does not know", crafted(NEXT_KEY, |_, _| {})),
        (
            "a key it does not know, claiming a known kid",
            crafted(NEXT_KEY, |h, _| h.kid = Some(kid_of(TEST_KEY))),
        ),
    ];
    for (what, token) in &refused {
        let r = w
            .send(bearer("GET", "/portal-api/v1/endpoints", "", token))
            .await;
        r.assert_error(401, "unauthorized");
        assert!(!r.error_message().contains(token.as_str()), "{what}");
    }
    // Algorithm confusion: HS256 keyed with the public key, and `none`.
    let public = public_pem(TEST_KEY);
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "org_id": ORG, "scope": MANAGE,
        "token_use": "portal", "nbf": now, "exp": now + 600});
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid_of(TEST_KEY));
    let confused =
        jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(public.as_bytes())).unwrap();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, kid_of(TEST_KEY))),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    // A genuine token with another org put in its payload.
    let genuine = crafted(TEST_KEY, |_, _| {});
    let mut parts: Vec<String> = genuine.split('.').map(str::to_string).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string().replace(ORG, "org_b"));
    let tampered = parts.join(".");
    for (what, token) in [("hs256", confused), ("none", none), ("tampered", tampered)] {
        assert_eq!(status(&w, &token).await, 401, "{what}");
    }
    // Bearer scheme: case-insensitive; anything else is 401.
    let lower = lambda_http::http::Request::builder()
        .uri("/portal-api/v1/endpoints")
        .header("authorization", format!("bearer {genuine}"))
        .body(lambda_http::Body::Empty)
        .unwrap();
    assert_eq!(w.send(lower).await.status, 200);
    let basic = lambda_http::http::Request::builder()
        .uri("/portal-api/v1/endpoints")
        .header("authorization", format!("Basic {genuine}"))
        .body(lambda_http::Body::Empty)
        .unwrap();
    assert_eq!(w.send(basic).await.status, 401);
}

#[tokio::test]
async fn a_key_rotates_with_no_window() {
    // The secret's value at each step of the README's rotation: the old
    // key; the old key and the next one's public half; the next key and the
    // old one's public half; the next key alone.
    let steps = [
        TEST_KEY.to_string(),
        format!("{TEST_KEY}\n{}", public_pem(NEXT_KEY)),
        format!("{NEXT_KEY}\n{}", public_pem(TEST_KEY)),
        NEXT_KEY.to_string(),
    ];
    let issuers: Vec<PortalIssuer> = steps
        .iter()
        .map(|pem| PortalIssuer::rs256_pem(pem, ISSUER).expect("each step loads"))
        .collect();
    let now = chrono::Utc::now().timestamp();
    let mut tokens = Vec::new();
    for issuer in &issuers {
        tokens.push(
            issuer
                .token(ORG, now, now + 600)
                .await
                .expect("signed")
                .expect("keys"),
        );
    }
    // While instances move from one step to the next, each accepts what the
    // other signs.
    for step in 0..steps.len() - 1 {
        for (signer, checker) in [(step, step + 1), (step + 1, step)] {
            let caller = issuers[checker].caller(&tokens[signer], now).await;
            assert_eq!(
                caller.map(|c| c.org_id),
                Ok(ORG.to_string()),
                "signed at step {signer}, checked at step {checker}"
            );
        }
    }
    // Once the old key is gone, what it signed is refused.
    let refused = issuers[3].caller(&tokens[0], now).await.unwrap_err();
    assert_eq!(refused.code(), "unauthorized");
    // The next key signs from step 2 on.
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_eq!(kid(&tokens[1]), kid_of(TEST_KEY));
    assert_eq!(kid(&tokens[2]), kid_of(NEXT_KEY));
    let keys = issuers[2].keys().await.unwrap();
    assert_eq!(keys.key_ids(), vec![kid_of(NEXT_KEY), kid_of(TEST_KEY)]);
}

#[test]
fn unusable_signing_key_secrets_say_why_without_echoing_them() {
    let two_private = format!("{TEST_KEY}\n{NEXT_KEY}");
    let small_public = format!("{TEST_KEY}\n{}", public_pem(SMALL_KEY));
    let json_wrapped = json!({ "key": TEST_KEY }).to_string();
    let certificate = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let garbled =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----";
    let cases: Vec<(&str, String, SigningKeyError)> = vec![
        ("empty", String::new(), SigningKeyError::NoPem),
        (
            "not PEM",
            "hunter2-not-a-key".into(),
            SigningKeyError::NoPem,
        ),
        ("JSON", json_wrapped, SigningKeyError::TextOutsidePem),
        ("garbled", garbled.into(), SigningKeyError::NotRsaPrivateKey),
        ("small", SMALL_KEY.into(), SigningKeyError::TooSmall(1024)),
        (
            "small public",
            small_public,
            SigningKeyError::TooSmall(1024),
        ),
        (
            "two private",
            two_private,
            SigningKeyError::PrivateKeyCount(2),
        ),
        (
            "public only",
            public_pem(TEST_KEY),
            SigningKeyError::PrivateKeyCount(0),
        ),
        (
            "certificate",
            certificate.into(),
            SigningKeyError::UnsupportedBlock("CERTIFICATE".into()),
        ),
    ];
    for (what, value, expected) in cases {
        let e = PortalKeys::from_pem(&value).unwrap_err();
        assert_eq!(e, expected, "{what}");
        let text = e.to_string();
        for secret_part in ["hunter2", "c2VjcmV0", "MII"] {
            assert!(!text.contains(secret_part), "{what}: {text}");
        }
    }
    assert!(SigningKeyError::TooSmall(1024)
        .to_string()
        .contains(&MIN_RSA_BITS.to_string()));
    assert!(SigningKeyError::NotRsaPrivateKey
        .to_string()
        .contains("RSA private key"));
    // PKCS#1 private and public blocks are understood too.
    let pkcs1 = {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        let next = rsa::RsaPrivateKey::from_pkcs8_pem(NEXT_KEY).unwrap();
        let old = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY).unwrap();
        format!(
            "{}{}",
            next.to_pkcs1_pem(LineEnding::LF).unwrap().as_str(),
            old.to_public_key().to_pkcs1_pem(LineEnding::LF).unwrap()
        )
    };
    let keys = PortalKeys::from_pem(&pkcs1).expect("PKCS#1 loads");
    assert_eq!(keys.key_ids(), vec![kid_of(NEXT_KEY), kid_of(TEST_KEY)]);
}

#[tokio::test]
async fn an_unusable_signing_key_turns_the_portal_off_not_the_api() {
    let good = PortalIssuer::rs256_pem(TEST_KEY, ISSUER).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = good.token(ORG, now, now + 600).await.unwrap().unwrap();
    for (what, value) in [
        ("not PEM", "not a pem".to_string()),
        ("too small", SMALL_KEY.to_string()),
        ("empty", String::new()),
    ] {
        let mut w = local_world();
        let issuer =
            PortalIssuer::from_secret(ProviderSecret::plain(&value), ISSUER, Duration::ZERO);
        w.api = w.api.with_portal_loaded(issuer).await;
        let health = w.send(request("GET", "/healthz", "", None)).await;
        assert_eq!(health.status, 200, "{what}");
        assert_eq!(
            w.manage("GET", "/v1/endpoints", "").await.status,
            200,
            "{what}"
        );
        // As when no portal is configured.
        let r = w.manage("POST", "/v1/portal-sessions", "").await;
        r.assert_error(404, "not_found");
        assert_eq!(
            r.error_message(),
            "the portal is not configured here",
            "{what}"
        );
        let r = w
            .send(bearer("GET", "/portal-api/v1/endpoints", "", &token))
            .await;
        r.assert_error(401, "unauthorized");
        assert!(r.error_message().contains("not available"), "{what}");
    }
    // The same key through a secret works, and links are as before.
    let mut w = local_world();
    w.api = w
        .api
        .with_portal_loaded(PortalIssuer::from_secret(
            ProviderSecret::plain(TEST_KEY),
            ISSUER,
            Duration::ZERO,
        ))
        .await;
    let r = w.manage("POST", "/v1/portal-sessions", "").await;
    assert_eq!(r.status, 201, "{}", r.json);
    let minted = token_of(r.json["url"].as_str().unwrap()).to_string();
    assert_eq!(status(&w, &minted).await, 200);
    assert_eq!(status(&w, &token).await, 200);
}
