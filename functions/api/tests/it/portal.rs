//! `POST /v1/portal-sessions` and the portal's public resources: the ttl
//! rules, who may open a session, what the token holds (one org,
//! `webhooks:manage` only, its expiry), that an expired portal token is 401,
//! the RS256 issuer's discovery document and JWKS, and the page itself.

use crate::support::{local_world, request, TestSystem, MANAGE, ORG, OTHER_ORG, WRITE};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use webhooks_fn_api::portal::{PortalIssuer, AUDIENCE, CONTENT_SECURITY_POLICY, MAX_TTL_SECONDS};

const SECRET: &[u8] = b"portal-test-secret";
const TEST_KEY: &str = include_str!("fixtures/portal-test-key.pem");
const ISSUER: &str = "https://webhooks.example.com/portal-auth";

fn world() -> TestSystem {
    let mut w = local_world();
    w.api = w
        .api
        .with_portal(PortalIssuer::hs256(SECRET, "test-portal"));
    w
}

fn rs256_world() -> TestSystem {
    let mut w = local_world();
    let issuer = PortalIssuer::rs256_pem(TEST_KEY, ISSUER)
        .expect("the test key loads")
        .with_base_url(Some("https://webhooks.example.com/".into()));
    w.api = w.api.with_portal(issuer);
    w
}

/// The raw response, for the non-JSON resources.
async fn raw(w: &TestSystem, method: &str, uri: &str) -> lambda_http::Response<lambda_http::Body> {
    webhooks_fn_api::handle(&w.api, request(method, uri, "", None))
        .await
        .expect("handle never returns Err")
}

fn hs256_claims(token: &str) -> Map<String, Value> {
    let mut v = Validation::new(Algorithm::HS256);
    v.set_audience(&[AUDIENCE]);
    v.leeway = 0;
    jsonwebtoken::decode::<Map<String, Value>>(token, &DecodingKey::from_secret(SECRET), &v)
        .expect("a valid HS256 portal token")
        .claims
}

fn token_of(url: &str) -> &str {
    url.split_once("/portal#token=").expect("a portal link").1
}

#[tokio::test]
async fn a_session_never_outlives_the_token_that_opened_it() {
    let w = world();
    let now = chrono::Utc::now().timestamp();
    // The caller's token ends in 10 minutes: so does the session, whatever
    // the ttl asked.
    let caller_exp = (now + 600).to_string();
    for body in ["", r#"{"ttl_seconds":3600}"#, r#"{"ttl_seconds":86400}"#] {
        let r = w
            .send(request(
                "POST",
                "/v1/portal-sessions",
                body,
                Some(&[("org_id", ORG), ("scope", MANAGE), ("exp", &caller_exp)]),
            ))
            .await;
        assert_eq!(r.status, 201, "{body}: {}", r.json);
        let claims = hs256_claims(token_of(r.json["url"].as_str().unwrap()));
        assert_eq!(claims["exp"].as_i64(), Some(now + 600), "{body}");
        let expires_at =
            chrono::DateTime::parse_from_rfc3339(r.json["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!(expires_at.timestamp(), now + 600, "{body}");
    }
    // A caller whose token outlives the ttl gets the ttl.
    let long = (now + 2 * 86_400).to_string();
    let r = w
        .send(request(
            "POST",
            "/v1/portal-sessions",
            r#"{"ttl_seconds":120}"#,
            Some(&[("org_id", ORG), ("scope", MANAGE), ("exp", &long)]),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let claims = hs256_claims(token_of(r.json["url"].as_str().unwrap()));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
}

#[tokio::test]
async fn a_session_is_a_link_holding_a_token_for_one_org_and_manage_only() {
    let w = world();
    let r = w.manage("POST", "/v1/portal-sessions", "").await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.headers["cache-control"], "no-store");
    let url = r.json["url"].as_str().expect("url");
    let claims = hs256_claims(token_of(url));
    assert_eq!(claims["org_id"], ORG);
    assert_eq!(claims["scope"], MANAGE);
    assert_eq!(claims["token_use"], "portal");
    assert_eq!(claims["iss"], "test-portal");
    assert!(
        claims.get("role").is_none(),
        "no role: admin would grant every scope"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600, "default ttl");
    let expires_at = chrono::DateTime::parse_from_rfc3339(r.json["expires_at"].as_str().unwrap())
        .expect("RFC 3339");
    assert_eq!(expires_at.timestamp(), exp);
    assert!(r.json["expires_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn ttl_seconds_is_checked_and_named() {
    let w = world();
    for (body, ttl) in [
        (json!({"ttl_seconds": 1}), 1),
        (json!({"ttl_seconds": 600}), 600),
        (json!({"ttl_seconds": MAX_TTL_SECONDS}), MAX_TTL_SECONDS),
        (json!({"ttl_seconds": null}), 3600),
        (json!({}), 3600),
    ] {
        let r = w
            .manage("POST", "/v1/portal-sessions", body.to_string())
            .await;
        assert_eq!(r.status, 201, "{body}: {}", r.json);
        let c = hs256_claims(token_of(r.json["url"].as_str().unwrap()));
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            ttl,
            "{body}"
        );
    }
    for bad in [
        json!({"ttl_seconds": 0}),
        json!({"ttl_seconds": -5}),
        json!({"ttl_seconds": MAX_TTL_SECONDS + 1}),
        json!({"ttl_seconds": 1.5}),
        json!({"ttl_seconds": "600"}),
        json!({"ttl_seconds": true}),
        json!({"ttl_seconds": 1e30}),
    ] {
        w.manage("POST", "/v1/portal-sessions", bad.to_string())
            .await
            .assert_invalid("ttl_seconds");
    }
    w.manage("POST", "/v1/portal-sessions", r#"{"ttl":60}"#)
        .await
        .assert_invalid("ttl");
    w.manage("POST", "/v1/portal-sessions", "[1]")
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn only_manage_callers_open_sessions_and_portal_tokens_cannot() {
    let w = world();
    w.call_as(ORG, WRITE, "POST", "/v1/portal-sessions", "")
        .await
        .assert_error(403, "forbidden");
    w.send(request("POST", "/v1/portal-sessions", "", None))
        .await
        .assert_error(401, "unauthorized");
    let admin = w
        .send(request(
            "POST",
            "/v1/portal-sessions",
            "",
            Some(&[("org_id", ORG), ("role", "admin")]),
        ))
        .await;
    assert_eq!(admin.status, 201);
    let exp = (chrono::Utc::now().timestamp() + 600).to_string();
    let portal = [
        ("org_id", ORG),
        ("scope", MANAGE),
        ("token_use", "portal"),
        ("exp", exp.as_str()),
    ];
    let r = w
        .send(request("POST", "/v1/portal-sessions", "{}", Some(&portal)))
        .await;
    r.assert_error(403, "forbidden");
    assert!(r.error_message().contains("portal session"));
    // Nor can it publish events.
    w.send(request(
        "POST",
        "/v1/events",
        r#"{"type":"lead_won","data":{}}"#,
        Some(&portal),
    ))
    .await
    .assert_error(403, "forbidden");
}

#[tokio::test]
async fn an_expired_portal_token_is_401_with_no_leeway() {
    let w = world();
    let ep = w.create_endpoint(&["lead_won"]).await;
    let now = chrono::Utc::now().timestamp();
    for (exp, status) in [
        (now + 60, 200),
        (now, 401),
        (now - 1, 401),
        (now - 3600, 401),
    ] {
        let exp = exp.to_string();
        let r = w
            .send(request(
                "GET",
                &format!("/v1/endpoints/{ep}"),
                "",
                Some(&[
                    ("org_id", ORG),
                    ("scope", MANAGE),
                    ("token_use", "portal"),
                    ("exp", &exp),
                ]),
            ))
            .await;
        assert_eq!(r.status, status, "exp {exp}: {}", r.json);
        if status == 401 {
            assert!(r.error_message().contains("expired"));
        }
    }
    // A portal token without exp is refused too.
    w.send(request(
        "GET",
        "/v1/endpoints",
        "",
        Some(&[("org_id", ORG), ("scope", MANAGE), ("token_use", "portal")]),
    ))
    .await
    .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn the_portal_prefix_serves_the_same_routes_for_the_same_org_only() {
    let w = world();
    let ep = w.create_endpoint(&["lead_won"]).await;
    let direct = w.manage("GET", "/v1/endpoints", "").await;
    let prefixed = w.manage("GET", "/portal-api/v1/endpoints", "").await;
    assert_eq!(prefixed.status, 200);
    assert_eq!(prefixed.json, direct.json);
    w.call_as(
        OTHER_ORG,
        MANAGE,
        "GET",
        &format!("/portal-api/v1/endpoints/{ep}"),
        "",
    )
    .await
    .assert_error(404, "not_found");
    for path in [
        "/portal-api/v2/endpoints",
        "/portal-api",
        "/portal-api/healthz",
    ] {
        w.manage("GET", path, "")
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn without_an_issuer_there_are_no_sessions() {
    let w = local_world();
    w.manage("POST", "/v1/portal-sessions", "")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn rs256_tokens_verify_against_the_published_jwks() {
    let w = rs256_world();
    let r = w
        .manage("POST", "/v1/portal-sessions", r#"{"ttl_seconds":120}"#)
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let url = r.json["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://webhooks.example.com/portal#token="),
        "{url}"
    );
    let token = token_of(url);

    let discovery = raw(&w, "GET", "/portal-auth/.well-known/openid-configuration").await;
    assert_eq!(discovery.status(), 200);
    let discovery: Value = serde_json::from_slice(discovery.body().as_ref()).unwrap();
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(
        discovery["jwks_uri"],
        format!("{ISSUER}/.well-known/jwks.json")
    );
    let jwks = raw(&w, "GET", "/portal-auth/.well-known/jwks.json").await;
    assert_eq!(jwks.status(), 200);
    let jwks: JwkSet = serde_json::from_slice(jwks.body().as_ref()).expect("a JWKS");
    assert_eq!(jwks.keys.len(), 1);
    let text = serde_json::to_string(&jwks).unwrap();
    assert!(!text.contains("\"d\""), "no private parts in the JWKS");

    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let key = jwks
        .find(header.kid.as_deref().expect("a kid"))
        .expect("the kid is published");
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&[ISSUER]);
    v.leeway = 0;
    let claims =
        jsonwebtoken::decode::<Map<String, Value>>(token, &DecodingKey::from_jwk(key).unwrap(), &v)
            .expect("verifies with the published key")
            .claims;
    assert_eq!(claims["org_id"], ORG);
    assert_eq!(claims["scope"], MANAGE);
    // Not with the HS256 secret, nor after tampering.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_claims = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&json!({"org_id": OTHER_ORG, "scope": MANAGE, "aud": AUDIENCE, "iss": ISSUER, "exp": claims["exp"]})).unwrap(),
    );
    parts[1] = &forged_claims;
    let forged = parts.join(".");
    assert!(jsonwebtoken::decode::<Map<String, Value>>(
        &forged,
        &DecodingKey::from_jwk(key).unwrap(),
        &v
    )
    .is_err());
}

#[test]
fn a_bad_signing_key_is_refused_without_echoing_it() {
    let e = PortalIssuer::rs256_pem(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----",
        ISSUER,
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains("c2VjcmV0"), "{e}");
    assert!(e.contains("RSA private key"));
}

#[tokio::test]
async fn dev_has_no_jwks_and_the_page_is_public_with_a_strict_csp() {
    let w = world();
    let r = raw(&w, "GET", "/portal-auth/.well-known/jwks.json").await;
    assert_eq!(r.status(), 404);

    let page = raw(&w, "GET", "/portal").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        page.headers()["content-security-policy"],
        CONTENT_SECURITY_POLICY
    );
    assert!(CONTENT_SECURITY_POLICY.contains("default-src 'none'"));
    // No other site may frame the page (clickjacking).
    assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    let html = std::str::from_utf8(page.body().as_ref()).unwrap();
    assert!(html.contains(r#"<script type="module" src="portal/app.js">"#));
    for (path, kind) in [
        ("/portal/app.js", "text/javascript"),
        ("/portal/app.css", "text/css"),
        ("/portal/icon.svg", "image/svg+xml"),
    ] {
        let r = raw(&w, "GET", path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    // Nothing from another origin: no absolute URLs in the page or its style.
    for path in ["/portal", "/portal/app.css"] {
        let r = raw(&w, "GET", path).await;
        let text = std::str::from_utf8(r.body().as_ref()).unwrap();
        assert!(
            !text.contains("http:") && !text.contains("https:") && !text.contains("//"),
            "{path}"
        );
    }
    for (method, path, status) in [
        ("GET", "/portal/nope.js", 404),
        ("GET", "/portal/../etc/passwd", 404),
        ("POST", "/portal", 405),
        ("DELETE", "/portal/app.js", 405),
    ] {
        assert_eq!(
            raw(&w, method, path).await.status(),
            status,
            "{method} {path}"
        );
    }
}
