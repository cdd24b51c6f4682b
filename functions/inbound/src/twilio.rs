//! Twilio: the `X-Twilio-Signature` check, as Twilio's own request
//! validators compute it.

use crate::crypto::{hmac_sha1, sha256_matches_hex};
use crate::response::with_body;
use crate::response::Rejection;
use crate::{bounded_raw, Inbound};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Utc;
use hmac::Mac;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use std::collections::HashMap;
use webhooks_ports::InboundRecord;

/// The URL Twilio requested: the public base URL (without a trailing `/`),
/// the request path, and `?` with the raw query when there is one.
pub(crate) fn public_url(base: &str, path: &str, query: Option<&str>) -> String {
    let mut url = format!("{}{path}", base.trim_end_matches('/'));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// The URL as given and with its port toggled: without the port when it has
/// one, with the scheme's default port when it has none. Twilio signs one or
/// the other depending on the product, so its validators accept either.
pub(crate) fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_string()];
    let Some(scheme_end) = url.find("://") else {
        return variants;
    };
    let scheme = &url[..scheme_end];
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host.ends_with(']')) =>
        {
            variants.push(format!("{scheme}://{host}{tail}"));
        }
        _ => {
            let default_port = match scheme.to_ascii_lowercase().as_str() {
                "https" => Some(443),
                "http" => Some(80),
                _ => None,
            };
            if let Some(port) = default_port {
                variants.push(format!("{scheme}://{authority}:{port}{tail}"));
            }
        }
    }
    variants
}

/// The string Twilio signs: the URL, then each parameter's name and value,
/// sorted by name and, for repeated names, by value.
fn signed_string(url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut s = url.to_string();
    for (name, value) in sorted {
        s.push_str(name);
        s.push_str(value);
    }
    s
}

/// Whether `signature` (base64) is the HMAC-SHA1, keyed with the auth
/// token, of the URL (as given or with its port toggled) and the form
/// parameters. Pass no parameters for a JSON body.
pub(crate) fn signature_valid(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(expected) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Some(mac) = hmac_sha1(auth_token) else {
        return false;
    };
    let mut valid = false;
    for candidate in url_variants(url) {
        let mut mac = mac.clone();
        mac.update(signed_string(&candidate, params).as_bytes());
        // Check every variant, so the time does not say which one matched.
        valid |= mac.verify_slice(&expected).is_ok();
    }
    valid
}

/// The `bodySHA256` query parameter of a JSON-body request, if any.
pub(crate) fn body_sha256_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(name, _)| name == "bodySHA256")
        .map(|(_, value)| value.into_owned())
}

/// Whether the raw body hashes (SHA-256, hex) to the `bodySHA256` parameter.
pub(crate) fn body_hash_valid(body: &[u8], body_sha256: &str) -> bool {
    sha256_matches_hex(body, body_sha256)
}

/// The form parameters of an `application/x-www-form-urlencoded` body, in
/// order, repeated names included.
pub(crate) fn form_params(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// `POST /inbound/twilio`: verify, record the message, acknowledge.
impl Inbound {
    pub(crate) async fn twilio(&self, req: &Request) -> Result<Response<Body>, Rejection> {
        let base = Inbound::configured(&self.config.public_base_url, "WEBHOOKS_PUBLIC_BASE_URL")?;
        let body = req.body().as_ref();
        let query = req.uri().query();
        let url = public_url(base, req.uri().path(), query);
        let invalid = || Rejection::InvalidSignature("X-Twilio-Signature does not match".into());
        let params: HashMap<String, String> = Inbound::with_secret(
            &self.config.twilio_auth_token,
            "TWILIO_AUTH_TOKEN_ARN (TWILIO_AUTH_TOKEN in webhooks dev)",
            |token| {
                let signature =
                    Inbound::signature(req, "x-twilio-signature", "X-Twilio-Signature")?;
                Ok(match body_sha256_param(query) {
                    // A JSON body: the signature covers the URL, the URL the body's hash.
                    Some(body_sha256) => {
                        let signed = signature_valid(token, &url, &[], signature);
                        if !(signed & body_hash_valid(body, &body_sha256)) {
                            return Err(invalid());
                        }
                        let json: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_slice(body).map_err(|e| {
                                Rejection::InvalidRequest(format!("body is not a JSON object: {e}"))
                            })?;
                        json.into_iter()
                            .filter_map(|(k, v)| match v {
                                serde_json::Value::String(s) => Some((k, s)),
                                _ => None,
                            })
                            .collect()
                    }
                    None => {
                        let form = form_params(body);
                        if !signature_valid(token, &url, &form, signature) {
                            return Err(invalid());
                        }
                        // The first value of each name.
                        let mut params = HashMap::new();
                        for (k, v) in form {
                            params.entry(k).or_insert(v);
                        }
                        params
                    }
                })
            },
        )
        .await?;
        let ack = with_body(StatusCode::OK, "text/xml", "<Response/>");
        let get = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
        let Some(sid) = get("MessageSid")
            .or_else(|| get("SmsMessageSid"))
            .or_else(|| get("SmsSid"))
        else {
            tracing::info!("Twilio request without a MessageSid acknowledged");
            return Ok(ack);
        };
        if !params.contains_key("Body") && params.contains_key("MessageStatus") {
            tracing::info!(message_sid = %sid, "Twilio status callback acknowledged");
            return Ok(ack);
        }
        if sid.len() > 255 {
            return Err(Rejection::InvalidRequest("MessageSid is too long".into()));
        }
        let to = get("To");
        let org_id = match &to {
            Some(to) => self.store.route("twilio", to).await?,
            None => None,
        };
        self.record_message(InboundRecord {
            provider: "twilio".into(),
            provider_id: sid,
            org_id,
            kind: InboundRecord::MESSAGE.into(),
            from: get("From"),
            to,
            text: params.get("Body").cloned(),
            raw: bounded_raw(body),
            received_at: Utc::now(),
        })
        .await?;
        Ok(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from the test suite of Twilio's Python helper library
    // (tests/unit/test_request_validator.py), auth token "12345".
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn matches_twilios_known_signatures() {
        assert!(signature_valid(
            TOKEN,
            URL,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!signature_valid(
            TOKEN,
            URL,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B9="
        ));
        assert!(!signature_valid(
            "54321",
            URL,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn repeated_names_sort_by_value() {
        let repeated: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(signature_valid(
            TOKEN,
            URL,
            &repeated,
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        ));
    }

    #[test]
    fn accepts_the_url_with_or_without_its_port() {
        let with_port = URL.replace(".com", ".com:1234");
        assert!(signature_valid(
            TOKEN,
            &with_port,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let http_with_port = with_port.replace("https", "http");
        assert!(signature_valid(
            TOKEN,
            &http_with_port,
            &params(),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        assert!(signature_valid(
            TOKEN,
            URL,
            &params(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        let http = URL.replace("https", "http");
        assert!(signature_valid(
            TOKEN,
            &http,
            &params(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
    }

    #[test]
    fn json_bodies_sign_the_url_only() {
        let body = "{\"property\": \"value\", \"boolean\": true}";
        let hash = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let url = format!("{URL}&bodySHA256={hash}");
        assert_eq!(
            body_sha256_param(url.split_once('?').map(|(_, q)| q)).as_deref(),
            Some(hash)
        );
        assert!(body_hash_valid(body.as_bytes(), hash));
        assert!(signature_valid(
            TOKEN,
            &url,
            &[],
            "a9nBmqA0ju/hNViExpshrM61xv4="
        ));
    }

    #[test]
    fn toggles_ports() {
        assert_eq!(
            url_variants("https://h.example/p?q=1"),
            ["https://h.example/p?q=1", "https://h.example:443/p?q=1"]
        );
        assert_eq!(
            url_variants("http://127.0.0.1:8080/inbound/twilio"),
            [
                "http://127.0.0.1:8080/inbound/twilio",
                "http://127.0.0.1/inbound/twilio"
            ]
        );
        assert_eq!(
            url_variants("https://[::1]/x"),
            ["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(url_variants("no scheme"), ["no scheme"]);
    }

    #[test]
    fn builds_the_public_url() {
        assert_eq!(
            public_url("https://h.example/", "/inbound/twilio", Some("a=1&b=2")),
            "https://h.example/inbound/twilio?a=1&b=2"
        );
        assert_eq!(
            public_url("https://h.example", "/inbound/twilio", Some("")),
            "https://h.example/inbound/twilio"
        );
    }
}
