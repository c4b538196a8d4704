//! Prometheus metrics: counters and histograms recorded where things happen, gauges read from
//! the database when `/metrics` is scraped.
//!
//! One [`Metrics`] handle is built in `app.rs` and cloned into the service (requests by outcome),
//! the ARM client (calls by method and status), the worker (chat API errors, revocation
//! lateness) and the HTTP router (`/metrics`). There is no global registry: two applications in
//! one process (the tests) keep separate numbers.
//!
//! Series (all prefixed `jitbot_`):
//! - `requests_total{outcome}`: `/jit` commands and clicks by outcome (`submitted`, `decided`,
//!   `refused`, `unavailable`).
//! - `arm_calls_total{method,status}`: every HTTP attempt to ARM; `status` is the HTTP status or
//!   `error` (connection failure, timeout).
//! - `chat_api_errors_total{platform,kind}`: failed chat API calls (`rate_limited`, `transient`,
//!   `permanent`).
//! - `revocation_lateness_seconds`: histogram of closed-at minus expires-at for expiring grants.
//! - `grants{status}`: requests by status (pending, approved, applying, active, revoking, …).
//! - `jobs{kind,state}`: the durable job queue by kind and state.
//! - `grant_overdue_seconds{target}`: per target, how far past its expiry the worst grant whose
//!   rule may still be open (active or revoking) is; no series when none is.
//! - `worker_last_loop_timestamp_seconds`: when this replica's worker loop last ran (Unix s).
//! - `siem_pending_events{sink}`: audit events not yet accepted by a SIEM sink, as this replica
//!   saw it when it last ran the sink's delivery (every `siem.poll_interval`, or each retry in an
//!   outage); with several replicas take `max by (sink)`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmLabels {
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChatLabels {
    platform: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: String,
}

struct Inner {
    registry: Registry,
    requests: Family<OutcomeLabels, Counter>,
    arm_calls: Family<ArmLabels, Counter>,
    chat_errors: Family<ChatLabels, Counter>,
    lateness: Histogram,
    grants: Family<StatusLabels, Gauge>,
    jobs: Family<JobLabels, Gauge>,
    overdue: Family<TargetLabels, Gauge>,
    worker_loop: Gauge,
    siem_pending: Family<SinkLabels, Gauge>,
}

/// The application's metrics. Cheap to clone; clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What `/metrics` reads from the database at scrape time (the caller reads it: this module
/// knows nothing of the store).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseGauges {
    /// (status, number of requests in it).
    pub grants: Vec<(String, i64)>,
    /// (kind, state, number of jobs).
    pub jobs: Vec<(String, String, i64)>,
    /// (target, seconds past expiry of its most overdue grant still open).
    pub overdue: Vec<(String, i64)>,
    /// Unix ms of this replica's last worker loop.
    pub worker_heartbeat_ms: i64,
}

/// Buckets of the revocation lateness histogram, in seconds (0.05 s … ~100 s).
const LATENESS_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("jitbot");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "requests",
            "Chat commands and button clicks by outcome",
            requests.clone(),
        );
        let arm_calls = Family::<ArmLabels, Counter>::default();
        registry.register(
            "arm_calls",
            "HTTP calls to Azure Resource Manager by method and status",
            arm_calls.clone(),
        );
        let chat_errors = Family::<ChatLabels, Counter>::default();
        registry.register(
            "chat_api_errors",
            "Failed chat API calls by platform and kind",
            chat_errors.clone(),
        );
        let lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register(
            "revocation_lateness_seconds",
            "How long after its expiry a grant's rule was closed",
            lateness.clone(),
        );
        let grants = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "grants",
            "Requests by status (read from the database at scrape time)",
            grants.clone(),
        );
        let jobs = Family::<JobLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Durable jobs by kind and state (read from the database at scrape time)",
            jobs.clone(),
        );
        let overdue = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "grant_overdue_seconds",
            "Per target, seconds past expiry of the most overdue grant whose rule may still be open",
            overdue.clone(),
        );
        let worker_loop = Gauge::default();
        registry.register(
            "worker_last_loop_timestamp_seconds",
            "Unix time of this replica's last worker loop",
            worker_loop.clone(),
        );
        let siem_pending = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "siem_pending_events",
            "Audit events a SIEM sink has not accepted yet (when this replica last delivered)",
            siem_pending.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                siem_pending,
                registry,
                overdue,
                worker_loop,
                requests,
                arm_calls,
                chat_errors,
                lateness,
                grants,
                jobs,
            }),
        }
    }

    /// A chat command or click ended with `outcome`.
    pub fn request(&self, outcome: &str) {
        self.inner
            .requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One HTTP attempt to ARM; `status` is the HTTP status, or `None` when no answer came.
    pub fn arm_call(&self, method: &str, status: Option<u16>) {
        self.inner
            .arm_calls
            .get_or_create(&ArmLabels {
                method: method.to_string(),
                status: status.map_or_else(|| "error".to_string(), |s| s.to_string()),
            })
            .inc();
    }

    /// A chat API call failed.
    pub fn chat_error(&self, platform: &str, kind: &str) {
        self.inner
            .chat_errors
            .get_or_create(&ChatLabels {
                platform: platform.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// A grant's rule closed `late_ms` after its expiry (negative values count as 0).
    pub fn revocation_lateness(&self, late_ms: i64) {
        self.inner.lateness.observe(late_ms.max(0) as f64 / 1000.0);
    }

    /// `pending` audit events are not yet accepted by SIEM sink `sink`.
    pub fn siem_pending(&self, sink: &str, pending: i64) {
        self.inner
            .siem_pending
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .set(pending);
    }

    /// The Prometheus text exposition, with the database gauges set to `gauges` (series that
    /// are not in it any more are dropped).
    pub fn render(&self, gauges: DatabaseGauges) -> String {
        self.inner.grants.clear();
        for (status, n) in gauges.grants {
            self.inner
                .grants
                .get_or_create(&StatusLabels { status })
                .set(n);
        }
        self.inner.jobs.clear();
        for (kind, state, n) in gauges.jobs {
            self.inner
                .jobs
                .get_or_create(&JobLabels { kind, state })
                .set(n);
        }
        self.inner.overdue.clear();
        for (target, secs) in gauges.overdue {
            self.inner
                .overdue
                .get_or_create(&TargetLabels { target })
                .set(secs);
        }
        self.inner
            .worker_loop
            .set(gauges.worker_heartbeat_ms / 1000);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histogram_render_in_text_format() {
        let m = Metrics::new();
        m.request("submitted");
        m.arm_call("PUT", Some(201));
        m.arm_call("GET", None);
        m.chat_error("slack", "transient");
        m.revocation_lateness(300);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.inner.registry).unwrap();
        assert!(
            out.contains("jitbot_requests_total{outcome=\"submitted\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("jitbot_arm_calls_total{method=\"PUT\",status=\"201\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("jitbot_arm_calls_total{method=\"GET\",status=\"error\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("jitbot_chat_api_errors_total{platform=\"slack\",kind=\"transient\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("jitbot_revocation_lateness_seconds_bucket{le=\"0.5\"} 1"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn database_gauges_show_what_was_read_and_only_that() {
        let m = Metrics::new();
        let out = m.render(DatabaseGauges {
            grants: vec![("active".into(), 2), ("pending".into(), 1)],
            jobs: vec![("apply".into(), "done".into(), 3)],
            overdue: vec![("web1".into(), 42)],
            worker_heartbeat_ms: 1_795_773_600_500,
        });
        assert!(
            out.contains("jitbot_grant_overdue_seconds{target=\"web1\"} 42"),
            "{out}"
        );
        assert!(
            out.contains("jitbot_worker_last_loop_timestamp_seconds 1795773600"),
            "{out}"
        );
        assert!(out.contains("jitbot_grants{status=\"active\"} 2"), "{out}");
        assert!(out.contains("jitbot_grants{status=\"pending\"} 1"), "{out}");
        assert!(
            out.contains("jitbot_jobs{kind=\"apply\",state=\"done\"} 3"),
            "{out}"
        );
        let out = m.render(DatabaseGauges {
            grants: vec![("active".into(), 1)],
            ..DatabaseGauges::default()
        });
        assert!(out.contains("jitbot_grants{status=\"active\"} 1"), "{out}");
        assert!(!out.contains("pending"), "{out}");
        assert!(!out.contains("target=\"web1\""), "{out}");
        assert!(!out.contains("kind=\"apply\""), "{out}");
    }
}
