//! `docs/openapi.yaml` documents exactly the routes the API serves.

use serde_yaml::Value;
use std::collections::BTreeSet;
use webhooks_fn_api::ROUTES;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml exists");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is YAML")
}

#[test]
fn the_document_lists_exactly_the_served_routes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        let path = path.as_str().expect("a path string");
        for (key, _) in item.as_mapping().expect("a path item") {
            let key = key.as_str().unwrap_or_default();
            if METHODS.contains(&key) {
                documented.insert((key.to_uppercase(), path.to_string()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
}

#[test]
fn every_operation_documents_its_security_and_responses() {
    let doc = document();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, op) in item.as_mapping().unwrap() {
            let Some(m) = method.as_str().filter(|m| METHODS.contains(m)) else {
                continue;
            };
            let what = format!("{m} {}", path.as_str().unwrap());
            assert!(op["operationId"].is_string(), "{what}: operationId");
            let responses = op["responses"].as_mapping().expect("responses");
            assert!(!responses.is_empty(), "{what}");
            if path.as_str() == Some("/healthz") {
                assert_eq!(op["security"], Value::Sequence(vec![]), "{what}");
            } else {
                assert!(responses.contains_key("401"), "{what} documents no 401");
            }
        }
    }
}

#[test]
fn creating_an_endpoint_documents_the_limit_exceeded_422() {
    let doc = document();
    let response = &doc["paths"]["/v1/endpoints"]["post"]["responses"]["422"];
    assert_eq!(
        response["$ref"].as_str(),
        Some("#/components/responses/LimitExceeded")
    );
    let limit = &doc["components"]["responses"]["LimitExceeded"];
    assert_eq!(
        limit["content"]["application/json"]["schema"]["$ref"].as_str(),
        Some("#/components/schemas/Error")
    );
    assert!(limit["description"]
        .as_str()
        .is_some_and(|d| d.contains("limit_exceeded") && d.contains("max_endpoints_per_org")));
    let codes = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
        .as_sequence()
        .expect("the error codes");
    assert!(codes.iter().any(|c| c.as_str() == Some("limit_exceeded")));
}
