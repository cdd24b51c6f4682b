//! `webhooks dev`: the whole system in one process — the API and inbound
//! routes, the fan-out fed by the events stream, the sender fed by the queue,
//! and the sweeper — until SIGINT or SIGTERM.

use crate::backend::{build, Settings};
use crate::event_sources::{QueueMapping, StreamMapping};
use crate::gateway::{serve, Gateway};
use anyhow::Context as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Concurrent queue pollers, each handling a batch of up to ten messages.
const POLLERS: usize = 8;
/// How often the sweeper runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How long in-flight work may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the system on `listen` until a stop signal; `routes` are inbound
/// routes to register first (provider, address, org).
pub async fn run(
    listen: SocketAddr,
    jwt_secret: String,
    settings: Settings,
    routes: Vec<(String, String, String)>,
) -> anyhow::Result<()> {
    let system = build(&settings).await?;
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
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let gateway = Arc::new(Gateway {
        api: system.api.clone(),
        inbound: Some(system.inbound.clone()),
        jwt_secret,
    });
    let http = tokio::spawn(serve(listener, gateway, stop_rx.clone(), SHUTDOWN_GRACE));
    let stream =
        tokio::spawn(StreamMapping::new(system.stream, system.fanout.clone()).run(stop_rx.clone()));
    let queue = tokio::spawn(
        QueueMapping::new(system.queue.clone(), system.sender.clone())
            .run(POLLERS, stop_rx.clone()),
    );
    let sweeper = system.sweeper.clone();
    let mut sweep_stop = stop_rx.clone();
    let sweep = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => { sweeper.sweep().await; }
                _ = sweep_stop.changed() => break,
            }
        }
    });

    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();

    wait_for_signal().await;
    tracing::info!("stopping: no new work; letting in-flight deliveries finish");
    let _ = stop_tx.send(true);
    let all = async {
        let _ = tokio::join!(http, stream, queue, sweep);
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
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
