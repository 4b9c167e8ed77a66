//! The HTTP endpoint: `GET /metrics` (axum's router, served by hyper's
//! HTTP/1 connections on a single-threaded tokio runtime; scrapes are read
//! one at a time, as the kernel maps are).
//!
//! Bounded, so a client cannot hold the endpoint or the process:
//!
//! - a client has [`HEADER_READ_TIMEOUT`] to send its request head (and an
//!   idle keep-alive connection as long to send the next one), then its
//!   connection is closed;
//! - at most [`MAX_CONNECTIONS`] connections are open: at the cap a new
//!   connection closes the oldest one at once (the oldest are the stalled
//!   ones; a scraper that was closed reconnects, and its new connection is
//!   the youngest). New connections are never refused nor queued, so
//!   clients that hold half-sent requests cannot lock Prometheus out;
//! - after Ctrl-C (or SIGTERM) nothing new is accepted, requests in flight
//!   have [`SHUTDOWN_GRACE`] to finish, and every connection still open is
//!   then closed.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use thiserror::Error;
use tokio::{sync::watch, task::JoinSet};

use super::Exporter;
use crate::kernel::interrupt;

/// The classic text format's media type (prometheus::TEXT_FORMAT).
const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The most connections open at once (see the module docs).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take after Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often Ctrl-C is looked for.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How long accepting pauses after an error (out of file descriptors:
/// the pending connections wait in the backlog).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr}: {source}; give a free address with --listen (e.g. 127.0.0.1:9477)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the metrics server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener, not yet serving: its address is known (for `:0`).
pub struct Listener {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
}

impl Listener {
    pub fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self { runtime, listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until Ctrl-C (or SIGTERM), then for [`SHUTDOWN_GRACE`] at most.
    pub fn serve(self, exporter: Exporter) -> Result<(), ServeError> {
        let exporter = Arc::new(Mutex::new(exporter));
        let app = Router::new()
            .route(
                "/metrics",
                get(move || {
                    let exporter = exporter.clone();
                    async move { scrape(&exporter) }
                }),
            )
            .route("/", get(|| async { "labctl metrics: see /metrics\n" }));
        let stop = async {
            while !interrupt::requested() {
                tokio::time::sleep(STOP_POLL).await;
            }
        };
        let Self { runtime, listener } = self;
        runtime.block_on(serve(listener, app, stop));
        // Dropping the runtime drops the connections the grace left open.
        drop(runtime);
        Ok(())
    }
}

/// The open connections: their tasks, oldest first.
#[derive(Default)]
struct Connections {
    tasks: JoinSet<()>,
    /// By accept order.
    open: BTreeMap<u64, tokio::task::AbortHandle>,
    order: HashMap<tokio::task::Id, u64>,
    accepted: u64,
}

impl Connections {
    /// Serves `stream`, first closing the oldest connection at the cap.
    fn add(&mut self, stream: tokio::net::TcpStream, app: &Router, stop: &watch::Receiver<bool>) {
        while self.open.len() >= MAX_CONNECTIONS {
            let Some((_, oldest)) = self.open.pop_first() else {
                break;
            };
            oldest.abort();
        }
        let handle = self
            .tasks
            .spawn(connection(stream, app.clone(), stop.clone()));
        self.accepted += 1;
        self.order.insert(handle.id(), self.accepted);
        self.open.insert(self.accepted, handle);
    }

    /// Forgets a connection whose task ended.
    fn ended(&mut self, id: tokio::task::Id) {
        if let Some(n) = self.order.remove(&id) {
            self.open.remove(&n);
        }
    }
}

/// Accepts and serves until `stop`, then lets requests in flight finish
/// for [`SHUTDOWN_GRACE`] at most.
async fn serve(listener: tokio::net::TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let (stopping, stop_rx) = watch::channel(false);
    let mut conns = Connections::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(ended) = conns.tasks.join_next_with_id() => {
                conns.ended(match ended {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                });
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => conns.add(stream, &app, &stop_rx),
                Err(e) => {
                    tracing::debug!("cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    // Connections between requests close now, the others after theirs.
    if stopping.send(true).is_err() {
        tracing::debug!("no connection to stop");
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            "{} connections still open after {SHUTDOWN_GRACE:?}: closed",
            conns.tasks.len()
        );
        conns.tasks.abort_all();
    }
}

/// One client's connection, bounded by [`HEADER_READ_TIMEOUT`].
async fn connection(stream: tokio::net::TcpStream, app: Router, mut stop: watch::Receiver<bool>) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!("a metrics connection ended: {e}");
    }
}

/// Returns once the server stops.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        tracing::debug!("the server went without saying stop");
    }
}

fn scrape(exporter: &Mutex<Exporter>) -> axum::response::Response {
    let result = match exporter.lock() {
        Ok(mut e) => e.scrape().map_err(|e| e.to_string()),
        Err(_) => Err("a previous scrape panicked".to_owned()),
    };
    match result {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(msg) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{msg}\n")).into_response(),
    }
}
