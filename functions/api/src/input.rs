//! Reading what the caller sent: the body (size, UTF-8, a JSON object with
//! known fields, each field decoded with its name in any error) and the query.

use crate::errors::ApiError;
use lambda_http::Request;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Default page size of listings.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size of listings.
pub const MAX_LIMIT: usize = 250;

/// The raw body, or 413 when it is over [`MAX_BODY_BYTES`].
pub fn body_bytes(req: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "the request body is {} bytes; the limit is {MAX_BODY_BYTES}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Whether the body must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// An empty body is a 400.
    Required,
    /// An empty body reads as `{}`.
    Optional,
}

/// Parses a body that must be a JSON object into `T`, a struct of raw fields
/// that denies unknown ones.
pub fn json_object<T: DeserializeOwned>(bytes: &[u8], rule: BodyRule) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::invalid("the request body is not valid UTF-8"))?;
    let text = match (text.trim_start().is_empty(), rule) {
        (true, BodyRule::Optional) => "{}",
        (true, BodyRule::Required) => {
            return Err(ApiError::invalid("a JSON object request body is required"))
        }
        (false, _) => text,
    };
    // A struct would also accept a JSON array of its fields; refuse that.
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    serde_json::from_str(text).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

/// For `#[serde(default, deserialize_with = "present")]` raw fields: keeps an
/// explicit `null` as a value, so "missing" and "null" can be told apart.
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Decodes an optional field; the error names it.
pub fn optional<T: DeserializeOwned>(
    name: &str,
    raw: Option<&RawValue>,
) -> Result<Option<T>, ApiError> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|e| ApiError::invalid(format!("{name}: {}", without_position(&e)))),
    }
}

/// Decodes a required field; the error names it.
pub fn required<T: DeserializeOwned>(name: &str, raw: Option<&RawValue>) -> Result<T, ApiError> {
    optional(name, raw)?.ok_or_else(|| ApiError::invalid(format!("{name} is required")))
}

/// Decodes an optional field whose value must never be echoed (a secret).
pub fn optional_secret(name: &str, raw: Option<&RawValue>) -> Result<Option<String>, ApiError> {
    optional::<Option<String>>(name, raw)
        .map(Option::flatten)
        .map_err(|_| ApiError::invalid(format!("{name} must be a string")))
}

/// An error message that names `field`: as it is when it already starts with
/// the name, else prefixed with it.
pub fn naming(field: &str, error: &dyn std::fmt::Display) -> String {
    let message = error.to_string();
    if message.starts_with(field) {
        message
    } else {
        format!("{field}: {message}")
    }
}

/// A field error's message without the position, which would point into the
/// field rather than the body.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}

/// The query parameters of a listing.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Page size, checked by [`ListQuery::limit`].
    pub limit: Option<String>,
    /// A `next_cursor` from the previous page.
    pub cursor: Option<String>,
    /// A delivery status filter (delivery listings only).
    pub status: Option<String>,
    /// An event type filter (the event log only).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// The start of a time window, RFC 3339 (the event log only).
    pub since: Option<String>,
    /// The end of a time window, RFC 3339 (the event log only).
    pub until: Option<String>,
}

impl ListQuery {
    /// Reads the query string; unknown parameters are ignored.
    pub fn from_request(req: &Request) -> Result<ListQuery, ApiError> {
        serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
            .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
    }

    /// The page size: [`DEFAULT_LIMIT`], or 1 to [`MAX_LIMIT`].
    pub fn limit(&self) -> Result<usize, ApiError> {
        match non_empty(&self.limit) {
            None => Ok(DEFAULT_LIMIT),
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(format!("limit must be an integer from 1 to {MAX_LIMIT}"))
                }),
        }
    }

    /// The cursor, if one was given.
    pub fn cursor(&self) -> Option<&str> {
        non_empty(&self.cursor)
    }

    /// The status filter, if one was given.
    pub fn status(&self) -> Option<&str> {
        non_empty(&self.status)
    }

    /// The event type filter, if one was given.
    pub fn event_type(&self) -> Option<&str> {
        non_empty(&self.event_type)
    }

    /// The time parameter `name` (`since` or `until`), if given: an RFC
    /// 3339 time, or a 400 naming it.
    pub fn time(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        let value = match name {
            "since" => non_empty(&self.since),
            _ => non_empty(&self.until),
        };
        value
            .map(|text| {
                webhooks_domain::time::parse_rfc3339(text).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{name} must be an RFC 3339 time, such as 2026-11-27T06:00:00Z"
                    ))
                })
            })
            .transpose()
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default, deserialize_with = "present")]
        name: Option<Box<RawValue>>,
    }

    fn parse(text: &str) -> Result<Body, ApiError> {
        json_object(text.as_bytes(), BodyRule::Required)
    }

    fn message(r: Result<impl std::fmt::Debug, ApiError>) -> String {
        match r.unwrap_err() {
            ApiError::InvalidRequest(m) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn bodies_must_be_json_objects_with_known_fields() {
        assert!(message(parse("")).contains("required"));
        assert!(message(parse("[1]")).contains("JSON object"));
        assert!(message(parse("42")).contains("JSON object"));
        assert!(message(parse("{")).contains("invalid request body"));
        assert!(message(parse(r#"{"nope":1}"#)).contains("`nope`"));
        assert!(message(parse(r#"{"name":1,"name":2}"#)).contains("duplicate field `name`"));
        assert!(message(json_object::<Body>(
            b"{\"name\":\"\xff\"}",
            BodyRule::Required
        ))
        .contains("UTF-8"));
        let empty: Body = json_object(b"  ", BodyRule::Optional).unwrap();
        assert!(empty.name.is_none());
    }

    #[test]
    fn field_errors_name_the_field_and_keep_null_apart() {
        let b = parse(r#"{"name": 5}"#).unwrap();
        let m = message(required::<String>("name", b.name.as_deref()));
        assert_eq!(m, "name: invalid type: integer `5`, expected a string");
        let b = parse(r#"{"name": null}"#).unwrap();
        assert!(b.name.is_some());
        assert!(message(required::<String>("name", b.name.as_deref())).starts_with("name:"));
        assert_eq!(
            optional::<Option<String>>("name", b.name.as_deref()).unwrap(),
            Some(None)
        );
        let b = parse("{}").unwrap();
        assert_eq!(
            message(required::<String>("name", b.name.as_deref())),
            "name is required"
        );
    }

    #[test]
    fn secret_errors_never_echo_the_value() {
        let b = parse(r#"{"name": 123456789}"#).unwrap();
        let m = message(optional_secret("secret", b.name.as_deref()));
        assert!(!m.contains("123456789"));
    }

    #[test]
    fn limits_are_checked() {
        let q = |limit: &str| ListQuery {
            limit: Some(limit.to_string()),
            ..ListQuery::default()
        };
        assert_eq!(ListQuery::default().limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(q("").limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(q("250").limit().unwrap(), 250);
        for bad in ["0", "251", "-1", "abc", "1.5", "99999999999999999999999999"] {
            assert!(message(q(bad).limit()).contains("limit"), "{bad}");
        }
    }
}
