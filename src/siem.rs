//! Audit events to a SIEM: the `[siem]` config section and the sinks that send batches of audit
//! events, in `seq` order, to a generic HMAC-signed webhook ([`webhook`]) or to Azure Monitor's
//! Logs Ingestion API for Microsoft Sentinel ([`logs_ingestion`]).
//!
//! Delivery itself is durable and lives in the worker (`worker/siem.rs`): one singleton job per
//! sink sends the events after the sink's cursor (`store/siem.rs`) and moves the cursor when the
//! sink accepted them. This module only knows how to say a batch to each kind of sink and how
//! each answer is to be taken (done, too large, retry later).
//!
//! Every event carries its `seq`, `hash` and `prev_hash`, and its detail as the exact text that
//! was hashed, so a receiver can drop duplicates (by `seq`) and verify the chain.

mod logs_ingestion;
mod webhook;

use crate::azure::{AzureSettings, CredentialFactory, ResourceTokens};
use crate::domain::Secret;
use crate::store::siem::ChainEvent;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use logs_ingestion::{API_VERSION as LOGS_INGESTION_API_VERSION, MONITOR_SCOPE};
pub use webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

/// `[siem]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemFile {
    /// How soon a sink that is caught up looks for new events. Default `1s`.
    pub poll_interval: Option<String>,
    /// Most events in one batch. Default 200.
    pub batch_size: Option<usize>,
    /// Timeout of one send. Default `10s`.
    pub request_timeout: Option<String>,
    /// `[siem.webhook.<name>]`: generic HMAC-signed webhooks.
    #[serde(default)]
    pub webhook: BTreeMap<String, WebhookFile>,
    /// `[siem.logs_ingestion.<name>]`: Azure Monitor Logs Ingestion API (Sentinel).
    #[serde(default)]
    pub logs_ingestion: BTreeMap<String, LogsIngestionFile>,
}

/// `[siem.webhook.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// Where the batches are POSTed (https; plain http only to a loopback address).
    pub url: String,
    /// The environment variable holding the HMAC secret (or its `_FILE` twin). Default
    /// `JITBOT_SIEM_<NAME>_SECRET`.
    pub secret_env: Option<String>,
    /// Largest body sent. Default 1 MiB.
    pub max_batch_bytes: Option<usize>,
}

/// `[siem.logs_ingestion.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsIngestionFile {
    /// The data collection endpoint or the DCR's logs ingestion endpoint, e.g.
    /// `https://jitbot-abcd.westeurope-1.ingest.monitor.azure.com`.
    pub endpoint: String,
    /// The data collection rule's immutable id (`dcr-` and 32 hex digits).
    pub dcr_immutable_id: String,
    /// The DCR's input stream, e.g. `Custom-JitbotAudit`.
    pub stream: String,
    /// The token scope. Default `https://monitor.azure.com/.default` (sovereign clouds differ).
    pub scope: Option<String>,
    /// Largest body sent. Default 1,000,000 bytes (the API takes at most 1 MB per call).
    pub max_batch_bytes: Option<usize>,
}

/// `[siem]`, resolved and checked.
#[derive(Debug, Clone)]
pub struct SiemSettings {
    pub poll_interval: Duration,
    pub batch_size: usize,
    pub request_timeout: Duration,
    pub sinks: Vec<SinkSettings>,
}

impl Default for SiemSettings {
    fn default() -> Self {
        SiemSettings {
            poll_interval: Duration::from_secs(1),
            batch_size: 200,
            request_timeout: Duration::from_secs(10),
            sinks: Vec::new(),
        }
    }
}

/// One sink, resolved.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// `[a-z0-9_-]`, as in the config key.
    pub name: String,
    pub max_batch_bytes: usize,
    pub kind: SinkKind,
}

/// What a sink is.
#[derive(Debug, Clone)]
pub enum SinkKind {
    Webhook {
        url: url::Url,
        secret: Secret,
    },
    LogsIngestion {
        endpoint: url::Url,
        dcr_immutable_id: String,
        stream: String,
        scope: String,
    },
}

impl SinkSettings {
    /// The sink's identity in the database (its cursor) and in the job queue: `webhook:<name>` or
    /// `logs_ingestion:<name>`. Renaming a sink starts a new cursor (the whole trail again).
    pub fn key(&self) -> String {
        let kind = match self.kind {
            SinkKind::Webhook { .. } => "webhook",
            SinkKind::LogsIngestion { .. } => "logs_ingestion",
        };
        format!("{kind}:{}", self.name)
    }
}

/// The default environment variable of a webhook's secret: `JITBOT_SIEM_<NAME>_SECRET`.
pub fn default_secret_env(name: &str) -> String {
    format!(
        "JITBOT_SIEM_{}_SECRET",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

impl SiemSettings {
    /// Checks `[siem]`; every problem goes to `errors` as a sentence. `secrets` reads a named
    /// secret (environment or `_FILE`), as for the other secrets.
    pub fn resolve(
        file: &SiemFile,
        secrets: &dyn Fn(&str) -> Result<Option<Secret>, String>,
        errors: &mut Vec<String>,
    ) -> SiemSettings {
        let d = SiemSettings::default();
        let poll_interval = duration(
            "poll_interval",
            &file.poll_interval,
            d.poll_interval,
            errors,
        );
        let request_timeout = duration(
            "request_timeout",
            &file.request_timeout,
            d.request_timeout,
            errors,
        );
        let batch_size = match file.batch_size {
            None => d.batch_size,
            Some(n) if (1..=10_000).contains(&n) => n,
            Some(n) => {
                errors.push(format!("siem.batch_size: {n} must be between 1 and 10000"));
                d.batch_size
            }
        };
        let mut sinks = Vec::new();
        for (name, w) in &file.webhook {
            if let Some(s) = webhook_sink(name, w, secrets, errors) {
                sinks.push(s);
            }
        }
        for (name, l) in &file.logs_ingestion {
            if let Some(s) = logs_ingestion_sink(name, l, errors) {
                sinks.push(s);
            }
        }
        SiemSettings {
            poll_interval,
            batch_size,
            request_timeout,
            sinks,
        }
    }
}

fn duration(
    key: &str,
    value: &Option<String>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    let Some(text) = value else {
        return default;
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(300) => d,
        Ok(_) => {
            errors.push(format!(
                "siem.{key}: {text:?} must be between \"100ms\" and \"5m\""
            ));
            default
        }
        Err(e) => {
            errors.push(format!(
                "siem.{key}: {text:?} is not a duration ({e}); write it like \"1s\" or \"500ms\""
            ));
            default
        }
    }
}

/// A sink name is part of the cursor's key and of environment variable names.
fn check_name(section: &str, name: &str, errors: &mut Vec<String>) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        errors.push(format!(
            "siem.{section}.{name}: a sink name is 1–40 characters a-z, 0-9, _ and - (e.g. `soc`)"
        ));
    }
    ok
}

/// An https URL, or plain http to a loopback address (a local relay, tests).
fn sink_url(at: &str, text: &str, errors: &mut Vec<String>) -> Option<url::Url> {
    let url = match url::Url::parse(text.trim()) {
        Ok(u) => u,
        Err(e) => {
            errors.push(format!("{at}: `{text}` is not a URL ({e})"));
            return None;
        }
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Some(url),
        "http" if loopback => Some(url),
        _ => {
            errors.push(format!(
                "{at}: `{}` must be an https URL (audit events leave jitbot; plain http only to a loopback address)",
                url.origin().ascii_serialization()
            ));
            None
        }
    }
}

fn max_bytes(at: &str, value: Option<usize>, default: usize, errors: &mut Vec<String>) -> usize {
    match value {
        None => default,
        Some(n) if n >= 4096 => n,
        Some(n) => {
            errors.push(format!(
                "{at}.max_batch_bytes: {n} is too small; use at least 4096"
            ));
            default
        }
    }
}

fn webhook_sink(
    name: &str,
    w: &WebhookFile,
    secrets: &dyn Fn(&str) -> Result<Option<Secret>, String>,
    errors: &mut Vec<String>,
) -> Option<SinkSettings> {
    let at = format!("siem.webhook.{name}");
    let named = check_name("webhook", name, errors);
    let url = sink_url(&format!("{at}.url"), &w.url, errors);
    let env = w
        .secret_env
        .clone()
        .unwrap_or_else(|| default_secret_env(name));
    let secret = match secrets(&env) {
        Ok(Some(s)) if !s.expose().is_empty() => Some(s),
        Ok(_) => {
            errors.push(format!(
                "{at}: its HMAC secret is not set (set {env} or {env}_FILE; e.g. `openssl rand -hex 32`)"
            ));
            None
        }
        Err(e) => {
            errors.push(format!("{at}: {e}"));
            None
        }
    };
    let max_batch_bytes = max_bytes(&at, w.max_batch_bytes, 1 << 20, errors);
    Some(SinkSettings {
        name: name.to_string(),
        max_batch_bytes,
        kind: SinkKind::Webhook {
            url: url.filter(|_| named)?,
            secret: secret?,
        },
    })
}

fn logs_ingestion_sink(
    name: &str,
    l: &LogsIngestionFile,
    errors: &mut Vec<String>,
) -> Option<SinkSettings> {
    let at = format!("siem.logs_ingestion.{name}");
    let named = check_name("logs_ingestion", name, errors);
    let endpoint = sink_url(&format!("{at}.endpoint"), &l.endpoint, errors);
    let dcr = l.dcr_immutable_id.trim();
    let dcr_ok = dcr
        .strip_prefix("dcr-")
        .is_some_and(|h| h.len() == 32 && h.chars().all(|c| c.is_ascii_hexdigit()));
    if !dcr_ok {
        errors.push(format!(
            "{at}.dcr_immutable_id: `{dcr}` is not a DCR immutable id (`dcr-` and 32 hex digits: the DCR's JSON view, `immutableId`)"
        ));
    }
    let stream = l.stream.trim();
    let stream_ok = !stream.is_empty()
        && stream
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !stream_ok {
        errors.push(format!(
            "{at}.stream: `{stream}` is not a stream name (e.g. `Custom-JitbotAudit`, as declared in the DCR's streamDeclarations)"
        ));
    }
    let scope = l.scope.clone().unwrap_or_else(|| MONITOR_SCOPE.to_string());
    if !scope.starts_with("https://") || !scope.ends_with("/.default") {
        errors.push(format!(
            "{at}.scope: `{scope}` must look like https://monitor.azure.com/.default"
        ));
    }
    let max_batch_bytes = max_bytes(&at, l.max_batch_bytes, 1_000_000, errors);
    let endpoint = endpoint.filter(|_| named && dcr_ok && stream_ok)?;
    Some(SinkSettings {
        name: name.to_string(),
        max_batch_bytes,
        kind: SinkKind::LogsIngestion {
            endpoint,
            dcr_immutable_id: dcr.to_string(),
            stream: stream.to_string(),
            scope,
        },
    })
}

/// Why a batch was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// 413: send fewer events at once.
    #[error("the sink refused the batch as too large (413)")]
    TooLarge,
    /// Anything else: try the same batch again later (after `retry_after` if the sink said).
    #[error("{message}")]
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl SendError {
    fn failed(message: impl Into<String>) -> SendError {
        SendError::Failed {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// The configured sinks, ready to send. Cheap to clone.
#[derive(Clone, Default)]
pub struct Sinks {
    sinks: Arc<BTreeMap<String, Sink>>,
    /// How soon a caught-up sink looks again.
    pub poll_interval: Duration,
    /// Most events per batch.
    pub batch_size: usize,
}

/// One sink.
pub struct Sink {
    /// Most bytes in one body.
    pub max_batch_bytes: usize,
    transport: Transport,
}

enum Transport {
    Webhook(webhook::Webhook),
    LogsIngestion(logs_ingestion::LogsIngestion),
}

impl Sinks {
    /// Builds every sink's client. Logs Ingestion sinks get tokens from the credential jitbot
    /// uses for ARM (`credential` overrides it, as `AzureOverrides::credential_factory` does).
    pub fn build(
        settings: &SiemSettings,
        azure: &AzureSettings,
        credential: Option<CredentialFactory>,
    ) -> anyhow::Result<Sinks> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jitbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut sinks = BTreeMap::new();
        for s in &settings.sinks {
            let transport = match &s.kind {
                SinkKind::Webhook { url, secret } => Transport::Webhook(webhook::Webhook {
                    http: http.clone(),
                    url: url.clone(),
                    secret: secret.clone(),
                    name: s.name.clone(),
                }),
                SinkKind::LogsIngestion {
                    endpoint,
                    dcr_immutable_id,
                    stream,
                    scope,
                } => Transport::LogsIngestion(logs_ingestion::LogsIngestion {
                    http: http.clone(),
                    url: logs_ingestion::upload_url(endpoint, dcr_immutable_id, stream)?,
                    tokens: ResourceTokens::new(azure, credential.clone(), scope, http.clone())?,
                }),
            };
            let sink = Sink {
                max_batch_bytes: s.max_batch_bytes,
                transport,
            };
            sinks.insert(s.key(), sink);
        }
        Ok(Sinks {
            sinks: Arc::new(sinks),
            poll_interval: settings.poll_interval,
            batch_size: settings.batch_size,
        })
    }

    /// The sinks' keys ([`SinkSettings::key`]).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&Sink> {
        self.sinks.get(key)
    }
}

impl Sink {
    /// One event as this sink's JSON, serialised. `truncated`: the detail is left out (an event
    /// too large for the sink on its own); its `hash` still links the chain.
    pub fn encode(&self, e: &ChainEvent, truncated: bool) -> Vec<u8> {
        let record = match &self.transport {
            Transport::Webhook(_) => webhook::record(e, truncated),
            Transport::LogsIngestion(_) => logs_ingestion::record(e, truncated),
        };
        record.to_string().into_bytes()
    }

    /// Bytes of a body around the events (the envelope), for sizing batches.
    pub fn envelope_bytes(&self) -> usize {
        match &self.transport {
            Transport::Webhook(w) => webhook::envelope(&w.name, &[]).len(),
            Transport::LogsIngestion(_) => 2,
        }
    }

    /// Sends encoded events (in order) as one batch.
    pub async fn send(&self, records: &[Vec<u8>]) -> Result<(), SendError> {
        match &self.transport {
            Transport::Webhook(w) => w.send(records).await,
            Transport::LogsIngestion(l) => l.send(records).await,
        }
    }
}

/// The detail as JSON (the stored text parses; if it ever did not, the text itself).
fn detail_value(e: &ChainEvent) -> Value {
    serde_json::from_str(&e.detail_text).unwrap_or_else(|_| Value::String(e.detail_text.clone()))
}

/// What replaces the detail of an event sent without it.
fn truncated_detail(e: &ChainEvent) -> Value {
    json!({ "truncated": true, "bytes": e.detail_text.len(),
            "see": "jitbot audit export has the full event" })
}

/// `at` (Unix ms) as RFC 3339 UTC with milliseconds.
fn rfc3339(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// How many of the next records fit in one body of `max_bytes` (with `envelope` bytes around
/// them and a comma between), at most `cap`, and at least one (none only of none).
pub fn fit(sizes: &[usize], envelope: usize, max_bytes: usize, cap: usize) -> usize {
    if sizes.is_empty() {
        return 0;
    }
    let mut total = envelope;
    let mut n = 0;
    for size in sizes.iter().take(cap.max(1)) {
        let add = size + usize::from(n > 0);
        if n > 0 && total + add > max_bytes {
            break;
        }
        total += add;
        n += 1;
    }
    n.max(1)
}

/// `Retry-After` in seconds or as an HTTP date; none for 0 or nonsense, at most 5 minutes.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()?
        }
    };
    (!d.is_zero()).then_some(d.min(Duration::from_secs(300)))
}

/// A failed request, without its URL (a webhook URL may carry a token).
fn transport_error(sink: &str, e: reqwest::Error) -> SendError {
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        e.without_url().to_string()
    };
    SendError::failed(format!("{sink}: {what}"))
}

/// A sink's answer body, shortened for logs and `last_error`.
fn answer_excerpt(body: &str) -> String {
    body.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> (SiemSettings, Vec<String>) {
        let file: SiemFile = toml::from_str(text).expect("valid TOML");
        let mut errors = Vec::new();
        let secrets =
            |name: &str| Ok((name == "JITBOT_SIEM_SOC_SECRET").then(|| Secret::new("s3cret")));
        let s = SiemSettings::resolve(&file, &secrets, &mut errors);
        (s, errors)
    }

    #[test]
    fn a_good_siem_section_resolves_with_defaults() {
        let (s, errors) = resolve(
            r#"
[webhook.soc]
url = "https://siem.example.com/jitbot"
[logs_ingestion.sentinel]
endpoint = "https://jitbot-x.westeurope-1.ingest.monitor.azure.com"
dcr_immutable_id = "dcr-0123456789abcdef0123456789abcdef"
stream = "Custom-JitbotAudit"
"#,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let keys: Vec<_> = s.sinks.iter().map(SinkSettings::key).collect();
        assert_eq!(keys, ["webhook:soc", "logs_ingestion:sentinel"]);
        assert_eq!(s.poll_interval, Duration::from_secs(1));
        assert_eq!(s.batch_size, 200);
    }

    #[test]
    fn every_problem_of_a_bad_siem_section_is_named() {
        let (s, errors) = resolve(
            r#"
poll_interval = "1ms"
batch_size = 0
[webhook.SOC]
url = "http://siem.example.com/jitbot"
[webhook.other]
url = "https://siem.example.com/x"
[logs_ingestion.sentinel]
endpoint = "https://x.ingest.monitor.azure.com"
dcr_immutable_id = "my-dcr"
stream = "Custom Jitbot"
scope = "https://monitor.azure.com"
"#,
        );
        let all = errors.join("\n");
        for needle in [
            "siem.poll_interval: \"1ms\" must be between",
            "siem.batch_size: 0",
            "siem.webhook.SOC: a sink name is",
            "siem.webhook.SOC.url: `http://siem.example.com` must be an https URL",
            "siem.webhook.other: its HMAC secret is not set (set JITBOT_SIEM_OTHER_SECRET",
            "siem.logs_ingestion.sentinel.dcr_immutable_id: `my-dcr`",
            "siem.logs_ingestion.sentinel.stream: `Custom Jitbot`",
            "siem.logs_ingestion.sentinel.scope",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(s.sinks.is_empty());
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        let mut errors = Vec::new();
        assert!(sink_url("u", "http://127.0.0.1:9/x", &mut errors).is_some());
        assert!(sink_url("u", "http://localhost/x", &mut errors).is_some());
        assert!(sink_url("u", "http://[::1]:8/x", &mut errors).is_some());
        assert!(errors.is_empty());
        assert!(sink_url("u", "http://10.0.0.1/x", &mut errors).is_none());
        assert!(sink_url("u", "ftp://siem.example.com/x", &mut errors).is_none());
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn batches_are_cut_to_the_byte_limit_and_never_empty() {
        // envelope 10, records of 40: 10 + 40 + 41 = 91 fits 100, a third would not.
        assert_eq!(fit(&[40, 40, 40], 10, 100, usize::MAX), 2);
        assert_eq!(fit(&[40, 40, 40], 10, 1000, usize::MAX), 3);
        assert_eq!(fit(&[40, 40, 40], 10, 1000, 1), 1);
        // One record larger than the limit still goes alone (the sink decides).
        assert_eq!(fit(&[500, 1], 10, 100, usize::MAX), 1);
        assert_eq!(fit(&[], 10, 100, usize::MAX), 0);
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
