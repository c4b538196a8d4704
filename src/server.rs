//! The HTTP server's accept loop, built so that no client can starve the worker.
//!
//! A port that should close stays open for as long as the worker cannot run, so the server must
//! never take what the worker needs: file descriptors (to reach ARM, the database, or start the
//! Azure CLI for a token), memory and time. `axum::serve` has no connection cap and no read
//! timeouts, so jitbot runs its own loop over hyper:
//!
//! - **A connection cap** below the open-files limit: at most `server.max_connections` at once
//!   (and never more than the soft `RLIMIT_NOFILE` minus [`RESERVED_FDS`], which start-up first
//!   raises to the hard limit). A connection over the cap gets an immediate `503` and is closed.
//! - **A header timeout** (`server.header_timeout`): the whole request head must arrive within it,
//!   and an idle keep-alive connection is closed after it (hyper starts the timer whenever the
//!   connection waits for a request). This sheds idle and one-byte-a-second clients.
//! - **A body timeout** (`server.body_timeout`): headers and then nothing (or a trickle) ends in 408.
//! - **A body cap** (`server.max_body_bytes`): a longer body ends in 413 as soon as the cap is
//!   passed, never read further (the handlers' extractor limit in `http.rs` says the same); real
//!   Slack and Discord payloads are a few KiB.
//!
//! Both are [`read_body_within`], which reads the whole body before any handler runs.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// File descriptors kept out of the connection cap's reach: the database pool, ARM and chat
/// clients, the Azure CLI and the log files need them while the server is at its cap.
pub const RESERVED_FDS: u64 = 256;

/// The fewest connections the cap allows, whatever the file limit says.
const MIN_CONNECTIONS: usize = 16;

/// The answer to a connection over the cap: sent at once, then the connection is closed.
const SATURATED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 40\r\nretry-after: 1\r\n\r\njitbot is at its connection limit; retry";

/// `[server]` limits, as configured (`config.rs` reads them from the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time for a request's head to arrive, and the longest a keep-alive connection may idle.
    pub header_timeout: Duration,
    /// Time for a request's body to arrive after its head.
    pub body_timeout: Duration,
    /// Largest body read; a larger one is answered 413 without being read.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Raises the soft open-files limit to the hard limit where allowed, and returns the connection
/// cap that leaves [`RESERVED_FDS`] descriptors for everything else.
fn connection_cap(configured: usize) -> usize {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    };
    let room = soft.saturating_sub(RESERVED_FDS) as usize;
    let cap = configured.min(room).max(MIN_CONNECTIONS);
    if cap < configured {
        tracing::warn!(
            open_files = soft,
            configured,
            cap,
            "the open-files limit is low: serving fewer connections at once than configured"
        );
    }
    cap
}

/// Reads a request's whole body, at most `max` bytes within `timeout` of its head, before the
/// handler sees it: 408 when it does not arrive in time, 413 as soon as it passes the cap.
async fn read_body_within(
    axum::extract::State((timeout, max)): axum::extract::State<(Duration, usize)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let read = http_body_util::Limited::new(body, max).collect();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => {
            let body = axum::body::Body::from(collected.to_bytes());
            next.run(axum::extract::Request::from_parts(parts, body))
                .await
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than this server accepts",
        )
            .into_response(),
        Ok(Err(_)) => (
            axum::http::StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )
            .into_response(),
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )
            .into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets open connections finish
/// their current request and returns when they have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_connections = connection_cap(limits.max_connections);
    let slots = Arc::new(Semaphore::new(max_connections));
    let router = router.layer(axum::middleware::from_fn_with_state(
        (limits.body_timeout, limits.max_body_bytes),
        read_body_within,
    ));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning; the cap should make
                // this rare.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(shed(stream));
            continue;
        };
        // Handlers that need the client's address (the `from me` page) read it from here.
        let with_peer = router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let service = TowerToHyperService::new(with_peer);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                // The guard `wait_for` returns must not live across the await below (not Send).
                _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    // Every slot back means every connection has closed.
    let _ = slots.acquire_many(max_connections as u32).await;
}

/// Answers a connection over the cap with a 503 and closes it, spending at most a second on it.
async fn shed(mut stream: tokio::net::TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(SATURATED).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saturated_answer_declares_its_length() {
        let text = std::str::from_utf8(SATURATED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn the_cap_leaves_room_for_the_worker() {
        let cap = connection_cap(usize::MAX);
        let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0;
        assert!(cap as u64 <= soft.max(RESERVED_FDS + MIN_CONNECTIONS as u64));
        assert_eq!(connection_cap(20), 20);
    }
}
