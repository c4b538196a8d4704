//! The wording and shape of jitbot's forms (neutral [`Form`]s; the adapters render them).

use crate::chat::form::{Choice, FieldErrors, FieldId, Form, FormField, FormKind, Input};
use crate::chat::{Message, Tone};
use crate::domain::GrantDuration;
use crate::policy::{Person, Target};
use crate::store::RequestRow;

/// Duration presets offered in the request form, in seconds (only those within the target's
/// maximum, plus the maximum itself).
const DURATION_PRESETS: &[u64] = &[900, 1800, 3600, 7200, 14_400, 28_800, 43_200, 86_400];
/// The duration preselected when the target allows it.
const DEFAULT_DURATION_SECS: u64 = 3600;
/// Longest reason a form accepts (the audit trail cuts what it logs anyway).
const REASON_MAX: u16 = 300;

/// What the request form needs to know besides the target.
pub struct RequestFormInput<'a> {
    /// The targets this person may request, by name; the form's target is one of them.
    pub targets: Vec<&'a Target>,
    pub target: &'a Target,
    /// Whether `target` was chosen (the form then carries it) or is the first of the list.
    pub chosen: bool,
    pub person: &'a Person,
    /// `server.public_url` is set: a blank source means the `from me` link.
    pub links: bool,
}

/// The request form for `input.target`: target, ports, duration, source and reason, each
/// prefilled from the policy.
pub fn request_form(input: &RequestFormInput<'_>) -> Form {
    let t = input.target;
    let fields = vec![
        target_field(&input.targets, t),
        ports_field(t),
        duration_field(t),
        source_field(input.person, t, input.links),
        reason_field(t),
    ];
    Form {
        kind: FormKind::Request {
            target: input.chosen.then(|| t.name.clone()),
        },
        title: "Request access".into(),
        intro: Some(format!(
            "Opens a port on a target for a while, after approval by {}.",
            t.approvers_text()
        )),
        fields,
        submit: "Request".into(),
    }
}

fn target_field(targets: &[&Target], t: &Target) -> FormField {
    FormField {
        id: FieldId::Target,
        label: "Target".into(),
        hint: None,
        optional: false,
        input: Input::Choice {
            options: targets
                .iter()
                .map(|x| Choice {
                    label: x.name.clone(),
                    value: x.name.clone(),
                })
                .collect(),
            selected: vec![t.name.clone()],
            multiple: false,
            updates_form: true,
        },
    }
}

fn ports_field(t: &Target) -> FormField {
    FormField {
        id: FieldId::Ports,
        label: "Ports".into(),
        hint: None,
        optional: false,
        input: Input::Choice {
            options: t
                .ports
                .iter()
                .map(|p| Choice {
                    label: format!("{p}/{}", t.protocol.to_ascii_lowercase()),
                    value: p.to_string(),
                })
                .collect(),
            // Least access first: one port unless the person adds more.
            selected: t
                .ports
                .first()
                .map(|p| vec![p.to_string()])
                .unwrap_or_default(),
            multiple: true,
            updates_form: false,
        },
    }
}

fn duration_field(t: &Target) -> FormField {
    let max = t.max_duration.as_secs();
    let mut secs: Vec<u64> = DURATION_PRESETS
        .iter()
        .copied()
        .filter(|s| *s < max)
        .collect();
    secs.push(max);
    let default = secs
        .iter()
        .copied()
        .filter(|s| *s <= DEFAULT_DURATION_SECS)
        .max()
        .unwrap_or(max);
    let text = |s: u64| GrantDuration::from_secs(s).to_string();
    FormField {
        id: FieldId::Duration,
        label: "For how long".into(),
        hint: Some(format!("at most {}", t.max_duration)),
        optional: false,
        input: Input::Choice {
            options: secs
                .iter()
                .map(|s| Choice {
                    label: text(*s),
                    value: text(*s),
                })
                .collect(),
            selected: vec![text(default)],
            multiple: false,
            updates_form: false,
        },
    }
}

fn source_field(person: &Person, t: &Target, links: bool) -> FormField {
    let blank = if links {
        "leave blank to confirm your address through a one-time link".to_string()
    } else {
        match &t.default_source {
            Some(s) => format!("leave blank for the target's default, {s}"),
            None => "an IP or CIDR is needed".to_string(),
        }
    };
    FormField {
        id: FieldId::Source,
        label: "From (your IP or CIDR)".into(),
        hint: Some(format!("allowed: {}; {blank}", t.sources_text())),
        optional: true,
        input: Input::Text {
            value: person.sources.first().map(|s| s.to_string()),
            placeholder: Some("203.0.113.7".into()),
            multiline: false,
            max_length: 64,
        },
    }
}

fn reason_field(t: &Target) -> FormField {
    let c = &t.conditions;
    let hint = match &c.reason_pattern {
        Some(p) => Some(format!("must match `{}`, e.g. a ticket number", p.as_str())),
        None if c.require_reason => Some("required for this target".to_string()),
        None => None,
    };
    FormField {
        id: FieldId::Reason,
        label: "Reason (shown to approvers)".into(),
        hint,
        optional: !c.require_reason,
        input: Input::Text {
            value: None,
            placeholder: Some("deploy hotfix".into()),
            multiline: true,
            max_length: REASON_MAX,
        },
    }
}

/// **Deny with reason**: one required field; the reason reaches the requester and the audit
/// trail.
pub fn deny_form(req: &RequestRow, round: i64) -> Form {
    let what = if round == 0 { "request" } else { "extension" };
    Form {
        kind: FormKind::Deny {
            request_id: req.id.clone(),
            round,
        },
        title: "Deny with reason".into(),
        intro: Some(format!(
            "Deny the {what} `{}`: {} port {} from {}. The requester reads your reason.",
            req.id, req.target, req.ports, req.source
        )),
        fields: vec![FormField {
            id: FieldId::Reason,
            label: "Why".into(),
            hint: None,
            optional: false,
            input: Input::Text {
                value: None,
                placeholder: Some("not during the change freeze".into()),
                multiline: true,
                max_length: REASON_MAX,
            },
        }],
        submit: "Deny".into(),
    }
}

/// The answer to a form with errors where the platform cannot show them beside the fields
/// (Discord): one line per field.
pub fn form_errors(errors: &FieldErrors, simulated: bool) -> Message {
    let lines: Vec<String> = errors
        .iter()
        .map(|(f, m)| format!("• {}: {m}", f.as_str()))
        .collect();
    super::reply(
        Tone::Warning,
        "Please fix the form",
        format!(
            "Nothing was requested.\n{}\nRun `/jit form` to try again.",
            lines.join("\n")
        ),
        simulated,
    )
}

/// A deny form submitted without a reason.
pub const DENY_REASON_MISSING: &str = "say why, so the requester knows what to change";
