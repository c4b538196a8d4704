//! In-process emulator of the Discord REST API calls jitbot makes, for black-box tests and demos.
//!
//! Serves, under `http://127.0.0.1:<port>/api/v10`: `POST /channels/{id}/messages`,
//! `PATCH /channels/{id}/messages/{id}`, `POST /users/@me/channels` (open a DM),
//! `PUT /applications/{app}/commands` and `PUT /applications/{app}/guilds/{guild}/commands` (bulk
//! overwrite), and `PATCH /webhooks/{app}/{token}/messages/@original` (the answer to a deferred
//! interaction; authorised by the token in the path). Like Discord (see `shared/reference/PROTOCOLS.md`): `Authorization: Bot <token>`
//! or 401 `{"code":0,"message":"401: Unauthorized"}`; `X-RateLimit-*` headers on every answer;
//! content ≤ 2000 chars, ≤ 10 embeds, button `custom_id` 1–100 chars and label ≤ 80 (else 400
//! `Invalid Form Body`); a `nonce` with `enforce_nonce: true` that was already used in the channel
//! returns the existing message instead of creating another.
//!
//! Faults, injected on demand: a 429 with `retry_after` JSON plus `Retry-After` and
//! `X-RateLimit-*` headers, a 500, a "lost response" (the message is created but the answer is a
//! 502, as when a proxy times out), and an outage (every call answers 503 until it ends).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The emulated bot's user id (also the application id the emulator expects).
pub const BOT_USER_ID: &str = "1216441490306502796";
const FIRST_ID: u64 = 1_300_000_000_000_000_000;

/// One REST call as the emulator received and answered it.
#[derive(Debug, Clone)]
pub struct DiscordCall {
    pub method: String,
    /// Path after `/api/v10`, e.g. `/channels/123/messages`.
    pub path: String,
    pub body: Value,
    /// Whether `Authorization: Bot <token>` carried the configured token.
    pub auth_ok: bool,
    pub status: u16,
    pub at: DateTime<Utc>,
}

/// The current state of a posted message.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscordMessage {
    pub id: String,
    pub channel: String,
    pub content: String,
    pub embeds: Vec<Value>,
    pub components: Vec<Value>,
    /// How many edits changed it.
    pub edits: u32,
}

impl DiscordMessage {
    /// Everything a person reads: content, embed titles, descriptions, fields and footers.
    pub fn text(&self) -> String {
        let mut out = vec![self.content.clone()];
        for e in &self.embeds {
            for key in ["title", "description"] {
                if let Some(s) = e[key].as_str() {
                    out.push(s.to_string());
                }
            }
            for f in e["fields"].as_array().into_iter().flatten() {
                out.push(format!(
                    "{}: {}",
                    f["name"].as_str().unwrap_or(""),
                    f["value"].as_str().unwrap_or("")
                ));
            }
            if let Some(s) = e["footer"]["text"].as_str() {
                out.push(s.to_string());
            }
        }
        out.retain(|s| !s.is_empty());
        out.join("\n")
    }

    /// The buttons' `custom_id`s.
    pub fn custom_ids(&self) -> Vec<String> {
        self.components
            .iter()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["custom_id"].as_str().map(str::to_string))
            .collect()
    }

    /// The buttons as (label, style).
    pub fn buttons(&self) -> Vec<(String, u64)> {
        self.components
            .iter()
            .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["label"].as_str().unwrap_or("").to_string(),
                    b["style"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

/// A fault for the next call (FIFO, one call each).
#[derive(Debug, Clone, PartialEq)]
pub enum DiscordFault {
    /// 429 with `{"retry_after": secs, "global": global}`, `Retry-After`, `X-RateLimit-Remaining: 0`.
    RateLimited { retry_after: f64, global: bool },
    /// 500 with a JSON error body.
    ServerError,
    /// The call takes effect but the answer is a 502 (the caller cannot know it worked).
    LostResponse,
    /// The call succeeds with `X-RateLimit-Remaining: 0` and this `X-RateLimit-Reset-After`.
    BucketExhausted { reset_after: f64 },
}

#[derive(Default)]
struct SimState {
    token: String,
    next_id: u64,
    calls: Vec<DiscordCall>,
    messages: Vec<DiscordMessage>,
    dm_by_user: HashMap<String, String>,
    /// (channel, nonce) → message id.
    nonces: HashMap<(String, String), String>,
    faults: VecDeque<DiscordFault>,
    down: bool,
    /// `global` or the guild id → the commands as last overwritten.
    commands: HashMap<String, Value>,
    /// (interaction token, body) of every `PATCH /webhooks/{app}/{token}/messages/@original`.
    followups: Vec<(String, Value)>,
}

impl SimState {
    fn id(&mut self) -> String {
        self.next_id += 1;
        (FIRST_ID + self.next_id).to_string()
    }
}

/// A running emulator. Cheap to clone.
#[derive(Clone)]
pub struct DiscordSim {
    /// `http://127.0.0.1:<port>/api/v10`: configure it as `discord.api_base_url`.
    pub base_url: String,
    state: Arc<Mutex<SimState>>,
}

impl DiscordSim {
    pub async fn start(bot_token: &str) -> std::io::Result<DiscordSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(SimState {
            token: bot_token.to_string(),
            ..SimState::default()
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(DiscordSim {
            base_url: format!("http://{addr}/api/v10"),
            state,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<DiscordCall> {
        self.lock().calls.clone()
    }

    /// Messages in a channel, or in the DM channel of a user id.
    pub fn messages(&self, channel_or_user: &str) -> Vec<DiscordMessage> {
        let st = self.lock();
        let channel = st
            .dm_by_user
            .get(channel_or_user)
            .cloned()
            .unwrap_or_else(|| channel_or_user.to_string());
        st.messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// The DM channel opened with a user, if any.
    pub fn dm_channel(&self, user: &str) -> Option<String> {
        self.lock().dm_by_user.get(user).cloned()
    }

    /// The commands last installed globally (`None`) or in a guild.
    pub fn commands(&self, guild: Option<&str>) -> Option<Value> {
        self.lock().commands.get(guild.unwrap_or("global")).cloned()
    }

    /// Edits of deferred interaction responses: (interaction token, body).
    pub fn followups(&self) -> Vec<(String, Value)> {
        self.lock().followups.clone()
    }

    pub fn inject(&self, fault: DiscordFault) {
        self.lock().faults.push_back(fault);
    }

    /// While down, every call answers 503.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }
}

fn rate_headers(resp: &mut Response, remaining: u32, reset_after: f64) {
    let h = resp.headers_mut();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-ratelimit-limit", "5".into());
    put("x-ratelimit-remaining", remaining.to_string());
    put("x-ratelimit-reset-after", format!("{reset_after:.3}"));
    put("x-ratelimit-bucket", "jitbot-sim-bucket".into());
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

fn invalid_form(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "code": 50035, "message": "Invalid Form Body", "errors": { "_errors": [{ "code": "BASE_TYPE_INVALID", "message": why }] } })),
    )
        .into_response()
}

/// Discord's checks on a message body that jitbot could get wrong.
fn check_message(body: &Value) -> Result<(), String> {
    if body["content"]
        .as_str()
        .is_some_and(|c| c.chars().count() > 2000)
    {
        return Err("content: must be 2000 or fewer in length".into());
    }
    if body["embeds"].as_array().is_some_and(|e| e.len() > 10) {
        return Err("embeds: must be 10 or fewer in length".into());
    }
    for row in body["components"].as_array().into_iter().flatten() {
        if row["type"] != 1 {
            return Err("components: top level must be action rows".into());
        }
        for b in row["components"].as_array().into_iter().flatten() {
            let id = b["custom_id"].as_str().unwrap_or("");
            if id.is_empty() || id.len() > 100 {
                return Err(format!("custom_id `{id}`: must be 1-100 characters"));
            }
            if b["label"].as_str().is_some_and(|l| l.chars().count() > 80) {
                return Err("label: must be 80 or fewer in length".into());
            }
        }
    }
    if body["nonce"].as_str().is_some_and(|n| n.len() > 25) {
        return Err("nonce: must be 25 or fewer in length".into());
    }
    Ok(())
}

fn message_json(m: &DiscordMessage, nonce: Option<&str>) -> Value {
    json!({
        "id": m.id, "channel_id": m.channel, "type": 0, "content": m.content,
        "embeds": m.embeds, "components": m.components, "nonce": nonce,
        "author": { "id": BOT_USER_ID, "username": "jitbot", "discriminator": "0", "bot": true, "avatar": null, "global_name": null },
        "attachments": [], "mentions": [], "mention_roles": [], "mention_everyone": false,
        "pinned": false, "tts": false, "flags": 0,
        "timestamp": Utc::now().to_rfc3339(), "edited_timestamp": if m.edits > 0 { json!(Utc::now().to_rfc3339()) } else { Value::Null },
    })
}

async fn handle(
    State(state): State<Arc<Mutex<SimState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .strip_prefix("/api/v10")
        .unwrap_or(uri.path())
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let auth_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a == format!("Bot {}", st.token));
    let exhausted = match st.faults.front() {
        Some(DiscordFault::BucketExhausted { reset_after }) => {
            let r = *reset_after;
            st.faults.pop_front();
            Some(r)
        }
        _ => None,
    };
    let (resp, lost) = answer(&mut st, &method, &path, &body, auth_ok);
    let mut resp = if lost {
        error(StatusCode::BAD_GATEWAY, 0, "upstream timed out")
    } else {
        resp
    };
    if resp.status() != StatusCode::TOO_MANY_REQUESTS {
        match exhausted {
            Some(reset_after) => rate_headers(&mut resp, 0, reset_after),
            None => rate_headers(&mut resp, 4, 1.0),
        }
    }
    st.calls.push(DiscordCall {
        method: method.to_string(),
        path,
        body,
        auth_ok,
        status: resp.status().as_u16(),
        at: Utc::now(),
    });
    resp
}

/// The answer, and whether it must be replaced by a lost-response 502 after taking effect.
fn answer(
    st: &mut SimState,
    method: &Method,
    path: &str,
    body: &Value,
    auth_ok: bool,
) -> (Response, bool) {
    if st.down {
        return (
            error(StatusCode::SERVICE_UNAVAILABLE, 0, "upstream connect error"),
            false,
        );
    }
    // Interaction webhooks are authorised by the token in their path, not the bot token.
    if !auth_ok && !path.starts_with("/webhooks/") {
        return (
            error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized"),
            false,
        );
    }
    let mut lost = false;
    match st.faults.pop_front() {
        Some(DiscordFault::RateLimited {
            retry_after,
            global,
        }) => {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({ "message": "You are being rate limited.", "retry_after": retry_after, "global": global })),
            )
                .into_response();
            rate_headers(&mut resp, 0, retry_after);
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("{}", retry_after.ceil() as u64)) {
                h.insert("retry-after", v);
            }
            if global {
                h.insert("x-ratelimit-global", HeaderValue::from_static("true"));
            }
            h.insert(
                "x-ratelimit-scope",
                HeaderValue::from_static(if global { "global" } else { "user" }),
            );
            return (resp, false);
        }
        Some(DiscordFault::ServerError) => {
            return (
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    0,
                    "500: Internal Server Error",
                ),
                false,
            );
        }
        Some(DiscordFault::LostResponse) => lost = true,
        Some(DiscordFault::BucketExhausted { .. }) | None => {}
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match (method.as_str(), segs.as_slice()) {
        ("POST", ["channels", channel, "messages"]) => {
            if let Err(why) = check_message(body) {
                return (invalid_form(&why), false);
            }
            let nonce = body["nonce"].as_str().map(str::to_string);
            if body["enforce_nonce"] == true
                && let Some(n) = &nonce
                && let Some(existing) = st.nonces.get(&(channel.to_string(), n.clone()))
                && let Some(m) = st.messages.iter().find(|m| &m.id == existing)
            {
                return (axum::Json(message_json(m, Some(n))).into_response(), lost);
            }
            let m = DiscordMessage {
                id: st.id(),
                channel: channel.to_string(),
                content: body["content"].as_str().unwrap_or("").to_string(),
                embeds: body["embeds"].as_array().cloned().unwrap_or_default(),
                components: body["components"].as_array().cloned().unwrap_or_default(),
                edits: 0,
            };
            if m.content.is_empty() && m.embeds.is_empty() {
                return (
                    error(
                        StatusCode::BAD_REQUEST,
                        50006,
                        "Cannot send an empty message",
                    ),
                    false,
                );
            }
            if let Some(n) = &nonce {
                st.nonces
                    .insert((channel.to_string(), n.clone()), m.id.clone());
            }
            let json = message_json(&m, nonce.as_deref());
            st.messages.push(m);
            axum::Json(json).into_response()
        }
        ("PATCH", ["channels", channel, "messages", id]) => {
            if let Err(why) = check_message(body) {
                return (invalid_form(&why), false);
            }
            let Some(m) = st
                .messages
                .iter_mut()
                .find(|m| m.channel == *channel && m.id == *id)
            else {
                return (
                    error(StatusCode::NOT_FOUND, 10008, "Unknown Message"),
                    false,
                );
            };
            if let Some(c) = body["content"].as_str() {
                m.content = c.to_string();
            }
            if let Some(e) = body["embeds"].as_array() {
                m.embeds = e.clone();
            }
            if let Some(c) = body["components"].as_array() {
                m.components = c.clone();
            }
            m.edits += 1;
            let json = message_json(m, None);
            axum::Json(json).into_response()
        }
        ("POST", ["users", "@me", "channels"]) => {
            let Some(user) = body["recipient_id"].as_str().map(str::to_string) else {
                return (invalid_form("recipient_id: required"), false);
            };
            let channel = match st.dm_by_user.get(&user) {
                Some(c) => c.clone(),
                None => {
                    let c = st.id();
                    st.dm_by_user.insert(user.clone(), c.clone());
                    c
                }
            };
            axum::Json(json!({ "id": channel, "type": 1, "last_message_id": null, "flags": 0,
                "recipients": [{ "id": user, "username": "member", "discriminator": "0", "avatar": null, "global_name": null }] }))
            .into_response()
        }
        ("PATCH", ["webhooks", app, token, "messages", "@original"]) => {
            if *app != BOT_USER_ID {
                return (
                    error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook"),
                    false,
                );
            }
            if let Err(why) = check_message(body) {
                return (invalid_form(&why), false);
            }
            st.followups.push((token.to_string(), body.clone()));
            axum::Json(json!({ "id": "0", "type": 20, "content": "", "embeds": body["embeds"], "components": body["components"], "flags": 64 })).into_response()
        }
        ("PUT", ["applications", app, "commands"]) => overwrite(st, app, None, body),
        ("PUT", ["applications", app, "guilds", guild, "commands"]) => {
            overwrite(st, app, Some(guild), body)
        }
        _ => error(StatusCode::NOT_FOUND, 0, "404: Not Found"),
    };
    (resp, lost)
}

fn overwrite(st: &mut SimState, app: &str, guild: Option<&str>, body: &Value) -> Response {
    let Some(list) = body.as_array() else {
        return invalid_form("body: must be an array of commands");
    };
    let mut out = Vec::new();
    for c in list {
        let name = c["name"].as_str().unwrap_or("");
        let description = c["description"].as_str().unwrap_or("");
        if name.is_empty() || name.len() > 32 || description.is_empty() || description.len() > 100 {
            return invalid_form("name 1-32 and description 1-100 characters");
        }
        let mut c = c.clone();
        let id = st.id();
        if let Some(obj) = c.as_object_mut() {
            obj.insert("id".into(), json!(id));
            obj.insert("application_id".into(), json!(app));
            obj.insert("version".into(), json!(id));
            obj.entry("type").or_insert(json!(1));
            obj.entry("default_member_permissions")
                .or_insert(Value::Null);
            obj.entry("options").or_insert(json!([]));
            obj.entry("nsfw").or_insert(json!(false));
            if let Some(g) = guild {
                obj.insert("guild_id".into(), json!(g));
            }
        }
        out.push(c);
    }
    st.commands.insert(
        guild.unwrap_or("global").to_string(),
        Value::Array(out.clone()),
    );
    axum::Json(Value::Array(out)).into_response()
}
