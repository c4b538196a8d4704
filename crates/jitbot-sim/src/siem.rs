//! Fakes of the places jitbot pushes its audit events to:
//!
//! * [`WebhookSim`]: a SIEM's HTTP receiver. It verifies `X-Jitbot-Signature` (HMAC-SHA256 over
//!   `v1:<X-Jitbot-Timestamp>:<raw body>`, constant time, 5-minute window) before parsing, then
//!   checks the hash chain of what it got (each event's hash recomputed from its fields, each
//!   `prev_hash` against the event before it, a repeated `seq` against the hash it had) and
//!   records every batch. Faults: an outage (503), a body limit (413), and a lost answer (the
//!   batch is recorded, the answer never comes until released).
//! * [`LogsIngestionSim`]: Azure Monitor's Logs Ingestion API, `POST
//!   /dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01` with a JSON array. It
//!   checks the bearer token (that the [`EntraSim`] it trusts issued it for
//!   `https://monitor.azure.com/.default`, as the real service checks issuer and audience; until
//!   told which Entra to trust, it refuses every token), the
//!   api-version, the rule and stream, the 1 MB call limit (413), and answers 204; faults:
//!   throttling (429 with `Retry-After`) and an outage (503).
//!
//! Neither depends on jitbot: the hash is recomputed here from the documented recipe.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::entra::EntraSim;

/// The scope a Logs Ingestion token must have been issued for.
pub const MONITOR_SCOPE: &str = "https://monitor.azure.com/.default";

struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve(router: Router) -> anyhow::Result<(String, ServerTask)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(target: "jitbot_sim::siem", error = %e, "SIEM emulator stopped");
        }
    });
    Ok((base, ServerTask(task)))
}

/// The hash of an event (as the webhook sends it) from its fields, as jitbot documents it:
/// `sha256_hex(compact_json([prev_hash, seq, at, kind, request_id, actor, detail_text, simulated]))`.
pub fn chain_hash(e: &Value) -> String {
    let canonical = json!([
        e["prev_hash"],
        e["seq"],
        e["at"],
        e["kind"],
        e["request_id"],
        e["actor"],
        e["detail_text"],
        e["simulated"]
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Checks a run of events against the chain as received so far (`seen`: seq → hash); returns
/// what is wrong, and adds the new events to `seen`.
fn check_chain(events: &[Value], seen: &mut BTreeMap<i64, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for e in events {
        let (Some(seq), Some(hash), Some(prev)) = (
            e["seq"].as_i64(),
            e["hash"].as_str(),
            e["prev_hash"].as_str(),
        ) else {
            problems.push(format!("an event lacks seq, hash or prev_hash: {e}"));
            continue;
        };
        if e["truncated"] != Value::Bool(true) && chain_hash(e) != hash {
            problems.push(format!("event {seq}: its content does not match its hash"));
        }
        if let Some(before) = seen.get(&(seq - 1))
            && before != prev
        {
            problems.push(format!(
                "event {seq}: prev_hash is not the hash of event {}",
                seq - 1
            ));
        }
        if seq == 1 && prev != "0".repeat(64) {
            problems.push("event 1: prev_hash is not the zero hash".into());
        }
        match seen.get(&seq) {
            Some(h) if h != hash => {
                problems.push(format!("event {seq} came again with another hash"))
            }
            _ => {
                seen.insert(seq, hash.to_string());
            }
        }
    }
    problems
}

/// A webhook batch as received.
#[derive(Debug, Clone)]
pub struct WebhookBatch {
    pub sink: String,
    pub events: Vec<Value>,
    /// When it arrived, Unix milliseconds (compare with the events' `at`).
    pub received_ms: i64,
}

#[derive(Default)]
struct WebhookState {
    secret: Vec<u8>,
    batches: Vec<WebhookBatch>,
    seen: BTreeMap<i64, String>,
    chain_problems: Vec<String>,
    bad_signatures: usize,
    outage: bool,
    max_body_bytes: Option<usize>,
    too_large: usize,
    stall: bool,
}

/// A SIEM's webhook receiver. The server stops when the last clone is dropped.
#[derive(Clone)]
pub struct WebhookSim {
    /// Where to POST: `http://127.0.0.1:<port>/jitbot`.
    pub url: String,
    state: Arc<Mutex<WebhookState>>,
    release: Arc<Notify>,
    _server: Arc<ServerTask>,
}

type WebhookShared = (Arc<Mutex<WebhookState>>, Arc<Notify>);

impl WebhookSim {
    /// Starts a receiver that accepts batches signed with `secret`.
    pub async fn start(secret: &str) -> anyhow::Result<WebhookSim> {
        let state = Arc::new(Mutex::new(WebhookState {
            secret: secret.as_bytes().to_vec(),
            ..WebhookState::default()
        }));
        let release = Arc::new(Notify::new());
        let router = Router::new()
            .route("/jitbot", post(webhook))
            .layer(DefaultBodyLimit::disable())
            .with_state((state.clone(), release.clone()));
        let (base, task) = serve(router).await?;
        Ok(WebhookSim {
            url: format!("{base}/jitbot"),
            state,
            release,
            _server: Arc::new(task),
        })
    }

    /// Every event received, in arrival order (duplicates included).
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state)
            .batches
            .iter()
            .flat_map(|b| b.events.iter().cloned())
            .collect()
    }

    /// The `seq` of every event received, in arrival order (duplicates included).
    pub fn seqs(&self) -> Vec<i64> {
        self.events()
            .iter()
            .filter_map(|e| e["seq"].as_i64())
            .collect()
    }

    /// The batches accepted so far.
    pub fn batches(&self) -> Vec<WebhookBatch> {
        lock(&self.state).batches.clone()
    }

    /// What was wrong with the chain as received (empty: every hash and link checked out).
    pub fn chain_problems(&self) -> Vec<String> {
        lock(&self.state).chain_problems.clone()
    }

    /// Requests refused for a missing, stale or wrong signature.
    pub fn bad_signatures(&self) -> usize {
        lock(&self.state).bad_signatures
    }

    /// Requests refused with 413.
    pub fn too_large(&self) -> usize {
        lock(&self.state).too_large
    }

    /// While on, every request is answered 503 (nothing is recorded).
    pub fn set_outage(&self, on: bool) {
        lock(&self.state).outage = on;
    }

    /// Bodies larger than this are answered 413.
    pub fn set_max_body_bytes(&self, max: Option<usize>) {
        lock(&self.state).max_body_bytes = max;
    }

    /// While on, a batch is recorded but its answer never comes (until [`WebhookSim::release`]):
    /// the sender cannot know it arrived.
    pub fn set_stall(&self, on: bool) {
        lock(&self.state).stall = on;
    }

    /// Lets stalled answers go.
    pub fn release(&self) {
        self.set_stall(false);
        self.release.notify_waiters();
    }
}

/// Whether `signature` is `v1=<hex HMAC-SHA256(secret, "v1:{timestamp}:{body}")>` and the
/// timestamp within five minutes of now.
fn signature_ok(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (get("x-jitbot-timestamp"), get("x-jitbot-signature")) else {
        return false;
    };
    let Ok(ts_num) = ts.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts_num).abs() > 300 {
        return false;
    }
    let Some(Ok(given)) = sig.strip_prefix("v1=").map(hex::decode) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(format!("v1:{ts}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

async fn webhook(
    State((state, release)): State<WebhookShared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stall = {
        let mut st = lock(&state);
        if st.outage {
            return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
        }
        if st.max_body_bytes.is_some_and(|max| body.len() > max) {
            st.too_large += 1;
            return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
        }
        if !signature_ok(&st.secret, &headers, &body) {
            st.bad_signatures += 1;
            return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
        }
        let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
            return (StatusCode::BAD_REQUEST, "not JSON").into_response();
        };
        let Some(events) = parsed["events"].as_array().cloned() else {
            return (StatusCode::BAD_REQUEST, "no events array").into_response();
        };
        let mut seen = std::mem::take(&mut st.seen);
        let problems = check_chain(&events, &mut seen);
        st.seen = seen;
        st.chain_problems.extend(problems);
        st.batches.push(WebhookBatch {
            sink: parsed["sink"].as_str().unwrap_or_default().to_string(),
            events,
            received_ms: chrono::Utc::now().timestamp_millis(),
        });
        st.stall
    };
    if stall {
        release.notified().await;
    }
    StatusCode::OK.into_response()
}

/// One call to the Logs Ingestion fake and its answer.
#[derive(Debug, Clone)]
pub struct IngestionCall {
    pub status: u16,
    pub records: usize,
    pub bytes: usize,
    pub at: Instant,
}

struct IngestionState {
    dcr: String,
    stream: String,
    max_body_bytes: usize,
    entra: Option<EntraSim>,
    records: Vec<Value>,
    calls: Vec<IngestionCall>,
    throttle: usize,
    retry_after_secs: u64,
    outage: bool,
}

/// Azure Monitor's Logs Ingestion API for one data collection rule and stream.
#[derive(Clone)]
pub struct LogsIngestionSim {
    /// The endpoint (as the DCE's or DCR's logs ingestion endpoint): `http://127.0.0.1:<port>`.
    pub endpoint: String,
    state: Arc<Mutex<IngestionState>>,
    _server: Arc<ServerTask>,
}

impl LogsIngestionSim {
    /// Accepts records for `dcr`/`stream` in calls of at most `max_body_bytes` (the real API:
    /// 1 MB), once it trusts an Entra ([`LogsIngestionSim::trust`]).
    pub async fn start(
        dcr: &str,
        stream: &str,
        max_body_bytes: usize,
    ) -> anyhow::Result<LogsIngestionSim> {
        let state = Arc::new(Mutex::new(IngestionState {
            dcr: dcr.to_string(),
            stream: stream.to_string(),
            max_body_bytes,
            entra: None,
            records: Vec::new(),
            calls: Vec::new(),
            throttle: 0,
            retry_after_secs: 1,
            outage: false,
        }));
        let router = Router::new()
            .route("/dataCollectionRules/{dcr}/streams/{stream}", post(ingest))
            .layer(DefaultBodyLimit::disable())
            .with_state(state.clone());
        let (endpoint, task) = serve(router).await?;
        Ok(LogsIngestionSim {
            endpoint,
            state,
            _server: Arc::new(task),
        })
    }

    /// From now on, tokens `entra` issued for [`MONITOR_SCOPE`] are accepted (and only those).
    pub fn trust(&self, entra: EntraSim) {
        lock(&self.state).entra = Some(entra);
    }

    /// Every record accepted, in order.
    pub fn records(&self) -> Vec<Value> {
        lock(&self.state).records.clone()
    }

    /// Every call and its answer, in order.
    pub fn calls(&self) -> Vec<IngestionCall> {
        lock(&self.state).calls.clone()
    }

    /// The next `n` calls are answered 429 with `Retry-After: <secs>`.
    pub fn throttle_next(&self, n: usize, secs: u64) {
        let mut st = lock(&self.state);
        st.throttle = n;
        st.retry_after_secs = secs;
    }

    /// While on, every call is answered 503.
    pub fn set_outage(&self, on: bool) {
        lock(&self.state).outage = on;
    }
}

fn ingestion_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [("x-ms-error-code", code.to_string())],
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// Why the call is refused before its body is looked at, if it is.
fn refuse_call(
    st: &IngestionState,
    headers: &HeaderMap,
    dcr: &str,
    stream: &str,
    query: &BTreeMap<String, String>,
) -> Option<Response> {
    if st.outage {
        return Some(ingestion_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is unavailable.",
        ));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let audience_ok = st
        .entra
        .as_ref()
        .is_some_and(|entra| entra.scope_of(token).as_deref() == Some(MONITOR_SCOPE));
    if !audience_ok {
        return Some(ingestion_error(
            StatusCode::UNAUTHORIZED,
            "InvalidToken",
            "The token is missing, invalid, or not issued for https://monitor.azure.com.",
        ));
    }
    if query.get("api-version").map(String::as_str) != Some("2023-01-01") {
        return Some(ingestion_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersion",
            "The api-version is missing or not supported.",
        ));
    }
    if dcr != st.dcr || stream != st.stream {
        return Some(ingestion_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Data collection rule or stream not found.",
        ));
    }
    None
}

async fn ingest(
    State(state): State<Arc<Mutex<IngestionState>>>,
    Path((dcr, stream)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&state);
    let mut call = IngestionCall {
        status: 204,
        records: 0,
        bytes: body.len(),
        at: Instant::now(),
    };
    let answer = if let Some(refusal) = refuse_call(&st, &headers, &dcr, &stream, &query) {
        refusal
    } else if body.len() > st.max_body_bytes {
        ingestion_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ContentLengthLimitExceeded",
            "The request is larger than the 1 MB limit.",
        )
    } else if st.throttle > 0 {
        st.throttle -= 1;
        let mut r = ingestion_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests.",
        );
        if let Ok(v) = st.retry_after_secs.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Array(records)) => {
                call.records = records.len();
                st.records.extend(records);
                StatusCode::NO_CONTENT.into_response()
            }
            _ => ingestion_error(
                StatusCode::BAD_REQUEST,
                "InvalidContent",
                "The body must be a JSON array.",
            ),
        }
    };
    call.status = answer.status().as_u16();
    st.calls.push(call);
    answer
}
