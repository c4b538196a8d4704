//! In-process emulator of the Slack Web API methods jitbot uses, for `jitbot demo` and
//! black-box tests.
//!
//! Socket Mode (`apps.connections.open` and its WebSocket) is in [`crate::slack_socket`].
//!
//! It serves `POST /api/chat.postMessage`, `/api/chat.update`, `/api/chat.postEphemeral`,
//! `/api/conversations.open`, `/api/conversations.history` (GET or POST), `/api/views.open`,
//! `/api/views.update` (see [`views`]), `/api/auth.test` and `/api/usergroups.users.list` (GET or
//! POST; members set with [`SlackSim::set_usergroup`]) on
//! `127.0.0.1`, with Slack's conventions
//! (see `shared/reference/PROTOCOLS.md`): JSON or form bodies, `Authorization: Bearer <token>`,
//! failures as HTTP 200 `{"ok":false,"error":…}`, 429 with `Retry-After` for rate limits, and
//! Block Kit limits checked like Slack does (`invalid_blocks` with json-pointer details). It
//! records every call and keeps the current state of every message, so tests can assert on
//! what a person would see. Faults (rate limit, `ok:false`, 5xx, outage) are injected on demand.
//!
//! Posting to a user id (`U…`/`W…`) opens a DM: the answer names the DM channel (`D…`) as real
//! Slack does, and the message is stored under the user id (`messages("U123")`); the `D…` id
//! resolves to the same conversation for `chat.update` and [`SlackSim::messages`].
//!
//! Message `metadata` (`{"event_type": …, "event_payload": {…}}`) is kept with the message and
//! returned by `conversations.history` when `include_all_metadata=true`, newest message first, as
//! Slack does. `conversations.history` takes a conversation id (`C…`, `D…`), not a user id.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

mod views;
pub use views::SlackView;

/// First message `ts` handed out (seconds part); each message adds one second.
const FIRST_TS_SECS: u64 = 1_700_000_100;
/// Slack's limit on top-level `text`.
const MAX_TEXT_CHARS: usize = 40_000;
/// Identity of the emulated bot user.
const BOT_USER_ID: &str = "U0BOTUSER";
const BOT_ID: &str = "B0BOTID";
const TEAM_ID: &str = "T0SIM";

/// The Web API methods the emulator serves.
const METHODS: &[&str] = &[
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "conversations.open",
    "conversations.history",
    "views.open",
    "views.update",
    "auth.test",
    "usergroups.users.list",
];

/// One Web API call as the emulator received and answered it.
#[derive(Clone)]
pub struct SlackCall {
    /// Method name, e.g. `chat.postMessage`.
    pub method: String,
    /// The request body as JSON (form bodies become an object of strings, with `blocks`
    /// decoded); an unparseable body is kept as a JSON string.
    pub body: Value,
    /// The `Content-Type` request header.
    pub content_type: Option<String>,
    /// The `Authorization` request header as received (emulator tokens are fake; `Debug`
    /// redacts it anyway).
    pub authorization: Option<String>,
    /// Whether the call carried the configured bot token.
    pub auth_ok: bool,
    /// HTTP status answered.
    pub status: u16,
    /// The `ok` field answered (false for non-JSON answers).
    pub ok: bool,
    /// The `error` code answered, if `ok:false`.
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

impl fmt::Debug for SlackCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self
            .authorization
            .as_deref()
            .map(|a| match a.split_once(' ') {
                Some((scheme, rest)) => format!("{scheme} <{} chars>", rest.len()),
                None => format!("<{} chars>", a.len()),
            });
        f.debug_struct("SlackCall")
            .field("method", &self.method)
            .field("body", &self.body)
            .field("content_type", &self.content_type)
            .field("authorization", &auth)
            .field("auth_ok", &self.auth_ok)
            .field("status", &self.status)
            .field("ok", &self.ok)
            .field("error", &self.error)
            .field("at", &self.at)
            .finish()
    }
}

/// The current state of a posted message.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackMessage {
    /// Conversation it lives in (the user id for DMs).
    pub channel: String,
    pub ts: String,
    /// Top-level `text` (the notification fallback when blocks are present).
    pub text: String,
    /// The Block Kit array, or `Null` when the message has no blocks.
    pub blocks: Value,
    /// How many `chat.update` calls changed it.
    pub updates: u32,
    /// The message `metadata` as posted, or `Null`.
    pub metadata: Value,
}

/// A fault to answer the next emulated Web API call with (FIFO, one call each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackFault {
    /// HTTP 429 with `Retry-After: <secs>` and `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 200 `{"ok":false,"error":<code>}`.
    OkFalse(String),
    /// HTTP 500 with a non-JSON body.
    ServerError,
    /// Carry out the call (the message is delivered), then answer HTTP 500: the caller cannot
    /// tell that it worked.
    DeliverThenFail,
    /// Carry out the call, then hold the answer this long (the caller times out first).
    DeliverThenHang(Duration),
}

/// An ephemeral message (`chat.postEphemeral`): visible to one user in a channel, never
/// updatable.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackEphemeral {
    /// Conversation it was shown in (the user id for DMs).
    pub channel: String,
    /// The only user who sees it.
    pub user: String,
    pub ts: String,
    pub text: String,
    pub blocks: Value,
}

#[derive(Default)]
struct SimState {
    calls: Vec<SlackCall>,
    messages: Vec<SlackMessage>,
    ephemerals: Vec<SlackEphemeral>,
    faults: VecDeque<SlackFault>,
    down: bool,
    known_channels: Option<Vec<String>>,
    printer: bool,
    next_ts: u64,
    next_conv: u64,
    /// User id → DM channel id.
    dm_by_user: HashMap<String, String>,
    /// Modals opened with `views.open`, in order.
    views: Vec<SlackView>,
    /// Trigger ids already used to open a view (each opens one).
    exchanged_triggers: HashSet<String>,
    next_view: u64,
    /// User group id (`S…`) → its members, for `usergroups.users.list`.
    usergroups: HashMap<String, Vec<String>>,
}

impl SimState {
    fn next_ts(&mut self) -> String {
        let ts = format!("{}.000200", FIRST_TS_SECS + self.next_ts);
        self.next_ts += 1;
        ts
    }

    fn dm_for(&mut self, user: &str) -> (String, bool) {
        if let Some(d) = self.dm_by_user.get(user) {
            return (d.clone(), true);
        }
        self.next_conv += 1;
        let id = format!("D0SIM{:04}", self.next_conv);
        self.dm_by_user.insert(user.to_string(), id.clone());
        (id, false)
    }

    /// The user a DM channel id belongs to.
    fn user_of_dm(&self, dm: &str) -> Option<String> {
        self.dm_by_user
            .iter()
            .find(|(_, d)| d.as_str() == dm)
            .map(|(u, _)| u.clone())
    }

    /// Where a `channel` argument points: (storage key, channel id to answer with).
    /// User ids always resolve (to their DM); other ids must be known when a list is set.
    fn resolve(&mut self, channel: &str) -> Result<(String, String), &'static str> {
        if channel.is_empty() {
            return Err("channel_not_found");
        }
        if is_user_id(channel) {
            let (dm, _) = self.dm_for(channel);
            return Ok((channel.to_string(), dm));
        }
        if let Some(user) = self.user_of_dm(channel) {
            return Ok((user, channel.to_string()));
        }
        if let Some(known) = &self.known_channels
            && !known.iter().any(|c| c == channel)
        {
            return Err("channel_not_found");
        }
        Ok((channel.to_string(), channel.to_string()))
    }

    /// The storage key for a channel name given to the accessors.
    fn key_of(&self, channel: &str) -> String {
        self.user_of_dm(channel)
            .unwrap_or_else(|| channel.to_string())
    }
}

fn is_user_id(s: &str) -> bool {
    (s.starts_with('U') || s.starts_with('W'))
        && s.len() > 1
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

struct Inner {
    token: String,
    state: Mutex<SimState>,
    /// Socket Mode: `apps.connections.open` and its WebSocket.
    socket: crate::slack_socket::SocketHub,
}

impl Inner {
    /// Lock the state; a poisoned lock (a panicking test thread) still yields the data.
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The listening task (absent while the emulator refuses connections); aborted when the last
/// [`SlackSim`] clone is dropped.
struct ServerGuard {
    addr: std::net::SocketAddr,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

fn serve(listener: tokio::net::TcpListener, inner: Arc<Inner>) -> tokio::task::AbortHandle {
    let app = Router::new()
        .route("/api/{method}", post(handle).get(handle_get))
        .with_state(inner);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "Slack emulator stopped");
        }
    })
    .abort_handle()
}

/// A running Slack Web API emulator. Clones share the same server and state.
#[derive(Clone)]
pub struct SlackSim {
    /// Base URL for `jitbot::chat::slack::SlackApi::new`; ends with `/api/`.
    pub base_url: String,
    inner: Arc<Inner>,
    _server: Arc<ServerGuard>,
}

impl fmt::Debug for SlackSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSim")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl SlackSim {
    /// Start the emulator on `127.0.0.1` (ephemeral port) accepting `bot_token`.
    pub async fn start(bot_token: &str) -> anyhow::Result<SlackSim> {
        let inner = Arc::new(Inner {
            token: bot_token.to_string(),
            state: Mutex::new(SimState::default()),
            socket: crate::slack_socket::SocketHub::start().await?,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = serve(listener, inner.clone());
        tracing::info!(%addr, "Slack emulator listening");
        Ok(SlackSim {
            base_url: format!("http://{addr}/api/"),
            inner,
            _server: Arc::new(ServerGuard {
                addr,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Sets the members of user group `group` (`S…`), creating it: what `usergroups.users.list`
    /// answers from now on (a test removing someone from a group).
    pub fn set_usergroup(&self, group: &str, users: &[&str]) {
        self.inner.lock().usergroups.insert(
            group.to_string(),
            users.iter().map(|u| u.to_string()).collect(),
        );
    }

    /// Print every posted or updated message to stdout as a person would see it (the demo).
    pub fn with_printer(self, on: bool) -> Self {
        self.inner.lock().printer = on;
        self
    }

    /// Socket Mode: `apps.connections.open` (set the app token with
    /// [`crate::slack_socket::SocketHub::set_app_token`]), envelopes and acknowledgements.
    pub fn socket(&self) -> &crate::slack_socket::SocketHub {
        &self.inner.socket
    }

    /// Every Web API call received so far, in arrival order (`apps.connections.open` is not
    /// one of them: see [`SlackSim::socket`]).
    pub fn calls(&self) -> Vec<SlackCall> {
        self.inner.lock().calls.clone()
    }

    /// Current state of the messages in a channel (after updates), in post order. A DM is
    /// found under the user id as well as under its `D…` id.
    pub fn messages(&self, channel: &str) -> Vec<SlackMessage> {
        let st = self.inner.lock();
        let key = st.key_of(channel);
        st.messages
            .iter()
            .filter(|m| m.channel == key)
            .cloned()
            .collect()
    }

    /// One message by channel and `ts`.
    pub fn message(&self, channel: &str, ts: &str) -> Option<SlackMessage> {
        let st = self.inner.lock();
        let key = st.key_of(channel);
        st.messages
            .iter()
            .find(|m| m.channel == key && m.ts == ts)
            .cloned()
    }

    /// Every modal opened so far (as last updated), in order.
    pub fn views(&self) -> Vec<SlackView> {
        self.inner.lock().views.clone()
    }

    /// Every `chat.postEphemeral` message accepted so far, in order.
    pub fn ephemerals(&self) -> Vec<SlackEphemeral> {
        self.inner.lock().ephemerals.clone()
    }

    /// Queue a fault; each is consumed by the next call to an emulated method.
    pub fn inject(&self, fault: SlackFault) {
        self.inner.lock().faults.push_back(fault);
    }

    /// `true`: stop listening, so new connections are refused, and answer 503 on connections
    /// that were already open (a full outage). `false`: listen again on the same address.
    pub async fn set_unreachable(&self, unreachable: bool) -> anyhow::Result<()> {
        self.set_down(unreachable);
        let mut task = self
            ._server
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if unreachable {
            if let Some(t) = task.take() {
                t.abort();
            }
        } else if task.is_none() {
            let listener = tokio::net::TcpListener::bind(self._server.addr).await?;
            task = Some(serve(listener, self.inner.clone()));
        }
        *self._server.task.lock().unwrap_or_else(|e| e.into_inner()) = task;
        Ok(())
    }

    /// While down, every call is answered HTTP 503 (an outage).
    pub fn set_down(&self, down: bool) {
        self.inner.lock().down = down;
    }

    /// `Some(list)`: posting to any other conversation fails with `channel_not_found`
    /// (user ids and their DMs stay reachable). `None`: every channel exists.
    pub fn set_known_channels(&self, channels: Option<Vec<String>>) {
        self.inner.lock().known_channels = channels;
    }

    /// Poll `f` every 20 ms until it holds; after `timeout`, fail naming `what`.
    pub async fn wait_for<F: Fn(&SlackSim) -> bool>(
        &self,
        what: &str,
        timeout: Duration,
        f: F,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if f(self) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("Slack emulator: timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sign a body exactly as Slack does: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` keyed
/// with the signing secret's UTF-8 bytes. Returns the `X-Slack-Signature` header value.
pub fn sign(signing_secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty signature would simply
    // never verify.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

// ---------------------------------------------------------------------------------------------
// HTTP handling
// ---------------------------------------------------------------------------------------------

/// What to answer.
enum Reply {
    Json {
        status: StatusCode,
        body: Value,
    },
    RateLimited {
        retry_after_secs: u64,
    },
    Plain {
        status: StatusCode,
        text: &'static str,
    },
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply::Json {
            status: StatusCode::OK,
            body,
        }
    }

    fn err(code: &str) -> Reply {
        Reply::Json {
            status: StatusCode::OK,
            body: json!({"ok": false, "error": code}),
        }
    }

    fn err_with(code: &str, errors: Vec<String>) -> Reply {
        Reply::Json {
            status: StatusCode::OK,
            body: json!({"ok": false, "error": code, "errors": errors}),
        }
    }

    fn status(&self) -> u16 {
        match self {
            Reply::Json { status, .. } | Reply::Plain { status, .. } => status.as_u16(),
            Reply::RateLimited { .. } => 429,
        }
    }

    fn ok_and_error(&self) -> (bool, Option<String>) {
        match self {
            Reply::Json { body, .. } => (
                body.get("ok").and_then(Value::as_bool).unwrap_or(false),
                body.get("error")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ),
            Reply::RateLimited { .. } => (false, Some("ratelimited".to_string())),
            Reply::Plain { .. } => (false, None),
        }
    }

    fn into_response(self) -> Response {
        const JSON: &str = "application/json; charset=utf-8";
        match self {
            Reply::Json { status, body } => {
                (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
            }
            Reply::RateLimited { retry_after_secs } => {
                let mut resp = (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::CONTENT_TYPE, JSON)],
                    json!({"ok": false, "error": "ratelimited"}).to_string(),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                resp
            }
            Reply::Plain { status, text } => {
                (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
            }
        }
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == "apps.connections.open" {
        let (status, answer) = inner.socket.open(&headers);
        return (status, axum::Json(answer)).into_response();
    }
    let (reply, printed, hold) = process(&inner, &method, &headers, &body);
    // Print outside the lock.
    for line in printed {
        println!("{line}");
    }
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    reply.into_response()
}

/// `GET /api/{method}?…`: Slack accepts read methods with query arguments; they are handled as a
/// form body would be.
async fn handle_get(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    mut headers: HeaderMap,
) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let body = Bytes::from(query.unwrap_or_default());
    handle(State(inner), Path(method), headers, body).await
}

/// Handle one call under the state lock; returns the reply and lines for the demo printer.
fn process(
    inner: &Inner,
    method: &str,
    headers: &HeaderMap,
    raw: &[u8],
) -> (Reply, Vec<String>, Option<Duration>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed = parse_body(content_type.as_deref(), raw);
    let body_for_record = match &parsed {
        Ok(v) => Value::Object(v.clone()),
        Err(_) => Value::String(String::from_utf8_lossy(raw).into_owned()),
    };
    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string)
        .or_else(|| {
            parsed
                .as_ref()
                .ok()
                .and_then(|b| b.get("token"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let auth_ok = token.as_deref() == Some(inner.token.as_str());

    let mut st = inner.lock();
    let mut printed = Vec::new();
    let mut hold = None;
    let reply = if st.down {
        Reply::Plain {
            status: StatusCode::SERVICE_UNAVAILABLE,
            text: "Service Unavailable",
        }
    } else if !METHODS.contains(&method) {
        Reply::err("unknown_method")
    } else if let Some(fault) = st.faults.pop_front() {
        match fault {
            SlackFault::RateLimited { retry_after_secs } => Reply::RateLimited { retry_after_secs },
            SlackFault::OkFalse(code) => Reply::err(&code),
            SlackFault::ServerError => Reply::Plain {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                text: "Internal Server Error",
            },
            SlackFault::DeliverThenFail => {
                if let (Ok(body), true) = (&parsed, auth_ok) {
                    let _ = dispatch(&mut st, method, body, &mut printed);
                }
                Reply::Plain {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    text: "Internal Server Error",
                }
            }
            SlackFault::DeliverThenHang(d) => {
                hold = Some(d);
                match (&parsed, auth_ok) {
                    (Ok(body), true) => dispatch(&mut st, method, body, &mut printed),
                    _ => Reply::err("invalid_auth"),
                }
            }
        }
    } else {
        match parsed {
            Err(code) => Reply::err(code),
            Ok(_) if token.is_none() => Reply::err("not_authed"),
            Ok(_) if !auth_ok => Reply::err("invalid_auth"),
            Ok(body) => dispatch(&mut st, method, &body, &mut printed),
        }
    };

    let (ok, error) = reply.ok_and_error();
    st.calls.push(SlackCall {
        method: method.to_string(),
        body: body_for_record,
        content_type,
        authorization,
        auth_ok,
        status: reply.status(),
        ok,
        error,
        at: Utc::now(),
    });
    if !st.printer {
        printed.clear();
    }
    (reply, printed, hold)
}

/// Decode a JSON or form body into an object; errors are Slack's error codes.
fn parse_body(content_type: Option<&str>, raw: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let mime = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match mime.as_deref() {
        Some("application/json") => match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err("json_not_object"),
            Err(_) => Err("invalid_json"),
        },
        Some("application/x-www-form-urlencoded") => {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(raw).map_err(|_| "invalid_form_data")?;
            let mut m = Map::new();
            for (k, v) in pairs {
                // Form bodies carry blocks as a JSON-encoded string.
                let value = if k == "blocks" || k == "attachments" {
                    serde_json::from_str(&v).unwrap_or(Value::String(v))
                } else {
                    Value::String(v)
                };
                m.entry(k).or_insert(value);
            }
            Ok(m)
        }
        None if raw.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        None => Err("missing_post_type"),
        Some(_) => Err("invalid_post_type"),
    }
}

fn dispatch(
    st: &mut SimState,
    method: &str,
    body: &Map<String, Value>,
    printed: &mut Vec<String>,
) -> Reply {
    match method {
        "chat.postMessage" => post_message(st, body, printed),
        "chat.update" => update_message(st, body, printed),
        "chat.postEphemeral" => post_ephemeral(st, body, printed),
        "conversations.open" => conversations_open(st, body),
        "conversations.history" => conversations_history(st, body),
        "views.open" => views::open(st, body),
        "views.update" => views::update(st, body),
        "usergroups.users.list" => usergroups_users_list(st, body),
        "auth.test" => Reply::ok(json!({
            "ok": true,
            "url": "https://jitbot-sim.slack.com/",
            "team": "jitbot simulated workspace",
            "user": "jitbot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        })),
        _ => Reply::err("unknown_method"),
    }
}

fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str)
}

/// Text and blocks of a message-writing call, validated as Slack does.
struct Content {
    text: Option<String>,
    blocks: Option<Vec<Value>>,
}

fn read_content(body: &Map<String, Value>) -> Result<Content, Reply> {
    let blocks = match body.get("blocks") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            let errors = validate_blocks(a);
            if !errors.is_empty() {
                return Err(Reply::err_with("invalid_blocks", errors));
            }
            Some(a.clone())
        }
        Some(_) => {
            return Err(Reply::err_with(
                "invalid_blocks",
                vec!["must provide an array [json-pointer:/blocks]".to_string()],
            ));
        }
    };
    let text = str_field(body, "text").map(str::to_string);
    let has_text = text.as_deref().is_some_and(|t| !t.trim().is_empty());
    let has_blocks = blocks.as_ref().is_some_and(|b| !b.is_empty());
    if !has_text && !has_blocks {
        return Err(Reply::err("no_text"));
    }
    if text
        .as_deref()
        .is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS)
    {
        return Err(Reply::err("msg_too_long"));
    }
    Ok(Content { text, blocks })
}

fn post_message(st: &mut SimState, body: &Map<String, Value>, printed: &mut Vec<String>) -> Reply {
    let channel = str_field(body, "channel").unwrap_or("").trim().to_string();
    let (key, answer_channel) = match st.resolve(&channel) {
        Ok(r) => r,
        Err(code) => return Reply::err(code),
    };
    let content = match read_content(body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let metadata = match read_metadata(body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let ts = st.next_ts();
    let msg = SlackMessage {
        channel: key,
        ts: ts.clone(),
        text: content.text.unwrap_or_default(),
        blocks: content.blocks.map(Value::Array).unwrap_or(Value::Null),
        updates: 0,
        metadata,
    };
    printed.push(render_for_person(&msg, "new message"));
    let mut message = json!({
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "ts": ts,
        "text": msg.text,
    });
    if !msg.blocks.is_null() {
        message["blocks"] = msg.blocks.clone();
    }
    if !msg.metadata.is_null() {
        message["metadata"] = msg.metadata.clone();
    }
    st.messages.push(msg);
    Reply::ok(json!({
        "ok": true,
        "channel": answer_channel,
        "ts": ts,
        "message": message,
    }))
}

fn update_message(
    st: &mut SimState,
    body: &Map<String, Value>,
    printed: &mut Vec<String>,
) -> Reply {
    let channel = str_field(body, "channel").unwrap_or("").trim().to_string();
    let (key, answer_channel) = match st.resolve(&channel) {
        Ok(r) => r,
        Err(code) => return Reply::err(code),
    };
    let ts = str_field(body, "ts").unwrap_or("").trim().to_string();
    let Some(idx) = st
        .messages
        .iter()
        .position(|m| m.channel == key && m.ts == ts)
    else {
        return Reply::err("message_not_found");
    };
    let content = match read_content(body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let msg = &mut st.messages[idx];
    if let Some(text) = content.text {
        msg.text = text;
    }
    // Slack keeps the previous blocks when `blocks` is omitted; an empty array removes them.
    if let Some(blocks) = content.blocks {
        msg.blocks = Value::Array(blocks);
    }
    msg.updates += 1;
    printed.push(render_for_person(msg, "updated"));
    let mut message = json!({
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "text": msg.text,
        "edited": {"user": BOT_USER_ID, "ts": ts},
    });
    if !msg.blocks.is_null() {
        message["blocks"] = msg.blocks.clone();
    }
    Reply::ok(json!({
        "ok": true,
        "channel": answer_channel,
        "ts": ts,
        "text": msg.text,
        "message": message,
    }))
}

fn post_ephemeral(
    st: &mut SimState,
    body: &Map<String, Value>,
    printed: &mut Vec<String>,
) -> Reply {
    let channel = str_field(body, "channel").unwrap_or("").trim().to_string();
    let (key, _) = match st.resolve(&channel) {
        Ok(r) => r,
        Err(code) => return Reply::err(code),
    };
    let user = str_field(body, "user").unwrap_or("").trim().to_string();
    if user.is_empty() {
        return Reply::err("user_not_in_channel");
    }
    let content = match read_content(body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ts = st.next_ts();
    let shown = SlackMessage {
        channel: key,
        ts: ts.clone(),
        text: content.text.unwrap_or_default(),
        blocks: content.blocks.map(Value::Array).unwrap_or(Value::Null),
        updates: 0,
        metadata: Value::Null,
    };
    printed.push(render_for_person(
        &shown,
        &format!("ephemeral, only visible to {user}"),
    ));
    st.ephemerals.push(SlackEphemeral {
        channel: shown.channel,
        user,
        ts: ts.clone(),
        text: shown.text,
        blocks: shown.blocks,
    });
    Reply::ok(json!({"ok": true, "message_ts": ts}))
}

/// `usergroups.users.list`: the group's members, as Slack answers (`{"ok":true,"users":[…]}`);
/// a group the workspace does not have is `no_such_subteam`, a missing argument
/// `invalid_arg_name`.
fn usergroups_users_list(st: &SimState, body: &Map<String, Value>) -> Reply {
    let Some(group) = str_field(body, "usergroup").filter(|g| !g.trim().is_empty()) else {
        return Reply::err("invalid_arg_name");
    };
    match st.usergroups.get(group.trim()) {
        Some(users) => Reply::ok(json!({"ok": true, "users": users})),
        None => Reply::err("no_such_subteam"),
    }
}

fn conversations_open(st: &mut SimState, body: &Map<String, Value>) -> Reply {
    if let Some(channel) = str_field(body, "channel").filter(|c| !c.trim().is_empty()) {
        let channel = channel.trim();
        return if st.user_of_dm(channel).is_some() {
            Reply::ok(
                json!({"ok": true, "no_op": true, "already_open": true, "channel": {"id": channel}}),
            )
        } else {
            Reply::err("channel_not_found")
        };
    }
    let users: Vec<String> = match body.get("users") {
        Some(Value::String(s)) => s
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    match users.len() {
        0 => Reply::err("users_list_not_supplied"),
        1 => {
            if !is_user_id(&users[0]) {
                return Reply::err("user_not_found");
            }
            let (dm, existed) = st.dm_for(&users[0]);
            Reply::ok(json!({
                "ok": true,
                "no_op": existed,
                "already_open": existed,
                "channel": {"id": dm},
            }))
        }
        2..=8 => {
            if users.iter().any(|u| !is_user_id(u)) {
                return Reply::err("user_not_found");
            }
            st.next_conv += 1;
            let id = format!("G0SIM{:04}", st.next_conv);
            if let Some(known) = st.known_channels.as_mut() {
                known.push(id.clone());
            }
            Reply::ok(json!({"ok": true, "channel": {"id": id}}))
        }
        _ => Reply::err("too_many_users"),
    }
}

/// `metadata` of a posting call: `{"event_type": "…", "event_payload": {…}}` as a JSON object
/// (JSON bodies) or a JSON-encoded string (form bodies). Absent → `Null`.
fn read_metadata(body: &Map<String, Value>) -> Result<Value, Reply> {
    let value = match body.get("metadata") {
        None | Some(Value::Null) => return Ok(Value::Null),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v,
            Err(_) => return Err(Reply::err("invalid_metadata_format")),
        },
        Some(v) => v.clone(),
    };
    let valid = value
        .get("event_type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
        && value.get("event_payload").is_some_and(Value::is_object);
    if valid {
        Ok(value)
    } else {
        Err(Reply::err("invalid_metadata_schema"))
    }
}

/// `conversations.history`: messages of a conversation, newest first, `limit` per page (default
/// 100, at most 999), `cursor` from the previous page's `response_metadata.next_cursor`; each
/// message's `metadata` only with `include_all_metadata=true`.
fn conversations_history(st: &mut SimState, body: &Map<String, Value>) -> Reply {
    let channel = str_field(body, "channel").unwrap_or("").trim().to_string();
    if channel.is_empty() {
        return Reply::err("channel_not_found");
    }
    // A user id is not a conversation: open the DM first (conversations.open).
    if is_user_id(&channel) {
        return Reply::err("channel_not_found");
    }
    let (key, _) = match st.resolve(&channel) {
        Ok(r) => r,
        Err(code) => return Reply::err(code),
    };
    let arg = |name: &str| -> Option<String> {
        match body.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        }
    };
    let limit = match arg("limit") {
        None => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) => n.clamp(1, 999),
            Err(_) => return Reply::err("invalid_limit"),
        },
    };
    let offset = match arg("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => match c
            .strip_prefix("bmV4dF90czo")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Reply::err("invalid_cursor"),
        },
    };
    let with_metadata = arg("include_all_metadata").is_some_and(|v| v == "true" || v == "1");
    let newest_first: Vec<&SlackMessage> = st
        .messages
        .iter()
        .filter(|m| m.channel == key)
        .rev()
        .collect();
    let page: Vec<Value> = newest_first
        .iter()
        .skip(offset)
        .take(limit)
        .map(|m| {
            let mut v = json!({
                "type": "message",
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
                "team": TEAM_ID,
                "ts": m.ts,
                "text": m.text,
            });
            if !m.blocks.is_null() {
                v["blocks"] = m.blocks.clone();
            }
            if with_metadata && !m.metadata.is_null() {
                v["metadata"] = m.metadata.clone();
            }
            v
        })
        .collect();
    let has_more = newest_first.len() > offset + page.len();
    let next_cursor = if has_more {
        format!("bmV4dF90czo{}", offset + page.len())
    } else {
        String::new()
    };
    Reply::ok(json!({
        "ok": true,
        "messages": page,
        "has_more": has_more,
        "pin_count": 0,
        "response_metadata": {"next_cursor": next_cursor},
    }))
}

/// How the message looks to a person: where it is, then its text (or its blocks' text).
fn render_for_person(msg: &SlackMessage, what: &str) -> String {
    let place = if is_user_id(&msg.channel) {
        format!("DM to {}", msg.channel)
    } else {
        format!("#{}", msg.channel)
    };
    let mut text = if msg.text.trim().is_empty() {
        blocks_text(&msg.blocks)
    } else {
        msg.text.clone()
    };
    // The fallback text has no buttons; show them as a person would see them on the card.
    let buttons = button_labels(&msg.blocks);
    if !buttons.is_empty() && !msg.text.trim().is_empty() {
        text.push('\n');
        text.push_str(&buttons.join(" "));
    }
    let body: String = text
        .lines()
        .map(|l| format!("│ {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!("┌ [slack] {place} · {what} ({})\n{body}", msg.ts)
}

/// Buttons of a Block Kit array as `[label]`.
fn button_labels(blocks: &Value) -> Vec<String> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("actions"))
        .filter_map(|b| b.get("elements").and_then(Value::as_array))
        .flatten()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some("button"))
        .filter_map(|e| e.pointer("/text/text").and_then(Value::as_str))
        .map(|t| format!("[{t}]"))
        .collect()
}

/// Visible text of a Block Kit array, one line per text element.
fn blocks_text(blocks: &Value) -> String {
    let mut out = Vec::new();
    for b in blocks.as_array().into_iter().flatten() {
        if let Some(t) = b.pointer("/text/text").and_then(Value::as_str) {
            out.push(t.to_string());
        }
        for f in b
            .get("fields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = f.get("text").and_then(Value::as_str) {
                out.push(t.replace('\n', ": "));
            }
        }
        for e in b
            .get("elements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = e.pointer("/text/text").and_then(Value::as_str) {
                out.push(format!("[{t}]"));
            } else if let Some(t) = e.get("text").and_then(Value::as_str) {
                out.push(t.to_string());
            }
        }
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------------------------
// Block Kit validation (the limits Slack enforces with `invalid_blocks`)
// ---------------------------------------------------------------------------------------------

fn validate_blocks(blocks: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    if blocks.len() > 50 {
        errors.push("no more than 50 items allowed [json-pointer:/blocks]".to_string());
    }
    let mut block_ids = HashSet::new();
    for (i, b) in blocks.iter().enumerate() {
        let at = format!("/blocks/{i}");
        let Some(kind) = b.get("type").and_then(Value::as_str) else {
            errors.push(format!("missing required field: type [json-pointer:{at}]"));
            continue;
        };
        if let Some(id) = b.get("block_id") {
            match id.as_str() {
                Some(s) if s.chars().count() > 255 => errors.push(format!(
                    "must be less than 256 characters [json-pointer:{at}/block_id]"
                )),
                Some(s) if !block_ids.insert(s.to_string()) => errors.push(format!(
                    "duplicate block_id {s:?} [json-pointer:{at}/block_id]"
                )),
                Some(_) => {}
                None => errors.push(format!("must be a string [json-pointer:{at}/block_id]")),
            }
        }
        match kind {
            "header" => check_text(b.get("text"), &format!("{at}/text"), 150, true, &mut errors),
            "section" => {
                let text = b.get("text");
                let fields = b.get("fields");
                if text.is_none() && fields.is_none() {
                    errors.push(format!(
                        "must provide either text or fields [json-pointer:{at}]"
                    ));
                }
                if text.is_some() {
                    check_text(text, &format!("{at}/text"), 3000, false, &mut errors);
                }
                if let Some(fields) = fields {
                    match fields.as_array() {
                        Some(fs) => {
                            if fs.len() > 10 {
                                errors.push(format!(
                                    "no more than 10 items allowed [json-pointer:{at}/fields]"
                                ));
                            }
                            for (j, f) in fs.iter().enumerate() {
                                check_text(
                                    Some(f),
                                    &format!("{at}/fields/{j}"),
                                    2000,
                                    false,
                                    &mut errors,
                                );
                            }
                        }
                        None => {
                            errors.push(format!("must provide an array [json-pointer:{at}/fields]"))
                        }
                    }
                }
            }
            "actions" => check_actions(b, &at, &mut errors),
            "context" => match b.get("elements").and_then(Value::as_array) {
                Some(els) if !els.is_empty() && els.len() <= 10 => {
                    for (j, e) in els.iter().enumerate() {
                        if matches!(
                            e.get("type").and_then(Value::as_str),
                            Some("mrkdwn" | "plain_text")
                        ) {
                            check_text(
                                Some(e),
                                &format!("{at}/elements/{j}"),
                                3000,
                                false,
                                &mut errors,
                            );
                        }
                    }
                }
                _ => errors.push(format!(
                    "must provide 1 to 10 elements [json-pointer:{at}/elements]"
                )),
            },
            _ => {}
        }
    }
    errors
}

fn check_actions(b: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(els) = b.get("elements").and_then(Value::as_array) else {
        errors.push(format!(
            "must provide an array [json-pointer:{at}/elements]"
        ));
        return;
    };
    if els.is_empty() || els.len() > 25 {
        errors.push(format!(
            "must provide 1 to 25 elements [json-pointer:{at}/elements]"
        ));
    }
    let mut action_ids = HashSet::new();
    for (j, e) in els.iter().enumerate() {
        let eat = format!("{at}/elements/{j}");
        if let Some(aid) = e.get("action_id").and_then(Value::as_str) {
            if aid.chars().count() > 255 {
                errors.push(format!(
                    "must be less than 256 characters [json-pointer:{eat}/action_id]"
                ));
            }
            if !action_ids.insert(aid.to_string()) {
                errors.push(format!(
                    "duplicate action_id {aid:?} [json-pointer:{eat}/action_id]"
                ));
            }
        }
        if e.get("type").and_then(Value::as_str) != Some("button") {
            continue;
        }
        check_text(e.get("text"), &format!("{eat}/text"), 75, true, errors);
        if let Some(v) = e.get("value").and_then(Value::as_str)
            && v.chars().count() > 2000
        {
            errors.push(format!(
                "must be less than 2001 characters [json-pointer:{eat}/value]"
            ));
        }
        if let Some(style) = e.get("style").and_then(Value::as_str)
            && style != "primary"
            && style != "danger"
        {
            errors.push(format!(
                "must be one of primary, danger [json-pointer:{eat}/style]"
            ));
        }
        if let Some(c) = e.get("confirm") {
            let cat = format!("{eat}/confirm");
            check_text(c.get("title"), &format!("{cat}/title"), 100, true, errors);
            check_text(c.get("text"), &format!("{cat}/text"), 300, false, errors);
            check_text(
                c.get("confirm"),
                &format!("{cat}/confirm"),
                30,
                true,
                errors,
            );
            check_text(c.get("deny"), &format!("{cat}/deny"), 30, true, errors);
        }
    }
}

/// Check a text composition object: right type, non-empty, within `max` characters.
fn check_text(
    obj: Option<&Value>,
    at: &str,
    max: usize,
    plain_only: bool,
    errors: &mut Vec<String>,
) {
    let Some(obj) = obj else {
        errors.push(format!("missing required field: text [json-pointer:{at}]"));
        return;
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("plain_text") => {}
        Some("mrkdwn") if !plain_only => {}
        _ => {
            let allowed = if plain_only {
                "plain_text"
            } else {
                "plain_text, mrkdwn"
            };
            errors.push(format!("must be one of {allowed} [json-pointer:{at}/type]"));
        }
    }
    match obj.get("text").and_then(Value::as_str) {
        Some("") => errors.push(format!(
            "must be more than 0 characters [json-pointer:{at}/text]"
        )),
        Some(t) if t.chars().count() > max => errors.push(format!(
            "must be less than {} characters [json-pointer:{at}/text]",
            max + 1
        )),
        Some(_) => {}
        None => errors.push(format!(
            "missing required field: text [json-pointer:{at}/text]"
        )),
    }
}
