//! Endpoint auth (CONTRACT section 12): `basic` and
//! `oauth2_client_credentials` set on create, replaced or removed by PATCH,
//! shown without the password or client secret (write-only), and refused
//! with a 400 naming the field; nothing is written then.

use crate::support::*;
use serde_json::{json, Value};
use webhooks_domain::endpoint::EndpointAuth;
use webhooks_ports::{EndpointLookup, EndpointStore};

const PASSWORD: &str = "pw-0f3b-never-shown";
const CLIENT_SECRET: &str = "cs-8e21-never-shown";

fn basic() -> Value {
    json!({"type": "basic", "username": "hooks", "password": PASSWORD})
}

fn oauth() -> Value {
    json!({"type": "oauth2_client_credentials", "token_url": "https://auth.example.com/oauth/token",
           "client_id": "devsphere", "client_secret": CLIENT_SECRET, "scope": "hooks:write"})
}

async fn create_with(w: &TestSystem, fields: Value) -> Reply {
    let mut body = json!({"url": "https://example.com/hook", "event_types": ["invoice.paid"]});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    w.manage("POST", "/v1/endpoints", body.to_string()).await
}

fn shows_no_secret(r: &Reply) {
    let text = String::from_utf8_lossy(&r.bytes);
    assert!(
        !text.contains(PASSWORD) && !text.contains(CLIENT_SECRET),
        "{text}"
    );
}

async fn stored_auth(w: &TestSystem, id: &str) -> Option<EndpointAuth> {
    w.endpoints.get(ORG, id).await.unwrap().unwrap().auth
}

#[tokio::test]
async fn basic_auth_is_kept_and_reads_show_only_its_username() {
    let w = world();
    let r = create_with(&w, json!({ "auth": basic() })).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let shown = json!({"type": "basic", "username": "hooks"});
    assert_eq!(r.json["auth"], shown);
    shows_no_secret(&r);
    let id = r.json["id"].as_str().unwrap().to_string();
    let read = w.manage("GET", &format!("/v1/endpoints/{id}"), "").await;
    assert_eq!(read.json["auth"], shown);
    shows_no_secret(&read);
    let list = w.manage("GET", "/v1/endpoints", "").await;
    assert_eq!(list.json["data"][0]["auth"], shown);
    shows_no_secret(&list);
    assert_eq!(
        stored_auth(&w, &id).await,
        Some(EndpointAuth::Basic {
            username: "hooks".into(),
            password: PASSWORD.into()
        })
    );
}

#[tokio::test]
async fn oauth2_is_kept_and_reads_show_everything_but_the_client_secret() {
    let w = world();
    let r = create_with(&w, json!({ "auth": oauth() })).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let shown = json!({"type": "oauth2_client_credentials",
        "token_url": "https://auth.example.com/oauth/token", "client_id": "devsphere",
        "scope": "hooks:write"});
    assert_eq!(r.json["auth"], shown);
    shows_no_secret(&r);
    let id = r.json["id"].as_str().unwrap().to_string();
    let read = w.manage("GET", &format!("/v1/endpoints/{id}"), "").await;
    assert_eq!(read.json["auth"], shown);
    match stored_auth(&w, &id).await {
        Some(EndpointAuth::OAuth2ClientCredentials(c)) => {
            assert_eq!(c.client_secret, CLIENT_SECRET)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn without_auth_reads_show_null() {
    let w = world();
    let ep = w.create_endpoint_for(ORG, &["*"]).await;
    assert_eq!(ep["auth"], Value::Null);
    let r = create_with(&w, json!({ "auth": null })).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["auth"], Value::Null);
}

#[tokio::test]
async fn bad_auth_is_a_400_naming_the_field_and_writes_nothing() {
    let w = world();
    let with = |base: Value, f: Value| {
        let mut o = base;
        for (k, v) in f.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    };
    for (auth, named) in [
        (json!("basic"), "auth"),
        (json!({"username": "u", "password": PASSWORD}), "auth.type"),
        (json!({"type": "digest"}), "auth.type"),
        (with(basic(), json!({"password": null})), "auth.password"),
        (with(basic(), json!({"password": 1234})), "auth.password"),
        (with(basic(), json!({"username": "a:b"})), "auth.username"),
        (
            with(basic(), json!({"client_secret": CLIENT_SECRET})),
            "client_secret",
        ),
        (
            with(oauth(), json!({"token_url": "http://auth.example.com/t"})),
            "auth.token_url",
        ),
        (
            with(oauth(), json!({"token_url": "https://10.0.0.8/token"})),
            "auth.token_url",
        ),
        (
            with(
                oauth(),
                json!({"token_url": "https://169.254.169.254/latest/meta-data"}),
            ),
            "auth.token_url",
        ),
        (with(oauth(), json!({"client_id": ""})), "auth.client_id"),
        (
            with(oauth(), json!({"client_secret": null})),
            "auth.client_secret",
        ),
        (with(oauth(), json!({"scope": "a\nb"})), "auth.scope"),
    ] {
        let r = create_with(&w, json!({ "auth": auth })).await;
        r.assert_invalid(named);
        shows_no_secret(&r);
    }
    // Authorization is the auth's to set.
    let r = create_with(
        &w,
        json!({"auth": basic(), "headers": {"Authorization": "Bearer x"}}),
    )
    .await;
    r.assert_invalid("Authorization");
    assert!(w
        .endpoints
        .list(ORG, 10, None)
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn patch_replaces_and_removes_auth_and_keeps_it_otherwise() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let uri = format!("/v1/endpoints/{id}");
    let r = w
        .manage("PATCH", &uri, json!({ "auth": basic() }).to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["auth"]["type"], "basic");
    shows_no_secret(&r);

    let r = w
        .manage("PATCH", &uri, json!({"description": "x"}).to_string())
        .await;
    assert_eq!(r.json["auth"]["username"], "hooks");
    assert!(matches!(
        stored_auth(&w, &id).await,
        Some(EndpointAuth::Basic { .. })
    ));

    let r = w
        .manage("PATCH", &uri, json!({ "auth": oauth() }).to_string())
        .await;
    assert_eq!(r.json["auth"]["type"], "oauth2_client_credentials");
    assert!(matches!(
        stored_auth(&w, &id).await,
        Some(EndpointAuth::OAuth2ClientCredentials(_))
    ));

    let r = w
        .manage("PATCH", &uri, json!({ "auth": null }).to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["auth"], Value::Null);
    assert_eq!(stored_auth(&w, &id).await, None);
}

#[tokio::test]
async fn auth_and_an_authorization_header_never_stand_together() {
    let w = world();
    let id = w.create_endpoint(&["*"]).await;
    let uri = format!("/v1/endpoints/{id}");
    let r = w
        .manage(
            "PATCH",
            &uri,
            json!({"headers": {"Authorization": "Token t"}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    // Auth beside the stored header: refused, nothing written.
    let r = w
        .manage(
            "PATCH",
            &uri,
            json!({"auth": basic(), "description": "y"}).to_string(),
        )
        .await;
    r.assert_invalid("Authorization");
    let stored = w.endpoints.get(ORG, &id).await.unwrap().unwrap();
    assert_eq!(stored.auth, None);
    assert_ne!(stored.description, "y");
    // Both in one PATCH: the header removed, auth set.
    let r = w
        .manage(
            "PATCH",
            &uri,
            json!({"auth": basic(), "headers": null}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["headers"], json!({}));
    // And the header back beside auth: refused.
    let r = w
        .manage(
            "PATCH",
            &uri,
            json!({"headers": {"authorization": "Token t"}}).to_string(),
        )
        .await;
    r.assert_invalid("authorization");
}

#[tokio::test]
async fn loopback_token_urls_are_for_local_development_only() {
    let local = local_world();
    let auth = json!({"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1:9/token",
        "client_id": "c", "client_secret": CLIENT_SECRET});
    assert_eq!(
        create_with(&local, json!({ "auth": auth })).await.status,
        201
    );
    create_with(&world(), json!({ "auth": auth }))
        .await
        .assert_invalid("auth.token_url");
}
