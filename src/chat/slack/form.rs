//! Forms as Slack modals: the Block Kit view of a neutral [`Form`], and the answers read back
//! from `block_actions` inside a view and from `view_submission`.
//!
//! Identity: `callback_id` is [`CALLBACK`]; `private_metadata` is the [`FormKind`] as JSON.
//! Each field is an input block whose `action_id` is the [`FieldId`] and whose `block_id` is the
//! field id, suffixed with `:<target>` once a target was chosen: Slack keeps what was typed into
//! a block whose ids stay the same across `views.update`, so a new target gets new blocks and
//! its own prefilled values. The target's select dispatches its choice (`dispatch_action`).

use super::super::form::{FieldErrors, FieldId, Form, FormKind, FormValues, Input};
use super::{ParseError, render_blocks, str_at, truncate_chars};
use crate::chat::Message;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// `callback_id` of every jitbot modal.
pub const CALLBACK: &str = "jit_form";

// Block Kit limits for views (https://docs.slack.dev/reference/views).
const MAX_TITLE: usize = 24;
const MAX_OPTIONS: usize = 100;
const MAX_OPTION_TEXT: usize = 75;
const MAX_LABEL: usize = 2000;
const MAX_HINT: usize = 2000;

fn plain(text: &str, max: usize) -> Value {
    json!({ "type": "plain_text", "text": truncate_chars(text, max), "emoji": true })
}

fn option(label: &str, value: &str) -> Value {
    json!({ "text": plain(label, MAX_OPTION_TEXT), "value": value })
}

/// The block id of `field` in a form for `kind` (see the module documentation).
fn block_id(kind: &FormKind, field: FieldId) -> String {
    match kind {
        FormKind::Request {
            target: Some(target),
        } if field != FieldId::Target => format!("{}:{target}", field.as_str()),
        _ => field.as_str().to_string(),
    }
}

fn element(id: FieldId, input: &Input) -> Value {
    match input {
        Input::Choice {
            options,
            selected,
            multiple,
            ..
        } => {
            let opts: Vec<Value> = options
                .iter()
                .take(MAX_OPTIONS)
                .map(|c| option(&c.label, &c.value))
                .collect();
            let chosen: Vec<Value> = options
                .iter()
                .filter(|c| selected.contains(&c.value))
                .map(|c| option(&c.label, &c.value))
                .collect();
            let mut el = json!({ "action_id": id.as_str(), "options": opts });
            if *multiple {
                el["type"] = json!("multi_static_select");
                if !chosen.is_empty() {
                    el["initial_options"] = Value::Array(chosen);
                }
            } else {
                el["type"] = json!("static_select");
                if let Some(first) = chosen.into_iter().next() {
                    el["initial_option"] = first;
                }
            }
            el
        }
        Input::Text {
            value,
            placeholder,
            multiline,
            max_length,
        } => {
            let mut el = json!({ "type": "plain_text_input", "action_id": id.as_str(),
                "multiline": multiline, "max_length": max_length });
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                el["initial_value"] = json!(v);
            }
            if let Some(p) = placeholder {
                el["placeholder"] = plain(p, 150);
            }
            el
        }
    }
}

/// The modal view of `form` (the `view` of `views.open` and `views.update`).
pub fn render_view(form: &Form) -> Value {
    let mut blocks = Vec::new();
    if let Some(intro) = form.intro.as_deref().filter(|t| !t.trim().is_empty()) {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": truncate_chars(intro, 3000) } }));
    }
    for f in &form.fields {
        let mut block = json!({
            "type": "input",
            "block_id": block_id(&form.kind, f.id),
            "label": plain(&f.label, MAX_LABEL),
            "optional": f.optional,
            "element": element(f.id, &f.input),
        });
        if matches!(
            f.input,
            Input::Choice {
                updates_form: true,
                ..
            }
        ) {
            block["dispatch_action"] = json!(true);
        }
        if let Some(hint) = &f.hint {
            block["hint"] = plain(hint, MAX_HINT);
        }
        blocks.push(block);
    }
    json!({
        "type": "modal",
        "callback_id": CALLBACK,
        "private_metadata": serde_json::to_string(&form.kind).unwrap_or_default(),
        "title": plain(&form.title, MAX_TITLE),
        "submit": plain(&form.submit, MAX_TITLE),
        "close": plain("Cancel", MAX_TITLE),
        "blocks": blocks,
    })
}

/// The answer to a submission that is done: the modal turns into `message` (no API call).
pub fn answer_response(message: &Message) -> Value {
    let blocks = serde_json::to_value(render_blocks(message)).unwrap_or(Value::Array(vec![]));
    json!({
        "response_action": "update",
        "view": {
            "type": "modal",
            "callback_id": CALLBACK,
            "title": plain("jitbot", MAX_TITLE),
            "close": plain("Close", MAX_TITLE),
            "blocks": blocks,
        }
    })
}

/// The answer to a submission with errors: each shown under its field; nothing was recorded.
pub fn errors_response(submission: &FormSubmission, errors: &FieldErrors) -> Value {
    let errors: serde_json::Map<String, Value> = errors
        .iter()
        .map(|(field, message)| {
            let block = submission
                .block_ids
                .get(field)
                .cloned()
                .unwrap_or_else(|| block_id(&submission.kind, *field));
            (block, json!(truncate_chars(message, 2000)))
        })
        .collect();
    json!({ "response_action": "errors", "errors": errors })
}

/// A person changed a field that rebuilds the form (the target), in an open jitbot modal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormChange {
    pub user_id: String,
    pub user_name: String,
    pub view_id: String,
    /// The view's hash: `views.update` with it is refused if the view changed meanwhile.
    pub hash: Option<String>,
    pub field: FieldId,
    pub value: String,
}

/// A submitted jitbot modal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormSubmission {
    pub user_id: String,
    pub user_name: String,
    pub kind: FormKind,
    pub values: FormValues,
    /// The block each field was in (errors go there).
    pub block_ids: BTreeMap<FieldId, String>,
}

/// The form kind of a view, if it is a jitbot modal.
fn kind_of(view: &Value) -> Option<FormKind> {
    if str_at(view, &["callback_id"]) != Some(CALLBACK) {
        return None;
    }
    serde_json::from_str(str_at(view, &["private_metadata"])?).ok()
}

/// The value of one element's state: text, one option, or several joined with `,`.
fn state_value(v: &Value) -> Option<String> {
    if let Some(s) = str_at(v, &["value"]) {
        return Some(s.trim().to_string());
    }
    if let Some(s) = v.pointer("/selected_option/value").and_then(Value::as_str) {
        return Some(s.to_string());
    }
    let many = v.get("selected_options")?.as_array()?;
    let values: Vec<&str> = many.iter().filter_map(|o| str_at(o, &["value"])).collect();
    Some(values.join(","))
}

/// Reads `view.state.values` into field values and the block each came from.
fn read_state(view: &Value) -> (FormValues, BTreeMap<FieldId, String>) {
    let mut values = FormValues::new();
    let mut blocks = BTreeMap::new();
    let Some(state) = view.pointer("/state/values").and_then(Value::as_object) else {
        return (values, blocks);
    };
    for (block, actions) in state {
        let Some(field) = block.split(':').next().and_then(FieldId::parse) else {
            continue;
        };
        let Some(v) = actions
            .get(field.as_str())
            .and_then(state_value)
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        values.insert(field, v);
        blocks.insert(field, block.clone());
    }
    (values, blocks)
}

fn user_of(p: &Value) -> Result<(String, String), ParseError> {
    let id = str_at(p, &["user", "id"])
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::MissingPayloadField("user.id"))?;
    let name = str_at(p, &["user", "username"])
        .or_else(|| str_at(p, &["user", "name"]))
        .unwrap_or_default();
    Ok((id.to_string(), name.to_string()))
}

/// A `view_submission` of a jitbot modal; `None` for anyone else's view.
pub(super) fn parse_submission(p: &Value) -> Result<Option<FormSubmission>, ParseError> {
    let view = p.get("view").unwrap_or(&Value::Null);
    let Some(kind) = kind_of(view) else {
        return Ok(None);
    };
    let (user_id, user_name) = user_of(p)?;
    let (values, block_ids) = read_state(view);
    Ok(Some(FormSubmission {
        user_id,
        user_name,
        kind,
        values,
        block_ids,
    }))
}

/// A `block_actions` inside a jitbot modal (the target's select); `None` otherwise.
pub(super) fn parse_change(p: &Value) -> Result<Option<FormChange>, ParseError> {
    let view = p.get("view").unwrap_or(&Value::Null);
    if str_at(p, &["container", "type"]) != Some("view") || kind_of(view).is_none() {
        return Ok(None);
    }
    let Some(action) = p
        .get("actions")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    else {
        return Ok(None);
    };
    let Some(field) = str_at(action, &["action_id"]).and_then(FieldId::parse) else {
        return Ok(None);
    };
    let (user_id, user_name) = user_of(p)?;
    let view_id = str_at(view, &["id"])
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::MissingPayloadField("view.id"))?;
    Ok(Some(FormChange {
        user_id,
        user_name,
        view_id: view_id.to_string(),
        hash: str_at(view, &["hash"]).map(str::to_string),
        field,
        value: state_value(action).unwrap_or_default(),
    }))
}
