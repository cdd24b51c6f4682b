//! An endpoint's custom headers (CONTRACT section 12): extra headers its
//! receiver asked for (an API key for a gateway, a tenant id), sent with
//! every attempt. Their values are secrets: stored sealed, never shown.
//!
//! Refused, with a 400 naming the header: names the platform sets or HTTP
//! owns (see [`reserved_reason`]), `Authorization` when the endpoint has
//! `auth`, a name that is not an HTTP token, a value with control
//! characters, the same name twice (in any case), and more than
//! [`MAX_CUSTOM_HEADERS`] headers.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Most custom headers an endpoint may have.
pub const MAX_CUSTOM_HEADERS: usize = 20;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// Longest header value, in bytes (a long bearer token or JWT fits).
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Most bytes of names and values together: receivers' servers commonly
/// refuse a header section much past 16 KiB, and the platform's own
/// headers come on top.
pub const MAX_HEADERS_TOTAL_LEN: usize = 16 * 1024;

/// What a read shows in place of a secret value.
pub const MASK: &str = "********";

/// An endpoint's custom headers, in the order given. Their `Debug` form
/// shows the names only, so values cannot leak through logs or errors.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CustomHeaders {
    pairs: Vec<(String, String)>,
}

impl std::fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.pairs.iter().map(|(n, _)| (n, MASK)))
            .finish()
    }
}

/// Why a `headers` object was refused. Names the header (never its value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("headers must be an object of header names to string values")]
    NotAnObject,
    #[error("headers has {0} entries; the limit is {MAX_CUSTOM_HEADERS}")]
    TooMany(usize),
    #[error("headers: {0} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~, at most {MAX_HEADER_NAME_LEN})")]
    InvalidName(String),
    #[error("headers: {name} cannot be set: {why}")]
    Reserved { name: String, why: &'static str },
    #[error("headers: {0} appears more than once (header names are case-insensitive)")]
    Duplicate(String),
    #[error("headers.{0} must be a string")]
    NotAString(String),
    #[error("headers.{0} must not be empty")]
    EmptyValue(String),
    #[error("headers.{0} has a control character or a character outside visible ASCII")]
    InvalidValue(String),
    #[error("headers.{0} is longer than {MAX_HEADER_VALUE_LEN} bytes")]
    ValueTooLong(String),
    #[error("headers total more than {MAX_HEADERS_TOTAL_LEN} bytes of names and values")]
    TooLarge,
}

/// A header name as an error message shows it: quoted and escaped, and cut
/// short, since it is the caller's text.
fn shown(name: &str) -> String {
    let cut: String = name.chars().take(64).collect();
    let more = if cut.len() < name.len() { "..." } else { "" };
    format!("{cut:?}{more}")
}

/// Why a header name is the platform's or HTTP's to set, or `None` when an
/// endpoint may set it. `auth_set`: the endpoint has `auth`, so the sender
/// sets `Authorization`.
pub fn reserved_reason(name: &str, auth_set: bool) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let platform = "the platform sets it on every delivery";
    let hop = "it is a hop-by-hop header, which HTTP owns";
    match lower.as_str() {
        "host" | "content-length" => Some("HTTP sets it"),
        "content-type" | "user-agent" | "x-signature" => Some(platform),
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade" => {
            Some(hop)
        }
        "authorization" if auth_set => {
            Some("the endpoint's auth sets it (remove auth, or the header)")
        }
        _ if lower.starts_with("x-webhook-") || lower.starts_with("webhook-") => Some(platform),
        _ if lower.starts_with("proxy-") => Some(hop),
        _ => None,
    }
}

/// Whether `name` is an HTTP field name (RFC 9110 `token`).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether `value` can be sent as it is: visible ASCII and inner spaces or
/// tabs (a value HTTP would trim or a server might read differently is
/// refused rather than changed).
fn is_field_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| (0x20..0x7f).contains(b) || *b == b'\t');
    let edges_ok =
        !matches!(bytes.first(), Some(b' ' | b'\t')) && !matches!(bytes.last(), Some(b' ' | b'\t'));
    inner_ok && edges_ok
}

impl CustomHeaders {
    /// No custom headers.
    pub fn none() -> CustomHeaders {
        CustomHeaders::default()
    }

    /// Reads a `headers` object (`{name: value}`) for an endpoint that has
    /// `auth` (`auth_set`) or not. The same name twice in the JSON text is
    /// refused too, not silently merged.
    pub fn parse_json(text: &str, auth_set: bool) -> Result<CustomHeaders, HeaderError> {
        let entries = serde_json::from_str::<Entries>(text)
            .map_err(|_| HeaderError::NotAnObject)?
            .0;
        if entries.len() > MAX_CUSTOM_HEADERS {
            return Err(HeaderError::TooMany(entries.len()));
        }
        let mut pairs = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            let serde_json::Value::String(value) = value else {
                return Err(HeaderError::NotAString(shown(&name)));
            };
            pairs.push((name, value));
        }
        CustomHeaders::new(pairs, auth_set)
    }

    /// Checks `pairs` (name, value) as [`CustomHeaders::parse_json`] does.
    pub fn new(pairs: Vec<(String, String)>, auth_set: bool) -> Result<CustomHeaders, HeaderError> {
        if pairs.len() > MAX_CUSTOM_HEADERS {
            return Err(HeaderError::TooMany(pairs.len()));
        }
        let mut total = 0usize;
        for (i, (name, value)) in pairs.iter().enumerate() {
            if !is_token(name) {
                return Err(HeaderError::InvalidName(shown(name)));
            }
            if let Some(why) = reserved_reason(name, auth_set) {
                return Err(HeaderError::Reserved {
                    name: name.clone(),
                    why,
                });
            }
            if pairs[..i].iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(HeaderError::Duplicate(name.clone()));
            }
            if value.is_empty() {
                return Err(HeaderError::EmptyValue(name.clone()));
            }
            if value.len() > MAX_HEADER_VALUE_LEN {
                return Err(HeaderError::ValueTooLong(name.clone()));
            }
            if !is_field_value(value) {
                return Err(HeaderError::InvalidValue(name.clone()));
            }
            total += name.len() + value.len();
        }
        if total > MAX_HEADERS_TOTAL_LEN {
            return Err(HeaderError::TooLarge);
        }
        Ok(CustomHeaders { pairs })
    }

    /// Headers as they were stored, not checked again (rules that change
    /// later must not make a stored endpoint unreadable).
    pub fn from_stored(pairs: Vec<(String, String)>) -> CustomHeaders {
        CustomHeaders { pairs }
    }

    /// Checks these headers beside an endpoint whose `auth` is set or not:
    /// `Authorization` is refused beside `auth`.
    pub fn check_with_auth(&self, auth_set: bool) -> Result<(), HeaderError> {
        match self
            .pairs
            .iter()
            .find_map(|(n, _)| reserved_reason(n, auth_set).map(|why| (n, why)))
        {
            Some((name, why)) => Err(HeaderError::Reserved {
                name: name.clone(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Each header's name and value, in order: for the sender, which puts
    /// them on the request, and the store, which seals them.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        self.pairs.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// A JSON object's entries in order, duplicates kept (so they can be refused).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                // The request body's limit bounds how many there can be.
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// A header the sender adds to an endpoint's deliveries, its value masked:
/// what reads, the CLI and the portal show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MaskedHeader {
    pub name: String,
    /// [`MASK`]; for `Authorization`, its scheme then the mask
    /// (`Basic ********`, `Bearer ********`).
    pub value: String,
}

/// The headers the sender adds for an endpoint beyond the platform's own
/// (CONTRACT section 2): each custom header, then `Authorization` when the
/// endpoint has `auth` (`auth_scheme`: `Basic` or `Bearer`), values masked.
pub fn added_headers(custom_names: &[String], auth_scheme: Option<&str>) -> Vec<MaskedHeader> {
    let mut out: Vec<MaskedHeader> = custom_names
        .iter()
        .map(|name| MaskedHeader {
            name: name.clone(),
            value: MASK.to_string(),
        })
        .collect();
    if let Some(scheme) = auth_scheme {
        out.push(MaskedHeader {
            name: "Authorization".to_string(),
            value: format!("{scheme} {MASK}"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CustomHeaders, HeaderError> {
        CustomHeaders::parse_json(text, false)
    }

    #[test]
    fn names_and_values_are_kept_in_order() {
        let h = parse(r#"{"X-Api-Key":"k1","X-Tenant":"acme corp"}"#).unwrap();
        assert_eq!(
            h.pairs(),
            &[
                ("X-Api-Key".to_string(), "k1".to_string()),
                ("X-Tenant".to_string(), "acme corp".to_string())
            ]
        );
        assert_eq!(
            format!("{h:?}"),
            r#"{"X-Api-Key": "********", "X-Tenant": "********"}"#
        );
        assert!(parse("{}").unwrap().is_empty());
    }

    #[test]
    fn names_the_platform_or_http_sets_are_refused_naming_them() {
        for name in [
            "Host",
            "content-length",
            "Content-Type",
            "User-Agent",
            "X-Signature",
            "X-Webhook-Event",
            "x-webhook-anything",
            "webhook-id",
            "Webhook-Signature",
            "Connection",
            "Keep-Alive",
            "Proxy-Authorization",
            "proxy-connection",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
        ] {
            let err = parse(&format!(r#"{{"{name}":"v"}}"#)).unwrap_err();
            assert!(
                matches!(&err, HeaderError::Reserved { name: n, .. } if n == name),
                "{name}: {err:?}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        // Authorization only beside auth.
        assert!(parse(r#"{"Authorization":"Token t"}"#).is_ok());
        let err = CustomHeaders::parse_json(r#"{"authorization":"Token t"}"#, true).unwrap_err();
        assert!(err.to_string().contains("authorization"), "{err}");
        let h = parse(r#"{"Authorization":"Token t"}"#).unwrap();
        assert!(h.check_with_auth(false).is_ok());
        assert!(matches!(
            h.check_with_auth(true),
            Err(HeaderError::Reserved { name, .. }) if name == "Authorization"
        ));
        // Near misses are fine.
        assert!(parse(r#"{"X-Webhooks":"v","Webhookid":"v","Hosted":"v"}"#).is_ok());
    }

    #[test]
    fn bad_names_values_and_counts_are_refused_without_echoing_values() {
        assert_eq!(parse("[]"), Err(HeaderError::NotAnObject));
        assert_eq!(parse(r#""x""#), Err(HeaderError::NotAnObject));
        assert!(
            matches!(parse(r#"{"Bad Name":"v"}"#), Err(HeaderError::InvalidName(n)) if n.contains("Bad Name"))
        );
        assert!(matches!(
            parse(r#"{"":"v"}"#),
            Err(HeaderError::InvalidName(_))
        ));
        assert!(matches!(
            parse(r#"{"X-Ü":"v"}"#),
            Err(HeaderError::InvalidName(_))
        ));
        let long = "a".repeat(MAX_HEADER_NAME_LEN + 1);
        assert!(
            matches!(parse(&format!(r#"{{"{long}":"v"}}"#)), Err(HeaderError::InvalidName(n)) if n.len() < 80)
        );
        let secret = "sk_live_do_not_echo";
        for (body, want) in [
            (format!(r#"{{"X-Key":"{secret}\r\nX-Evil: 1"}}"#), "control"),
            (format!(r#"{{"X-Key":"{secret}\u0000"}}"#), "control"),
            (format!(r#"{{"X-Key":" {secret}"}}"#), "control"),
            (format!(r#"{{"X-Key":"{secret}é"}}"#), "control"),
            (r#"{"X-Key":""}"#.to_string(), "empty"),
            (r#"{"X-Key":5}"#.to_string(), "string"),
            (
                format!(r#"{{"X-Key":"{}"}}"#, "v".repeat(MAX_HEADER_VALUE_LEN + 1)),
                "longer",
            ),
        ] {
            let err = parse(&body).unwrap_err().to_string();
            assert!(err.contains("X-Key") && err.contains(want), "{body}: {err}");
            assert!(!err.contains(secret), "{err}");
        }
        assert!(matches!(
            parse(r#"{"X-Key":"a","x-key":"b"}"#),
            Err(HeaderError::Duplicate(n)) if n == "x-key"
        ));
        assert!(matches!(
            parse(r#"{"X-Key":"a","X-Key":"b"}"#),
            Err(HeaderError::Duplicate(_))
        ));
        let many = |n: usize| {
            let fields: Vec<String> = (0..n).map(|i| format!(r#""X-H{i}":"v""#)).collect();
            format!("{{{}}}", fields.join(","))
        };
        assert!(parse(&many(MAX_CUSTOM_HEADERS)).is_ok());
        assert_eq!(
            parse(&many(MAX_CUSTOM_HEADERS + 1)),
            Err(HeaderError::TooMany(MAX_CUSTOM_HEADERS + 1))
        );
        assert_eq!(parse(&many(10_000)), Err(HeaderError::TooMany(10_000)));
        let big: Vec<String> = (0..5)
            .map(|i| format!(r#""X-H{i}":"{}""#, "v".repeat(MAX_HEADER_VALUE_LEN)))
            .collect();
        assert_eq!(
            parse(&format!("{{{}}}", big.join(","))),
            Err(HeaderError::TooLarge)
        );
    }

    #[test]
    fn added_headers_mask_every_value() {
        let names = vec!["X-Api-Key".to_string()];
        assert_eq!(
            added_headers(&names, Some("Bearer")),
            vec![
                MaskedHeader {
                    name: "X-Api-Key".into(),
                    value: MASK.into()
                },
                MaskedHeader {
                    name: "Authorization".into(),
                    value: "Bearer ********".into()
                }
            ]
        );
        assert!(added_headers(&[], None).is_empty());
    }
}
