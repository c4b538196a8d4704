//! The neutral model of a form (a Slack modal, a Discord modal): what core code asks people to
//! fill in, independent of either platform. `chat::slack` renders it as a Block Kit view and
//! `chat::discord` as a modal with text inputs; both read the answers back into [`FormValues`].
//!
//! Two forms exist: the request form (`/jit` with no arguments) and **Deny with reason** on an
//! approval card. Every field has a [`FieldId`], which is also the platform's block or input id,
//! so an error found on submission is shown next to the field it is about.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A field of a form; its [`FieldId::as_str`] is the Slack `block_id`/`action_id` and the
/// Discord input `custom_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldId {
    Target,
    Ports,
    Duration,
    Source,
    Reason,
}

impl FieldId {
    pub const ALL: [FieldId; 5] = [
        FieldId::Target,
        FieldId::Ports,
        FieldId::Duration,
        FieldId::Source,
        FieldId::Reason,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FieldId::Target => "target",
            FieldId::Ports => "ports",
            FieldId::Duration => "duration",
            FieldId::Source => "source",
            FieldId::Reason => "reason",
        }
    }

    pub fn parse(s: &str) -> Option<FieldId> {
        FieldId::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// What a submitted form is for; travels with the form (Slack `callback_id` +
/// `private_metadata`, Discord `custom_id`) and comes back with the answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum FormKind {
    /// A new request, exactly as `/jit <target> <ports> <duration> [from …] [reason…]`.
    Request {
        /// The target the form was built for (Discord asks for it before the modal; on Slack
        /// the answers carry it).
        #[serde(default)]
        target: Option<String>,
    },
    /// An approver denies one round of a request and says why.
    Deny { request_id: String, round: i64 },
}

/// One option of a choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub label: String,
    pub value: String,
}

/// How a field is filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// Pick from `options` (several when `multiple`). `updates_form`: choosing rebuilds the
    /// form (the target decides the other fields).
    Choice {
        options: Vec<Choice>,
        selected: Vec<String>,
        multiple: bool,
        updates_form: bool,
    },
    /// Free text, prefilled with `value`.
    Text {
        value: Option<String>,
        placeholder: Option<String>,
        multiline: bool,
        max_length: u16,
    },
}

/// One labelled field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormField {
    pub id: FieldId,
    pub label: String,
    /// Shown under the field (the reason's pattern, the allowed sources).
    pub hint: Option<String>,
    pub optional: bool,
    pub input: Input,
}

/// A form: title, an optional line of text above the fields, the fields, the submit label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Form {
    pub kind: FormKind,
    pub title: String,
    pub intro: Option<String>,
    pub fields: Vec<FormField>,
    pub submit: String,
}

impl Form {
    /// The field with this id, if the form has it.
    pub fn field(&self, id: FieldId) -> Option<&FormField> {
        self.fields.iter().find(|f| f.id == id)
    }
}

/// What a person entered, by field (several choices joined with `,`; empty fields absent).
pub type FormValues = BTreeMap<FieldId, String>;

/// Errors to show next to their fields (Slack `response_action: errors`).
pub type FieldErrors = BTreeMap<FieldId, String>;

/// What a submitted form answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Show these next to their fields; nothing was recorded.
    Errors(FieldErrors),
    /// Done (or refused as a whole): close the form and show this.
    Answer(super::Message),
    /// Done; the card or a notice says it all (the form just closes).
    Closed,
}
