//! Slack Socket Mode, emulated: `apps.connections.open` and the WebSocket it hands out.
//!
//! As Slack does (see `shared/reference/PROTOCOLS.md`): `apps.connections.open` takes an
//! app-level token (`Authorization: Bearer xapp-…`; a bot token gets `not_allowed_token_type`)
//! and answers a single-use `ws://127.0.0.1:<port>/link/?ticket=…`. Each connection gets
//! `hello` first; envelopes the test pushes (`slash_commands`, `interactive`) go to the newest
//! connection that is not being refreshed (else to one that is, until it closes), or wait for
//! one. An envelope not acknowledged within [`SocketHub::set_redeliver_after`] (3 s by
//! default) is delivered again, with `retry_attempt` one higher (`retry_reason: "timeout"`), up
//! to 3 retries, on whatever connection is open then.
//! Acknowledgements (`{"envelope_id", "payload"?}`) are recorded with their payload and how
//! long after that delivery they came.
//!
//! Test knobs: [`SocketHub::disconnect`] (Slack's `disconnect` frame, e.g. `refresh_requested`,
//! then the connection is closed after a grace), [`SocketHub::drop_connections`] (the TCP
//! connections vanish without a close frame: socket loss).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// Slack stops redelivering after this many retries.
const MAX_RETRIES: u32 = 3;
/// The emulated app.
const APP_ID: &str = "A0SIMAPP";

/// One delivery of an envelope.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The connection it went out on (1, 2, … in order of opening).
    pub connection: u64,
    pub retry_attempt: u32,
    pub at: Instant,
}

/// The acknowledgement of an envelope.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The ack's `payload`, if it carried one (the answer shown to the person).
    pub payload: Option<Value>,
    pub connection: u64,
    /// Which delivery it acknowledged (`retry_attempt` of the newest delivery before it).
    pub retry_attempt: u32,
    /// From that delivery to the ack.
    pub latency: Duration,
}

/// An envelope the test pushed, with what happened to it.
#[derive(Debug, Clone)]
pub struct SimEnvelope {
    pub envelope_id: String,
    /// `slash_commands` or `interactive`.
    pub kind: String,
    pub payload: Value,
    pub deliveries: Vec<Delivery>,
    /// The first acknowledgement.
    pub ack: Option<Ack>,
    /// Acknowledgements after the first (of redeliveries).
    pub later_acks: Vec<Ack>,
}

/// What a connection's task is told to do.
enum ToConnection {
    Send(String),
    /// Close with a close frame (Slack rotating a connection).
    Close,
    /// Vanish: drop the TCP connection without a close frame.
    Drop,
}

struct Connection {
    id: u64,
    tx: mpsc::UnboundedSender<ToConnection>,
    /// Sent `disconnect`: no new deliveries go there.
    disconnecting: bool,
    open: bool,
}

struct HubState {
    app_token: Option<String>,
    tickets: HashSet<String>,
    opens: u32,
    next_ticket: u64,
    connections: Vec<Connection>,
    envelopes: Vec<SimEnvelope>,
    next_envelope: u64,
    redeliver_after: Duration,
}

struct HubInner {
    state: Mutex<HubState>,
    ws_addr: SocketAddr,
}

/// The Socket Mode side of a [`crate::slack::SlackSim`]. Clones share state; the WebSocket
/// listener stops when the last clone is dropped.
#[derive(Clone)]
pub struct SocketHub {
    inner: Arc<HubInner>,
    _tasks: Arc<TaskGuard>,
}

struct TaskGuard(Vec<tokio::task::AbortHandle>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl SocketHub {
    /// Binds the WebSocket listener on `127.0.0.1` and starts the redelivery timer.
    pub(crate) async fn start() -> anyhow::Result<SocketHub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let inner = Arc::new(HubInner {
            state: Mutex::new(HubState {
                app_token: None,
                tickets: HashSet::new(),
                opens: 0,
                next_ticket: 0,
                connections: Vec::new(),
                envelopes: Vec::new(),
                next_envelope: 0,
                redeliver_after: Duration::from_secs(3),
            }),
            ws_addr: listener.local_addr()?,
        });
        let accept = tokio::spawn(accept_loop(listener, inner.clone())).abort_handle();
        let timer = tokio::spawn(redeliver_loop(Arc::downgrade(&inner))).abort_handle();
        Ok(SocketHub {
            inner,
            _tasks: Arc::new(TaskGuard(vec![accept, timer])),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.inner.lock()
    }

    /// Accept `token` (an `xapp-…` app-level token) on `apps.connections.open`.
    pub fn set_app_token(&self, token: &str) {
        self.lock().app_token = Some(token.to_string());
    }

    /// How long an unacknowledged delivery waits before the envelope is delivered again.
    pub fn set_redeliver_after(&self, after: Duration) {
        self.lock().redeliver_after = after;
    }

    /// `apps.connections.open`: checks the app token, hands out a single-use URL.
    pub(crate) fn open(&self, headers: &HeaderMap) -> (StatusCode, Value) {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim);
        let mut st = self.lock();
        let error = match (token, st.app_token.as_deref()) {
            (None, _) => Some("not_authed"),
            (Some(t), _) if !t.starts_with("xapp-") => Some("not_allowed_token_type"),
            (Some(t), Some(expected)) if t == expected => None,
            _ => Some("invalid_auth"),
        };
        if let Some(error) = error {
            return (StatusCode::OK, json!({ "ok": false, "error": error }));
        }
        st.opens += 1;
        st.next_ticket += 1;
        let ticket = format!("{:016x}{:04}", rand::random::<u64>(), st.next_ticket);
        st.tickets.insert(ticket.clone());
        let url = format!("ws://{}/link/?ticket={ticket}", self.inner.ws_addr);
        (StatusCode::OK, json!({ "ok": true, "url": url }))
    }

    /// How many times `apps.connections.open` handed out a URL.
    pub fn opens(&self) -> u32 {
        self.lock().opens
    }

    /// Connections open now (after `hello`), not counting those sent `disconnect`.
    pub fn live_connections(&self) -> usize {
        self.lock()
            .connections
            .iter()
            .filter(|c| c.open && !c.disconnecting)
            .count()
    }

    /// Connections ever opened (each got `hello`).
    pub fn connections_opened(&self) -> u64 {
        self.lock().connections.len() as u64
    }

    /// Pushes an envelope of `kind` (`slash_commands`, `interactive`) with `payload`; it is
    /// delivered now if a connection is open, else when one opens. Returns its `envelope_id`.
    pub fn push(&self, kind: &str, payload: Value) -> String {
        let mut st = self.lock();
        st.next_envelope += 1;
        let envelope_id = format!("{:08x}-sim-{:06}", rand::random::<u32>(), st.next_envelope);
        st.envelopes.push(SimEnvelope {
            envelope_id: envelope_id.clone(),
            kind: kind.to_string(),
            payload,
            deliveries: Vec::new(),
            ack: None,
            later_acks: Vec::new(),
        });
        let last = st.envelopes.len() - 1;
        deliver(&mut st, last, 0);
        envelope_id
    }

    /// Delivers an envelope once more now, acknowledged or not (as Slack may).
    pub fn redeliver(&self, envelope_id: &str) {
        let mut st = self.lock();
        if let Some(i) = st
            .envelopes
            .iter()
            .position(|e| e.envelope_id == envelope_id)
        {
            let attempt = st.envelopes[i].deliveries.len() as u32;
            deliver(&mut st, i, attempt);
        }
    }

    /// Every envelope pushed so far, with its deliveries and acknowledgement.
    pub fn envelopes(&self) -> Vec<SimEnvelope> {
        self.lock().envelopes.clone()
    }

    /// Waits for the envelope's acknowledgement.
    pub async fn wait_ack(&self, envelope_id: &str, timeout: Duration) -> anyhow::Result<Ack> {
        let deadline = Instant::now() + timeout;
        loop {
            let ack = self
                .lock()
                .envelopes
                .iter()
                .find(|e| e.envelope_id == envelope_id)
                .and_then(|e| e.ack.clone());
            if let Some(ack) = ack {
                return Ok(ack);
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "Socket Mode: envelope {envelope_id} not acknowledged within {timeout:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `n` connections are live (opened, greeted, not being refreshed).
    pub async fn wait_connected(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.live_connections() < n {
            if Instant::now() >= deadline {
                anyhow::bail!("Socket Mode: {n} live connection(s) expected within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Sends `{"type":"disconnect","reason":…}` on every live connection (e.g.
    /// `refresh_requested`), then closes them after `grace` (Slack gives about 10 s).
    pub fn disconnect(&self, reason: &str, grace: Duration) {
        let frame = json!({ "type": "disconnect", "reason": reason,
            "debug_info": { "host": "applink-sim" } })
        .to_string();
        let mut closing = Vec::new();
        for c in self
            .lock()
            .connections
            .iter_mut()
            .filter(|c| c.open && !c.disconnecting)
        {
            c.disconnecting = true;
            let _ = c.tx.send(ToConnection::Send(frame.clone()));
            closing.push(c.tx.clone());
        }
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            for tx in closing {
                let _ = tx.send(ToConnection::Close);
            }
        });
    }

    /// Every open connection vanishes (no close frame, no `disconnect`): socket loss.
    pub fn drop_connections(&self) {
        for c in self.lock().connections.iter_mut().filter(|c| c.open) {
            c.open = false;
            let _ = c.tx.send(ToConnection::Drop);
        }
    }
}

impl HubInner {
    /// Lock the state; a poisoned lock (a panicking test thread) still yields the data.
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends envelope `i` (attempt `retry_attempt`) on the newest open connection that was not
/// sent `disconnect`, else (as Slack does until it closes them) on one that was; without any it
/// stays undelivered and goes out when a connection opens.
fn deliver(st: &mut HubState, i: usize, retry_attempt: u32) {
    let open = || st.connections.iter().rev().filter(|c| c.open);
    let Some(conn) = open().find(|c| !c.disconnecting).or_else(|| open().next()) else {
        return;
    };
    let e = &mut st.envelopes[i];
    let frame = json!({
        "envelope_id": e.envelope_id,
        "type": e.kind,
        "accepts_response_payload": true,
        "retry_attempt": retry_attempt,
        "retry_reason": if retry_attempt == 0 { "" } else { "timeout" },
        "payload": e.payload,
    });
    if conn.tx.send(ToConnection::Send(frame.to_string())).is_ok() {
        e.deliveries.push(Delivery {
            connection: conn.id,
            retry_attempt,
            at: Instant::now(),
        });
    }
}

/// Every 20 ms: envelopes never delivered go out, unacknowledged ones are delivered again.
async fn redeliver_loop(inner: std::sync::Weak<HubInner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut st = inner.lock();
        let after = st.redeliver_after;
        let due: Vec<(usize, u32)> = st
            .envelopes
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ack.is_none())
            .filter_map(|(i, e)| match e.deliveries.last() {
                None => Some((i, 0)),
                Some(d) if d.at.elapsed() >= after && d.retry_attempt < MAX_RETRIES => {
                    Some((i, d.retry_attempt + 1))
                }
                Some(_) => None,
            })
            .collect();
        for (i, attempt) in due {
            deliver(&mut st, i, attempt);
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, inner: Arc<HubInner>) {
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(serve_connection(tcp, inner.clone()));
    }
}

/// One WebSocket connection: the ticket must be one `apps.connections.open` handed out (each
/// works once); then `hello`, deliveries, and acknowledgements until it closes.
async fn serve_connection(tcp: tokio::net::TcpStream, inner: Arc<HubInner>) {
    let hub = inner.clone();
    // tungstenite's callback signature: its error is an HTTP response, large by nature.
    #[allow(clippy::result_large_err)]
    let check_ticket = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let ticket = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ticket="))
            .unwrap_or_default()
            .to_string();
        if hub.lock().tickets.remove(&ticket) {
            Ok(resp)
        } else {
            let mut refused = ErrorResponse::new(Some("unknown or used ticket".into()));
            *refused.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refused)
        }
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check_ticket).await else {
        return;
    };
    let (id, mut rx) = register(&inner);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(ToConnection::Send(text)) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(ToConnection::Close) | None => {
                    let _ = ws.close(None).await;
                    break;
                }
                Some(ToConnection::Drop) => break,
            },
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => record_ack(&inner, id, text.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    if let Some(c) = inner.lock().connections.iter_mut().find(|c| c.id == id) {
        c.open = false;
    }
}

/// Adds a greeted connection (its `hello` queued first); returns its id and what to send on it.
fn register(inner: &HubInner) -> (u64, mpsc::UnboundedReceiver<ToConnection>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = inner.lock();
    let id = st.connections.len() as u64 + 1;
    let open = st.connections.iter().filter(|c| c.open).count();
    let hello = json!({ "type": "hello", "num_connections": open + 1,
        "connection_info": { "app_id": APP_ID },
        "debug_info": { "host": "applink-sim", "build_number": 1, "approximate_connection_time": 3600 } });
    let _ = tx.send(ToConnection::Send(hello.to_string()));
    st.connections.push(Connection {
        id,
        tx,
        disconnecting: false,
        open: true,
    });
    (id, rx)
}

/// Records `{"envelope_id", "payload"?}` received on connection `id`.
fn record_ack(inner: &HubInner, id: u64, text: &str) {
    let Ok(ack) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(envelope_id) = ack["envelope_id"].as_str() else {
        return;
    };
    let mut st = inner.lock();
    let Some(e) = st
        .envelopes
        .iter_mut()
        .find(|e| e.envelope_id == envelope_id)
    else {
        return;
    };
    let Some(last) = e.deliveries.last() else {
        return;
    };
    let recorded = Ack {
        payload: ack.get("payload").cloned(),
        connection: id,
        retry_attempt: last.retry_attempt,
        latency: last.at.elapsed(),
    };
    if e.ack.is_some() {
        e.later_acks.push(recorded);
    } else {
        e.ack = Some(recorded);
    }
}
