//! The receiver in a process of its own, as the end-to-end benchmarks run
//! it so that its CPU time is not counted as the pipeline's: it answers
//! every request with 204, keeps nothing but a count (`GET /count` reads
//! it), and stops when its parent does.
//!
//! The child calls [`run`]; the parent starts it with
//! [`ReceiverProcess::spawn`], which reads the port the child prints.

use super::serve::{self, Keep, Script, Shared};
use super::Reply;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Where `GET` reads the count of requests answered so far: a cheap way to
/// know the deliveries are nearly done without scanning the store.
const COUNT_PATH: &str = "/count";

/// Serves on 127.0.0.1:`port` (0: any free port) with `threads` worker
/// threads, prints the port on stdout, and runs until stdin closes (the
/// parent exited) or it is killed.
pub fn run(port: u16, threads: usize) -> std::io::Result<()> {
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
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        println!("{}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        // The parent holds our stdin; when it goes away, so do we.
        let parent_gone = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        let shared = Shared::new(
            Script::Always(Reply::Status(204)),
            Keep::Count,
            Some(COUNT_PATH),
        );
        tokio::select! {
            _ = serve::accept_loop(listener, Arc::new(shared)) => {}
            _ = parent_gone => {}
        }
        Ok(())
    })
}

/// A receiver running in a child process; killed when dropped.
pub struct ReceiverProcess {
    child: Child,
    pub port: u16,
}

impl ReceiverProcess {
    /// Starts `command`, a program that calls [`run`] with port 0, and reads
    /// the port it prints.
    pub fn spawn(mut command: Command) -> std::io::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout from the receiver"))?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        match read.ok().and_then(|_| line.trim().parse::<u16>().ok()) {
            Some(port) => Ok(ReceiverProcess { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(format!(
                    "the receiver did not print its port (got {line:?})"
                )))
            }
        }
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
    pub async fn count(&self, client: &reqwest::Client) -> std::io::Result<u64> {
        let text = client
            .get(format!("http://127.0.0.1:{}{COUNT_PATH}", self.port))
            .send()
            .await
            .map_err(std::io::Error::other)?
            .text()
            .await
            .map_err(std::io::Error::other)?;
        text.trim().parse().map_err(std::io::Error::other)
    }
}

impl Drop for ReceiverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
