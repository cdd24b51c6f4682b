//! `POST /v1/portal-sessions` and the portal's API and page: the ttl rules,
//! who may open a session, what the token holds (one org, `webhooks:manage`
//! only, an expiry never after the opening token's), that `/portal-api`
//! checks the token itself (an expired one is 401), and the page with its
//! headers. How tokens are checked and keys rotate: `portal_tokens`.

use crate::support::{local_world, request, TestSystem, MANAGE, ORG, OTHER_ORG, WRITE};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Map, Value};
use webhooks_fn_api::portal::{PortalIssuer, AUDIENCE, CONTENT_SECURITY_POLICY, MAX_TTL_SECONDS};

const SECRET: &[u8] = b"portal-test-secret";
const DEV_ISSUER: &str = "test-portal";
pub const TEST_KEY: &str = include_str!("fixtures/portal-test-key.pem");
pub const ISSUER: &str = "https://webhooks.example.com/portal";

fn world() -> TestSystem {
    let mut w = local_world();
    w.api = w.api.with_portal(PortalIssuer::hs256(SECRET, DEV_ISSUER));
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

pub fn token_of(url: &str) -> &str {
    url.split_once("/portal#token=").expect("a portal link").1
}

/// A request as API Gateway passes it on a route without an authorizer:
/// the bearer token in its header, no claims in its context.
pub fn bearer(method: &str, uri: &str, body: &str, token: &str) -> lambda_http::Request {
    lambda_http::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(lambda_http::Body::from(body.to_string()))
        .expect("a valid test request")
}

/// A portal link for [`ORG`], opened with a plain manage token.
async fn open_session(w: &TestSystem, body: &str) -> String {
    let r = w
        .manage("POST", "/v1/portal-sessions", body.to_string())
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["url"].as_str().expect("url").to_string()
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
async fn the_portal_api_checks_the_session_token_itself() {
    let w = world();
    let ep = w.create_endpoint(&["lead_won"]).await;
    let url = open_session(&w, "").await;
    let token = token_of(&url);
    // No authorizer in front of /portal-api: the bearer token alone.
    let r = w
        .send(bearer("GET", "/portal-api/v1/endpoints", "", token))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["data"][0]["id"], ep.as_str());
    let r = w
        .send(bearer(
            "GET",
            &format!("/portal-api/v1/endpoints/{ep}"),
            "",
            token,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    // Without a token, or with one that is not a portal session: 401.
    w.send(request("GET", "/portal-api/v1/endpoints", "", None))
        .await
        .assert_error(401, "unauthorized");
    w.send(bearer("GET", "/portal-api/v1/endpoints", "", "not.a.token"))
        .await
        .assert_error(401, "unauthorized");
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
    assert_eq!(claims["iss"], DEV_ISSUER);
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
    let url = open_session(&w, "").await;
    let token = token_of(&url);
    let r = w
        .send(bearer(
            "POST",
            "/portal-api/v1/portal-sessions",
            "{}",
            token,
        ))
        .await;
    r.assert_error(403, "forbidden");
    assert!(r.error_message().contains("portal session"));
    // Nor can it publish events.
    w.send(bearer(
        "POST",
        "/portal-api/v1/events",
        r#"{"type":"lead_won","data":{}}"#,
        token,
    ))
    .await
    .assert_error(403, "forbidden");
    // Portal claims on /v1 (where the platform's authorizer stands) are
    // refused: portal tokens work under /portal-api only.
    let exp = (chrono::Utc::now().timestamp() + 600).to_string();
    let r = w
        .send(request(
            "GET",
            "/v1/endpoints",
            "",
            Some(&[
                ("org_id", ORG),
                ("scope", MANAGE),
                ("token_use", "portal"),
                ("exp", exp.as_str()),
            ]),
        ))
        .await;
    r.assert_error(401, "unauthorized");
    assert!(r.error_message().contains("/portal-api"));
}

#[tokio::test]
async fn an_expired_portal_token_is_401_with_no_leeway() {
    let w = world();
    let ep = w.create_endpoint(&["lead_won"]).await;
    let issuer = PortalIssuer::hs256(SECRET, DEV_ISSUER);
    let now = chrono::Utc::now().timestamp();
    for (exp, status) in [
        (now + 60, 200),
        (now, 401),
        (now - 1, 401),
        (now - 3600, 401),
    ] {
        let token = issuer
            .token(ORG, now - 7200, exp)
            .await
            .expect("signed")
            .expect("keys");
        let r = w
            .send(bearer(
                "GET",
                &format!("/portal-api/v1/endpoints/{ep}"),
                "",
                &token,
            ))
            .await;
        assert_eq!(r.status, status, "exp {exp}: {}", r.json);
        if status == 401 {
            assert_eq!(r.error_code(), "unauthorized");
            assert!(r.error_message().contains("expired"), "{}", r.json);
        }
    }
    // A portal token without exp is refused too.
    let mut claims = Map::new();
    for (k, v) in [
        ("iss", DEV_ISSUER),
        ("aud", AUDIENCE),
        ("org_id", ORG),
        ("scope", MANAGE),
        ("token_use", "portal"),
    ] {
        claims.insert(k.into(), Value::from(v));
    }
    claims.insert("nbf".into(), Value::from(now));
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    w.send(bearer("GET", "/portal-api/v1/endpoints", "", &no_exp))
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn the_portal_prefix_serves_the_same_routes_for_the_same_org_only() {
    let w = world();
    let ep = w.create_endpoint(&["lead_won"]).await;
    let token = token_of(&open_session(&w, "").await).to_string();
    let direct = w.manage("GET", "/v1/endpoints", "").await;
    let prefixed = w
        .send(bearer("GET", "/portal-api/v1/endpoints", "", &token))
        .await;
    assert_eq!(prefixed.status, 200);
    assert_eq!(prefixed.json, direct.json);
    // Claims a gateway might put in the context are never read there: the
    // token alone says who calls.
    let mut req = bearer("GET", "/portal-api/v1/endpoints", "", &token);
    req = lambda_http::RequestExt::with_request_context(
        req,
        crate::support::context(&[("org_id", OTHER_ORG), ("scope", MANAGE)]),
    );
    assert_eq!(w.send(req).await.json, direct.json);
    let other = w
        .send(request(
            "POST",
            "/v1/portal-sessions",
            "",
            Some(&[("org_id", OTHER_ORG), ("scope", MANAGE)]),
        ))
        .await;
    let other_token = token_of(other.json["url"].as_str().unwrap()).to_string();
    w.send(bearer(
        "GET",
        &format!("/portal-api/v1/endpoints/{ep}"),
        "",
        &other_token,
    ))
    .await
    .assert_error(404, "not_found");
    for path in [
        "/portal-api/v2/endpoints",
        "/portal-api",
        "/portal-api/healthz",
        "/portal-auth/.well-known/jwks.json",
    ] {
        w.send(bearer("GET", path, "", &token))
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn without_an_issuer_there_are_no_sessions() {
    let w = local_world();
    let r = w.manage("POST", "/v1/portal-sessions", "").await;
    r.assert_error(404, "not_found");
    assert_eq!(r.error_message(), "the portal is not configured here");
    let token = token_of(&open_session(&world(), "").await).to_string();
    w.send(bearer("GET", "/portal-api/v1/endpoints", "", &token))
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn rs256_sessions_are_signed_by_the_stacks_key_and_checked_by_the_api() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::DecodePrivateKey;
    let w = rs256_world();
    let ep = w.create_endpoint(&["lead_won"]).await;
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

    // Signed with the key of the secret, named by its RFC 7638 thumbprint.
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY).unwrap();
    let public_der = private.to_public_key().to_pkcs1_der().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let keys = PortalIssuer::rs256_pem(TEST_KEY, ISSUER)
        .unwrap()
        .keys()
        .await
        .unwrap();
    assert_eq!(header.kid.as_deref(), keys.signing_key_id());
    assert_eq!(keys.signing_key_id().map(str::len), Some(43));
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&[ISSUER]);
    v.leeway = 0;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(
        token,
        &DecodingKey::from_rsa_der(public_der.as_bytes()),
        &v,
    )
    .expect("verifies with the key's public half")
    .claims;
    assert_eq!(claims["org_id"], ORG);
    assert_eq!(claims["scope"], MANAGE);

    // The api accepts it under /portal-api, by itself.
    let r = w
        .send(bearer(
            "GET",
            &format!("/portal-api/v1/endpoints/{ep}"),
            "",
            token,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    // No discovery document or JWKS is published any more: nothing needs them.
    for path in [
        "/portal-auth/.well-known/openid-configuration",
        "/portal-auth/.well-known/jwks.json",
    ] {
        assert_eq!(raw(&w, "GET", path).await.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn the_page_is_public_with_a_strict_csp_and_no_framing() {
    let w = world();
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
