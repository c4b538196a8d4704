//! Slack adapter: request verification, parsing of slash commands and button clicks, Block Kit
//! rendering of the neutral [`Message`], and the Web API client behind [`ChatApi`].
//!
//! Inbound flow (the HTTP handlers): [`verify_request`] over the raw bytes first, then
//! [`parse_slash_command`] or [`parse_interaction`]. Outbound flow (the job runner): [`SlackApi`]
//! posts and updates cards rendered by [`render_blocks`], and classifies every failure as a
//! [`ChatError`] so the runner can decide whether and when to retry. [`SlackApi`] never retries
//! or sleeps by itself.
//!
//! Button identity travels in Slack's `action_id` (`jit_approve` / `jit_deny`) and `value`
//! (`<request_id>` for round 0, `<request_id>:<round>` otherwise); [`decode_action`] is the
//! inverse of the encoding used by [`render_blocks`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;
use slack_morphism::signature_verifier::{
    SlackEventSignatureVerifier, SlackEventSignatureVerifierError,
};

use super::{ButtonAction, ButtonKind, ChatApi, ChatError, Dedupe, Message, MessageRef, Tone};

mod form;
pub use form::render_view as render_form;
pub use form::{CALLBACK as FORM_CALLBACK, FormChange, FormSubmission};
pub use form::{answer_response as form_answer, errors_response as form_errors};

/// Largest accepted distance between the request timestamp and now, in either direction.
pub const MAX_SIGNATURE_SKEW_SECS: i64 = 300;

/// `action_id` of the Approve button.
pub const ACTION_APPROVE: &str = "jit_approve";
/// `action_id` of the Deny button.
pub const ACTION_DENY: &str = "jit_deny";
/// `action_id` of the requester's Extend button on an open grant.
pub const ACTION_EXTEND: &str = "jit_extend";
/// `action_id` of the requester's "I'm done" button on an open grant.
pub const ACTION_DONE: &str = "jit_done";
/// `action_id` of an approver's **Deny with reason** button (opens a form).
pub const ACTION_DENY_REASON: &str = "jit_deny_reason";
/// Prefix of the `block_id` of the actions block holding a request's buttons.
pub const ACTIONS_BLOCK_PREFIX: &str = "jit_actions:";

/// Default Web API base URL.
pub const DEFAULT_API_BASE_URL: &str = "https://slack.com/api/";

/// How long one Web API call may take before it is reported as [`ChatError::Transient`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Retry delay used when Slack signals a rate limit without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

// Block Kit and Web API limits (https://docs.slack.dev/reference/block-kit).
const MAX_BUTTON_TEXT: usize = 75;
const MAX_BUTTON_VALUE: usize = 2000;
const MAX_BLOCK_ID: usize = 255;
const MAX_SECTION_TEXT: usize = 3000;
const MAX_FIELD_TEXT: usize = 2000;
const MAX_FIELDS_PER_SECTION: usize = 10;
const MAX_HEADER_TEXT: usize = 150;
const MAX_CONTEXT_TEXT: usize = 3000;
const MAX_CONFIRM_TITLE: usize = 100;
const MAX_CONFIRM_TEXT: usize = 300;
const MAX_CONFIRM_BUTTON: usize = 30;
const MAX_BLOCKS: usize = 50;
/// Slack refuses (`msg_too_long`) top-level `text` over 40,000 characters.
const MAX_MESSAGE_TEXT: usize = 40_000;

// ---------------------------------------------------------------------------------------------
// Request signatures
// ---------------------------------------------------------------------------------------------

/// Why an inbound request was refused before parsing. The texts are meant for an audit record:
/// they never contain the signature, the expected signature or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required header is absent (or empty).
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `X-Slack-Request-Timestamp` is not an integer number of seconds.
    #[error("X-Slack-Request-Timestamp is not a Unix time in seconds")]
    BadTimestamp,
    /// The timestamp is too far from now (positive: in the past, negative: in the future);
    /// a replayed or badly delayed request.
    #[error(
        "request timestamp is {skew_secs} s away from now (limit {MAX_SIGNATURE_SKEW_SECS} s; positive means in the past): possible replay"
    )]
    Stale { skew_secs: i64 },
    /// The signature does not match the body, timestamp and signing secret.
    #[error("X-Slack-Signature does not match the request (wrong signing secret or altered body)")]
    Mismatch,
}

/// Header carrying the request's Unix time in seconds.
const HEADER_TIMESTAMP: &str = "X-Slack-Request-Timestamp";
/// Header carrying `v0=<hex HMAC-SHA256>`.
const HEADER_SIGNATURE: &str = "X-Slack-Signature";

/// Verify a Slack request BEFORE parsing it.
///
/// Reads `X-Slack-Request-Timestamp` and `X-Slack-Signature`, rejects timestamps more than
/// 300 s from `now_unix` in either direction (checked here, before any HMAC work, so that the
/// caller's clock — not the process clock — decides), then checks the HMAC-SHA256 of
/// `v0:{ts}:{raw body}` keyed with the signing secret's UTF-8 bytes in constant time through
/// slack-morphism's [`SlackEventSignatureVerifier`].
pub fn verify_request(
    signing_secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let ts_raw = match headers.get(HEADER_TIMESTAMP) {
        None => return Err(SignatureError::MissingHeader(HEADER_TIMESTAMP)),
        Some(v) if v.is_empty() => return Err(SignatureError::MissingHeader(HEADER_TIMESTAMP)),
        Some(v) => v.to_str().map_err(|_| SignatureError::BadTimestamp)?,
    };
    let signature = match headers.get(HEADER_SIGNATURE) {
        None => return Err(SignatureError::MissingHeader(HEADER_SIGNATURE)),
        Some(v) if v.is_empty() => return Err(SignatureError::MissingHeader(HEADER_SIGNATURE)),
        // A header that is not visible ASCII cannot be a `v0=<hex>` signature.
        Some(v) => v.to_str().map_err(|_| SignatureError::Mismatch)?,
    };
    let ts: i64 = ts_raw
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew_secs = now_unix.saturating_sub(ts);
    if skew_secs.abs() > MAX_SIGNATURE_SKEW_SECS {
        return Err(SignatureError::Stale { skew_secs });
    }
    if signing_secret.is_empty() {
        tracing::error!("Slack signing secret is empty: refusing every request");
        return Err(SignatureError::Mismatch);
    }
    // Slack signs UTF-8 bodies (form-urlencoded ASCII); anything else cannot carry a valid
    // signature from Slack.
    let body = std::str::from_utf8(body).map_err(|_| SignatureError::Mismatch)?;

    let verifier =
        SlackEventSignatureVerifier::new(&SlackSigningSecret::new(signing_secret.to_string()));
    // The verifier compares the HMAC first (constant time) and only then checks the age against
    // the process clock. We have already checked the age against `now_unix`, so an age error
    // here means the HMAC matched (slack-morphism 2.31: `verify_at_time` checks the hash before
    // the age). The tests sign with 2023 timestamps and tampered bodies, so a change of that
    // order would make them fail rather than let forged requests through.
    match verifier.verify(signature.trim(), body, ts_raw.trim()) {
        Ok(()) => Ok(()),
        Err(SlackEventSignatureVerifierError::IncorrectOrExpiredTimestampError(_)) => Ok(()),
        Err(SlackEventSignatureVerifierError::WrongSignatureError(_))
        | Err(SlackEventSignatureVerifierError::AbsentSignatureError(_)) => {
            Err(SignatureError::Mismatch)
        }
        Err(SlackEventSignatureVerifierError::CryptoInitError(e)) => {
            tracing::error!(error = %e, "Slack signature verifier could not start");
            Err(SignatureError::Mismatch)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound parsing
// ---------------------------------------------------------------------------------------------

/// Why an inbound (already verified) body could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The body is not `application/x-www-form-urlencoded`.
    #[error("body is not application/x-www-form-urlencoded: {0}")]
    Form(String),
    /// A required form field is absent or empty.
    #[error("required form field `{0}` is missing or empty")]
    MissingField(&'static str),
    /// The `payload` field is not JSON.
    #[error("interaction `payload` is not valid JSON: {0}")]
    PayloadJson(#[from] serde_json::Error),
    /// The payload is JSON but lacks something a block_actions click must carry.
    #[error("block_actions payload lacks `{0}`")]
    MissingPayloadField(&'static str),
    /// A Socket Mode envelope's `payload` is not a JSON object.
    #[error("the envelope's `payload` is not a JSON object")]
    NotAnObject,
}

/// A slash command invocation (`/jit web1 22 1h`), as Slack posts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlashCommand {
    pub team_id: String,
    /// Set on Enterprise Grid installations.
    pub enterprise_id: Option<String>,
    pub channel_id: String,
    pub user_id: String,
    pub user_name: String,
    /// The command including its slash, e.g. `/jit`.
    pub command: String,
    /// Everything after the command, spaces decoded.
    pub text: String,
    /// Where up to 5 delayed answers can be posted within 30 minutes.
    pub response_url: String,
    pub trigger_id: String,
}

/// Parse a slash command form body. `+` and `%20` both decode to spaces; unknown fields
/// (`token`, `api_app_id`, …) are ignored; `user_id` and `command` are required.
pub fn parse_slash_command(body: &[u8]) -> Result<SlashCommand, ParseError> {
    let pairs = decode_form(body)?;
    slash_command_from(|name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    })
}

/// A slash command as Socket Mode delivers it: the `payload` of a `slash_commands` envelope,
/// an object holding the form's fields as strings. Same rules as [`parse_slash_command`].
pub fn slash_command_from_json(payload: &Value) -> Result<SlashCommand, ParseError> {
    if !payload.is_object() {
        return Err(ParseError::NotAnObject);
    }
    slash_command_from(|name| str_at(payload, &[name]).unwrap_or_default().to_string())
}

/// Builds the command from its fields (`get` answers "" for an absent one).
fn slash_command_from(get: impl Fn(&str) -> String) -> Result<SlashCommand, ParseError> {
    let required = |name: &'static str| -> Result<String, ParseError> {
        let v = get(name);
        if v.trim().is_empty() {
            Err(ParseError::MissingField(name))
        } else {
            Ok(v)
        }
    };
    let enterprise_id = Some(get("enterprise_id")).filter(|s| !s.is_empty());
    Ok(SlashCommand {
        user_id: required("user_id")?,
        command: required("command")?,
        team_id: get("team_id"),
        enterprise_id,
        channel_id: get("channel_id"),
        user_name: get("user_name"),
        text: get("text"),
        response_url: get("response_url"),
        trigger_id: get("trigger_id"),
    })
}

/// A click on one of jitbot's Approve/Deny buttons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonClick {
    pub user_id: String,
    /// The clicker's handle (`user.username`, else `user.name`); may be empty.
    pub user_name: String,
    pub team_id: String,
    /// Channel of the message carrying the button.
    pub channel_id: String,
    /// `ts` of the message carrying the button (update it with `chat.update`).
    pub message_ts: String,
    pub action: ButtonAction,
    pub response_url: String,
    /// Opens a form for the clicker within 3 seconds (`views.open`).
    pub trigger_id: String,
}

/// An interactivity request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// A click on a jitbot button.
    Button(ButtonClick),
    /// A choice that rebuilds an open jitbot modal (the target).
    FormChanged(FormChange),
    /// A jitbot modal was submitted.
    FormSubmitted(FormSubmission),
    /// Anything else: other payload types (`view_submission`, `shortcut`, …) carry their `type`;
    /// block_actions on foreign buttons carry `block_actions:<action_id>`. Acknowledge and ignore.
    Other { kind: String },
}

/// Parse an interactivity body: form field `payload` holding JSON.
pub fn parse_interaction(body: &[u8]) -> Result<Interaction, ParseError> {
    let pairs = decode_form(body)?;
    let payload = pairs
        .into_iter()
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v)
        .ok_or(ParseError::MissingField("payload"))?;
    let p: Value = serde_json::from_str(&payload)?;
    interaction_from_json(&p)
}

/// An interaction as Socket Mode delivers it: the `payload` of an `interactive` envelope, the
/// same JSON the HTTP form's `payload` field holds. Same rules as [`parse_interaction`].
pub fn interaction_from_json(p: &Value) -> Result<Interaction, ParseError> {
    let kind = p
        .get("type")
        .and_then(Value::as_str)
        .ok_or(ParseError::MissingPayloadField("type"))?;
    if kind == "view_submission"
        && let Some(s) = form::parse_submission(p)?
    {
        return Ok(Interaction::FormSubmitted(s));
    }
    if kind == "block_actions"
        && let Some(c) = form::parse_change(p)?
    {
        return Ok(Interaction::FormChanged(c));
    }
    if kind != "block_actions" {
        return Ok(Interaction::Other {
            kind: kind.to_string(),
        });
    }

    let first_action = p
        .get("actions")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .ok_or(ParseError::MissingPayloadField("actions[0]"))?;
    let action_id = str_at(first_action, &["action_id"]).unwrap_or_default();
    let value = str_at(first_action, &["value"]).unwrap_or_default();
    let Some(action) = decode_action(action_id, value) else {
        return Ok(Interaction::Other {
            kind: format!("block_actions:{action_id}"),
        });
    };

    let user_id = str_at(p, &["user", "id"])
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::MissingPayloadField("user.id"))?;
    let user_name = str_at(p, &["user", "username"])
        .or_else(|| str_at(p, &["user", "name"]))
        .unwrap_or_default();
    let team_id = str_at(p, &["team", "id"])
        .or_else(|| str_at(p, &["user", "team_id"]))
        .unwrap_or_default();
    let channel_id = str_at(p, &["container", "channel_id"])
        .or_else(|| str_at(p, &["channel", "id"]))
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::MissingPayloadField("container.channel_id"))?;
    let message_ts = str_at(p, &["container", "message_ts"])
        .or_else(|| str_at(p, &["message", "ts"]))
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::MissingPayloadField("container.message_ts"))?;
    let response_url = str_at(p, &["response_url"]).unwrap_or_default();
    let trigger_id = str_at(p, &["trigger_id"]).unwrap_or_default();

    Ok(Interaction::Button(ButtonClick {
        user_id: user_id.to_string(),
        user_name: user_name.to_string(),
        team_id: team_id.to_string(),
        channel_id: channel_id.to_string(),
        message_ts: message_ts.to_string(),
        action,
        response_url: response_url.to_string(),
        trigger_id: trigger_id.to_string(),
    }))
}

fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .map_err(|e| ParseError::Form(e.to_string()))
}

/// The string at a path of object keys, if every step exists and the leaf is a string.
fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |cur, key| cur.get(key))
        .and_then(Value::as_str)
}

// ---------------------------------------------------------------------------------------------
// Button identity
// ---------------------------------------------------------------------------------------------

fn action_id_for(kind: ButtonKind) -> &'static str {
    match kind {
        ButtonKind::Approve => ACTION_APPROVE,
        ButtonKind::Deny => ACTION_DENY,
        ButtonKind::Extend => ACTION_EXTEND,
        ButtonKind::Done => ACTION_DONE,
        ButtonKind::DenyWithReason => ACTION_DENY_REASON,
    }
}

/// The button `value` for a request and round: `<request_id>` for round 0, else
/// `<request_id>:<round>`. A request id that itself contains `:` always gets the suffix so
/// decoding stays unambiguous.
fn encode_value(request_id: &str, round: i64) -> String {
    if round == 0 && !request_id.contains(':') {
        request_id.to_string()
    } else {
        format!("{request_id}:{round}")
    }
}

/// Decode `action_id` + `value` back into a [`ButtonAction`] (inverse of [`render_blocks`]);
/// `None` for foreign buttons or malformed values.
pub fn decode_action(action_id: &str, value: &str) -> Option<ButtonAction> {
    let kind = match action_id {
        ACTION_APPROVE => ButtonKind::Approve,
        ACTION_DENY => ButtonKind::Deny,
        ACTION_EXTEND => ButtonKind::Extend,
        ACTION_DONE => ButtonKind::Done,
        ACTION_DENY_REASON => ButtonKind::DenyWithReason,
        _ => return None,
    };
    let (request_id, round) = match value.rsplit_once(':') {
        Some((id, round)) => match round.parse::<i64>() {
            Ok(r) if r >= 0 && !round.starts_with('+') => (id, r),
            // A suffix that is not a round belongs to the id (ids never contain ':' when
            // encoded without a suffix, so this only happens for foreign values).
            _ => return None,
        },
        None => (value, 0),
    };
    if request_id.is_empty() {
        return None;
    }
    Some(ButtonAction {
        kind,
        request_id: request_id.to_string(),
        round,
    })
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn tone_emoji(tone: Tone) -> &'static str {
    match tone {
        Tone::Info => ":information_source:",
        Tone::Pending => ":hourglass:",
        Tone::Success => ":white_check_mark:",
        Tone::Warning => ":warning:",
        Tone::Danger => ":no_entry:",
    }
}

/// Cut `s` to at most `max` characters, ending with `…` when something was cut.
fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Split `s` into pieces of at most `max` characters, preferring line breaks as cut points.
fn split_chars(s: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest: &str = s;
    while rest.chars().count() > max {
        // Byte index just past the `max`-th character.
        let hard = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let cut = match rest[..hard].rfind('\n') {
            Some(nl) if nl > 0 => nl,
            _ => hard,
        };
        out.push(rest[..cut].to_string());
        rest = rest[cut..].strip_prefix('\n').unwrap_or(&rest[cut..]);
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

fn plain(text: impl Into<String>) -> SlackBlockPlainTextOnly {
    SlackBlockPlainText::new(text.into())
        .with_emoji(true)
        .into()
}

fn mrkdwn(text: impl Into<String>) -> SlackBlockText {
    SlackBlockMarkDownText::new(text.into()).into()
}

/// Block Kit rendering of the neutral model.
///
/// Title → header block with a tone emoji prefix; text → mrkdwn section(s) (split at 3000
/// characters); fields → section fields `*Label*\nvalue` (10 per section); footer → context
/// block; buttons → one actions block per (request, round) with block_id
/// `jit_actions:<value>`, action_id `jit_approve`/`jit_deny`, value `<request_id>` for round 0
/// and `<request_id>:<round>` otherwise, Approve styled primary and Deny danger, with a confirm
/// dialog when [`super::Button::confirm`] is set. Every Block Kit length limit is respected by
/// truncating display text; identity (values) is never truncated: a button whose value would
/// exceed 2000 characters is left out and logged.
pub fn render_blocks(msg: &Message) -> Vec<SlackBlock> {
    let mut blocks: Vec<SlackBlock> = Vec::new();

    if !msg.title.trim().is_empty() {
        let title = format!("{} {}", tone_emoji(msg.tone), msg.title.trim());
        blocks.push(SlackHeaderBlock::new(plain(truncate_chars(&title, MAX_HEADER_TEXT))).into());
    }

    if !msg.text.trim().is_empty() {
        for chunk in split_chars(&msg.text, MAX_SECTION_TEXT) {
            if !chunk.trim().is_empty() {
                blocks.push(SlackSectionBlock::new().with_text(mrkdwn(chunk)).into());
            }
        }
    }

    for group in msg.fields.chunks(MAX_FIELDS_PER_SECTION) {
        let fields: Vec<SlackBlockText> = group
            .iter()
            .map(|f| {
                mrkdwn(truncate_chars(
                    &format!("*{}*\n{}", f.label.trim(), f.value),
                    MAX_FIELD_TEXT,
                ))
            })
            .collect();
        if !fields.is_empty() {
            blocks.push(SlackSectionBlock::new().with_fields(fields).into());
        }
    }

    // Buttons and footer go last and are never dropped; text blocks give way if a huge
    // message would exceed Slack's 50-block limit.
    let mut tail = render_button_blocks(msg);
    if let Some(footer) = msg.footer.as_deref().filter(|f| !f.trim().is_empty()) {
        let el = SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(truncate_chars(
            footer,
            MAX_CONTEXT_TEXT,
        )));
        tail.push(SlackContextBlock::new(vec![el]).into());
    }
    tail.truncate(MAX_BLOCKS);
    let room = MAX_BLOCKS - tail.len();
    if blocks.len() > room {
        tracing::warn!(
            blocks = blocks.len() + tail.len(),
            "message renders to more than {MAX_BLOCKS} blocks; dropping text blocks"
        );
        blocks.truncate(room);
    }
    blocks.extend(tail);
    blocks
}

/// Actions blocks for the message's buttons, grouped by (request id, round) in order of first
/// appearance so that every `block_id` is unique and each block holds at most one Approve and
/// one Deny (Slack requires unique `action_id`s within a block).
fn render_button_blocks(msg: &Message) -> Vec<SlackBlock> {
    let mut groups: Vec<(String, Vec<SlackActionBlockElement>, Vec<ButtonKind>)> = Vec::new();
    for button in &msg.buttons {
        let a = &button.action;
        let value = encode_value(&a.request_id, a.round);
        if a.request_id.is_empty() || value.chars().count() > MAX_BUTTON_VALUE {
            tracing::warn!(
                request_id_len = a.request_id.len(),
                "button value empty or over {MAX_BUTTON_VALUE} characters; button left out"
            );
            continue;
        }
        let idx = match groups.iter().position(|(v, _, _)| *v == value) {
            Some(i) => i,
            None => {
                groups.push((value.clone(), Vec::new(), Vec::new()));
                groups.len() - 1
            }
        };
        let group = &mut groups[idx];
        if group.2.contains(&a.kind) {
            tracing::warn!(
                request_id = %a.request_id,
                round = a.round,
                decision = a.kind.as_str(),
                "duplicate button for the same request and round; left out"
            );
            continue;
        }
        group.2.push(a.kind);
        group.1.push(render_button(button, &value).into());
    }

    groups
        .into_iter()
        .map(|(value, elements, _)| {
            let block_id = format!("{ACTIONS_BLOCK_PREFIX}{value}");
            let block = SlackActionsBlock::new(elements);
            if block_id.chars().count() <= MAX_BLOCK_ID {
                block.with_block_id(SlackBlockId::new(block_id)).into()
            } else {
                block.into()
            }
        })
        .collect()
}

fn render_button(button: &super::Button, value: &str) -> SlackBlockButtonElement {
    let kind = button.action.kind;
    let label = if button.label.trim().is_empty() {
        match kind {
            ButtonKind::Approve => "Approve".to_string(),
            ButtonKind::Deny => "Deny".to_string(),
            ButtonKind::Extend => "Extend".to_string(),
            ButtonKind::Done => "I'm done".to_string(),
            ButtonKind::DenyWithReason => "Deny with reason".to_string(),
        }
    } else {
        truncate_chars(button.label.trim(), MAX_BUTTON_TEXT)
    };
    let (style, confirm_title, confirm_style) = match kind {
        ButtonKind::Approve => (SlackBlockButtonStyle::Primary, "Approve access?", "primary"),
        ButtonKind::Deny => (SlackBlockButtonStyle::Danger, "Deny access?", "danger"),
        ButtonKind::Extend => (SlackBlockButtonStyle::Primary, "Extend?", "primary"),
        ButtonKind::Done => (SlackBlockButtonStyle::Danger, "Close now?", "danger"),
        ButtonKind::DenyWithReason => (SlackBlockButtonStyle::Danger, "Deny access?", "danger"),
    };
    let mut el = SlackBlockButtonElement::new(plain(label.clone()))
        .with_action_id(SlackActionId::new(action_id_for(kind).to_string()))
        .with_value(value.to_string())
        .with_style(style);
    if let Some(text) = button.confirm.as_deref().filter(|t| !t.trim().is_empty()) {
        el = el.with_confirm(
            SlackBlockConfirmItem::new(
                plain(truncate_chars(confirm_title, MAX_CONFIRM_TITLE)),
                mrkdwn(truncate_chars(text, MAX_CONFIRM_TEXT)),
                plain(truncate_chars(&label, MAX_CONFIRM_BUTTON)),
                plain("Cancel"),
            )
            .with_style(confirm_style.to_string()),
        );
    }
    el
}

/// The top-level `text` sent with blocks: notification and accessibility fallback.
fn fallback_text(msg: &Message) -> String {
    truncate_chars(&msg.plain_text(), MAX_MESSAGE_TEXT)
}

/// JSON body answering a slash command with HTTP 200, visible only to the invoker:
/// `{"response_type":"ephemeral","text":<fallback>,"blocks":[…]}`.
pub fn ephemeral_response(msg: &Message) -> Value {
    let blocks = serde_json::to_value(render_blocks(msg)).unwrap_or_else(|e| {
        // Serialising our own block structs cannot fail in practice; degrade to text only.
        tracing::error!(error = %e, "could not serialise blocks");
        Value::Array(Vec::new())
    });
    serde_json::json!({
        "response_type": "ephemeral",
        "text": fallback_text(msg),
        "blocks": blocks,
    })
}

// ---------------------------------------------------------------------------------------------
// Web API client
// ---------------------------------------------------------------------------------------------

type Connector = SlackClientHyperHttpsConnector;

/// Slack Web API client (`chat.postMessage`, `chat.update`) behind [`ChatApi`].
///
/// Built on slack-morphism's [`SlackClient`] without its rate controller, so a call never waits
/// or retries internally: 429s come back at once as [`ChatError::RateLimited`] and the job runner
/// owns retries. Each call is bounded by a timeout ([`DEFAULT_CALL_TIMEOUT`]). The connector
/// accepts `http://` as well as `https://` (webpki roots, ring) so tests and the demo can point
/// it at the emulator.
#[derive(Clone)]
pub struct SlackApi {
    client: Arc<SlackClient<Connector>>,
    token: SlackApiToken,
    timeout: Duration,
}

impl fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("SlackApi")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SlackApi {
    /// A client for `api_base_url` (e.g. [`DEFAULT_API_BASE_URL`] or the emulator's
    /// `base_url`) authenticating with a bot token (`xoxb-…`). Fails with
    /// [`ChatError::Permanent`] on a malformed URL or an empty token.
    pub fn new(api_base_url: &str, bot_token: String) -> Result<Self, ChatError> {
        let parsed = url::Url::parse(api_base_url).map_err(|e| {
            ChatError::Permanent(format!("invalid Slack API base URL {api_base_url:?}: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ChatError::Permanent(format!(
                "Slack API base URL {api_base_url:?} must be http or https"
            )));
        }
        if bot_token.trim().is_empty() {
            return Err(ChatError::Permanent("Slack bot token is empty".to_string()));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| ChatError::Permanent(format!("TLS setup failed: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        // slack-morphism joins base and method with a '/'.
        let base = api_base_url.trim_end_matches('/');
        let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(base);
        Ok(SlackApi {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(SlackApiTokenValue::new(bot_token)),
            timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// Replace the per-call timeout (default [`DEFAULT_CALL_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn bounded<T>(
        &self,
        method: &'static str,
        fut: impl std::future::Future<Output = Result<T, SlackClientError>>,
    ) -> Result<T, ChatError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_client_error(method, e)),
            Err(_) => Err(ChatError::Transient(format!(
                "{method}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Looks for a message this bot already posted with dedupe `key` in the recent history of
    /// `channel` (a user id is first resolved to its DM with `conversations.open`).
    async fn find_posted(&self, channel: &str, key: &str) -> Result<Option<MessageRef>, ChatError> {
        let session = self.client.open_session(&self.token);
        let conversation = if is_user_id(channel) {
            const OPEN: &str = "conversations.open";
            let req = SlackApiConversationsOpenRequest::new()
                .with_users(vec![SlackUserId::new(channel.to_string())]);
            let opened = self.bounded(OPEN, session.conversations_open(&req)).await;
            log_outcome(OPEN, channel, &opened);
            opened?.channel.id
        } else {
            SlackChannelId::new(channel.to_string())
        };
        const HISTORY: &str = "conversations.history";
        let mut cursor: Option<SlackCursorId> = None;
        for _ in 0..DEDUPE_HISTORY_PAGES {
            let mut req = SlackApiConversationsHistoryRequest::new()
                .with_channel(conversation.clone())
                .with_limit(DEDUPE_HISTORY_PAGE_SIZE)
                .with_include_all_metadata(true);
            if let Some(c) = cursor.take() {
                req = req.with_cursor(c);
            }
            let page = self
                .bounded(HISTORY, session.conversations_history(&req))
                .await;
            log_outcome(HISTORY, conversation.value(), &page);
            let page = page?;
            let hit = page.messages.iter().find(|m| {
                m.content.metadata.as_ref().is_some_and(|md| {
                    md.event_type == METADATA_EVENT_TYPE
                        && md
                            .event_payload
                            .as_ref()
                            .and_then(|p| p.get(METADATA_KEY))
                            .is_some_and(|k| k == key)
                })
            });
            if let Some(m) = hit {
                return Ok(Some(MessageRef {
                    channel: conversation.value().clone(),
                    id: m.origin.ts.value().clone(),
                }));
            }
            match page
                .response_metadata
                .and_then(|r| r.next_cursor)
                .filter(|c| !c.value().is_empty())
            {
                Some(next) if page.has_more.unwrap_or(false) => cursor = Some(next),
                _ => break,
            }
        }
        Ok(None)
    }
}

/// `metadata.event_type` of every message jitbot posts.
pub const METADATA_EVENT_TYPE: &str = "jitbot_message";
/// `metadata.event_payload` field holding the dedupe key.
const METADATA_KEY: &str = "key";
/// How much recent history a retried post searches for its key (pages × messages).
const DEDUPE_HISTORY_PAGES: usize = 3;
const DEDUPE_HISTORY_PAGE_SIZE: u16 = 200;

/// Slack user ids (`U…`, `W…`): posting to one opens a DM.
fn is_user_id(s: &str) -> bool {
    (s.starts_with('U') || s.starts_with('W'))
        && s.len() > 1
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

fn message_content(message: &Message) -> SlackMessageContent {
    let blocks = render_blocks(message);
    let content = SlackMessageContent::new().with_text(fallback_text(message));
    if blocks.is_empty() {
        content
    } else {
        content.with_blocks(blocks)
    }
}

/// Classify a slack-morphism error for the job runner.
fn map_client_error(method: &str, err: SlackClientError) -> ChatError {
    match err {
        SlackClientError::RateLimitError(e) => ChatError::RateLimited {
            retry_after: e.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        SlackClientError::ApiError(e) => classify_api_error(method, &e.code, e.errors.as_deref()),
        SlackClientError::HttpError(e) => {
            let status = e.status_code;
            if status == http::StatusCode::TOO_MANY_REQUESTS {
                ChatError::RateLimited {
                    retry_after: DEFAULT_RETRY_AFTER,
                }
            } else if status.is_server_error() || status == http::StatusCode::REQUEST_TIMEOUT {
                ChatError::Transient(format!("{method}: HTTP {status}"))
            } else {
                ChatError::Permanent(format!("{method}: HTTP {status}"))
            }
        }
        SlackClientError::HttpProtocolError(e) => {
            ChatError::Transient(format!("{method}: connection failed: {e}"))
        }
        SlackClientError::EndOfStream(e) => ChatError::Transient(format!("{method}: {e}")),
        SlackClientError::SystemError(e) => ChatError::Transient(format!("{method}: {e}")),
        // A 200 whose body is not the expected JSON: most likely a proxy or a partial answer.
        SlackClientError::ProtocolError(e) => ChatError::Transient(format!(
            "{method}: unexpected response body: {}",
            e.json_error
        )),
        SlackClientError::SocketModeProtocolError(e) => {
            ChatError::Permanent(format!("{method}: {e}"))
        }
    }
}

/// Classify an `ok:false` error code.
fn classify_api_error(method: &str, code: &str, errors: Option<&[String]>) -> ChatError {
    let detail = match errors {
        Some(list) if !list.is_empty() => format!("{method}: {code} ({})", list.join("; ")),
        _ => format!("{method}: {code}"),
    };
    match code {
        "ratelimited" | "rate_limited" => ChatError::RateLimited {
            retry_after: DEFAULT_RETRY_AFTER,
        },
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            ChatError::Transient(detail)
        }
        _ => ChatError::Permanent(detail),
    }
}

fn log_outcome<T>(method: &'static str, channel: &str, result: &Result<T, ChatError>) {
    match result {
        Ok(_) => tracing::debug!(method, channel, "Slack call succeeded"),
        Err(e) => tracing::warn!(method, channel, error = %e, "Slack call failed"),
    }
}

#[async_trait]
impl ChatApi for SlackApi {
    async fn post(
        &self,
        channel: &str,
        message: &Message,
        dedupe: &Dedupe,
    ) -> Result<MessageRef, ChatError> {
        const METHOD: &str = "chat.postMessage";
        if dedupe.maybe_sent {
            match self.find_posted(channel, &dedupe.key).await {
                Ok(Some(found)) => {
                    tracing::info!(
                        channel,
                        key = %dedupe.key,
                        ts = %found.id,
                        "an earlier attempt already delivered this message; not posting it again"
                    );
                    return Ok(found);
                }
                Ok(None) => {}
                // A lookup that can never work (a missing `*:history` scope): rather a possible
                // duplicate than a lost message.
                Err(ChatError::Permanent(e)) => tracing::warn!(
                    channel,
                    key = %dedupe.key,
                    error = %e,
                    "cannot search the channel history for an earlier delivery; posting again"
                ),
                Err(e) => return Err(e),
            }
        }
        let content = message_content(message).with_metadata(SlackMessageMetadata {
            event_type: METADATA_EVENT_TYPE.to_string(),
            event_payload: Some(
                [(METADATA_KEY.to_string(), dedupe.key.clone())]
                    .into_iter()
                    .collect(),
            ),
        });
        let req =
            SlackApiChatPostMessageRequest::new(SlackChannelId::new(channel.to_string()), content);
        let session = self.client.open_session(&self.token);
        let result = self
            .bounded(METHOD, session.chat_post_message(&req))
            .await
            .map(|resp| MessageRef {
                // For a user id Slack answers with the DM channel ("D…"): chat.update needs that.
                channel: resp.channel.value().clone(),
                id: resp.ts.value().clone(),
            });
        log_outcome(METHOD, channel, &result);
        result
    }

    async fn update(&self, at: &MessageRef, message: &Message) -> Result<(), ChatError> {
        const METHOD: &str = "chat.update";
        let req = SlackApiChatUpdateRequest::new(
            SlackChannelId::new(at.channel.clone()),
            message_content(message),
            SlackTs::new(at.id.clone()),
        );
        let session = self.client.open_session(&self.token);
        let result = self
            .bounded(METHOD, session.chat_update(&req))
            .await
            .map(|_| ());
        log_outcome(METHOD, &at.channel, &result);
        result
    }

    async fn open_form(&self, trigger_id: &str, form: &super::form::Form) -> Result<(), ChatError> {
        const METHOD: &str = "views.open";
        let view = typed_view(form)?;
        let req = SlackApiViewsOpenRequest::new(SlackTriggerId::new(trigger_id.to_string()), view);
        let session = self.client.open_session(&self.token);
        let result = self
            .bounded(METHOD, session.views_open(&req))
            .await
            .map(drop);
        log_outcome(METHOD, "", &result);
        result
    }

    async fn update_form(
        &self,
        view_id: &str,
        hash: Option<&str>,
        form: &super::form::Form,
    ) -> Result<(), ChatError> {
        const METHOD: &str = "views.update";
        let mut req = SlackApiViewsUpdateRequest::new(typed_view(form)?)
            .with_view_id(SlackViewId::new(view_id.to_string()));
        if let Some(h) = hash {
            req = req.with_hash(h.to_string());
        }
        let session = self.client.open_session(&self.token);
        let result = self
            .bounded(METHOD, session.views_update(&req))
            .await
            .map(drop);
        log_outcome(METHOD, "", &result);
        result
    }

    /// `usergroups.users.list` (scope `usergroups:read`): the user ids in user group `group`.
    async fn group_members(&self, group: &str) -> Result<Vec<String>, ChatError> {
        const METHOD: &str = "usergroups.users.list";
        let req = SlackApiUserGroupsUsersListRequest::new(SlackUserGroupId::new(group.to_string()));
        let session = self.client.open_session(&self.token);
        let result = self
            .bounded(METHOD, session.usergroups_users_list(&req))
            .await
            .map(|resp| resp.users.into_iter().map(|u| u.value().clone()).collect());
        log_outcome(METHOD, group, &result);
        result
    }
}

/// The modal of `form` as slack-morphism's type (which checks the Block Kit shape).
fn typed_view(form: &super::form::Form) -> Result<SlackView, ChatError> {
    serde_json::from_value(render_form(form))
        .map_err(|e| ChatError::Permanent(format!("the form is not a valid Slack view: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_prefers_newlines_and_respects_max() {
        let s = format!("{}\n{}", "a".repeat(10), "b".repeat(25));
        let parts = split_chars(&s, 12);
        assert!(parts.iter().all(|p| p.chars().count() <= 12), "{parts:?}");
        assert_eq!(parts[0], "a".repeat(10));
        assert_eq!(
            parts.concat(),
            format!("{}{}", "a".repeat(10), "b".repeat(25))
        );
    }

    #[test]
    fn truncate_marks_cut() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
    }

    #[test]
    fn value_with_colon_round_trips() {
        let v = encode_value("a:b", 0);
        let a = decode_action(ACTION_DENY, &v);
        assert_eq!(a.map(|a| (a.request_id, a.round)), Some(("a:b".into(), 0)));
    }
}
