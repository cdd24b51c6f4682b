//! The receiver's HTTP side: accepting connections, reading each request,
//! keeping or counting it, and sending the scripted answer.

use super::{Exchange, Received, Reply};
use bytes::Bytes;
use futures::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use webhooks_memory::sync::lock;

type ReplyFn = dyn Fn(usize, &Received) -> Reply + Send + Sync;

/// How the receiver chooses its answers.
pub(super) enum Script {
    /// The same answer to every request.
    Always(Reply),
    /// `reply(n, request)` answers the n-th request (0-based).
    Each(Box<ReplyFn>),
}

/// What the receiver remembers of each request.
pub(super) enum Keep {
    /// The request and its answer.
    Everything,
    /// A count only (the benchmarks: nothing grows, nothing is copied).
    Count,
}

/// What every connection of one receiver shares.
pub(super) struct Shared {
    script: Script,
    keep: Keep,
    /// Where `GET` answers with the count instead (a receiver in another
    /// process), if anywhere.
    count_path: Option<&'static str>,
    pub(super) exchanges: Mutex<Vec<Exchange>>,
    count: AtomicUsize,
    pub(super) arrived: Notify,
}

impl Shared {
    pub(super) fn new(script: Script, keep: Keep, count_path: Option<&'static str>) -> Shared {
        Shared {
            script,
            keep,
            count_path,
            exchanges: Mutex::default(),
            count: AtomicUsize::new(0),
            arrived: Notify::new(),
        }
    }

    /// Requests received so far.
    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Keeps or counts `request` and chooses its answer.
    fn answer(&self, request: Option<Received>) -> Reply {
        let reply = match (&self.keep, request) {
            (Keep::Everything, Some(request)) => {
                let mut all = lock(&self.exchanges);
                let reply = self.reply(all.len(), Some(&request));
                all.push(Exchange {
                    request,
                    reply: reply.clone(),
                });
                self.count.store(all.len(), Ordering::SeqCst);
                reply
            }
            (_, request) => {
                let n = self.count.fetch_add(1, Ordering::SeqCst);
                self.reply(n, request.as_ref())
            }
        };
        self.arrived.notify_waiters();
        reply
    }

    fn reply(&self, n: usize, request: Option<&Received>) -> Reply {
        match (&self.script, request) {
            (Script::Always(reply), _) => reply.clone(),
            (Script::Each(reply), Some(request)) => reply(n, request),
            (Script::Each(_), None) => unreachable!("a scripted receiver reads every request"),
        }
    }

    /// Whether the request must be read in full (headers and all) to be
    /// kept or answered; if not, only its body is drained.
    fn reads_requests(&self) -> bool {
        matches!(self.keep, Keep::Everything) || matches!(self.script, Script::Each(_))
    }
}

/// Serves every connection `listener` accepts until the task is dropped.
/// The connections are this future's own: dropping it (the [`Receiver`]
/// dropped, its process's parent gone) ends them too, a request still held
/// by [`Reply::Delay`] included, so nothing of the receiver outlives it.
///
/// [`Receiver`]: super::Receiver
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(req, shared.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Reaps finished connections, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Body>, std::io::Error> {
    if let Some(path) = shared.count_path {
        if req.method() == Method::GET && req.uri().path() == path {
            return Response::builder()
                .status(200)
                .body(full(shared.count().to_string()))
                .map_err(std::io::Error::other);
        }
    }
    let request = if shared.reads_requests() {
        Some(read(req).await)
    } else {
        // Read the whole body, as a real receiver would.
        let _ = req.into_body().collect().await;
        None
    };
    respond(shared.answer(request)).await
}

async fn read(req: Request<Incoming>) -> Received {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Received {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body,
    }
}

/// The response `reply` describes; an error closes the connection unanswered.
async fn respond(reply: Reply) -> Result<Response<Body>, std::io::Error> {
    let (status, headers, body) = match reply {
        Reply::Status(s) => (s, vec![], full("")),
        Reply::StatusWithHeaders(s, h) => (s, h, full("")),
        Reply::StatusWithBody(s, b) => (s, vec![], full(b)),
        Reply::Throttle(secs) => (
            429,
            vec![("retry-after".to_string(), secs.to_string())],
            full("slow down"),
        ),
        Reply::Delay(d, s) => {
            tokio::time::sleep(d).await;
            (s, vec![], full(""))
        }
        Reply::Reset => return Err(std::io::Error::other("reset")),
        Reply::SlowBody {
            status,
            chunks,
            every,
        } => (status, vec![], slow_body(chunks, every)),
    };
    let mut resp = Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    resp.body(body).map_err(std::io::Error::other)
}

/// `chunks` pieces of body, one every `every`.
fn slow_body(chunks: u32, every: std::time::Duration) -> Body {
    let pieces = stream::unfold(0u32, move |i| async move {
        if i >= chunks {
            return None;
        }
        tokio::time::sleep(every).await;
        let frame: Result<Frame<Bytes>, std::io::Error> =
            Ok(Frame::data(Bytes::from_static(b"slow-")));
        Some((frame, i + 1))
    });
    StreamBody::new(pieces).boxed_unsync()
}
