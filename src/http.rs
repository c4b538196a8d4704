//! The HTTP surface: Slack's slash-command and interactivity endpoints, Discord's interactions
//! endpoint, health and readiness.
//!
//! Every chat request is verified (signature and timestamp over the raw body) before a byte of it
//! is parsed. A bad signature gets 401 and an audit event, and nothing else happens. A verified
//! command or click counts once: a copy of it (same platform, timestamp and body) gets 409 and
//! an audit event, on any replica ([`crate::store::Store::first_sighting`], checked inside the
//! handler's budget before the action). PINGs and autocomplete, which change nothing, are not
//! checked. Handlers answer within Slack's
//! 3-second limit: they only write to the database. What a sender controls reaches logs and audit
//! events cut to [`crate::domain::LOGGED_TEXT_MAX`] characters.

mod forms;

use crate::chat::discord::{self, DiscordApi, Incoming};
use crate::chat::slack::{self, Interaction};
use crate::chat::{ButtonKind, Tone};
use crate::config::SlackSettings;
use crate::domain::{Platform, bounded};
use crate::messages::reply;
use crate::policy::Refusal;
use crate::service::{ChatUser, Service};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use serenity::interactions_endpoint::Verifier;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

mod step_up;

/// How long a handler may take before it answers "try again" (Slack gives up at 3 s).
pub(crate) const HANDLER_BUDGET: Duration = Duration::from_millis(2500);

#[derive(Clone)]
pub struct HttpState {
    pub service: Service,
    pub slack: Option<Arc<SlackSettings>>,
    /// Discord's signature verifier and REST client, when Discord is configured.
    pub discord: Option<Arc<DiscordEndpoint>>,
    /// Unix ms of the worker's last loop (for `/readyz`).
    pub worker_heartbeat: Arc<AtomicI64>,
    /// Counters recorded across the application; rendered by `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Proxies whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
}

/// What `/discord/interactions` needs: the application's public key, and the REST client for
/// the follow-up of a deferred answer.
pub struct DiscordEndpoint {
    pub verifier: Verifier,
    pub api: Arc<DiscordApi>,
}

/// A Discord command still running after this gets a deferred response (Discord allows 3 s).
const DISCORD_DEFER_AFTER: Duration = Duration::from_millis(2000);
/// How long a deferred command may take before its follow-up says it failed (the interaction
/// token lives 15 minutes).
const DISCORD_FOLLOW_UP_WITHIN: Duration = Duration::from_secs(60);

/// Replaces the deferred response with `answer`, retrying briefly through rate limits and
/// transient failures (the token expires, so this is not a durable job).
async fn follow_up(
    api: &DiscordApi,
    application_id: &str,
    token: &str,
    answer: &crate::chat::Message,
) {
    for attempt in 1..=5u32 {
        match api.edit_original(application_id, token, answer).await {
            Ok(()) => return,
            Err(crate::chat::ChatError::RateLimited { retry_after }) => {
                tokio::time::sleep(retry_after.min(Duration::from_secs(30))).await
            }
            Err(crate::chat::ChatError::Transient(e)) => {
                tracing::warn!(attempt, error = %e, "deferred answer not delivered yet");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await
            }
            Err(crate::chat::ChatError::Permanent(e)) => {
                tracing::error!(error = %e, "Discord refused the deferred answer");
                return;
            }
        }
    }
}

pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/slack/commands", post(slack_command))
        .route("/slack/interactions", post(slack_interaction))
        .route("/discord/interactions", post(discord_interaction))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ip/{token}", get(source_page).post(source_confirm))
        .route("/step-up/callback", get(step_up::callback))
        .route("/step-up/confirm", post(step_up::confirm))
        .route("/step-up/{token}", get(step_up::begin))
        // Bodies past the cap are refused (413) before they are read into memory.
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// The address of the client behind a request: the connection's peer, unless the peer is a
/// trusted proxy — then the rightmost `X-Forwarded-For` entry that is not one (entries further
/// left are whatever the client claimed).
pub fn client_address(
    peer: std::net::SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer.ip()) {
        return peer.ip();
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in forwarded.iter().rev() {
        match hop.trim().parse::<std::net::IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => break,
        }
    }
    peer.ip()
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    for (name, value) in crate::pages::HEADERS {
        if let Ok(v) = axum::http::HeaderValue::from_str(value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// A `from me` page, or "not valid" for an unknown, used or expired link (404) or a database
/// that does not answer (503).
fn link_page(page: Result<Option<String>, crate::store::StoreError>) -> Response {
    match page {
        Ok(Some(body)) => html(StatusCode::OK, body),
        Ok(None) => html(StatusCode::NOT_FOUND, crate::pages::gone()),
        Err(e) => {
            tracing::error!(error = %e, "from-me link page");
            html(StatusCode::SERVICE_UNAVAILABLE, crate::pages::gone())
        }
    }
}

/// `GET /ip/<token>`: the page of a `from me` link.
async fn source_page(
    State(st): State<HttpState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::extract::Path(token): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let address = client_address(peer, &headers, &st.trusted_proxies);
    let page = st.service.source_link_for(&token).await;
    link_page(page.map(|l| l.map(|link| crate::pages::confirm(&link, address))))
}

/// `POST /ip/<token>`: the person confirms; the request is made from the address seen now.
async fn source_confirm(
    State(st): State<HttpState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    axum::extract::Path(token): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let address = client_address(peer, &headers, &st.trusted_proxies);
    let page = st.service.confirm_source_link(&token, address).await;
    link_page(page.map(|a| a.map(|answer| crate::pages::result(&answer))))
}

/// How long `/readyz` and `/metrics` wait for the database before saying it is not answering.
const PROBE_BUDGET: Duration = Duration::from_millis(800);

async fn readyz(State(st): State<HttpState>) -> Response {
    let db = tokio::time::timeout(PROBE_BUDGET, st.service.store.writable())
        .await
        .unwrap_or(false);
    let worker_age = crate::store::now_ms() - st.worker_heartbeat.load(Ordering::Relaxed);
    let worker = worker_age < 30_000;
    let body = Json(json!({ "database": db, "worker": worker }));
    if db && worker {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// The gauges `/metrics` reads from the database at scrape time.
async fn database_gauges(
    store: &crate::store::Store,
    worker_heartbeat_ms: i64,
) -> Result<crate::metrics::DatabaseGauges, crate::store::StoreError> {
    Ok(crate::metrics::DatabaseGauges {
        grants: store.status_counts().await?,
        jobs: store.job_counts().await?,
        overdue: store.overdue_by_target(crate::store::now_ms()).await?,
        worker_heartbeat_ms,
    })
}

async fn metrics(State(st): State<HttpState>) -> Response {
    match tokio::time::timeout(
        PROBE_BUDGET,
        database_gauges(
            &st.service.store,
            st.worker_heartbeat.load(Ordering::Relaxed),
        ),
    )
    .await
    {
        Ok(Ok(gauges)) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            st.metrics.render(gauges),
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: the database did not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is not answering",
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not answering",
        )
            .into_response(),
    }
}

/// Records a refused HTTP call (bad signature, malformed body) and answers with `status`.
async fn refuse_http(
    st: &HttpState,
    status: StatusCode,
    rule: &'static str,
    why: String,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    // `why` may quote the refused body (a JSON error names the value it choked on): bounded
    // in the log and the audit event, whatever was sent.
    let why = bounded(&why).into_owned();
    tracing::warn!(path, rule, reason = %why, "refused a chat request");
    let agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let refusal = Refusal::new(rule, why);
    if let Err(e) = st
        .service
        .refuse(
            None,
            None,
            &refusal,
            json!({ "path": path, "user_agent": agent }),
        )
        .await
    {
        tracing::error!(error = %e, "could not audit a refused request");
    }
    (status, refusal.message).into_response()
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Digests are kept this long past the signature window, for replicas whose clocks differ.
const REPLAY_MARGIN_SECS: i64 = 60;

/// What identifies one signed request in the replay cache ([`crate::store::Store::first_sighting`]):
/// the digest of what its signature covers, kept until its timestamp has left the window.
pub(crate) struct ReplayKey {
    pub(crate) digest: String,
    /// Unix ms after which the digest may be forgotten.
    pub(crate) expires_at: i64,
}

impl ReplayKey {
    /// The key of a verified request: SHA-256 of the platform, the signed timestamp (as a
    /// number, so `" 17…"` and `"17…"` are one request) and the raw body.
    fn of(
        platform: Platform,
        timestamp_header: &str,
        window_secs: i64,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ReplayKey {
        // The signature check has parsed this header already.
        let timestamp = headers
            .get(timestamp_header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(platform.as_str().as_bytes());
        h.update(b"\n");
        h.update(timestamp.to_string().as_bytes());
        h.update(b"\n");
        h.update(body);
        ReplayKey {
            digest: hex::encode(h.finalize()),
            expires_at: timestamp
                .saturating_add(window_secs + REPLAY_MARGIN_SECS)
                .saturating_mul(1000),
        }
    }
}

/// Where a verified Slack command or click came from: what identifies it in the replay cache,
/// and what a second copy of it means.
pub(crate) struct Origin {
    pub(crate) key: ReplayKey,
    /// `/slack/commands`, `/slack/interactions`, or the Socket Mode envelope type (logs, audit).
    pub(crate) path: &'static str,
    /// HTTP: a copy of a signed request is a replay, audited (`replayed_request`). Socket Mode:
    /// a copy is Slack delivering an unacknowledged envelope again, logged but not an attack.
    pub(crate) copy_is_replay: bool,
}

/// Whether this is the first copy of a request. A copy, to this replica or another, must
/// change nothing: the caller answers [`SlackAnswer::Copy`] (or Discord's 409). A replayed
/// signed request is audited here (`replayed_request`). Runs inside the handler's budget,
/// before the request's action, so a slow database gets the usual "try again" answer.
async fn first_copy(st: &HttpState, origin: &Origin) -> Result<bool, crate::store::StoreError> {
    let (key, path) = (&origin.key, origin.path);
    let store = &st.service.store;
    if store
        .first_sighting(&key.digest, key.expires_at, crate::store::now_ms())
        .await?
    {
        return Ok(true);
    }
    if !origin.copy_is_replay {
        tracing::info!(
            path,
            "Slack delivered an envelope again; it was already handled"
        );
        return Ok(false);
    }
    tracing::warn!(path, "refused a replayed chat request");
    let refusal = Refusal::new("replayed_request", REPLAYED);
    st.service
        .refuse(None, None, &refusal, json!({ "path": path }))
        .await?;
    Ok(false)
}

const REPLAYED: &str = "this signed request was already received; a copy changes nothing";

/// The answer to a replayed request (409): it is no one's real click or command.
fn replayed() -> Response {
    (StatusCode::CONFLICT, REPLAYED).into_response()
}

fn unavailable() -> serde_json::Value {
    json!({
        "response_type": "ephemeral",
        "text": "jitbot could not record this right now (its database is not answering). Nothing was changed; please try again in a minute.",
    })
}

/// Checks the Slack signature over the raw body and returns the request's replay key; the error
/// is the response to send (404 when Slack is not configured, 401 after auditing a bad
/// signature).
async fn verify_slack(
    st: &HttpState,
    headers: &HeaderMap,
    body: &[u8],
    path: &str,
) -> Result<ReplayKey, Response> {
    // Not configured, or Socket Mode (commands and clicks come over the WebSocket): no route.
    let Some(secret) = st.slack.as_ref().and_then(|cfg| cfg.signing_secret()) else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    match slack::verify_request(secret.expose(), headers, body, now_unix()) {
        Ok(()) => Ok(ReplayKey::of(
            Platform::Slack,
            "x-slack-request-timestamp",
            slack::MAX_SIGNATURE_SKEW_SECS,
            headers,
            body,
        )),
        Err(e) => Err(refuse_http(
            st,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            e.to_string(),
            path,
            headers,
        )
        .await),
    }
}

/// What a verified Slack command or click gets back, whichever way it came: over HTTP the
/// response, over Socket Mode the envelope's acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackAnswer {
    /// This JSON: the 200 body, or the ack's `payload`.
    Json(serde_json::Value),
    /// An empty 200, or a bare ack.
    Empty,
    /// A copy of a request already handled, which changed nothing: 409 over HTTP.
    Copy,
}

impl IntoResponse for SlackAnswer {
    fn into_response(self) -> Response {
        match self {
            SlackAnswer::Json(v) => Json(v).into_response(),
            SlackAnswer::Empty => StatusCode::OK.into_response(),
            SlackAnswer::Copy => replayed(),
        }
    }
}

/// `POST /slack/commands`: verify, parse, then [`answer_slack_command`].
async fn slack_command(State(st): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let path = "/slack/commands";
    let key = match verify_slack(&st, &headers, &body, path).await {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    let cmd = match slack::parse_slash_command(&body) {
        Ok(c) => c,
        Err(e) => {
            return refuse_http(
                &st,
                StatusCode::BAD_REQUEST,
                "malformed_request",
                e.to_string(),
                path,
                &headers,
            )
            .await;
        }
    };
    let origin = Origin {
        key,
        path,
        copy_is_replay: true,
    };
    answer_slack_command(&st, &cmd, &origin)
        .await
        .into_response()
}

/// A verified slash command's answer (HTTP and Socket Mode): the reply to the person, within
/// the handler's budget, or "try again" when the database does not answer in time.
pub(crate) async fn answer_slack_command(
    st: &HttpState,
    cmd: &slack::SlashCommand,
    origin: &Origin,
) -> SlackAnswer {
    let user = ChatUser {
        platform: Platform::Slack,
        user_id: cmd.user_id.clone(),
        user_name: cmd.user_name.clone(),
        roles: vec![],
    };
    // `/jit` alone opens the request form (Slack gives every invocation a trigger).
    if cmd.text.trim().is_empty() && !cmd.trigger_id.is_empty() {
        return forms::slack_open_request_form(st, origin, &user, &cmd.trigger_id).await;
    }
    let work = async {
        if !first_copy(st, origin).await? {
            return Ok(None);
        }
        st.service.command(&user, &cmd.text).await.map(Some)
    };
    match tokio::time::timeout(HANDLER_BUDGET, work).await {
        Ok(Ok(Some(msg))) => SlackAnswer::Json(slack::ephemeral_response(&msg)),
        Ok(Ok(None)) => SlackAnswer::Copy,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "command failed");
            st.metrics.request("unavailable");
            SlackAnswer::Json(unavailable())
        }
        Err(_) => {
            tracing::error!("command took longer than the handler budget");
            st.metrics.request("unavailable");
            SlackAnswer::Json(unavailable())
        }
    }
}

/// `POST /slack/interactions`: verify, parse, then [`answer_slack_interaction`].
async fn slack_interaction(
    State(st): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/slack/interactions";
    let key = match verify_slack(&st, &headers, &body, path).await {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    let interaction = match slack::parse_interaction(&body) {
        Ok(i) => i,
        Err(e) => {
            return refuse_http(
                &st,
                StatusCode::BAD_REQUEST,
                "malformed_request",
                e.to_string(),
                path,
                &headers,
            )
            .await;
        }
    };
    let origin = Origin {
        key,
        path,
        copy_is_replay: true,
    };
    answer_slack_interaction(&st, interaction, &origin)
        .await
        .into_response()
}

/// A verified interaction's answer (HTTP and Socket Mode): a button click, a form opened,
/// changed or submitted; anything else is acknowledged and ignored.
pub(crate) async fn answer_slack_interaction(
    st: &HttpState,
    interaction: Interaction,
    origin: &Origin,
) -> SlackAnswer {
    match interaction {
        Interaction::Button(c) if c.action.kind == ButtonKind::DenyWithReason => {
            forms::slack_deny_button(st, origin, &c).await
        }
        Interaction::Button(c) => slack_click(st, origin, c).await,
        Interaction::FormChanged(change) => forms::slack_form_changed(st, origin, &change).await,
        Interaction::FormSubmitted(s) => forms::slack_form_submitted(st, origin, &s).await,
        Interaction::Other { kind } => {
            let kind = bounded(&kind);
            tracing::debug!(%kind, "ignoring an interaction that is not a jitbot button");
            SlackAnswer::Empty
        }
    }
}

/// An Approve, Deny, Extend or I'm-done click on Slack: the decision, then nothing (the
/// card-update job edits the card) or the answer for the clicker.
async fn slack_click(st: &HttpState, origin: &Origin, click: slack::ButtonClick) -> SlackAnswer {
    let user = ChatUser {
        platform: Platform::Slack,
        user_id: click.user_id.clone(),
        user_name: click.user_name.clone(),
        roles: vec![],
    };
    let service = &st.service;
    let outcome = tokio::time::timeout(HANDLER_BUDGET, async {
        if !first_copy(st, origin).await? {
            return Ok(Err(SlackAnswer::Copy));
        }
        match service.click(&user, &click.action).await? {
            None => Ok(Ok(None)),
            // Slack shows nothing of what a click's response carries (it wants an empty 200), so
            // a person in the policy gets a refusal, or a step-up sign-in link, by a durable
            // direct message only they see. Anyone else's answer goes in this response, where it
            // is audited but unseen: a click never makes jitbot call Slack for an outsider.
            Some(answer) => service
                .tell_clicker(&user, &click.action.request_id, &answer)
                .await
                .map(Ok),
        }
    })
    .await;
    match outcome {
        Ok(Ok(Err(copy))) => copy,
        Ok(Ok(Ok(None))) => SlackAnswer::Empty,
        Ok(Ok(Ok(Some(answer)))) => SlackAnswer::Json(click_response(&answer)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "click failed");
            st.metrics.request("unavailable");
            SlackAnswer::Json(click_unavailable())
        }
        Err(_) => {
            tracing::error!("click took longer than the handler budget");
            st.metrics.request("unavailable");
            SlackAnswer::Json(click_unavailable())
        }
    }
}

/// Discord's answer when the database did not answer in time: only the member sees it.
fn discord_unavailable(st: &HttpState, what: &str) -> Response {
    st.metrics.request("unavailable");
    Json(discord::ephemeral(&reply(
        Tone::Danger,
        "",
        format!("jitbot could not record {what} right now (its database is not answering). Nothing was changed; please try again in a minute."),
        false,
    )))
    .into_response()
}

/// `POST /discord/interactions`: verify (Ed25519 over timestamp + raw body) before parsing; a bad
/// or missing signature is 401 and audited, a malformed body 400 and audited. PING → PONG;
/// `/jit` → an ephemeral reply; autocomplete → the member's requestable targets; a button → the
/// decision, acknowledged with a deferred update (the card-update job edits the message) or an
/// ephemeral refusal.
async fn discord_interaction(
    State(st): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/discord/interactions";
    let Some(endpoint) = st.discord.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(e) = discord::verify_request(&endpoint.verifier, &headers, &body, now_unix()) {
        return refuse_http(
            &st,
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            e.to_string(),
            path,
            &headers,
        )
        .await;
    }
    let origin = Origin {
        key: ReplayKey::of(
            Platform::Discord,
            "x-signature-timestamp",
            discord::MAX_SKEW_SECS,
            &headers,
            &body,
        ),
        path,
        copy_is_replay: true,
    };
    let incoming = match discord::parse_interaction(&body) {
        Ok(i) => i,
        Err(e) => {
            return refuse_http(
                &st,
                StatusCode::BAD_REQUEST,
                "malformed_request",
                e.to_string(),
                path,
                &headers,
            )
            .await;
        }
    };
    let chat_user = |u: &discord::DiscordUser| ChatUser {
        platform: Platform::Discord,
        user_id: u.id.clone(),
        user_name: u.name.clone(),
        roles: u.roles.clone(),
    };
    match incoming {
        Incoming::Ping => Json(discord::pong()).into_response(),
        Incoming::Command {
            user,
            text,
            application_id,
            token,
        } => {
            let user = chat_user(&user);
            let state = st.clone();
            // The command runs to completion in its own task: if it outlasts the budget, Discord
            // gets a deferred response now and the answer replaces it when it is ready. `None`:
            // a replay, which changes nothing and gets no follow-up (its token is the original's).
            let mut work = tokio::spawn(async move {
                if !first_copy(&state, &origin).await? {
                    return Ok(None);
                }
                state.service.command(&user, &text).await.map(Some)
            });
            match tokio::time::timeout(DISCORD_DEFER_AFTER, &mut work).await {
                Ok(Ok(Ok(Some(msg)))) => {
                    Json(discord::ephemeral(&discord::discord_idiom(msg))).into_response()
                }
                Ok(Ok(Ok(None))) => replayed(),
                Ok(Ok(Err(e))) => {
                    tracing::error!(error = %e, "command failed");
                    discord_unavailable(&st, "this")
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "command task failed");
                    discord_unavailable(&st, "this")
                }
                Err(_) => {
                    tracing::warn!("command outlasted the handler budget; deferring the answer");
                    let api = endpoint.api.clone();
                    tokio::spawn(async move {
                        let answer = match tokio::time::timeout(DISCORD_FOLLOW_UP_WITHIN, work)
                            .await
                        {
                            Ok(Ok(Ok(Some(msg)))) => discord::discord_idiom(msg),
                            Ok(Ok(Ok(None))) => return,
                            other => {
                                tracing::error!(outcome = ?other.map(|r| r.map(|r| r.map(drop))), "deferred command did not finish");
                                reply(
                                    Tone::Danger,
                                    "",
                                    "jitbot could not record this in time (its database is not answering). Check `/jit list` before trying again.",
                                    false,
                                )
                            }
                        };
                        follow_up(&api, &application_id, &token, &answer).await;
                    });
                    Json(discord::deferred_ephemeral()).into_response()
                }
            }
        }
        Incoming::Autocomplete {
            user,
            option,
            value,
        } => {
            let choices = if option == "target" || option == "vm" {
                discord_targets(&st, &chat_user(&user), &value)
            } else {
                vec![]
            };
            Json(discord::autocomplete(&choices)).into_response()
        }
        Incoming::Button { user, action, .. } if action.kind == ButtonKind::DenyWithReason => {
            forms::discord_deny_button(&st, &origin, &chat_user(&user), &action).await
        }
        Incoming::FormCommand { user, target } => {
            forms::discord_open_request_form(&st, &origin, &chat_user(&user), target.as_deref())
                .await
        }
        Incoming::FormPick { user, target } => {
            forms::discord_open_request_form(&st, &origin, &chat_user(&user), Some(&target)).await
        }
        Incoming::FormSubmit { user, kind, values } => {
            forms::discord_form_submitted(&st, &origin, &chat_user(&user), &kind, &values).await
        }
        Incoming::Button { user, action, .. } => {
            let user = chat_user(&user);
            let work = async {
                if !first_copy(&st, &origin).await? {
                    return Ok(Err(replayed()));
                }
                st.service.click(&user, &action).await.map(Ok)
            };
            match tokio::time::timeout(HANDLER_BUDGET, work).await {
                Ok(Ok(Err(replay))) => replay,
                Ok(Ok(Ok(None))) => Json(discord::deferred_update()).into_response(),
                Ok(Ok(Ok(Some(answer)))) => Json(discord::ephemeral(&answer)).into_response(),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "click failed");
                    discord_unavailable(&st, "your decision")
                }
                Err(_) => {
                    tracing::error!("click took longer than the handler budget");
                    discord_unavailable(&st, "your decision")
                }
            }
        }
        Incoming::Other { kind } => {
            let kind = bounded(&kind);
            tracing::debug!(%kind, "ignoring a Discord interaction that is not jitbot's");
            Json(discord::deferred_update()).into_response()
        }
    }
}

/// Targets this member may request whose name contains what they typed (at most 25).
fn discord_targets(st: &HttpState, user: &ChatUser, typed: &str) -> Vec<String> {
    let policy = &st.service.policy;
    let Some(person) = policy.person_by_discord(&user.user_id) else {
        return vec![];
    };
    let actor = crate::policy::Actor {
        person,
        discord_roles: &user.roles,
        slack_groups: &crate::policy::GroupMemberships::NONE,
    };
    let typed = typed.trim().to_ascii_lowercase();
    let mut names: Vec<String> = policy
        .requestable(&actor)
        .into_iter()
        .map(|t| t.name.clone())
        .filter(|n| n.to_ascii_lowercase().contains(&typed))
        .collect();
    names.sort_by_key(|n| (!n.to_ascii_lowercase().starts_with(&typed), n.clone()));
    names.truncate(25);
    names
}

/// A click's answer shown to the clicker alone, leaving the card as it is.
fn click_response(answer: &crate::chat::Message) -> serde_json::Value {
    let mut response = slack::ephemeral_response(answer);
    response["replace_original"] = json!(false);
    response
}

fn click_unavailable() -> serde_json::Value {
    json!({ "response_type": "ephemeral", "replace_original": false,
        "text": reply(Tone::Danger, "", "jitbot could not record your decision (its database is not answering); nothing changed. Please click again in a minute.", false).plain_text() })
}

#[cfg(test)]
mod tests {
    use super::client_address;
    use axum::http::HeaderMap;

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let at = |peer: &str, xff: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(v) = xff {
                headers.insert("x-forwarded-for", v.parse().unwrap());
            }
            client_address(peer.parse().unwrap(), &headers, &trusted).to_string()
        };
        let chain = Some("198.51.100.1, 203.0.113.7, 10.0.0.9");
        // An untrusted peer's header is ignored: anyone can send one.
        assert_eq!(at("192.0.2.5:4000", chain), "192.0.2.5");
        // Behind trusted proxies: the rightmost address that is not one of them.
        assert_eq!(at("10.1.2.3:4000", chain), "203.0.113.7");
        assert_eq!(at("10.1.2.3:4000", Some("garbage, 10.0.0.9")), "10.1.2.3");
        assert_eq!(at("10.1.2.3:4000", None), "10.1.2.3");
    }
}
