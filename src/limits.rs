//! Abuse limits, as pure judgements over counts the request's transaction read from the database
//! (`store::limits`): per person, requests waiting at once (`limits.max_pending_per_person`) and
//! requests per hour (`limits.max_requests_per_hour`); per target, requests open or waiting at
//! once (`max_concurrent_grants`); per auto-approve rule, uses per interval (`max_uses` per `per`).
//!
//! A limit that is hit refuses the request with a sentence saying which limit and when it frees
//! up; the caller audits it (`refused`, with [`LimitHit::detail`]). An exhausted auto-approve rule
//! does not refuse: the request waits for approvers like any other ([`auto_approve_exhausted`]).

use crate::messages::until;
use crate::policy::{AutoApprove, PersonLimits, Refusal, Target};
use crate::store::Tally;
use serde_json::{Value, json};

/// One hour in milliseconds: the window of `max_requests_per_hour`.
pub const HOUR_MS: i64 = 3_600_000;

/// What the request's transaction counted, for [`check`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// The person's requests waiting for approval (earliest: the first times out).
    pub pending: Tally,
    /// The person's requests in the last hour (earliest: the oldest of them).
    pub last_hour: Tally,
    /// The target's requests waiting, open or closing (earliest: the first open one expires).
    pub on_target: Tally,
}

/// A limit the request would exceed: the person's answer and the audit event's `limit` detail.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitHit {
    pub refusal: Refusal,
    /// `{"name", "max", "count", "frees_at"}` (Unix ms, or null when it frees on someone's
    /// decision).
    pub detail: Value,
}

fn hit(rule: &'static str, max: u32, count: i64, frees_at: Option<i64>, text: String) -> LimitHit {
    LimitHit {
        refusal: Refusal::new(rule, text),
        detail: json!({ "name": rule, "max": max, "count": count, "frees_at": frees_at }),
    }
}

/// The first limit a new request of this person on this target would exceed, if any.
pub fn check(limits: &PersonLimits, target: &Target, c: &Counts, now: i64) -> Option<LimitHit> {
    let max = limits.max_pending_per_person;
    if c.pending.count >= i64::from(max) {
        let first = c.pending.earliest;
        let when = first.map_or(String::new(), |at| {
            format!(" (the first times out {})", until(at, now))
        });
        return Some(hit(
            "limit_pending_per_person",
            max,
            c.pending.count,
            first,
            format!(
                "you already have {} requests waiting for approval, the most allowed at once (limits.max_pending_per_person = {max}); a place frees up when one of them is decided or times out{when}",
                c.pending.count
            ),
        ));
    }
    let max = limits.max_requests_per_hour;
    if c.last_hour.count >= i64::from(max) {
        let frees = c.last_hour.earliest.map(|t| t + HOUR_MS);
        let when = frees.map_or("within the hour".to_string(), |at| until(at, now));
        return Some(hit(
            "limit_requests_per_hour",
            max,
            c.last_hour.count,
            frees,
            format!(
                "you have made {} requests in the last hour, the most allowed (limits.max_requests_per_hour = {max}); you can ask again {when}",
                c.last_hour.count
            ),
        ));
    }
    concurrent(target, &c.on_target, now)
}

/// `max_concurrent_grants`: requests waiting count too, so approving one never exceeds it.
fn concurrent(target: &Target, on_target: &Tally, now: i64) -> Option<LimitHit> {
    let max = target.max_concurrent_grants?;
    if on_target.count < i64::from(max) {
        return None;
    }
    let when = on_target
        .earliest
        .map_or("when one of them is decided or closed".to_string(), |at| {
            format!("when one closes (the next closes {})", until(at, now))
        });
    Some(hit(
        "limit_concurrent_grants",
        max,
        on_target.count,
        on_target.earliest,
        format!(
            "{} already has {} requests open or waiting, the most it allows at once (max_concurrent_grants = {max}); a place frees up {when}",
            target.name, on_target.count
        ),
    ))
}

/// When `rule` has been used `max_uses` times within `per`: the sentence telling the requester
/// that their request waits for approvers instead, and when auto-approval frees up.
pub fn auto_approve_exhausted(
    target: &str,
    rule: &AutoApprove,
    uses: &Tally,
    now: i64,
) -> Option<String> {
    let (max, per) = rule.max_uses?;
    if uses.count < i64::from(max) {
        return None;
    }
    let when = uses.earliest.map_or(String::new(), |t| {
        format!(" again {}", until(t + per.as_millis(), now))
    });
    Some(format!(
        "auto-approval on {target} is used up ({max} per {per}) and frees up{when}, so this request waits for approvers"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::GrantDuration;
    use crate::policy::fixtures::target;

    fn tally(count: i64, earliest: Option<i64>) -> Tally {
        Tally { count, earliest }
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn each_limit_refuses_at_its_maximum_and_not_below() {
        let limits = PersonLimits {
            max_pending_per_person: 2,
            max_requests_per_hour: 3,
        };
        let mut t = target("web1");
        t.max_concurrent_grants = Some(1);
        let rows = [
            (Counts::default(), None),
            (
                Counts {
                    pending: tally(2, Some(NOW + 60_000)),
                    ..Default::default()
                },
                Some("limit_pending_per_person"),
            ),
            (
                Counts {
                    last_hour: tally(3, Some(NOW - 1_800_000)),
                    ..Default::default()
                },
                Some("limit_requests_per_hour"),
            ),
            (
                Counts {
                    on_target: tally(1, None),
                    ..Default::default()
                },
                Some("limit_concurrent_grants"),
            ),
            (
                Counts {
                    pending: tally(1, None),
                    last_hour: tally(2, None),
                    on_target: tally(0, None),
                },
                None,
            ),
        ];
        for (counts, want) in rows {
            let got = check(&limits, &t, &counts, NOW).map(|h| h.refusal.rule);
            assert_eq!(got, want, "{counts:?}");
        }
    }

    #[test]
    fn the_hourly_limit_says_when_it_frees_up() {
        let limits = PersonLimits {
            max_pending_per_person: 9,
            max_requests_per_hour: 1,
        };
        let counts = Counts {
            last_hour: tally(1, Some(NOW - 30 * 60_000)),
            ..Default::default()
        };
        let hit = check(&limits, &target("web1"), &counts, NOW).expect("refused");
        assert!(hit.refusal.message.contains("in 30 min"), "{hit:?}");
        assert_eq!(hit.detail["frees_at"], json!(NOW + 30 * 60_000));
    }

    #[test]
    fn an_auto_approve_rule_is_used_up_at_max_uses() {
        let rule = AutoApprove {
            requesters: vec![],
            ports: vec![],
            max_duration: GrantDuration::from_secs(3600),
            max_uses: Some((2, GrantDuration::from_secs(3600))),
        };
        assert_eq!(
            auto_approve_exhausted("web1", &rule, &tally(1, Some(NOW)), NOW),
            None
        );
        let text =
            auto_approve_exhausted("web1", &rule, &tally(2, Some(NOW)), NOW).expect("used up");
        assert!(
            text.contains("2 per 1h") && text.contains("in 1h 0m"),
            "{text}"
        );
        let unlimited = AutoApprove {
            max_uses: None,
            ..rule
        };
        assert_eq!(
            auto_approve_exhausted("web1", &unlimited, &tally(99, None), NOW),
            None
        );
    }
}
