//! Thin ARM REST client: bearer auth, retries within a budget, long-running operations.
//!
//! Retry policy (PROTOCOLS.md, "Errors"): 408, 429, 409 `AnotherOperationInProgress`, 5xx,
//! timeouts and connection errors are retried, honouring `Retry-After` (else exponential backoff
//! with jitter, 200 ms base, 10 s cap) until `retry_budget` is spent; then the call fails with the
//! retryable [`AzureError::Transient`]. A 401 gets one retry with a token from a freshly built
//! credential. 403 and other 4xx are returned at once.
//!
//! Writes are followed to their end: `Azure-AsyncOperation` is polled (always HTTP 200 with
//! `InProgress|Succeeded|Failed|Canceled`); without it, a DELETE's `Location` is polled, and a PUT
//! is confirmed by reading the resource until `provisioningState` is `Succeeded`. An operation
//! that ends `Failed` with a retryable code (another operation in progress, internal error) is
//! re-issued — PUT and DELETE of a rule are idempotent, and an NSG-level PUT carries `If-Match`,
//! so a re-issue after someone else's change is refused (412) rather than undoing it.
//!
//! Polling: real ARM answers rule PUTs with `Retry-After: 3` and DELETEs with `Retry-After: 10`
//! while the operation itself typically takes a second or two, so following the hint alone makes
//! every write take 3–10 s. While the read budget is plentiful ([`Budget::reads_plentiful`]) the
//! first poll comes after 250 ms and the next ones every second (never later than the hint);
//! when reads run short, polls follow `Retry-After`.
//!
//! Every request first takes a token from the client-side [`Budget`] (fed by ARM's
//! `x-ms-ratelimit-remaining-*` headers and 429s), so closings go before openings, and openings
//! before reads that can wait, when the budget runs low.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::budget::{Budget, Limits, Urgency, subscription_of};
use super::model::{AsyncOperationResult, CloudError, CloudErrorBody, SecurityRule};
use super::token::TokenSource;
use super::{AzureError, AzureSettings};

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Poll interval when ARM sends no `Retry-After`.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Floor for `Retry-After: 0` on polls, so a fast service is not hammered.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Ceiling for any single wait, whatever `Retry-After` says.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// First poll of an operation while reads are plentiful (never later than `Retry-After`).
const FIRST_POLL: Duration = Duration::from_millis(250);
/// Later polls while reads are plentiful (never later than `Retry-After`).
const QUICK_POLL: Duration = Duration::from_secs(1);

/// Error codes that mean "the NSG is busy with another write; try again".
const BUSY_CODES: &[&str] = &[
    "AnotherOperationInProgress",
    "RetryableError",
    "RetryableErrorDueToAnotherOperation",
];
/// Codes of a failed asynchronous operation that are worth re-issuing the write for.
const RETRYABLE_OPERATION_CODES: &[&str] = &[
    "AnotherOperationInProgress",
    "RetryableError",
    "RetryableErrorDueToAnotherOperation",
    "InternalServerError",
    "ServerTimeout",
    "OperationPreempted",
    "Canceled",
];

/// The one reqwest client for ARM (and for the credentials' own HTTP calls).
pub(crate) fn build_http_client(request_timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(request_timeout)
        .connect_timeout(request_timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("jitbot/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A completed ARM response (2xx or 404; everything else became an error or a retry).
#[derive(Debug)]
pub(crate) struct ArmResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl ArmResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Parse the body as JSON, mapping failure to a retryable error (a truncated body).
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, AzureError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            AzureError::Transient(format!("ARM answered {what} with an unreadable body: {e}"))
        })
    }

    /// The ARM error code of a 404 body (`ResourceNotFound`, `NotFound`, ...).
    pub(crate) fn error_code(&self) -> String {
        serde_json::from_slice::<CloudError>(&self.body)
            .map(|e| e.error.code)
            .unwrap_or_default()
    }
}

/// What one HTTP attempt came to.
enum Attempt {
    Done(ArmResponse),
    Fail(AzureError),
    Unauthorized(String),
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

/// Outcome of following a write to its end.
enum WaitError {
    /// The operation failed in a way that re-issuing the write may fix.
    Reissue(String),
    Fatal(AzureError),
}

/// The kind of write being followed (of a rule, or of the whole NSG for `Put`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum WriteKind {
    Put,
    Delete,
}

/// What goes with a request besides method and URL.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// JSON body.
    pub(crate) body: Option<Bytes>,
    /// `If-Match` (an NSG-level PUT: the etag it was computed from).
    pub(crate) if_match: Option<String>,
    /// Its place in the queue for budget when the budget runs low.
    pub(crate) urgency: Urgency,
}

impl Outgoing {
    /// A request without body or precondition.
    pub(crate) fn plain(urgency: Urgency) -> Self {
        Outgoing {
            body: None,
            if_match: None,
            urgency,
        }
    }

    /// A rule body (serialisation of jitbot's own types cannot fail).
    fn rule(body: Option<&SecurityRule>, urgency: Urgency) -> Self {
        Outgoing {
            body: body
                .and_then(|b| serde_json::to_vec(b).ok())
                .map(Bytes::from),
            if_match: None,
            urgency,
        }
    }
}

/// What a request of `method` waits behind by default: reads can wait, DELETEs close.
fn default_urgency(method: &Method) -> Urgency {
    match *method {
        Method::DELETE => Urgency::Close,
        Method::GET => Urgency::Read,
        _ => Urgency::Open,
    }
}

/// ARM REST client.
pub(crate) struct ArmClient {
    http: reqwest::Client,
    endpoint: url::Url,
    api_version: String,
    tokens: TokenSource,
    retry_budget: Duration,
    operation_timeout: Duration,
    /// Counts every HTTP attempt by method and status.
    metrics: crate::metrics::Metrics,
    /// The client-side model of ARM's buckets.
    budget: Budget,
}

impl ArmClient {
    pub(crate) fn new(
        http: reqwest::Client,
        endpoint: url::Url,
        settings: &AzureSettings,
        tokens: TokenSource,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        ArmClient {
            metrics,
            http,
            endpoint,
            api_version: settings.api_version.clone(),
            tokens,
            retry_budget: settings.retry_budget,
            operation_timeout: settings.operation_timeout,
            budget: Budget::new(Limits::default()),
        }
    }

    /// The configured Microsoft.Network api-version.
    pub(crate) fn api_version(&self) -> &str {
        &self.api_version
    }

    /// `{arm_endpoint}{resource_path}?api-version=…` with the configured (Microsoft.Network)
    /// api-version.
    pub(crate) fn url(&self, resource_path: &str) -> Result<url::Url, AzureError> {
        self.url_with_version(resource_path, &self.api_version)
    }

    /// `{arm_endpoint}{resource_path}?api-version={api_version}`, for resource providers with
    /// api-versions of their own (Microsoft.Compute, Microsoft.Authorization).
    pub(crate) fn url_with_version(
        &self,
        resource_path: &str,
        api_version: &str,
    ) -> Result<url::Url, AzureError> {
        let raw = format!(
            "{}{}",
            self.endpoint.as_str().trim_end_matches('/'),
            resource_path
        );
        let mut url = url::Url::parse(&raw).map_err(|e| AzureError::Invalid {
            code: "InvalidResourceId".into(),
            message: format!("cannot build an ARM URL from {resource_path:?}: {e}"),
        })?;
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
        Ok(url)
    }

    /// Refuse to send the bearer token anywhere but the configured ARM endpoint (nextLink and
    /// polling URLs come from response bodies and headers).
    pub(crate) fn check_same_origin(&self, url: &url::Url) -> Result<(), AzureError> {
        if url.origin() == self.endpoint.origin() {
            Ok(())
        } else {
            Err(AzureError::Invalid {
                code: "UnexpectedUrl".into(),
                message: format!(
                    "ARM pointed jitbot at {} which is not the configured ARM endpoint {}; \
                     refusing to send the token there",
                    url.origin().ascii_serialization(),
                    self.endpoint.origin().ascii_serialization()
                ),
            })
        }
    }

    /// Send one request, retrying transient failures within the retry budget.
    /// Returns 2xx and 404 responses; every other status becomes an error.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &url::Url,
        body: Option<&SecurityRule>,
    ) -> Result<ArmResponse, AzureError> {
        let out = Outgoing::rule(body, default_urgency(&method));
        self.send_with(method, url, &out).await
    }

    /// [`ArmClient::send`] with a raw body, `If-Match` and an urgency.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        url: &url::Url,
        out: &Outgoing,
    ) -> Result<ArmResponse, AzureError> {
        let deadline = Instant::now() + self.retry_budget;
        let mut attempts: u32 = 0;
        let mut refreshed = false;
        let sub = subscription_of(url.path());
        loop {
            attempts += 1;
            self.budget.acquire(sub, &method, out.urgency).await;
            let bearer = self.tokens.token().await?;
            let client_request_id = random_request_id();
            let attempt = self
                .attempt(&method, url, out, &bearer.token, &client_request_id, sub)
                .await;
            match attempt {
                Attempt::Done(resp) => return Ok(resp),
                Attempt::Fail(err) => return Err(err),
                Attempt::Unauthorized(reason) => {
                    if refreshed {
                        return Err(AzureError::Auth(format!(
                            "ARM rejected a freshly obtained token too ({reason}); check that \
                             the credential belongs to the tenant of the subscription"
                        )));
                    }
                    refreshed = true;
                    warn!(%method, path = url.path(), request_id = %client_request_id, %reason,
                        "ARM rejected the access token; getting a new one and retrying once");
                    self.tokens.invalidate(bearer.generation)?;
                }
                Attempt::Retry { reason, after } => {
                    let wait = after.unwrap_or_else(|| backoff(attempts));
                    if Instant::now() + wait > deadline {
                        return Err(AzureError::Transient(format!(
                            "{method} {}: {reason}; gave up after {attempts} attempt(s) within \
                             the {} retry budget",
                            url.path(),
                            humantime::format_duration(self.retry_budget)
                        )));
                    }
                    warn!(%method, path = url.path(), request_id = %client_request_id, %reason,
                        wait_ms = wait.as_millis() as u64, attempt = attempts,
                        "transient ARM failure; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// One HTTP attempt: the request, the metrics and the budget fed from the answer, and what
    /// the answer means ([`classify`]).
    async fn attempt(
        &self,
        method: &Method,
        url: &url::Url,
        out: &Outgoing,
        token: &str,
        client_request_id: &str,
        sub: &str,
    ) -> Attempt {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token)
            .header("x-ms-client-request-id", client_request_id)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = &out.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if let Some(tag) = &out.if_match {
            req = req.header(reqwest::header::IF_MATCH, tag);
        }
        match req.send().await {
            Err(e) => {
                self.metrics.arm_call(method.as_str(), None);
                Attempt::Retry {
                    reason: describe_reqwest_error(&e),
                    after: None,
                }
            }
            Ok(resp) => {
                let status = resp.status();
                self.metrics
                    .arm_call(method.as_str(), Some(status.as_u16()));
                let headers = resp.headers().clone();
                self.budget.observe(sub, &headers, Instant::now());
                match resp.bytes().await {
                    Err(e) => Attempt::Retry {
                        reason: describe_reqwest_error(&e),
                        after: None,
                    },
                    Ok(body) => {
                        let arm_request_id = headers
                            .get("x-ms-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        debug!(
                            %method,
                            path = url.path(),
                            status = status.as_u16(),
                            request_id = %client_request_id,
                            arm_request_id,
                            "ARM call"
                        );
                        let resp = ArmResponse {
                            status,
                            headers,
                            body,
                        };
                        if status == StatusCode::TOO_MANY_REQUESTS && !is_busy(&parse_error(&resp))
                        {
                            let after = retry_after(&resp.headers);
                            self.budget.throttled(sub, method, after, Instant::now());
                        }
                        classify(method, url, resp)
                    }
                }
            }
        }
    }

    /// PUT or DELETE a rule and follow the operation to its end. Re-issues the write when the
    /// operation fails with a retryable code, within the retry budget.
    pub(crate) async fn write_and_wait(
        &self,
        kind: WriteKind,
        rule_url: &url::Url,
        body: Option<&SecurityRule>,
    ) -> Result<(), AzureError> {
        let urgency = match kind {
            WriteKind::Put => Urgency::Open,
            WriteKind::Delete => Urgency::Close,
        };
        self.write_and_wait_with(kind, rule_url, &Outgoing::rule(body, urgency))
            .await
    }

    /// [`ArmClient::write_and_wait`] with a raw body (an NSG-level PUT), `If-Match` and an
    /// urgency that its polls share.
    pub(crate) async fn write_and_wait_with(
        &self,
        kind: WriteKind,
        rule_url: &url::Url,
        out: &Outgoing,
    ) -> Result<(), AzureError> {
        let deadline = Instant::now() + self.retry_budget;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let method = match kind {
                WriteKind::Put => Method::PUT,
                WriteKind::Delete => Method::DELETE,
            };
            let resp = self.send_with(method, rule_url, out).await?;
            match self.wait(kind, rule_url, resp, out.urgency).await {
                Ok(()) => return Ok(()),
                Err(WaitError::Fatal(e)) => return Err(e),
                Err(WaitError::Reissue(reason)) => {
                    let wait = backoff(attempts);
                    if Instant::now() + wait > deadline {
                        return Err(AzureError::Transient(format!(
                            "{kind:?} {}: {reason}; gave up after {attempts} attempt(s) within \
                             the {} retry budget",
                            rule_url.path(),
                            humantime::format_duration(self.retry_budget)
                        )));
                    }
                    warn!(?kind, path = rule_url.path(), %reason, attempt = attempts,
                        "ARM operation failed with a retryable error; issuing the write again");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Follow the operation started by `resp`.
    async fn wait(
        &self,
        kind: WriteKind,
        url: &url::Url,
        resp: ArmResponse,
        urgency: Urgency,
    ) -> Result<(), WaitError> {
        let status = resp.status;
        if kind == WriteKind::Delete
            && (status == StatusCode::NO_CONTENT || status == StatusCode::NOT_FOUND)
        {
            return Ok(());
        }
        if status == StatusCode::NOT_FOUND {
            // PUT of a rule into an NSG that does not exist.
            return Err(WaitError::Fatal(AzureError::NsgNotFound(format!(
                "{} ({})",
                url.path(),
                resp.error_code()
            ))));
        }
        let mut polls = Polls {
            urgency,
            sub: subscription_of(url.path()).to_string(),
            done: 0,
            deadline: Instant::now() + self.operation_timeout,
        };
        if let Some(op) = resp.header("azure-asyncoperation") {
            let op_url = parse_url(op).map_err(WaitError::Fatal)?;
            self.check_same_origin(&op_url).map_err(WaitError::Fatal)?;
            return self.poll_async_operation(&op_url, &resp, &mut polls).await;
        }
        match kind {
            WriteKind::Delete => {
                if status == StatusCode::OK {
                    return Ok(());
                }
                if let Some(loc) = resp.header("location") {
                    let loc_url = parse_url(loc).map_err(WaitError::Fatal)?;
                    self.check_same_origin(&loc_url).map_err(WaitError::Fatal)?;
                    return self.poll_location(&loc_url, &resp, &mut polls).await;
                }
                // 202 with no way to follow it: read the rule until it is gone.
                let mut last = resp;
                loop {
                    self.sleep_until_next_poll(&mut polls, &last, url).await?;
                    last = self.poll(url, &polls).await?;
                    if last.status == StatusCode::NOT_FOUND {
                        return Ok(());
                    }
                }
            }
            WriteKind::Put => self.confirm_put(url, resp, &mut polls).await,
        }
    }

    /// A PUT without an async header: read the resource (rule or NSG) until it is provisioned.
    async fn confirm_put(
        &self,
        url: &url::Url,
        mut current: ArmResponse,
        polls: &mut Polls,
    ) -> Result<(), WaitError> {
        loop {
            if current.status == StatusCode::NOT_FOUND {
                return Err(WaitError::Reissue(
                    "the resource vanished while it was being written".into(),
                ));
            }
            let value: serde_json::Value =
                current.json("the resource").map_err(WaitError::Fatal)?;
            match value
                .pointer("/properties/provisioningState")
                .and_then(|s| s.as_str())
            {
                None | Some("Succeeded") => return Ok(()),
                Some("Failed") => {
                    return Err(WaitError::Reissue("the provisioningState is Failed".into()));
                }
                Some(_) => {}
            }
            self.sleep_until_next_poll(polls, &current, url).await?;
            current = self.poll(url, polls).await?;
        }
    }

    /// One poll: a GET with the urgency of the write it follows.
    async fn poll(&self, url: &url::Url, polls: &Polls) -> Result<ArmResponse, WaitError> {
        self.send_with(Method::GET, url, &Outgoing::plain(polls.urgency))
            .await
            .map_err(WaitError::Fatal)
    }

    async fn sleep_until_next_poll(
        &self,
        polls: &mut Polls,
        last: &ArmResponse,
        what: &url::Url,
    ) -> Result<(), WaitError> {
        let plentiful = self.budget.reads_plentiful(&polls.sub, Instant::now());
        let interval = next_poll(poll_hint(last), polls.done, plentiful);
        polls.done += 1;
        if Instant::now() + interval > polls.deadline {
            return Err(WaitError::Fatal(AzureError::Transient(format!(
                "the operation on {} did not finish within {}; it may still complete — the job \
                 will check again",
                what.path(),
                humantime::format_duration(self.operation_timeout)
            ))));
        }
        tokio::time::sleep(interval).await;
        Ok(())
    }

    async fn poll_async_operation(
        &self,
        op_url: &url::Url,
        accepted: &ArmResponse,
        polls: &mut Polls,
    ) -> Result<(), WaitError> {
        self.sleep_until_next_poll(polls, accepted, op_url).await?;
        loop {
            let r = self.poll(op_url, polls).await?;
            if r.status == StatusCode::NOT_FOUND {
                return Err(WaitError::Reissue(
                    "ARM no longer knows the asynchronous operation".into(),
                ));
            }
            let op: AsyncOperationResult =
                r.json("the operation status").map_err(WaitError::Fatal)?;
            match op.status.as_str() {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => {
                    let err = op.error.unwrap_or_else(|| CloudErrorBody {
                        code: op.status.clone(),
                        message: format!("the operation ended {}", op.status),
                        ..CloudErrorBody::default()
                    });
                    return Err(operation_failure(&op.status, err));
                }
                _ => {} // InProgress (or a status this version does not know): keep polling.
            }
            self.sleep_until_next_poll(polls, &r, op_url).await?;
        }
    }

    async fn poll_location(
        &self,
        loc_url: &url::Url,
        accepted: &ArmResponse,
        polls: &mut Polls,
    ) -> Result<(), WaitError> {
        let mut last_hint = poll_hint(accepted);
        loop {
            let interval = next_poll(
                last_hint,
                polls.done,
                self.budget.reads_plentiful(&polls.sub, Instant::now()),
            );
            polls.done += 1;
            if Instant::now() + interval > polls.deadline {
                return Err(WaitError::Fatal(AzureError::Transient(format!(
                    "the operation on {} did not finish within {}",
                    loc_url.path(),
                    humantime::format_duration(self.operation_timeout)
                ))));
            }
            tokio::time::sleep(interval).await;
            let r = self.poll(loc_url, polls).await?;
            if r.status == StatusCode::ACCEPTED {
                last_hint = poll_hint(&r);
                continue;
            }
            return Ok(());
        }
    }
}

/// Where a write's polling stands.
struct Polls {
    urgency: Urgency,
    sub: String,
    done: u32,
    deadline: Instant,
}

/// Map a Failed/Canceled operation to a re-issue or a final error.
fn operation_failure(status: &str, err: CloudErrorBody) -> WaitError {
    let retryable = std::iter::once(&err)
        .chain(err.details.iter())
        .any(|e| RETRYABLE_OPERATION_CODES.contains(&e.code.as_str()));
    if retryable || (status == "Canceled" && err.code == "Canceled") {
        WaitError::Reissue(format!(
            "operation ended {status}: {}: {}",
            err.code, err.message
        ))
    } else {
        WaitError::Fatal(AzureError::OperationFailed {
            code: err.code,
            message: err.message,
        })
    }
}

/// Sort a response into done / retry / fail.
fn classify(method: &Method, url: &url::Url, resp: ArmResponse) -> Attempt {
    let status = resp.status;
    if status.is_success() || status == StatusCode::NOT_FOUND {
        return Attempt::Done(resp);
    }
    let err = parse_error(&resp);
    let what = format!("{method} {} -> {}", url.path(), status.as_u16());
    let retry_after = retry_after(&resp.headers);
    match status.as_u16() {
        401 => Attempt::Unauthorized(format!("{}: {}", err.code, err.message)),
        403 => Attempt::Fail(AzureError::Forbidden(format!(
            "{what}: {}: {} — grant the bot's identity a role with \
             Microsoft.Network/networkSecurityGroups/read, \
             Microsoft.Network/networkSecurityGroups/securityRules/read|write|delete and \
             Microsoft.Network/locations/operations/read on this NSG",
            err.code, err.message
        ))),
        408 | 429 => Attempt::Retry {
            reason: format!("{what} {}: {}", err.code, err.message),
            after: retry_after,
        },
        409 if is_busy(&err) => Attempt::Retry {
            reason: format!("{what} {}: {}", err.code, err.message),
            after: retry_after,
        },
        500..=599 => Attempt::Retry {
            reason: format!("{what} {}: {}", err.code, err.message),
            after: retry_after,
        },
        _ => Attempt::Fail(AzureError::Invalid {
            code: if err.code.is_empty() {
                format!("Http{}", status.as_u16())
            } else {
                err.code
            },
            message: format!("{what}: {}", err.message),
        }),
    }
}

fn is_busy(err: &CloudErrorBody) -> bool {
    std::iter::once(err)
        .chain(err.details.iter())
        .any(|e| BUSY_CODES.contains(&e.code.as_str()))
}

/// The ARM error body, with `x-ms-error-code` as fallback.
fn parse_error(resp: &ArmResponse) -> CloudErrorBody {
    let mut body = serde_json::from_slice::<CloudError>(&resp.body)
        .map(|e| e.error)
        .unwrap_or_default();
    if body.code.is_empty()
        && let Some(code) = resp.header("x-ms-error-code")
    {
        body.code = code.to_string();
    }
    if body.message.is_empty() {
        body.message = String::from_utf8_lossy(&resp.body)
            .chars()
            .take(300)
            .collect();
    }
    body
}

/// `retry-after-ms` / `x-ms-retry-after-ms` (milliseconds) or `Retry-After` (seconds).
/// `Retry-After: 0` counts as "no hint" so the backoff applies instead of a tight loop.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let d = ["retry-after-ms", "x-ms-retry-after-ms"]
        .iter()
        .find_map(|h| get(h).and_then(|v| v.trim().parse::<u64>().ok()))
        .map(Duration::from_millis)
        .or_else(|| {
            get("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
        })?;
    if d.is_zero() {
        None
    } else {
        Some(d.min(MAX_POLL_INTERVAL))
    }
}

/// ARM's hint for the next poll: `retry-after-ms` or `Retry-After`; `None` when absent.
fn poll_hint(resp: &ArmResponse) -> Option<Duration> {
    let get = |name: &str| resp.header(name).and_then(|v| v.trim().parse::<u64>().ok());
    get("retry-after-ms")
        .map(Duration::from_millis)
        .or_else(|| get("retry-after").map(Duration::from_secs))
}

/// How long to wait before poll number `done` (0 = the first): the hint (1 s without one), or
/// sooner — 250 ms for the first, then every second — while reads are plentiful. Never below
/// 100 ms (`Retry-After: 0`) nor above 60 s.
fn next_poll(hint: Option<Duration>, done: u32, reads_plentiful: bool) -> Duration {
    let hinted = hint.unwrap_or(DEFAULT_POLL_INTERVAL);
    let quick = if done == 0 { FIRST_POLL } else { QUICK_POLL };
    let d = if reads_plentiful {
        hinted.min(quick)
    } else {
        hinted
    };
    d.clamp(MIN_POLL_INTERVAL, MAX_POLL_INTERVAL)
}

/// Exponential backoff with jitter: 200 ms, 400 ms, … capped at 10 s, each scaled by a random
/// factor in [0.5, 1.0] so that replicas do not retry in lockstep.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(10));
    let capped = exp.min(BACKOFF_CAP);
    capped.mul_f64(rand::random_range(0.5..=1.0))
}

fn parse_url(s: &str) -> Result<url::Url, AzureError> {
    url::Url::parse(s).map_err(|e| AzureError::Invalid {
        code: "InvalidPollingUrl".into(),
        message: format!("ARM returned an unusable polling URL {s:?}: {e}"),
    })
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "request timed out".to_string()
    } else if e.is_connect() {
        format!("cannot connect to ARM: {e}")
    } else {
        format!("HTTP error talking to ARM: {e}")
    }
}

/// Random id for `x-ms-client-request-id`, in GUID form.
fn random_request_id() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
        u16::from_be_bytes([b[8], b[9]]),
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}
