//! A client-side model of ARM's request budget, so jitbot slows down before ARM throttles it and,
//! when the budget runs short, spends what is left on closing rules first.
//!
//! ARM throttles per subscription and principal with token buckets (PROTOCOLS.md, "Limits"):
//! writes and deletes 200 burst refilling 10/s, reads 250 refilling 25/s; Microsoft.Network adds
//! about 1,000 PUT/DELETE per 5 minutes. The model keeps one bucket of each per subscription,
//! refills it with the clock, corrects it with what ARM says (`x-ms-ratelimit-remaining-
//! subscription-reads|writes|deletes`; a header larger than the modelled burst raises the burst,
//! so a subscription with bigger limits is not held back) and empties it on a 429 until its
//! `Retry-After` has passed.
//!
//! Each request has an [`Urgency`]. A request may go when its bucket holds more than its
//! urgency's reserve: closings (DELETEs, coalesced writes that remove a rule, and their reads and
//! polls) may use the last token, openings leave a quarter of the bucket to closings, and reads
//! that can wait (the reconciler, inventory) leave half. So with a full bucket nothing waits, and
//! as it drains reads stop first, then openings, and closings go on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// How much a request may wait for budget: lower sorts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Urgency {
    /// Takes access away: a DELETE, a coalesced write with a removal, and their reads.
    Close,
    /// Gives access: a PUT, and its reads.
    Open,
    /// A read that can wait (the reconciler, inventory, `list_rules`).
    Read,
}

impl Urgency {
    /// The share of a bucket this urgency must leave to more urgent requests.
    fn reserve(self) -> f64 {
        match self {
            Urgency::Close => 0.0,
            Urgency::Open => 0.25,
            Urgency::Read => 0.5,
        }
    }
}

/// ARM's limits as the model assumes them (real ARM's by default).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Burst and refill per second of the write bucket (PUT).
    pub(crate) writes: (f64, f64),
    /// Burst and refill per second of the delete bucket.
    pub(crate) deletes: (f64, f64),
    /// Burst and refill per second of the read bucket (GET, polls included).
    pub(crate) reads: (f64, f64),
    /// Microsoft.Network's PUT/DELETE cap, as a bucket: 1,000 per 300 s.
    pub(crate) network: (f64, f64),
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            writes: (200.0, 10.0),
            deletes: (200.0, 10.0),
            reads: (250.0, 25.0),
            network: (1000.0, 1000.0 / 300.0),
        }
    }
}

/// One modelled bucket.
#[derive(Debug, Clone)]
struct Level {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
    /// After a 429: nothing goes before this.
    blocked_until: Option<Instant>,
}

impl Level {
    fn new((burst, rate): (f64, f64), now: Instant) -> Self {
        Level {
            tokens: burst,
            burst,
            rate,
            last: now,
            blocked_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// How long until a request of `urgency` may take a token (zero: now).
    fn wait(&mut self, urgency: Urgency, now: Instant) -> Duration {
        self.refill(now);
        if let Some(until) = self.blocked_until {
            if until > now {
                return until - now;
            }
            self.blocked_until = None;
        }
        let need = (self.burst * urgency.reserve()).max(0.0) + 1.0;
        if self.tokens >= need {
            return Duration::ZERO;
        }
        if self.rate <= 0.0 {
            return Duration::from_secs(1);
        }
        Duration::from_secs_f64((need - self.tokens) / self.rate)
    }
}

/// The buckets of one subscription.
#[derive(Debug, Clone)]
struct Subscription {
    reads: Level,
    writes: Level,
    deletes: Level,
    network: Level,
}

impl Subscription {
    fn new(limits: &Limits, now: Instant) -> Self {
        Subscription {
            reads: Level::new(limits.reads, now),
            writes: Level::new(limits.writes, now),
            deletes: Level::new(limits.deletes, now),
            network: Level::new(limits.network, now),
        }
    }

    /// The buckets a request of `method` draws from.
    fn levels(&mut self, method: &Method) -> Vec<&mut Level> {
        match *method {
            Method::PUT | Method::PATCH | Method::POST => vec![&mut self.writes, &mut self.network],
            Method::DELETE => vec![&mut self.deletes, &mut self.network],
            _ => vec![&mut self.reads],
        }
    }
}

/// The model: per subscription, behind a std mutex (nothing awaits while holding it).
pub(crate) struct Budget {
    limits: Limits,
    subs: Mutex<HashMap<String, Subscription>>,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Self {
        Budget {
            limits,
            subs: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, sub: &str, now: Instant, f: impl FnOnce(&mut Subscription) -> T) -> T {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let entry = subs
            .entry(sub.to_ascii_lowercase())
            .or_insert_with(|| Subscription::new(&self.limits, now));
        f(entry)
    }

    /// Takes a token for the request when it may go at `now`, else says how long to wait.
    pub(crate) fn try_take(
        &self,
        sub: &str,
        method: &Method,
        urgency: Urgency,
        now: Instant,
    ) -> Result<(), Duration> {
        self.with(sub, now, |s| {
            let mut levels = s.levels(method);
            let wait = levels
                .iter_mut()
                .map(|l| l.wait(urgency, now))
                .max()
                .unwrap_or_default();
            if !wait.is_zero() {
                return Err(wait);
            }
            for l in levels {
                l.tokens -= 1.0;
            }
            Ok(())
        })
    }

    /// Waits until the request may go, then takes its token.
    pub(crate) async fn acquire(&self, sub: &str, method: &Method, urgency: Urgency) {
        loop {
            match self.try_take(sub, method, urgency, Instant::now()) {
                Ok(()) => return,
                Err(wait) => {
                    tracing::debug!(sub, %method, ?urgency, wait_ms = wait.as_millis() as u64,
                        "ARM budget is low; waiting");
                    tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                }
            }
        }
    }

    /// Whether reads are plentiful enough to poll sooner than `Retry-After` asks.
    pub(crate) fn reads_plentiful(&self, sub: &str, now: Instant) -> bool {
        self.with(sub, now, |s| s.reads.wait(Urgency::Read, now).is_zero())
    }

    /// Corrects the model with ARM's `x-ms-ratelimit-remaining-subscription-*` headers.
    pub(crate) fn observe(&self, sub: &str, headers: &HeaderMap, now: Instant) {
        let remaining = |kind: &str| {
            headers
                .get(format!("x-ms-ratelimit-remaining-subscription-{kind}"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let found = [
            ("reads", remaining("reads")),
            ("writes", remaining("writes")),
            ("deletes", remaining("deletes")),
        ];
        if found.iter().all(|(_, r)| r.is_none()) {
            return;
        }
        self.with(sub, now, |s| {
            for (kind, value) in found {
                let Some(value) = value else { continue };
                let level = match kind {
                    "reads" => &mut s.reads,
                    "writes" => &mut s.writes,
                    _ => &mut s.deletes,
                };
                level.refill(now);
                level.burst = level.burst.max(value);
                level.tokens = value;
            }
        });
    }

    /// ARM throttled a request of `method`: nothing of its kind goes until `retry_after` has
    /// passed. (Which bucket ran dry is not said; the `…-remaining-…: 0` header, when ARM sends
    /// it, empties the right one in [`Budget::observe`].)
    pub(crate) fn throttled(
        &self,
        sub: &str,
        method: &Method,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        let until = now + retry_after.unwrap_or(Duration::from_secs(5));
        self.with(sub, now, |s| {
            for l in s.levels(method) {
                l.blocked_until = Some(l.blocked_until.map_or(until, |u| u.max(until)));
            }
        });
    }
}

/// The subscription id of an ARM URL path (`/subscriptions/{id}/…`), or "" for other paths.
pub(crate) fn subscription_of(path: &str) -> &str {
    let mut seg = path.split('/').filter(|s| !s.is_empty());
    match (seg.next(), seg.next()) {
        (Some(s), Some(id)) if s.eq_ignore_ascii_case("subscriptions") => id,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Budget {
        Budget::new(Limits {
            writes: (8.0, 1.0),
            deletes: (8.0, 1.0),
            reads: (8.0, 1.0),
            network: (1000.0, 10.0),
        })
    }

    fn drain(b: &Budget, method: &Method, n: usize, now: Instant) {
        for _ in 0..n {
            b.try_take("s", method, Urgency::Close, now).unwrap();
        }
    }

    #[tokio::test]
    async fn a_full_bucket_lets_every_urgency_through() {
        let b = small();
        let now = Instant::now();
        for u in [Urgency::Read, Urgency::Open, Urgency::Close] {
            assert_eq!(b.try_take("s", &Method::PUT, u, now), Ok(()));
        }
    }

    #[tokio::test]
    async fn as_the_bucket_drains_reads_stop_first_then_openings_and_closings_go_on() {
        let b = small();
        let now = Instant::now();
        drain(&b, &Method::GET, 4, now); // 4 of 8 left: a read needs 4 + 1
        assert!(b.try_take("s", &Method::GET, Urgency::Read, now).is_err());
        // An opening needs 2 + 1.
        assert!(b.try_take("s", &Method::GET, Urgency::Open, now).is_ok());
        assert!(b.try_take("s", &Method::GET, Urgency::Open, now).is_ok());
        assert!(b.try_take("s", &Method::GET, Urgency::Open, now).is_err());
        assert!(b.try_take("s", &Method::GET, Urgency::Close, now).is_ok());
        assert!(b.try_take("s", &Method::GET, Urgency::Close, now).is_ok());
        assert!(b.try_take("s", &Method::GET, Urgency::Close, now).is_err());
    }

    #[tokio::test]
    async fn a_waiting_request_is_told_when_the_refill_lets_it_go() {
        let b = small();
        let now = Instant::now();
        drain(&b, &Method::DELETE, 8, now);
        let wait = b
            .try_take("s", &Method::DELETE, Urgency::Close, now)
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(
            b.try_take("s", &Method::DELETE, Urgency::Close, now + wait)
                .is_ok()
        );
        // Writes and deletes are separate buckets; the other subscription is untouched.
        assert!(b.try_take("s", &Method::PUT, Urgency::Open, now).is_ok());
        assert!(b.try_take("t", &Method::DELETE, Urgency::Open, now).is_ok());
    }

    #[tokio::test]
    async fn headers_correct_the_model_both_ways() {
        let b = small();
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert(
            "x-ms-ratelimit-remaining-subscription-writes",
            "1".parse().unwrap(),
        );
        b.observe("s", &h, now);
        assert!(b.try_take("s", &Method::PUT, Urgency::Open, now).is_err());
        assert!(b.try_take("s", &Method::PUT, Urgency::Close, now).is_ok());
        h.insert(
            "x-ms-ratelimit-remaining-subscription-writes",
            "1199".parse().unwrap(),
        );
        b.observe("s", &h, now);
        for _ in 0..600 {
            assert!(b.try_take("s", &Method::PUT, Urgency::Open, now).is_ok());
        }
    }

    #[tokio::test]
    async fn a_429_stops_everyone_until_retry_after() {
        let b = small();
        let now = Instant::now();
        b.throttled("s", &Method::GET, Some(Duration::from_secs(3)), now);
        let wait = b
            .try_take("s", &Method::GET, Urgency::Close, now)
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(3));
        assert!(!b.reads_plentiful("s", now));
        assert!(
            b.try_take("s", &Method::GET, Urgency::Close, now + wait)
                .is_ok()
        );
    }

    #[test]
    fn the_subscription_is_read_from_the_path() {
        assert_eq!(
            subscription_of("/subscriptions/abc/resourceGroups/rg/providers/x"),
            "abc"
        );
        assert_eq!(subscription_of("/providers/x"), "");
    }
}
