//! A webhook receiver bound to 127.0.0.1 on a free port. It records every
//! request and answers with whatever the test's reply function says. It stops
//! when dropped.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use webhooks_memory::sync::lock;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// How to answer a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status with an optional body and extra headers.
    Status(u16),
    StatusWithHeaders(u16, Vec<(String, String)>),
    StatusWithBody(u16, String),
    /// Wait, then answer with the status (for timeouts).
    Delay(Duration, u16),
    /// Close the connection without answering.
    Reset,
}

type ReplyFn = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// The running receiver.
pub struct Receiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver; `reply(n, request)` answers the n-th request (0-based).
    pub async fn start(
        reply: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let reply: Arc<ReplyFn> = Arc::new(reply);
        let (rec, arr) = (received.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (rec, arr, reply) = (rec.clone(), arr.clone(), reply.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (rec, arr, reply) = (rec.clone(), arr.clone(), reply.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let got = Received {
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            v.to_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            let n = {
                                let mut all = lock(&rec);
                                all.push(got.clone());
                                all.len() - 1
                            };
                            arr.notify_waiters();
                            let answer = reply(n, &got);
                            let (status, headers, body) = match answer {
                                Reply::Status(s) => (s, vec![], String::new()),
                                Reply::StatusWithHeaders(s, h) => (s, h, String::new()),
                                Reply::StatusWithBody(s, b) => (s, vec![], b),
                                Reply::Delay(d, s) => {
                                    tokio::time::sleep(d).await;
                                    (s, vec![], String::new())
                                }
                                Reply::Reset => return Err(std::io::Error::other("reset")),
                            };
                            let mut resp = Response::builder().status(status);
                            for (k, v) in headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, std::io::Error>(
                                resp.body(Full::new(Bytes::from(body))).expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            received,
            arrived,
            task,
        }
    }

    /// A receiver that answers every request with `status`.
    pub async fn always(status: u16) -> Receiver {
        Receiver::start(move |_, _| Reply::Status(status)).await
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    pub fn count(&self) -> usize {
        lock(&self.received).len()
    }

    /// Waits until at least `n` requests arrived; `false` on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() >= n;
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
