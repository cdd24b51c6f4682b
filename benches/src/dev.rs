//! `webhooks dev` in this process (`webhooks::backend::System`, started as
//! `webhooks dev` starts it), and a client for its HTTP API.

use anyhow::{bail, Context as _};
use futures::stream::{self, StreamExt};
use std::time::Duration;
use tokio::net::TcpListener;
use webhooks::backend::{Backend, Settings};

pub use webhooks::dev::{BATCH, POLLERS};
/// The secret the in-process gateway verifies tokens with.
pub const JWT_SECRET: &str = "bench-secret";
/// The org every benchmark event belongs to.
pub const ORG: &str = "bench-org";
/// The event type every benchmark event has.
pub const EVENT_TYPE: &str = "invoice.paid";

/// The settings `webhooks dev` would use, on `backend`: its defaults
/// ([`Settings::dev_defaults`]), except that every delivery is kept (the
/// benchmarks count them) and there are no portal sessions.
pub fn settings(
    backend: Backend,
    counter: Option<webhooks_aws::request_counter::RequestCounter>,
) -> Settings {
    Settings {
        backend,
        // No limit: the wide fan-out gives one org 1000 endpoints.
        max_endpoints_per_org: u32::MAX,
        request_counter: counter,
        portal_secret: None,
        // Every delivery kept: the benchmarks count them.
        retention: webhooks_memory::Retention::as_deployed(),
        ..Settings::dev_defaults()
    }
}

/// A loopback listener on a free port for the gateway.
pub async fn loopback() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the gateway")
}

/// An endpoint as the API created it.
#[derive(Debug, Clone)]
pub struct CreatedEndpoint {
    pub id: String,
    pub secret: String,
}

/// A client of the management API with a token for one org ([`ORG`] unless
/// made with [`ApiClient::for_org`]).
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl ApiClient {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::for_org(base, ORG, JWT_SECRET)
    }

    /// A client acting for `org`, with a token signed with `jwt_secret` (the
    /// gateway's).
    pub fn for_org(base: &str, org: &str, jwt_secret: &str) -> anyhow::Result<Self> {
        let token = webhooks::token::issue(
            jwt_secret,
            org,
            "webhooks:manage events:write",
            None,
            Duration::from_secs(3600),
        )
        .map_err(anyhow::Error::msg)?;
        Ok(ApiClient {
            http: reqwest::Client::builder()
                .no_proxy()
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(60))
                .build()?,
            base: base.to_string(),
            auth: format!("Bearer {token}"),
        })
    }

    async fn post(&self, path: &str, body: String) -> anyhow::Result<(u16, bytes::Bytes)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?))
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<(u16, bytes::Bytes)> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)?;
        let resp = self
            .http
            .get(url)
            .header("authorization", &self.auth)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().await?))
    }

    /// How many of the endpoint's deliveries have `status`, read through
    /// `GET /v1/endpoints/{id}/deliveries?status=` page by page (at most
    /// `max_pages` pages of 250).
    pub async fn count_deliveries(
        &self,
        endpoint_id: &str,
        status: &str,
        max_pages: usize,
    ) -> anyhow::Result<usize> {
        let path = format!("/v1/endpoints/{endpoint_id}/deliveries");
        let mut cursor: Option<String> = None;
        let mut count = 0;
        for _ in 0..max_pages {
            let mut query = vec![("status", status), ("limit", "250")];
            if let Some(c) = &cursor {
                query.push(("cursor", c));
            }
            let (code, bytes) = self.get(&path, &query).await?;
            if code != 200 {
                bail!(
                    "listing deliveries answered {code}: {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            count += v["data"].as_array().map_or(0, Vec::len);
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(count),
            }
        }
        Ok(count)
    }

    /// Registers an endpoint at `url` subscribed to every event type.
    pub async fn create_endpoint(&self, url: &str) -> anyhow::Result<CreatedEndpoint> {
        let body = serde_json::json!({"url": url, "event_types": ["*"]}).to_string();
        let (status, bytes) = self.post("/v1/endpoints", body).await?;
        if status != 201 && status != 200 {
            bail!(
                "creating an endpoint answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(CreatedEndpoint {
            id: v["id"].as_str().context("endpoint id")?.to_string(),
            secret: v["secret"].as_str().context("endpoint secret")?.to_string(),
        })
    }

    /// Publishes `count` events with `data`, `concurrency` requests at a
    /// time; fails on the first answer that is not 202.
    pub async fn publish(
        &self,
        count: usize,
        data: &str,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let body = format!(r#"{{"type":"{EVENT_TYPE}","data":{data}}}"#);
        let results: Vec<anyhow::Result<()>> = stream::iter(0..count)
            .map(|_| {
                let body = body.clone();
                async move {
                    let (status, bytes) = self.post("/v1/events", body).await?;
                    if status != 202 {
                        bail!(
                            "publishing answered {status}: {}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                    Ok(())
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }
}

impl ApiClient {
    /// Publishes `count` events with `data` through `POST /v1/events/batch`,
    /// `batch` per request (at most 100), `concurrency` requests at a time;
    /// fails on the first answer that is not 207 with every event 202.
    pub async fn publish_batches(
        &self,
        count: usize,
        data: &str,
        batch: usize,
        concurrency: usize,
    ) -> anyhow::Result<()> {
        let batch = batch.clamp(1, 100);
        let event = format!(r#"{{"type":"{EVENT_TYPE}","data":{data}}}"#);
        let sizes: Vec<usize> = (0..count)
            .step_by(batch)
            .map(|start| batch.min(count - start))
            .collect();
        let results: Vec<anyhow::Result<()>> = stream::iter(sizes)
            .map(|n| {
                let body = format!(r#"{{"events":[{}]}}"#, vec![event.as_str(); n].join(","));
                async move {
                    let (status, bytes) = self.post("/v1/events/batch", body).await?;
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                    let accepted = v["results"]
                        .as_array()
                        .map_or(0, |r| r.iter().filter(|r| r["status"] == 202).count());
                    if status != 207 || accepted != n {
                        bail!(
                            "publishing a batch of {n} answered {status} with {accepted} accepted: {}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                    Ok(())
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }
}

/// A JSON object of exactly `bytes` bytes (at least 64), the event `data`:
/// an invoice with line items whose keys repeat and whose ids and amounts
/// do not, padded with a reference of pseudo-random hex digits, so that it
/// deflates about as well as a real payload (1 KiB: to 33 %; a
/// payload of one repeated character, as before issue 24, deflates to 2 %
/// and would flatter the event store's compression).
pub fn event_data(bytes: usize) -> String {
    let bytes = bytes.max(64);
    let head = r#"{"invoice":"in_1","currency":"eur","lines":["#;
    let tail_len = r#"],"ref":""}"#.len();
    let mut out = String::with_capacity(bytes);
    out.push_str(head);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for n in 1u64.. {
        let line = format!(
            r#"{}{{"sku":"SKU-{:08x}","qty":{},"unit_amount":{}}}"#,
            if n == 1 { "" } else { "," },
            next() >> 32,
            n % 7 + 1,
            next() % 100_000
        );
        if out.len() + line.len() + tail_len + 8 > bytes {
            break;
        }
        out.push_str(&line);
    }
    out.push_str(r#"],"ref":""#);
    while out.len() + 2 < bytes {
        out.push(char::from(b"0123456789abcdef"[(next() % 16) as usize]));
    }
    out.push_str(r#""}"#);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_data_has_the_asked_size_and_is_json() {
        for n in [16, 64, 100, 1024, 4096, 65_536] {
            let d = super::event_data(n);
            assert_eq!(d.len(), n.max(64), "{d}");
            assert!(serde_json::from_str::<serde_json::Value>(&d)
                .unwrap()
                .is_object());
        }
        // Neither all repetition nor noise: it deflates like a payload.
        use std::io::Write as _;
        let d = super::event_data(1024);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(d.as_bytes()).unwrap();
        let ratio = z.finish().unwrap().len() as f64 / d.len() as f64;
        println!("1 KiB deflates to {:.0} %", ratio * 100.0);
        assert!((0.3..0.7).contains(&ratio), "{ratio}");
    }
}
