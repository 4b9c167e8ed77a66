//! The HTTP endpoint: `GET /metrics` (axum on a single-threaded tokio
//! runtime; scrapes are read one at a time, as the kernel maps are).

use std::{
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
use thiserror::Error;

use super::Exporter;
use crate::kernel::interrupt;

/// The classic text format's media type (prometheus::TEXT_FORMAT).
const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

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

    /// Serves until Ctrl-C (or SIGTERM).
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
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        self.runtime.block_on(async move {
            axum::serve(self.listener, app)
                .with_graceful_shutdown(stop)
                .await
        })?;
        Ok(())
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
