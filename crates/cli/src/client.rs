//! A small typed client of the management API (CONTRACT section 4), used by
//! the `webhooks` commands. Each call returns the typed answer together with
//! the body exactly as the API sent it (for `--output json`); an error answer
//! becomes [`ClientError::Api`] with the API's own code and message.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The API answered with an error status.
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The API could not be reached, or its answer was not what it promises.
    Transport(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Api { message, .. } => f.write_str(message),
            ClientError::Transport(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ClientError {}

/// A successful answer: the typed value and the raw body.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub raw: String,
}

/// `{"data": [...], "next_cursor": ...}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An entry of the event-type catalogue.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventTypeInfo {
    pub name: String,
    pub description: String,
}

/// An endpoint (with `secret` only on creation).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Deliveries per second; `None`: unlimited.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// The payload filter (an event pattern); `None`: none.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Custom header names, each value masked.
    #[serde(default)]
    pub headers: serde_json::Map<String, Value>,
    /// Its auth without the password or client secret; `None`: none.
    #[serde(default)]
    pub auth: Option<Value>,
    pub created_at: String,
    #[serde(default)]
    pub updated_at: String,
    #[serde(default)]
    pub secret: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Attempt {
    pub number: u32,
    pub at: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub response_body: Option<String>,
}

/// A delivery of one event to one endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: Vec<Attempt>,
    pub next_attempt_at: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    pub created_at: String,
}

/// An entry of the event log.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventEntry {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: String,
}

/// Where an event went.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub status: String,
}

/// One event with its data and its deliveries.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventDetail {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: String,
    pub data: Value,
    pub deliveries: Vec<EventDelivery>,
}

/// Which events `GET /v1/events` lists.
#[derive(Debug, Clone, Default)]
pub struct EventLogQuery {
    pub event_type: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `{"secret": "whsec_..."}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SecretReply {
    pub secret: String,
}

/// A portal link.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PortalSession {
    pub url: String,
    pub expires_at: String,
}

/// The changes of `PATCH /v1/endpoints/{id}`; `None` leaves a field as is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Some(None)` lifts the limit (`null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Option<u32>>,
    /// An event pattern, or `Value::Null` to remove the filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// The new set of custom headers; `Some(None)` removes them (`null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Option<HeaderPairs>>,
    /// An auth object, or `Value::Null` to remove it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Value>,
}

/// Custom headers as given on the command line: a JSON object in that
/// order, a name given twice kept twice (so the API refuses it rather than
/// one value silently winning).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderPairs(pub Vec<(String, String)>);

impl Serialize for HeaderPairs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A new endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// An event pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderPairs>,
    /// An auth object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Value>,
}

/// The management API at one base URL, with one bearer token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the API at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("webhooks-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.trim().is_empty()),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply<T>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.trim());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            ClientError::Transport(format!(
                "cannot reach the API at {}: {}",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = resp.status().as_u16();
        let raw = resp
            .text()
            .await
            .map_err(|e| ClientError::Transport(format!("reading the API's answer: {e}")))?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &raw, self.token.is_none()));
        }
        let text = if raw.trim().is_empty() { "null" } else { &raw };
        let value = serde_json::from_str(text).map_err(|e| {
            ClientError::Transport(format!("the API's answer is not what it documents: {e}"))
        })?;
        Ok(Reply { value, raw })
    }

    /// `GET /v1/event-types`
    pub async fn event_types(&self) -> Result<Reply<List<EventTypeInfo>>, ClientError> {
        self.call(Method::GET, "/v1/event-types", None).await
    }

    /// `GET /v1/endpoints`
    pub async fn list_endpoints(
        &self,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Reply<List<Endpoint>>, ClientError> {
        let q = query(&[
            ("limit", limit.map(|l| l.to_string())),
            ("cursor", cursor.map(str::to_string)),
        ]);
        self.call(Method::GET, &format!("/v1/endpoints{q}"), None)
            .await
    }

    /// `GET /v1/endpoints/{id}`
    pub async fn get_endpoint(&self, id: &str) -> Result<Reply<Endpoint>, ClientError> {
        self.call(Method::GET, &format!("/v1/endpoints/{}", seg(id)), None)
            .await
    }

    /// `POST /v1/endpoints`
    pub async fn create_endpoint(&self, new: &NewEndpoint) -> Result<Reply<Endpoint>, ClientError> {
        self.call(Method::POST, "/v1/endpoints", Some(&to_value(new)?))
            .await
    }

    /// `PATCH /v1/endpoints/{id}`
    pub async fn update_endpoint(
        &self,
        id: &str,
        update: &EndpointUpdate,
    ) -> Result<Reply<Endpoint>, ClientError> {
        self.call(
            Method::PATCH,
            &format!("/v1/endpoints/{}", seg(id)),
            Some(&to_value(update)?),
        )
        .await
    }

    /// `DELETE /v1/endpoints/{id}`
    pub async fn delete_endpoint(&self, id: &str) -> Result<Reply<Value>, ClientError> {
        self.call(Method::DELETE, &format!("/v1/endpoints/{}", seg(id)), None)
            .await
    }

    /// `GET /v1/endpoints/{id}/secret`
    pub async fn secret(&self, id: &str) -> Result<Reply<SecretReply>, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/endpoints/{}/secret", seg(id)),
            None,
        )
        .await
    }

    /// `POST /v1/endpoints/{id}/rotate-secret`
    pub async fn rotate_secret(&self, id: &str) -> Result<Reply<SecretReply>, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/endpoints/{}/rotate-secret", seg(id)),
            Some(&serde_json::json!({})),
        )
        .await
    }

    /// `POST /v1/endpoints/{id}/test`
    pub async fn send_test(
        &self,
        id: &str,
        event_type: Option<&str>,
    ) -> Result<Reply<Value>, ClientError> {
        let body = match event_type {
            Some(t) => serde_json::json!({ "event_type": t }),
            None => serde_json::json!({}),
        };
        self.call(
            Method::POST,
            &format!("/v1/endpoints/{}/test", seg(id)),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/events`
    pub async fn publish(
        &self,
        event_type: &str,
        data: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Reply<Value>, ClientError> {
        let mut body = serde_json::json!({ "type": event_type, "data": data });
        if let Some(k) = idempotency_key {
            body["idempotency_key"] = Value::from(k);
        }
        self.call(Method::POST, "/v1/events", Some(&body)).await
    }

    /// `GET /v1/events`
    pub async fn list_events(
        &self,
        q: &EventLogQuery,
    ) -> Result<Reply<List<EventEntry>>, ClientError> {
        let q = query(&[
            ("type", q.event_type.clone()),
            ("since", q.since.clone()),
            ("until", q.until.clone()),
            ("limit", q.limit.map(|l| l.to_string())),
            ("cursor", q.cursor.clone()),
        ]);
        self.call(Method::GET, &format!("/v1/events{q}"), None)
            .await
    }

    /// `GET /v1/events/{id}`
    pub async fn get_event(&self, id: &str) -> Result<Reply<EventDetail>, ClientError> {
        self.call(Method::GET, &format!("/v1/events/{}", seg(id)), None)
            .await
    }

    /// `GET /v1/endpoints/{id}/deliveries`
    pub async fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<Reply<List<Delivery>>, ClientError> {
        let q = query(&[
            ("status", status.map(str::to_string)),
            ("limit", limit.map(|l| l.to_string())),
            ("cursor", cursor.map(str::to_string)),
        ]);
        self.call(
            Method::GET,
            &format!("/v1/endpoints/{}/deliveries{q}", seg(endpoint_id)),
            None,
        )
        .await
    }

    /// `GET /v1/deliveries/{id}`
    pub async fn get_delivery(&self, id: &str) -> Result<Reply<Delivery>, ClientError> {
        self.call(Method::GET, &format!("/v1/deliveries/{}", seg(id)), None)
            .await
    }

    /// `POST /v1/deliveries/{id}/retry`
    pub async fn retry_delivery(&self, id: &str) -> Result<Reply<Value>, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/deliveries/{}/retry", seg(id)),
            None,
        )
        .await
    }

    /// `POST /v1/portal-sessions`
    pub async fn portal_session(
        &self,
        ttl_seconds: Option<u64>,
    ) -> Result<Reply<PortalSession>, ClientError> {
        let body = match ttl_seconds {
            Some(t) => serde_json::json!({ "ttl_seconds": t }),
            None => serde_json::json!({}),
        };
        self.call(Method::POST, "/v1/portal-sessions", Some(&body))
            .await
    }
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, ClientError> {
    serde_json::to_value(v)
        .map_err(|e| ClientError::Transport(format!("encoding the request: {e}")))
}

/// The API's error envelope, or a description of the unexpected answer.
fn api_error(status: u16, raw: &str, no_token: bool) -> ClientError {
    let parsed: Option<Value> = serde_json::from_str(raw).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v["error"][k].as_str())
            .map(str::to_string)
    };
    let mut message = field("message").unwrap_or_else(|| format!("the API answered HTTP {status}"));
    if status == 401 && no_token {
        message.push_str(" (set --token or WEBHOOKS_TOKEN)");
    }
    ClientError::Api {
        status,
        code: field("code").unwrap_or_else(|| "http_error".to_string()),
        message,
    }
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    url_encode(s)
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", url_encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelopes_give_code_and_message() {
        let e = api_error(
            404,
            r#"{"error":{"code":"not_found","message":"endpoint not found"}}"#,
            false,
        );
        assert_eq!(
            e,
            ClientError::Api {
                status: 404,
                code: "not_found".into(),
                message: "endpoint not found".into()
            }
        );
        let e = api_error(502, "<html>bad gateway</html>", false);
        assert_eq!(e.to_string(), "the API answered HTTP 502");
        assert!(api_error(401, "{}", true)
            .to_string()
            .contains("WEBHOOKS_TOKEN"));
    }

    #[test]
    fn path_segments_and_queries_are_encoded() {
        assert_eq!(seg("ep_1/../x"), "ep_1%2F..%2Fx");
        assert_eq!(
            query(&[("status", Some("dead_lettered".into())), ("limit", None)]),
            "?status=dead_lettered"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
