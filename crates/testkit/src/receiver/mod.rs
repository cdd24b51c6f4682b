//! The one webhook receiver of the tests and benchmarks, bound to 127.0.0.1.
//! It answers every request as a script says ([`Reply`]: a status, headers,
//! a body, `Retry-After`, a delay past the client's timeout, a reset, a body
//! sent slowly) and either keeps every request with its answer
//! ([`Receiver`], in the test's process; stops when dropped) or only counts
//! them ([`process::run`], in a process of its own, for the benchmarks).

pub mod process;
mod serve;

use bytes::Bytes;
use serve::{Keep, Script, Shared};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// This status, no body.
    Status(u16),
    /// This status and these headers, no body.
    StatusWithHeaders(u16, Vec<(String, String)>),
    /// This status and this body.
    StatusWithBody(u16, String),
    /// 429 with `Retry-After: <secs>`.
    Throttle(u64),
    /// Wait, then answer with the status (past the client's timeout: a
    /// timeout).
    Delay(Duration, u16),
    /// Close the connection without answering.
    Reset,
    /// Send `status` at once, then the body in `chunks` pieces, one every
    /// `every`.
    SlowBody {
        status: u16,
        chunks: u32,
        every: Duration,
    },
}

/// One request and how the receiver answered it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: Received,
    pub reply: Reply,
}

/// The running receiver, in this process.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver; `reply(n, request)` answers the n-th request
    /// (0-based, in the order they are kept). It is called under the
    /// receiver's lock, so the same request always gets the same `n`: keep
    /// it quick.
    pub async fn start(
        reply: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::with(Script::Each(Box::new(reply))).await
    }

    /// A receiver that answers every request with `status`.
    pub async fn always(status: u16) -> Receiver {
        Receiver::with(Script::Always(Reply::Status(status))).await
    }

    async fn with(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::new(script, Keep::Everything, None));
        let task = tokio::spawn(serve::accept_loop(listener, shared.clone()));
        Receiver { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.exchanges)
            .iter()
            .map(|x| x.request.clone())
            .collect()
    }

    /// Everything received so far, each with its answer.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared.exchanges).clone()
    }

    pub fn count(&self) -> usize {
        self.shared.count()
    }

    /// Waits until at least `n` requests arrived; `false` on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
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

#[cfg(test)]
mod tests {
    use super::{Receiver, Reply};
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn dropping_the_receiver_ends_a_request_it_holds() {
        let receiver = Receiver::start(|_, _| Reply::Delay(Duration::from_secs(60), 204)).await;
        let url = receiver.url("/held");
        let request = tokio::spawn(async move {
            reqwest::Client::builder()
                .no_proxy()
                .build()?
                .post(url)
                .body("{}")
                .send()
                .await
        });
        assert!(receiver.wait_for(1, Duration::from_secs(10)).await);
        let dropped = Instant::now();
        drop(receiver);
        let answer = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("the held request ends with the receiver")
            .expect("the client task");
        assert!(answer.is_err(), "no answer comes from a dropped receiver");
        assert!(dropped.elapsed() < Duration::from_secs(10));
    }
}
