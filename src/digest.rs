//! The daily access review: at `digest.at` (UTC) a summary of the last 24 hours goes to the
//! audit channel — requests by target and person, what was opened, denied, refused and why, the
//! longest grants, drift repairs, and every grant still open. Built from the audit trail (what
//! happened) and the open requests (what is open now); pure, so it is tested as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{NaiveTime, Timelike};

use crate::chat::{Message, Tone};
use crate::domain::GrantDuration;
use crate::messages;
use crate::store::{AuditEvent, RequestRow};

/// When the digest runs each day: `HH:MM` or `HH:MM:SS`, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestAt(NaiveTime);

impl DigestAt {
    pub fn parse(s: &str) -> Result<DigestAt, String> {
        NaiveTime::parse_from_str(s, "%H:%M:%S")
            .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
            .map(DigestAt)
            .map_err(|_| format!("digest.at: `{s}` is not a time of day like \"09:00\" (UTC)"))
    }

    /// The first time at or after `now_ms` (Unix ms) when the digest is due.
    pub fn next_after(self, now_ms: i64) -> i64 {
        const DAY: i64 = 86_400_000;
        let day_start = now_ms.div_euclid(DAY) * DAY;
        let at = day_start + i64::from(self.0.num_seconds_from_midnight()) * 1000;
        if at > now_ms { at } else { at + DAY }
    }
}

/// The last 24 hours, counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Digest {
    pub requested_by_target: BTreeMap<String, usize>,
    pub requested_by_person: BTreeMap<String, usize>,
    pub opened: usize,
    pub denied: usize,
    pub expired: usize,
    pub failed: usize,
    /// (request id, target, seconds granted), longest first, at most three.
    pub longest: Vec<(String, String, i64)>,
    /// Refusals by the rule that refused.
    pub refusals: BTreeMap<String, usize>,
    /// Drift findings and repairs by kind (`drift_closed`, `baseline_restored`, …).
    pub drift: BTreeMap<String, usize>,
    /// Break-glass grants: (request id, person, reason).
    pub break_glass: Vec<(String, String, String)>,
}

const DRIFT_KINDS: &[&str] = &[
    "drift_orphan_removed",
    "drift_restored",
    "drift_unrestored",
    "drift_closed",
    "drift_narrowed",
    "baseline_restored",
    "revocation_delayed",
    "target_resolved",
];

impl Digest {
    /// Counts `events` (those of the window).
    pub fn of(events: &[AuditEvent]) -> Digest {
        let mut d = Digest::default();
        let mut longest = Vec::new();
        for e in events {
            let detail_str = |k: &str| e.detail[k].as_str().unwrap_or("?").to_string();
            match e.kind.as_str() {
                "requested" => {
                    *d.requested_by_target
                        .entry(detail_str("target"))
                        .or_default() += 1;
                    let who = e.actor.clone().unwrap_or_else(|| "?".into());
                    *d.requested_by_person.entry(who).or_default() += 1;
                }
                "applied" => {
                    d.opened += 1;
                    let granted = e.detail["expires_at"].as_i64().unwrap_or(0)
                        - e.detail["apply_started_at"].as_i64().unwrap_or(0);
                    let id = e.request_id.clone().unwrap_or_default();
                    longest.push((id, String::new(), granted / 1000));
                }
                "denied" => d.denied += 1,
                "expired" => d.expired += 1,
                "failed" => d.failed += 1,
                "refused" => *d.refusals.entry(detail_str("rule")).or_default() += 1,
                "break_glass" => d.break_glass.push((
                    e.request_id.clone().unwrap_or_default(),
                    e.actor.clone().unwrap_or_default(),
                    detail_str("reason"),
                )),
                k if DRIFT_KINDS.contains(&k) => *d.drift.entry(k.to_string()).or_default() += 1,
                _ => {}
            }
        }
        // The target of each opened grant, from its request event.
        let target_of: BTreeMap<&str, String> = events
            .iter()
            .filter(|e| e.kind == "requested")
            .filter_map(|e| {
                Some((
                    e.request_id.as_deref()?,
                    e.detail["target"].as_str()?.to_string(),
                ))
            })
            .collect();
        for (id, target, _) in &mut longest {
            *target = target_of
                .get(id.as_str())
                .cloned()
                .unwrap_or_else(|| "?".into());
        }
        longest.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        longest.truncate(3);
        d.longest = longest;
        d
    }

    /// The message for the audit channel; `open` are the grants open now.
    pub fn message(&self, open: &[RequestRow], simulated: bool) -> Message {
        let count = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let requested: usize = self.requested_by_target.values().sum();
        let plural = if requested == 1 {
            "request"
        } else {
            "requests"
        };
        let mut text = format!(
            "Last 24 hours: {requested} {plural}, {} opened, {} denied, {} expired undecided, {} failed.",
            self.opened, self.denied, self.expired, self.failed
        );
        let mut line = |label: &str, value: String| {
            if !value.is_empty() {
                let _ = write!(text, "\n{label}: {value}");
            }
        };
        line("By target", count(&self.requested_by_target));
        line("By person", count(&self.requested_by_person));
        line(
            "Longest grants",
            self.longest
                .iter()
                .map(|(id, target, secs)| {
                    format!("`{id}` {target} {}", GrantDuration::from_secs(*secs as u64))
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
        line(
            "BREAK-GLASS",
            self.break_glass
                .iter()
                .map(|(id, who, why)| format!("`{id}` by {who}: {why}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        line("Refused", count(&self.refusals));
        line("Drift and repairs", count(&self.drift));
        let open_now = if open.is_empty() {
            "none".to_string()
        } else {
            open.iter()
                .map(|r| {
                    format!(
                        "`{}` {} port {} for {} from {} until {}",
                        r.id,
                        r.target,
                        r.ports,
                        r.requester,
                        r.source,
                        messages::clock(r.expires_at.unwrap_or_default(), false)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let _ = write!(text, "\nOpen now: {open_now}");
        messages::reply(Tone::Info, "Daily access review", text, simulated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(
        kind: &str,
        id: Option<&str>,
        actor: Option<&str>,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            seq: 0,
            at: 0,
            kind: kind.into(),
            request_id: id.map(str::to_string),
            actor: actor.map(str::to_string),
            detail,
            simulated: false,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn the_next_digest_is_today_if_still_ahead_else_tomorrow() {
        let at = DigestAt::parse("09:00").unwrap();
        let day = 1_795_737_600_000; // 2026-11-27T00:00:00Z
        assert_eq!(at.next_after(day + 3_600_000), day + 9 * 3_600_000);
        assert_eq!(at.next_after(day + 9 * 3_600_000), day + 33 * 3_600_000);
        assert_eq!(
            DigestAt::parse("23:59:30").unwrap().next_after(day),
            day + 86_370_000
        );
        assert!(DigestAt::parse("9am").is_err() && DigestAt::parse("25:00").is_err());
    }

    #[test]
    fn the_digest_counts_what_happened_and_lists_what_is_open() {
        let events = [
            event(
                "requested",
                Some("req_a"),
                Some("alice"),
                json!({ "target": "web1" }),
            ),
            event(
                "requested",
                Some("req_b"),
                Some("bob"),
                json!({ "target": "db1" }),
            ),
            event(
                "requested",
                Some("req_c"),
                Some("alice"),
                json!({ "target": "web1" }),
            ),
            event(
                "applied",
                Some("req_a"),
                None,
                json!({ "apply_started_at": 0, "expires_at": 3_600_000 }),
            ),
            event(
                "applied",
                Some("req_b"),
                None,
                json!({ "apply_started_at": 0, "expires_at": 600_000 }),
            ),
            event("denied", Some("req_c"), Some("carol"), json!({})),
            event(
                "refused",
                None,
                Some("mallory"),
                json!({ "rule": "not_an_approver" }),
            ),
            event(
                "refused",
                None,
                Some("mallory"),
                json!({ "rule": "not_an_approver" }),
            ),
            event("drift_closed", Some("req_a"), None, json!({})),
            event("checkpoint", None, None, json!({})),
            event(
                "break_glass",
                Some("req_b"),
                Some("bob"),
                json!({ "reason": "INC-9 outage" }),
            ),
        ];
        let d = Digest::of(&events);
        assert_eq!(
            d.requested_by_target,
            [("db1".into(), 1), ("web1".into(), 2)].into()
        );
        assert_eq!(
            d.requested_by_person,
            [("alice".into(), 2), ("bob".into(), 1)].into()
        );
        assert_eq!((d.opened, d.denied, d.expired, d.failed), (2, 1, 0, 0));
        assert_eq!(d.longest[0], ("req_a".into(), "web1".into(), 3600));
        assert_eq!(d.refusals, [("not_an_approver".into(), 2)].into());
        assert_eq!(d.drift, [("drift_closed".into(), 1)].into());
        let text = d.message(&[], false).text;
        assert!(
            text.starts_with("Last 24 hours: 3 requests, 2 opened, 1 denied"),
            "{text}"
        );
        assert!(text.contains("Longest grants: `req_a` web1 1h"), "{text}");
        assert!(text.contains("Refused: not_an_approver 2"), "{text}");
        assert!(
            text.contains("BREAK-GLASS: `req_b` by bob: INC-9 outage"),
            "{text}"
        );
        assert!(text.ends_with("Open now: none"), "{text}");
    }
}
