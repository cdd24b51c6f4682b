use crate::support::*;
use webhooks_fn_api::ROUTES;

/// A concrete path for each route, with ids of the right shape.
fn concrete(pattern: &str) -> String {
    let id = if pattern.starts_with("/v1/deliveries") {
        format!("dlv_{}", "0".repeat(52))
    } else {
        format!("ep_{}", "0".repeat(26))
    };
    pattern.replace("{id}", &id)
}

#[tokio::test]
async fn health_needs_no_token() {
    let w = world();
    let r = w.send(request("GET", "/healthz", "", None)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn every_other_route_wants_a_token() {
    let w = world();
    for (method, pattern) in ROUTES {
        if *pattern == "/healthz" {
            continue;
        }
        let r = w
            .send(request(method, &concrete(pattern), "{}", None))
            .await;
        r.assert_error(401, "unauthorized");
        // Claims without an org are no better.
        let r = w
            .send(request(
                method,
                &concrete(pattern),
                "{}",
                Some(&[("scope", MANAGE)]),
            ))
            .await;
        r.assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn scoped_routes_want_their_scope() {
    let w = world();
    for (method, pattern) in ROUTES {
        if *pattern == "/healthz" || *pattern == "/v1/event-types" {
            continue;
        }
        // Publishing wants `events:write`; everything else, the event log
        // included, `webhooks:manage`.
        let publishing = *method == "POST" && pattern.starts_with("/v1/events");
        let wrong = if publishing { MANAGE } else { WRITE };
        let r = w
            .call_as(ORG, wrong, method, &concrete(pattern), "{}")
            .await;
        r.assert_error(403, "forbidden");
        let r = w.call_as(ORG, "", method, &concrete(pattern), "{}").await;
        r.assert_error(403, "forbidden");
    }
}

#[tokio::test]
async fn event_types_need_any_valid_token() {
    let w = world();
    let r = w.call_as(ORG, "", "GET", "/v1/event-types", "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn admins_hold_every_scope_within_their_org() {
    let w = world();
    let admin: &[(&str, &str)] = &[("org_id", ORG), ("role", "admin")];
    let r = w
        .send(request(
            "POST",
            "/v1/endpoints",
            r#"{"url":"https://example.com/a","event_types":["*"]}"#,
            Some(admin),
        ))
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_string();
    let r = w
        .send(request(
            "GET",
            &format!("/v1/endpoints/{id}"),
            "",
            Some(admin),
        ))
        .await;
    assert_eq!(r.status, 200);
    let r = w
        .send(request(
            "POST",
            "/v1/events",
            r#"{"type":"lead_won","data":{}}"#,
            Some(admin),
        ))
        .await;
    assert_eq!(r.status, 202);
    // ...but not in another org.
    let other_admin: &[(&str, &str)] = &[("org_id", OTHER_ORG), ("role", "admin")];
    let r = w
        .send(request(
            "GET",
            &format!("/v1/endpoints/{id}"),
            "",
            Some(other_admin),
        ))
        .await;
    r.assert_error(404, "not_found");
}

#[tokio::test]
async fn scopes_in_array_form_are_accepted() {
    let w = world();
    let claims: &[(&str, &str)] = &[("org_id", ORG), ("scope", "[events:write webhooks:manage]")];
    let r = w
        .send(request("GET", "/v1/endpoints", "", Some(claims)))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let w = world();
    for path in [
        "/",
        "/v1",
        "/v1/nothing",
        "/v2/endpoints",
        "/v1/endpoints/ep_1/nothing",
    ] {
        w.manage("GET", path, "")
            .await
            .assert_error(404, "not_found");
    }
    let r = w.manage("PUT", "/v1/endpoints", "").await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.headers["allow"], "POST, GET");
    w.manage("POST", "/healthz", "")
        .await
        .assert_error(405, "method_not_allowed");
    let r = w.manage("DELETE", "/v1/events", "").await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.headers["allow"], "POST, GET");
}
