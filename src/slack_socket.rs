//! Slack Socket Mode (`slack.mode = "socket"`): slash commands and clicks arrive over a
//! WebSocket that jitbot opens, so it needs no public HTTPS endpoint.
//!
//! `apps.connections.open` (with the app-level token, `xapp-…`) hands out a one-time `wss://`
//! URL; Slack greets each connection with `hello`, then sends envelopes
//! (`{"envelope_id","type":"slash_commands"|"interactive",…,"payload":{…}}`) that must be
//! acknowledged within 3 s by `envelope_id`. The acknowledgement carries the answer the HTTP
//! route would have sent ([`http::answer_slack_command`], [`http::answer_slack_interaction`]:
//! one code path for both transports).
//!
//! Nothing is lost across reconnects:
//! - Slack sends `disconnect` before it rotates a connection (`refresh_requested`, …): a new
//!   connection is opened first, and the old one is closed only once it says `hello` and the
//!   old one's acknowledgements are sent.
//! - A connection that drops or falls silent is replaced, with backoff (1 s doubling to 30 s).
//! - Slack delivers an unacknowledged envelope again (`retry_attempt` + 1). Each counts once: its
//!   payload's digest goes through the replay cache (`seen_requests`, on every replica) before the
//!   action, and this process keeps the answer, so a second delivery gets the first one's answer
//!   (or, on another replica, a note that it counted once) and changes nothing. An envelope's
//!   handler runs to the end even if its connection drops meanwhile.
//!
//! The app token is a [`Secret`]: never logged; neither is the connection URL (it holds a ticket).

use crate::config::Secret;
use crate::domain::bounded;
use crate::http::{self, HttpState, Origin, ReplayKey, SlackAnswer};
use crate::policy::Refusal;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a new connection may take to say `hello`.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// How often jitbot pings Slack, and looks at when it last heard from it.
const PING_EVERY: Duration = Duration::from_secs(10);
/// A connection that sent nothing (not even a pong) for this long is lost.
const SILENT_FOR: Duration = Duration::from_secs(30);
/// How long a replaced connection is still served after `disconnect` (Slack closes it itself
/// about 10 s after saying so, and may deliver on it until then).
const REFRESH_WITHIN: Duration = Duration::from_secs(15);
/// How long a connection may take to send its last acknowledgements at shutdown.
const STOP_WITHIN: Duration = Duration::from_secs(3);
/// A connection that lived this long resets the backoff when it closes.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between two reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long an envelope's digest stays in the replay cache (Slack redelivers for minutes).
const REMEMBER_FOR: Duration = Duration::from_secs(3600);
/// How long this process keeps an envelope's answer for a redelivery.
const ANSWER_KEPT_FOR: Duration = Duration::from_secs(900);
/// At most this many answers are kept (the oldest go first).
const ANSWERS_KEPT: usize = 10_000;
/// How long `apps.connections.open` and the WebSocket handshake may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a Socket Mode connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Slack answered `ok:false` (`invalid_auth`, `not_allowed_token_type`, …).
    #[error(
        "apps.connections.open refused: {0} (check SLACK_APP_TOKEN: an xapp- token with scope connections:write, Socket Mode enabled)"
    )]
    Refused(String),
    /// The call did not get an answer, or an answer that is not Slack's.
    #[error("apps.connections.open failed: {0}")]
    Open(String),
    /// The WebSocket did not connect.
    #[error("the Socket Mode WebSocket did not connect: {0}")]
    Connect(String),
    /// The connection did not start with `hello`.
    #[error("Slack did not say hello on the new connection: {0}")]
    NoHello(String),
}

/// A running Socket Mode client: one connection (two while one replaces the other).
pub struct SocketMode {
    state: HttpState,
    /// `{api_base_url}/apps.connections.open`.
    open_url: String,
    app_token: Secret,
    http: reqwest::Client,
    handled: Handled,
    /// Turns true at shutdown; every connection watches it.
    shutdown: watch::Receiver<bool>,
}

/// Starts the client; it reconnects until `shutdown` turns true, then closes after the last
/// acknowledgements (bounded by [`STOP_WITHIN`]). Aborting the handle drops every connection.
pub fn spawn(
    state: HttpState,
    api_base_url: &str,
    app_token: Secret,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, SocketError> {
    let http = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| SocketError::Open(e.to_string()))?;
    let client = Arc::new(SocketMode {
        state,
        open_url: format!(
            "{}/apps.connections.open",
            api_base_url.trim_end_matches('/')
        ),
        app_token,
        http,
        handled: Handled::default(),
        shutdown: shutdown.clone(),
    });
    Ok(tokio::spawn(client.run(shutdown)))
}

/// What a connection tells the client.
#[derive(Debug)]
enum LinkEvent {
    /// Slack announced it will close this connection (`refresh_requested`, `warning`, …).
    Disconnect(String),
    /// The connection is closed.
    Closed,
}

/// The client's handle on one connection.
struct Link {
    id: u64,
    opened: Instant,
    /// `true`: a newer connection serves; this one is served until Slack closes it (Slack may
    /// still deliver on it), at most [`REFRESH_WITHIN`].
    replaced: watch::Sender<bool>,
}

/// Waits out the next backoff step (or until shutdown), saying why.
async fn pause(backoff: &mut Backoff, shutdown: &mut watch::Receiver<bool>, why: &str) {
    let wait = backoff.next();
    tracing::warn!(reason = %why, retry_in_ms = wait.as_millis() as u64, "Slack Socket Mode: not connected");
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => {}
    }
}

/// The wait before the next reconnection attempt: 1 s, doubling to [`BACKOFF_MAX`].
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = Duration::from_secs(1u64 << self.0.min(5)).min(BACKOFF_MAX);
        self.0 = self.0.saturating_add(1);
        wait
    }
}

impl SocketMode {
    /// Keeps one connection open until shutdown; replaces it when Slack asks or it is lost.
    async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut links = JoinSet::new();
        let (events_tx, mut events) = mpsc::channel::<(u64, LinkEvent)>(16);
        let mut next_id = 0u64;
        let mut current: Option<Link> = None;
        let mut backoff = Backoff::default();
        while !*shutdown.borrow() {
            // Forget the connections that ended.
            while links.try_join_next().is_some() {}
            let Some(link) = current.as_ref() else {
                next_id += 1;
                tokio::select! {
                    opened = self.open(next_id, &events_tx, &mut links) => match opened {
                        Ok(link) => current = Some(link),
                        Err(e) => pause(&mut backoff, &mut shutdown, &e.to_string()).await,
                    },
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            let (link_id, opened) = (link.id, link.opened);
            tokio::select! {
                event = events.recv() => match event {
                    Some((id, LinkEvent::Disconnect(reason))) if id == link_id => {
                        next_id += 1;
                        current = self.refresh(current.take(), next_id, &reason, &events_tx, &mut links).await;
                    }
                    Some((id, LinkEvent::Closed)) if id == link_id => {
                        current = None;
                        // A connection that lasted was fine: reconnect at once. One that keeps
                        // dying young is not hammered.
                        if opened.elapsed() >= STABLE_AFTER {
                            backoff = Backoff::default();
                        } else {
                            pause(&mut backoff, &mut shutdown, "the connection closed soon after it opened").await;
                        }
                    }
                    // A replaced connection closing, or a late word from one.
                    Some(_) => {}
                    None => return,
                },
                _ = shutdown.changed() => {}
            }
        }
        Self::stop(links).await;
    }

    /// After `disconnect`: opens the next connection, then retires the old one. If the next one
    /// cannot be opened, the old one serves until it closes (and is then replaced as usual).
    async fn refresh(
        self: &Arc<Self>,
        old: Option<Link>,
        id: u64,
        reason: &str,
        events: &mpsc::Sender<(u64, LinkEvent)>,
        links: &mut JoinSet<()>,
    ) -> Option<Link> {
        tracing::info!(
            reason,
            "Slack Socket Mode: Slack asked for a new connection"
        );
        match self.open(id, events, links).await {
            Ok(next) => {
                if let Some(old) = old {
                    let _ = old.replaced.send(true);
                }
                Some(next)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Slack Socket Mode: no new connection yet; keeping the old one while it lasts");
                old
            }
        }
    }

    /// Waits (bounded) for every connection to send its last acknowledgements and close (each
    /// sees the shutdown itself).
    async fn stop(mut links: JoinSet<()>) {
        let drained = async { while links.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_WITHIN + Duration::from_secs(1), drained)
            .await
            .is_err()
        {
            tracing::warn!("Slack Socket Mode: closing with acknowledgements unsent");
        }
    }

    /// Opens a connection and waits for its `hello`; then serves it in `links`.
    async fn open(
        self: &Arc<Self>,
        id: u64,
        events: &mpsc::Sender<(u64, LinkEvent)>,
        links: &mut JoinSet<()>,
    ) -> Result<Link, SocketError> {
        let url = self.connection_url().await?;
        let (mut socket, _) =
            tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
                .await
                .map_err(|_| SocketError::Connect(format!("no handshake within {CALL_TIMEOUT:?}")))?
                .map_err(|e| SocketError::Connect(e.to_string()))?;
        let connections = await_hello(&mut socket).await?;
        tracing::info!(link = id, connections, "Slack Socket Mode: connected");
        let (replaced, on_replaced) = watch::channel(false);
        let ends = Ends {
            replaced: on_replaced,
            shutdown: self.shutdown.clone(),
        };
        links.spawn(self.clone().serve(id, socket, ends, events.clone()));
        Ok(Link {
            id,
            opened: Instant::now(),
            replaced,
        })
    }

    /// `apps.connections.open`: a fresh single-use WebSocket URL.
    async fn connection_url(&self) -> Result<String, SocketError> {
        let response = self
            .http
            .post(&self.open_url)
            .bearer_auth(self.app_token.expose())
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await
            .map_err(|e| SocketError::Open(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| SocketError::Open(format!("HTTP {status}: {}", e.without_url())))?;
        if body["ok"] != true {
            let code = body["error"].as_str().unwrap_or("no error code");
            return Err(SocketError::Refused(bounded(code).into_owned()));
        }
        body["url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| SocketError::Open("the answer holds no url".into()))
    }

    /// Serves one connection: each envelope is answered in its own task (which finishes even
    /// if the connection drops), acknowledgements go out as they are ready, and pings keep it
    /// alive. It ends when Slack closes it or it falls silent; once replaced, after
    /// [`REFRESH_WITHIN`]; at shutdown, once nothing is in flight (at most [`STOP_WITHIN`]).
    async fn serve(
        self: Arc<Self>,
        id: u64,
        mut socket: Socket,
        mut ends: Ends,
        events: mpsc::Sender<(u64, LinkEvent)>,
    ) {
        let mut acks = FuturesUnordered::<JoinHandle<Option<String>>>::new();
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut heard = Instant::now();
        // (deadline, stopping): set when replaced or at shutdown.
        let mut closing: Option<(tokio::time::Instant, bool)> = None;
        loop {
            if matches!(closing, Some((_, true))) && acks.is_empty() {
                break;
            }
            let deadline = closing.map_or_else(far_future, |(at, _)| at);
            tokio::select! {
                frame = socket.next() => {
                    heard = Instant::now();
                    if !self.on_frame(id, frame, &mut acks, &events).await {
                        break;
                    }
                }
                Some(done) = acks.next(), if !acks.is_empty() => {
                    if let Ok(Some(ack)) = done
                        && socket.send(Message::text(ack)).await.is_err()
                    {
                        break;
                    }
                }
                _ = ping.tick() => {
                    if heard.elapsed() > SILENT_FOR {
                        tracing::warn!(link = id, "Slack Socket Mode: silent for too long; reconnecting");
                        break;
                    }
                    if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break;
                    }
                }
                _ = ends.replaced.changed(), if closing.is_none() => {
                    closing = Some((tokio::time::Instant::now() + REFRESH_WITHIN, false));
                }
                _ = ends.shutdown.changed(), if !matches!(closing, Some((_, true))) => {
                    closing = Some((tokio::time::Instant::now() + STOP_WITHIN, true));
                }
                _ = tokio::time::sleep_until(deadline), if closing.is_some() => break,
            }
        }
        let _ = socket.close(None).await;
        let _ = events.send((id, LinkEvent::Closed)).await;
    }

    /// Handles what the connection received; false when it is closed or broken.
    async fn on_frame(
        self: &Arc<Self>,
        id: u64,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        acks: &mut FuturesUnordered<JoinHandle<Option<String>>>,
        events: &mpsc::Sender<(u64, LinkEvent)>,
    ) -> bool {
        let message = match frame {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::warn!(link = id, error = %e, "Slack Socket Mode: connection lost");
                return false;
            }
            None => return false,
        };
        match self.on_message(message) {
            Incoming::Envelope(e) => {
                let me = self.clone();
                acks.push(tokio::spawn(async move { me.acknowledge(e).await }));
            }
            Incoming::Disconnect(reason) => {
                let _ = events.send((id, LinkEvent::Disconnect(reason))).await;
            }
            Incoming::Closed => return false,
            Incoming::Nothing => {}
        }
        true
    }

    /// Reads one WebSocket message.
    fn on_message(&self, message: Message) -> Incoming {
        match message {
            Message::Text(text) => read_frame(text.as_str()),
            Message::Close(_) => Incoming::Closed,
            // Pings are answered by tungstenite; pongs and binary frames mean nothing here.
            _ => Incoming::Nothing,
        }
    }

    /// The acknowledgement of one envelope (the frame to send), with the answer of the first
    /// delivery when this is a redelivery.
    async fn acknowledge(&self, envelope: Envelope) -> Option<String> {
        let answer = match envelope.kind.as_str() {
            "slash_commands" | "interactive" => self.answer_once(&envelope).await,
            // Events and anything newer: acknowledged, not used.
            _ => SlackAnswer::Empty,
        };
        let payload = match answer {
            SlackAnswer::Json(v) if envelope.accepts_response_payload => Some(v),
            SlackAnswer::Copy if envelope.kind == "slash_commands" => {
                Some(crate::chat::slack::ephemeral_response(
                    &crate::messages::delivered_again(self.state.service.simulated),
                ))
            }
            _ => None,
        };
        let mut ack = json!({ "envelope_id": envelope.envelope_id });
        if let Some(payload) = payload {
            ack["payload"] = payload;
        }
        Some(ack.to_string())
    }

    /// The answer to a command or click, computed once per payload in this process (a
    /// redelivery waits for the first delivery's answer) and once across replicas.
    async fn answer_once(&self, envelope: &Envelope) -> SlackAnswer {
        let digest = envelope.digest();
        match self.handled.claim(&digest) {
            Claim::First(answer) => {
                let a = self.answer(envelope, digest).await;
                let _ = answer.send(Some(a.clone()));
                a
            }
            Claim::Again(mut answer) => {
                tracing::info!(
                    retry_attempt = envelope.retry_attempt,
                    "Slack Socket Mode: an envelope delivered again; answering as the first time"
                );
                let first =
                    tokio::time::timeout(http::HANDLER_BUDGET, answer.wait_for(Option::is_some))
                        .await;
                match first {
                    Ok(Ok(a)) => a.clone().unwrap_or(SlackAnswer::Copy),
                    _ => SlackAnswer::Copy,
                }
            }
        }
    }

    /// Parses the payload and asks the code the HTTP routes use.
    async fn answer(&self, envelope: &Envelope, digest: String) -> SlackAnswer {
        let path = if envelope.kind == "slash_commands" {
            "socket:slash_commands"
        } else {
            "socket:interactive"
        };
        let expires_at = crate::store::now_ms() + REMEMBER_FOR.as_millis() as i64;
        let origin = Origin {
            key: ReplayKey { digest, expires_at },
            path,
            copy_is_replay: false,
        };
        let st = &self.state;
        let malformed = if envelope.kind == "slash_commands" {
            match crate::chat::slack::slash_command_from_json(&envelope.payload) {
                Ok(cmd) => return http::answer_slack_command(st, &cmd, &origin).await,
                Err(e) => e,
            }
        } else {
            match crate::chat::slack::interaction_from_json(&envelope.payload) {
                Ok(i) => return http::answer_slack_interaction(st, i, &origin).await,
                Err(e) => e,
            }
        };
        self.refuse_malformed(path, &malformed.to_string()).await;
        SlackAnswer::Empty
    }

    /// Audits an envelope whose payload could not be understood (acknowledged, nothing done).
    async fn refuse_malformed(&self, path: &str, why: &str) {
        let why = bounded(why).into_owned();
        tracing::warn!(path, reason = %why, "refused a Socket Mode envelope");
        let refusal = Refusal::new("malformed_request", why);
        if let Err(e) = self
            .state
            .service
            .refuse(None, None, &refusal, json!({ "path": path }))
            .await
        {
            tracing::error!(error = %e, "could not audit a refused envelope");
        }
    }
}

/// What one text frame from Slack means: an envelope to acknowledge, `disconnect`, or nothing
/// jitbot acts on (`hello`, a frame without an `envelope_id`, text that is not a frame). The
/// parser of everything Slack sends on the WebSocket (fuzzed by `fuzz/`'s `socket` target).
pub fn read_frame(text: &str) -> Incoming {
    let frame: Frame = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %bounded(&e.to_string()), "Slack Socket Mode: a frame that is not an envelope");
            return Incoming::Nothing;
        }
    };
    match (frame.kind.as_str(), frame.envelope_id) {
        ("disconnect", _) => Incoming::Disconnect(frame.reason.unwrap_or_default()),
        ("hello", _) => Incoming::Nothing,
        (_, Some(envelope_id)) => Incoming::Envelope(Envelope {
            envelope_id,
            kind: frame.kind,
            payload: frame.payload,
            accepts_response_payload: frame.accepts_response_payload,
            retry_attempt: frame.retry_attempt,
        }),
        (kind, None) => {
            tracing::debug!(kind = %bounded(kind), "Slack Socket Mode: ignoring a frame");
            Incoming::Nothing
        }
    }
}

/// Reads until the connection's `hello` (Slack's first frame); returns `num_connections`.
async fn await_hello(socket: &mut Socket) -> Result<u64, SocketError> {
    let hello = async {
        while let Some(message) = socket.next().await {
            let message = message.map_err(|e| SocketError::NoHello(e.to_string()))?;
            if let Message::Text(text) = message
                && let Ok(frame) = serde_json::from_str::<Value>(text.as_str())
                && frame["type"] == "hello"
            {
                return Ok(frame["num_connections"].as_u64().unwrap_or(1));
            }
        }
        Err(SocketError::NoHello("closed before hello".into()))
    };
    tokio::time::timeout(HELLO_WITHIN, hello)
        .await
        .map_err(|_| SocketError::NoHello(format!("nothing within {HELLO_WITHIN:?}")))?
}

/// A Socket Mode frame as Slack sends it (unknown fields ignored).
#[derive(Debug, Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    envelope_id: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default = "yes")]
    accepts_response_payload: bool,
    #[serde(default)]
    retry_attempt: u32,
    /// `disconnect`'s reason.
    reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// What ends a connection besides Slack: being replaced, or the shutdown.
struct Ends {
    replaced: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
}

/// A deadline that never comes (a `select!` branch that is off).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// What one WebSocket message meant.
#[derive(Debug)]
pub enum Incoming {
    /// A command, click or event to acknowledge by its `envelope_id`.
    Envelope(Envelope),
    /// Slack will close this connection (the reason: `refresh_requested`, `warning`, …).
    Disconnect(String),
    /// The WebSocket is closing.
    Closed,
    /// Nothing to act on.
    Nothing,
}

/// One envelope to acknowledge.
#[derive(Debug)]
pub struct Envelope {
    pub envelope_id: String,
    /// `slash_commands`, `interactive`, `events_api`, …
    pub kind: String,
    pub payload: Value,
    pub accepts_response_payload: bool,
    pub retry_attempt: u32,
}

impl Envelope {
    /// What identifies the command or click across deliveries: the digest of its type and
    /// payload (a redelivery may come with another envelope id; every invocation and click has
    /// its own `trigger_id`, so two real ones never share a payload).
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"slack-socket\n");
        h.update(self.kind.as_bytes());
        h.update(b"\n");
        h.update(self.payload.to_string().as_bytes());
        hex::encode(h.finalize())
    }
}

/// The answers of the envelopes this process handled, by digest: a redelivery (on this or a
/// newer connection) gets the first delivery's answer, or waits for it while it is computed.
#[derive(Default)]
struct Handled {
    /// `std` mutex: nothing awaits while it is held.
    answers: Mutex<HashMap<String, (Instant, AnswerCell)>>,
}

/// An envelope's answer: `None` while the first delivery is being answered.
type AnswerCell = watch::Receiver<Option<SlackAnswer>>;

/// Whether this delivery is the first of its payload in this process.
enum Claim {
    /// Compute the answer and publish it here.
    First(watch::Sender<Option<SlackAnswer>>),
    /// The first delivery's answer (or, still `None`, the wait for it).
    Again(AnswerCell),
}

impl Handled {
    fn claim(&self, digest: &str) -> Claim {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, answer)) = answers.get(digest) {
            return Claim::Again(answer.clone());
        }
        answers.retain(|_, (at, _)| at.elapsed() < ANSWER_KEPT_FOR);
        if answers.len() >= ANSWERS_KEPT
            && let Some(oldest) = answers
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            answers.remove(&oldest);
        }
        let (tx, rx) = watch::channel(None);
        answers.insert(digest.to_string(), (Instant::now(), rx));
        Claim::First(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_claimed_once_and_its_answer_shared() {
        let handled = Handled::default();
        let Claim::First(tx) = handled.claim("a") else {
            panic!("first");
        };
        let Claim::Again(rx) = handled.claim("a") else {
            panic!("again");
        };
        assert!(matches!(handled.claim("b"), Claim::First(_)));
        tx.send(Some(SlackAnswer::Empty)).unwrap();
        assert_eq!(*rx.borrow(), Some(SlackAnswer::Empty));
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.next().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
