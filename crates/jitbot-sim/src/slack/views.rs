//! `views.open` and `views.update` as Slack answers them: a modal opened from a `trigger_id`
//! (3 seconds after the person's action, exchanged once), replaced by `view_id` with an optional
//! `hash` (a stale hash is `hash_conflict`). Every opened view gets an `id` and a `hash`; each
//! update a new hash. Views are kept so tests can read what a person sees.
//!
//! Trigger ids are the ones [`crate::slack_user`] issues: `<n>.<issued at, Unix ms>.<hex>`; the
//! emulator reads the issue time from them, as Slack knows when it issued its own.

use super::{Reply, SimState, TEAM_ID, str_field};
use serde_json::{Map, Value, json};

/// How long a `trigger_id` opens a view.
const TRIGGER_TTL_MS: i64 = 3_000;
const BOT_ID: &str = super::BOT_ID;
const APP_ID: &str = "A123456";

/// A view as the emulator holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackView {
    /// `V…`: what `views.update` and the person's interactions name it by.
    pub id: String,
    pub hash: String,
    /// The view as last sent (`type`, `title`, `blocks`, `callback_id`, `private_metadata`…).
    pub view: Value,
    /// How many `views.update` calls replaced it.
    pub updates: u32,
}

impl SlackView {
    /// The view in the shape Slack answers with and sends in interactions (with `id`, `hash`,
    /// `team_id`, an empty `state`).
    pub fn full(&self) -> Value {
        let mut v = self.view.clone();
        if let Some(m) = v.as_object_mut() {
            m.insert("id".into(), json!(self.id));
            m.insert("hash".into(), json!(self.hash));
            m.insert("team_id".into(), json!(TEAM_ID));
            m.insert("app_id".into(), json!(APP_ID));
            m.insert("bot_id".into(), json!(BOT_ID));
            m.insert("root_view_id".into(), json!(self.id));
            m.insert("previous_view_id".into(), Value::Null);
            m.insert("app_installed_team_id".into(), json!(TEAM_ID));
            m.entry("state").or_insert(json!({ "values": {} }));
            m.entry("external_id").or_insert(json!(""));
            m.entry("clear_on_close").or_insert(json!(false));
            m.entry("notify_on_close").or_insert(json!(false));
        }
        v
    }

    /// The text a person reads in the view (titles, labels, sections, hints).
    pub fn text(&self) -> String {
        let mut out = Vec::new();
        for p in ["/title/text", "/submit/text"] {
            out.extend(
                self.view
                    .pointer(p)
                    .and_then(Value::as_str)
                    .map(str::to_string),
            );
        }
        for b in self.blocks() {
            for p in ["/text/text", "/label/text", "/hint/text"] {
                out.extend(b.pointer(p).and_then(Value::as_str).map(str::to_string));
            }
        }
        out.join("\n")
    }

    pub fn blocks(&self) -> Vec<Value> {
        self.view
            .get("blocks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The `view` argument: a JSON object, or (form bodies) a JSON-encoded string.
fn view_arg(body: &Map<String, Value>) -> Result<Value, Reply> {
    match body.get("view") {
        Some(Value::Object(m)) => Ok(Value::Object(m.clone())),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(Reply::err("invalid_arguments")),
        },
        _ => Err(Reply::err("invalid_arguments")),
    }
}

fn text_len(v: &Value, pointer: &str) -> Option<usize> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(|s| s.chars().count())
}

/// What Slack refuses in a modal (`invalid_arguments` with json-pointer details).
fn validate(view: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    if view.get("type").and_then(Value::as_str) != Some("modal") {
        errors.push("must be modal [json-pointer:/view/type]".into());
    }
    match text_len(view, "/title/text") {
        Some(n) if n > 0 && n <= 24 => {}
        _ => errors.push("must be 1 to 24 characters [json-pointer:/view/title/text]".into()),
    }
    for p in ["/submit/text", "/close/text"] {
        if text_len(view, p).is_some_and(|n| n > 24) {
            errors.push(format!(
                "must be less than 25 characters [json-pointer:/view{p}]"
            ));
        }
    }
    if text_len(view, "/private_metadata").is_some_and(|n| n > 3000) {
        errors
            .push("must be less than 3001 characters [json-pointer:/view/private_metadata]".into());
    }
    let blocks = view
        .get("blocks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if blocks.len() > 100 {
        errors.push("no more than 100 items allowed [json-pointer:/view/blocks]".into());
    }
    let has_input = blocks
        .iter()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("input"));
    if has_input && view.pointer("/submit/text").is_none() {
        errors.push("a view with input blocks needs submit [json-pointer:/view/submit]".into());
    }
    for (i, b) in blocks.iter().enumerate() {
        if b.get("type").and_then(Value::as_str) == Some("input") {
            check_input(b, &format!("/view/blocks/{i}"), &mut errors);
        }
    }
    errors.extend(super::validate_blocks(
        &blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) != Some("input"))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    errors
}

/// An input block: a label (≤ 2000), an element of a known type with an `action_id`, options
/// (≤ 100, text ≤ 75, value ≤ 150) for selects, initial options among the options.
fn check_input(b: &Value, at: &str, errors: &mut Vec<String>) {
    if !text_len(b, "/label/text").is_some_and(|n| n > 0 && n <= 2000) {
        errors.push(format!(
            "must be 1 to 2000 characters [json-pointer:{at}/label/text]"
        ));
    }
    let el = b.get("element").cloned().unwrap_or(Value::Null);
    let kind = el.get("type").and_then(Value::as_str).unwrap_or("");
    if !matches!(
        kind,
        "plain_text_input" | "static_select" | "multi_static_select"
    ) {
        errors.push(format!(
            "unsupported element type {kind:?} [json-pointer:{at}/element/type]"
        ));
        return;
    }
    if el
        .get("action_id")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errors.push(format!(
            "missing required field: action_id [json-pointer:{at}/element]"
        ));
    }
    if kind == "plain_text_input" {
        return;
    }
    let options = el
        .get("options")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if options.is_empty() || options.len() > 100 {
        errors.push(format!(
            "must provide 1 to 100 options [json-pointer:{at}/element/options]"
        ));
    }
    for (j, o) in options.iter().enumerate() {
        if !text_len(o, "/text/text").is_some_and(|n| n > 0 && n <= 75)
            || !text_len(o, "/value").is_some_and(|n| n > 0 && n <= 150)
        {
            errors.push(format!(
                "invalid option [json-pointer:{at}/element/options/{j}]"
            ));
        }
    }
    let initial: Vec<Value> = match (el.get("initial_option"), el.get("initial_options")) {
        (Some(o), _) => vec![o.clone()],
        (None, Some(Value::Array(os))) => os.clone(),
        _ => vec![],
    };
    for o in initial {
        if !options.contains(&o) {
            errors.push(format!(
                "initial option is not one of the options [json-pointer:{at}/element]"
            ));
        }
    }
}

fn new_hash(st: &mut SimState) -> String {
    st.next_view += 1;
    format!("{}.{:08x}", now_ms() / 1000, st.next_view)
}

/// `views.open`: a valid, unexpired, unexchanged trigger and a valid modal.
pub(super) fn open(st: &mut SimState, body: &Map<String, Value>) -> Reply {
    let trigger = str_field(body, "trigger_id").unwrap_or("");
    let Some(issued) = trigger
        .split('.')
        .nth(1)
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return Reply::err("invalid_trigger_id");
    };
    if now_ms() - issued > TRIGGER_TTL_MS {
        return Reply::err("expired_trigger_id");
    }
    if st.exchanged_triggers.contains(trigger) {
        return Reply::err("exchanged_trigger_id");
    }
    let view = match view_arg(body) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let errors = validate(&view);
    if !errors.is_empty() {
        return Reply::err_with("invalid_arguments", errors);
    }
    st.exchanged_triggers.insert(trigger.to_string());
    let id = format!("V0SIM{:06}", st.views.len() + 1);
    let hash = new_hash(st);
    let v = SlackView {
        id,
        hash,
        view,
        updates: 0,
    };
    let answer = json!({ "ok": true, "view": v.full() });
    st.views.push(v);
    Reply::ok(answer)
}

/// `views.update`: by `view_id` (or `external_id`), refused on a stale `hash`.
pub(super) fn update(st: &mut SimState, body: &Map<String, Value>) -> Reply {
    let view = match view_arg(body) {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    let errors = validate(&view);
    if !errors.is_empty() {
        return Reply::err_with("invalid_arguments", errors);
    }
    let id = str_field(body, "view_id");
    let external = str_field(body, "external_id");
    let Some(i) = st.views.iter().position(|v| {
        Some(v.id.as_str()) == id
            || (external.is_some() && v.view.get("external_id").and_then(Value::as_str) == external)
    }) else {
        return Reply::err("not_found");
    };
    if let Some(h) = str_field(body, "hash")
        && h != st.views[i].hash
    {
        return Reply::err("hash_conflict");
    }
    let hash = new_hash(st);
    let v = &mut st.views[i];
    v.view = view;
    v.hash = hash;
    v.updates += 1;
    Reply::ok(json!({ "ok": true, "view": v.full() }))
}
