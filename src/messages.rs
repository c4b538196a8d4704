//! Everything jitbot says to people, built as neutral [`Message`]s from database rows.
//!
//! Cards are rendered from the request's *current* state when a chat job runs, so a late or
//! retried update always shows the truth, and several updates collapse into the newest.

use crate::chat::{Button, ButtonAction, ButtonKind, Field, Message, Tone};
use crate::domain::Platform;
use crate::domain::{GrantDuration, Status};
use crate::policy::Policy;
use crate::store::{DecisionRow, RequestRow};
use chrono::{DateTime, Utc};

mod forms;
pub use forms::{DENY_REASON_MISSING, RequestFormInput, deny_form, form_errors, request_form};

/// Shown on every message when the simulated Azure backend is in use.
pub const SIMULATED_FOOTER: &str = "⚠ SIMULATED AZURE BACKEND: no real firewall rule was changed";

/// A grant's `detail` when the reconciler found its rule deleted in Azure by someone else and
/// ended the grant; the card says so.
pub const CLOSED_OUTSIDE_JITBOT: &str = "closed in Azure outside jitbot";

/// `14:05 UTC` (with seconds for grants shorter than ten minutes, where they matter).
pub fn clock(ms: i64, with_seconds: bool) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    if with_seconds {
        t.format("%H:%M:%S UTC").to_string()
    } else {
        t.format("%H:%M UTC").to_string()
    }
}

/// `2026-11-21 14:05:02 UTC`
/// `at 14:05 UTC (in 58 min)`: a time people read at a glance, with how far off it is.
pub fn until(at: i64, now: i64) -> String {
    let mins = ((at - now).max(0) + 59_999) / 60_000;
    let rel = if mins < 60 {
        format!("in {mins} min")
    } else {
        format!("in {}h {}m", mins / 60, mins % 60)
    };
    format!("at {} ({rel})", clock(at, false))
}

pub fn timestamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

fn short(req: &RequestRow) -> bool {
    req.duration_ms < 600_000
}

/// How to name a person on a platform: a mention where the id belongs to that platform.
pub fn who(policy: &Policy, person: &str, platform: Platform) -> String {
    match policy.people.get(person) {
        Some(p) => match (platform, &p.slack, &p.discord) {
            (Platform::Slack, Some(id), _) | (Platform::Discord, _, Some(id)) => format!("<@{id}>"),
            _ => p.display_name.clone(),
        },
        None => person.to_string(),
    }
}

fn footer(req: &RequestRow) -> Option<String> {
    req.simulated.then(|| SIMULATED_FOOTER.to_string())
}

fn ports_text(req: &RequestRow) -> String {
    format!("{} {}", req.protocol, req.ports.replace(',', ", "))
}

fn summary(policy: &Policy, req: &RequestRow, platform: Platform) -> String {
    format!(
        "{} requests {} port {} for {} from {}",
        who(policy, &req.requester, platform),
        req.target,
        req.ports.replace(',', ", "),
        GrantDuration::from_millis(req.duration_ms),
        req.source
    )
}

/// The approval card: what is asked, where it stands, and the buttons while a decision is open.
pub fn card(
    policy: &Policy,
    req: &RequestRow,
    decisions: &[DecisionRow],
    platform: Platform,
) -> Message {
    let mut fields = vec![
        Field {
            label: "Request".into(),
            value: format!("`{}`", req.id),
        },
        Field {
            label: "Requester".into(),
            value: who(policy, &req.requester, platform),
        },
        Field {
            label: "Target".into(),
            value: req.target.clone(),
        },
        Field {
            label: "Ports".into(),
            value: ports_text(req),
        },
        Field {
            label: "Source".into(),
            value: req.source.clone(),
        },
        Field {
            label: "Duration".into(),
            value: GrantDuration::from_millis(req.duration_ms).to_string(),
        },
        Field {
            label: "Reason".into(),
            value: req.reason.clone().unwrap_or_else(|| "—".into()),
        },
    ];
    if let Some(t) = policy.targets.get(&req.target) {
        fields.push(Field {
            label: "Lockdown".into(),
            value: t.lockdown_text().into(),
        });
        let conditions = t.conditions.describe();
        if !conditions.is_empty() {
            fields.push(Field {
                label: "Conditions".into(),
                value: conditions.join(" · "),
            });
        }
    }
    let decided_by = |round: i64, kind: &str| -> Vec<String> {
        decisions
            .iter()
            .filter(|d| d.round == round && d.decision == kind)
            .map(|d| {
                format!(
                    "{} at {}",
                    who(policy, &d.approver, platform),
                    clock(d.at, true)
                )
            })
            .collect()
    };
    let approvals = decided_by(0, "approve");
    let denials = decided_by(0, "deny");
    let (status, tone) = match req.status {
        Status::Pending => (
            format!(
                "Waiting for approval ({}/{}) · undecided requests expire at {}",
                approvals.len(),
                req.approvals_required,
                clock(req.pending_until, true)
            ),
            Tone::Pending,
        ),
        Status::Approved | Status::Applying => {
            ("Approved: opening the rule…".to_string(), Tone::Info)
        }
        Status::Active => (
            format!(
                "Open until {}",
                clock(req.expires_at.unwrap_or_default(), short(req))
            ),
            Tone::Success,
        ),
        Status::Revoking => ("Closing the rule…".to_string(), Tone::Info),
        Status::Revoked => {
            let at = clock(req.closed_at.unwrap_or_default(), true);
            match req.detail.as_deref() {
                Some(CLOSED_OUTSIDE_JITBOT) => (
                    format!("Closed at {at}: {CLOSED_OUTSIDE_JITBOT}"),
                    Tone::Warning,
                ),
                _ => (format!("Closed at {at}"), Tone::Info),
            }
        }
        Status::Denied => ("Denied".to_string(), Tone::Danger),
        Status::Expired => ("Expired: nobody decided in time".to_string(), Tone::Warning),
        Status::Cancelled => ("Cancelled by the requester".to_string(), Tone::Warning),
        Status::Failed => (
            format!("Failed: {}", req.detail.clone().unwrap_or_default()),
            Tone::Danger,
        ),
    };
    if !approvals.is_empty() {
        fields.push(Field {
            label: "Approved by".into(),
            value: approvals.join(", "),
        });
    }
    if !denials.is_empty() {
        fields.push(Field {
            label: "Denied by".into(),
            value: denials.join(", "),
        });
    }
    fields.push(Field {
        label: "Status".into(),
        value: status,
    });
    let mut buttons = Vec::new();
    if req.status == Status::Pending {
        buttons = decision_buttons(req, 0);
    } else if req.status == Status::Active
        && let (Some(ext), Some(by)) = (req.extension_ms, &req.extension_by)
    {
        fields.push(Field {
            label: "Extension requested".into(),
            value: format!(
                "+{} by {} · expires unanswered at {}",
                GrantDuration::from_millis(ext),
                who(policy, by, platform),
                clock(req.pending_until, true)
            ),
        });
        buttons = decision_buttons(req, req.round);
    }
    Message {
        title: "JIT access request".into(),
        text: summary(policy, req, platform),
        fields,
        buttons,
        footer: footer(req),
        tone,
    }
}

fn decision_buttons(req: &RequestRow, round: i64) -> Vec<Button> {
    let what = if round == 0 { "Open" } else { "Extend" };
    vec![
        Button {
            label: "Approve".into(),
            action: ButtonAction {
                kind: ButtonKind::Approve,
                request_id: req.id.clone(),
                round,
            },
            confirm: Some(format!(
                "{what} {} port {} from {} for {}?",
                req.target,
                req.ports,
                req.source,
                GrantDuration::from_millis(if round == 0 {
                    req.duration_ms
                } else {
                    req.extension_ms.unwrap_or(0)
                })
            )),
        },
        Button {
            label: "Deny".into(),
            action: ButtonAction {
                kind: ButtonKind::Deny,
                request_id: req.id.clone(),
                round,
            },
            confirm: None,
        },
        // A form: the reason reaches the requester and the audit trail.
        Button {
            label: "Deny with reason".into(),
            action: ButtonAction {
                kind: ButtonKind::DenyWithReason,
                request_id: req.id.clone(),
                round,
            },
            confirm: None,
        },
    ]
}

/// The requester's buttons on their open grant: **Extend** by as much as policy allows from now
/// (the grant's own duration, at most 1h, never past the target's maximum; none when nothing
/// fits) and **I'm done**.
pub fn grant_buttons(
    req: &RequestRow,
    expires_at: i64,
    max_duration_ms: Option<i64>,
    now: i64,
) -> Vec<Button> {
    let remaining = expires_at.saturating_sub(now).max(0);
    let room = max_duration_ms.map_or(0, |max| max - remaining);
    // Whole minutes when it is at least one (a clean label), else seconds.
    let ms = req.duration_ms.min(3_600_000).min(room);
    let secs = if ms >= 60_000 {
        ms / 60_000 * 60
    } else {
        ms / 1000
    };
    let mut buttons = Vec::new();
    if secs >= 1 {
        let by = GrantDuration::from_secs(secs as u64);
        buttons.push(Button {
            label: format!("Extend {by}"),
            action: ButtonAction {
                kind: ButtonKind::Extend,
                request_id: req.id.clone(),
                round: secs,
            },
            confirm: None,
        });
    }
    buttons.push(Button {
        label: "I'm done".into(),
        action: ButtonAction {
            kind: ButtonKind::Done,
            request_id: req.id.clone(),
            round: 0,
        },
        confirm: Some(format!("Close {} port {} now?", req.target, req.ports)),
    });
    buttons
}

/// "Recent grants: 3 on web1 in the last 30 days" for the approval card.
pub fn recent_grants_field(req: &RequestRow, recent: i64) -> Field {
    Field {
        label: "Recent grants".into(),
        value: match recent {
            0 => format!("none on {} in the last 30 days", req.target),
            n => format!("{n} on {} in the last 30 days", req.target),
        },
    }
}

/// A short notice about one request (requester DMs and the audit feed).
pub fn notice(req: &RequestRow, tone: Tone, title: &str, text: String) -> Message {
    Message {
        title: title.to_string(),
        text,
        fields: vec![Field {
            label: "Request".into(),
            value: format!("`{}`", req.id),
        }],
        buttons: vec![],
        footer: footer(req),
        tone,
    }
}

/// ` (reason: …)` after a decision when the approver gave one, else nothing.
pub fn because(reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => format!(" (reason: {r})"),
        None => String::new(),
    }
}

/// A reply to the person who typed a command or clicked a button (not tied to a request).
pub fn reply(tone: Tone, title: &str, text: impl Into<String>, simulated: bool) -> Message {
    Message {
        title: title.to_string(),
        text: text.into(),
        fields: vec![],
        buttons: vec![],
        footer: simulated.then(|| SIMULATED_FOOTER.to_string()),
        tone,
    }
}

/// The answer when a compare-and-swap found the request changed since it was read: someone or
/// something else acted first, and the person should look before trying again.
pub fn changed_meanwhile(id: &str, simulated: bool) -> Message {
    reply(
        Tone::Info,
        "Nothing to do",
        format!("`{id}` changed meanwhile; see `/jit status {id}`"),
        simulated,
    )
}

/// The answer to a slash command Slack delivered again over Socket Mode after another jitbot
/// process (or an earlier connection) already handled it: it counted once.
pub fn delivered_again(simulated: bool) -> Message {
    reply(
        Tone::Info,
        "",
        "jitbot had already received this command (Slack sent it again after a reconnect); it counts once. `/jit list` shows your requests.",
        simulated,
    )
}

/// The answer when `/jit extend` cannot go ahead, with the reason.
pub fn cannot_extend(why: String, simulated: bool) -> Message {
    reply(Tone::Warning, "Cannot extend", why, simulated)
}

/// One line describing a request, for `/jit list`.
pub fn line(req: &RequestRow) -> String {
    let when = match req.status {
        Status::Active => format!(
            " until {}",
            clock(req.expires_at.unwrap_or_default(), short(req))
        ),
        Status::Pending => format!(" (undecided until {})", clock(req.pending_until, true)),
        _ => String::new(),
    };
    format!(
        "`{}` {} port {} from {} for {}: {}{}",
        req.id,
        req.target,
        req.ports,
        req.source,
        GrantDuration::from_millis(req.duration_ms),
        req.status,
        when
    )
}

/// `/jit status <id>`: the card's facts as a reply.
pub fn status(
    policy: &Policy,
    req: &RequestRow,
    decisions: &[DecisionRow],
    platform: Platform,
) -> Message {
    let mut m = card(policy, req, decisions, platform);
    m.title = format!("Request {}", req.id);
    m.buttons.clear();
    let placed: Vec<String> = req
        .rules
        .iter()
        .filter_map(|r| {
            r.priority
                .map(|p| format!("priority {p} in `{}`", crate::domain::nsg_name(&r.nsg)))
        })
        .collect();
    if !placed.is_empty() {
        m.fields.push(Field {
            label: "Rule".into(),
            value: format!("`{}` {}", req.rule_name, placed.join(", ")),
        });
    }
    m
}
