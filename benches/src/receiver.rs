//! The webhook receiver the end-to-end benchmarks deliver to: a lean hyper
//! server answering every request with 204, recording nothing but a count
//! (`GET /count`). It runs in a
//! child process (`webhooks-bench receiver`) so its CPU time is not counted
//! as the pipeline's.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;

/// Requests answered 204 so far (`GET /count` reads it): a cheap way to
/// know the deliveries are nearly done without scanning the store.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Serves on 127.0.0.1:`port` (0: any free port), prints the port on
/// stdout, and runs until stdin closes (the parent exited) or it is killed.
pub fn run(port: u16, threads: usize) -> anyhow::Result<()> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .context("binding the receiver")?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        // The parent holds our stdin; when it goes away, so do we.
        let parent_gone = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        tokio::select! {
            _ = accept_loop(listener) => {}
            _ = parent_gone => {}
        }
        Ok(())
    })
}

async fn accept_loop(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<Incoming>| async move {
                if req.method() == hyper::Method::GET && req.uri().path() == "/count" {
                    let n = RECEIVED.load(Ordering::Relaxed).to_string();
                    return Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .status(200)
                            .body(Full::new(Bytes::from(n)))
                            .unwrap_or_default(),
                    );
                }
                // Read the whole body, as a real receiver would.
                let _ = req.into_body().collect().await;
                RECEIVED.fetch_add(1, Ordering::Relaxed);
                Ok(hyper::Response::builder()
                    .status(204)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A receiver running in a child process; killed when dropped.
pub struct ReceiverProcess {
    child: Child,
    pub port: u16,
}

impl ReceiverProcess {
    /// Starts `webhooks-bench receiver --port 0` and reads its port.
    pub fn spawn(threads: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut child = Command::new(exe)
            .args(["receiver", "--port", "0", "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the receiver process")?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let port = match read.ok().and_then(|_| line.trim().parse::<u16>().ok()) {
            Some(p) => p,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the receiver did not print its port (got {line:?})");
            }
        };
        Ok(ReceiverProcess { child, port })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Requests the receiver has answered with 204 so far.
    pub async fn count(&self, client: &reqwest::Client) -> anyhow::Result<u64> {
        let text = client
            .get(format!("http://127.0.0.1:{}/count", self.port))
            .send()
            .await?
            .text()
            .await?;
        Ok(text.trim().parse()?)
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
