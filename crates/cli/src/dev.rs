//! `webhooks dev`: the whole system in one process — the API and inbound
//! routes, the fan-out fed by the events stream, the sender fed by the queue,
//! and the sweeper — until SIGINT or SIGTERM. The benchmarks run the same
//! [`System::start`].

use crate::backend::{Settings, System};
use crate::event_sources::{QueueMapping, StreamMapping};
use crate::gateway::{serve, Gateway};
use anyhow::Context as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Concurrent queue pollers, each handling a batch of up to ten messages.
pub const POLLERS: usize = 8;
/// Messages the sender handles at once per poller (the SQS batch).
pub const BATCH: usize = 10;
/// How often the sweeper runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long in-flight work may take to finish after a stop signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// A system serving on a socket, with whatever else was started; stopped by
/// [`Running::stop`].
pub struct Running {
    /// Where the gateway listens.
    pub addr: SocketAddr,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// `http://HOST:PORT` of the gateway.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves only the API and inbound routes of `system` on `listener`; the
    /// caller drives the fan-out and sender (benchmarks that time them apart).
    pub fn serve(
        system: &System,
        listener: TcpListener,
        tokens: crate::token::Verifier,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr().context("reading the bound address")?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let gateway = Arc::new(Gateway {
            api: system.api.clone(),
            inbound: Some(system.inbound.clone()),
            tokens,
        });
        let http = tokio::spawn(serve(listener, gateway, stop_rx.clone(), SHUTDOWN_GRACE));
        Ok(Running {
            addr,
            stop_tx,
            stop_rx,
            tasks: vec![http],
        })
    }

    /// Stops taking work and waits, up to [`SHUTDOWN_GRACE`], for in-flight
    /// work to finish; `false` if some did not.
    pub async fn stop(self) -> bool {
        let _ = self.stop_tx.send(true);
        let all = futures::future::join_all(self.tasks);
        tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_ok()
    }
}

impl System {
    /// Everything of `webhooks dev`: the gateway on `listener`, the stream
    /// mapping feeding the fan-out, [`POLLERS`] queue pollers feeding the
    /// sender, and the sweeper every [`SWEEP_EVERY`].
    pub fn start(
        self,
        listener: TcpListener,
        tokens: crate::token::Verifier,
    ) -> anyhow::Result<Running> {
        let mut running = Running::serve(&self, listener, tokens)?;
        let stop = running.stop_rx.clone();
        running.tasks.push(tokio::spawn(
            StreamMapping::new(self.stream, self.fanout.clone()).run(stop.clone()),
        ));
        running.tasks.push(tokio::spawn(
            QueueMapping::new(self.queue.clone(), self.sender.clone()).run(POLLERS, stop.clone()),
        ));
        if let Some((metrics, every)) = self.stats.clone() {
            let mut stats_stop = stop.clone();
            running.tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {
                            if let Some(tally) = metrics.take() {
                                println!("{}", tally.summary());
                                let _ = std::io::stdout().flush();
                            }
                        }
                        _ = stats_stop.changed() => break,
                    }
                }
            }));
        }
        let sweeper = self.sweeper.clone();
        let mut sweep_stop = stop;
        running.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(SWEEP_EVERY) => { sweeper.sweep().await; }
                    _ = sweep_stop.changed() => break,
                }
            }
        }));
        Ok(running)
    }
}

/// Runs the system on `listen` until a stop signal; `routes` are inbound
/// routes to register first (provider, address, org).
pub async fn run(
    listen: SocketAddr,
    tokens: crate::token::Verifier,
    settings: Settings,
    routes: Vec<(String, String, String)>,
) -> anyhow::Result<()> {
    let system = System::build(&settings).await?;
    for (provider, address, org) in &routes {
        system
            .inbound_store
            .set_route(provider, address, org)
            .await
            .with_context(|| format!("registering inbound route {provider}:{address}"))?;
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let running = system.start(listener, tokens)?;
    println!("listening on {}", running.base_url());
    let _ = std::io::stdout().flush();

    wait_for_signal().await;
    tracing::info!("stopping: no new work; letting in-flight deliveries finish");
    if !running.stop().await {
        tracing::warn!(
            "some work did not finish within {SHUTDOWN_GRACE:?}; it will be retried from the queue"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
