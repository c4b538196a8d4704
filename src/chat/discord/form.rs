//! Forms on Discord: the request form's target as a select menu (an ephemeral message), then the
//! rest as a modal (interaction response type 9); **Deny with reason** as a modal. A modal holds
//! text inputs only (serenity 0.12), so choices are typed, prefilled with the default and with
//! the options as placeholder; the same parsers and policy check them as the typed command.
//!
//! Identity travels in `custom_id`: [`PICK`] on the target menu, `jitform:request:<target>` and
//! `jitform:deny:<request id>:<round>` on the modals, the [`FieldId`] on each input.

use super::super::form::{FieldId, Form, FormKind, FormValues, Input};
use super::{to_json, truncate};
use serde_json::Value;
use serenity::all::{
    ActionRowComponent, CreateActionRow, CreateInputText, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateModal, CreateSelectMenu, CreateSelectMenuKind,
    CreateSelectMenuOption, InputTextStyle,
};

/// `custom_id` of the target menu that starts the request form.
pub const PICK: &str = "jitform:pick";
const PREFIX: &str = "jitform:";

/// A modal's `custom_id` for `kind` (≤ 100 characters: target names and request ids are short).
pub fn modal_id(kind: &FormKind) -> String {
    match kind {
        FormKind::Request { target } => {
            format!("{PREFIX}request:{}", target.as_deref().unwrap_or(""))
        }
        FormKind::Deny { request_id, round } => format!("{PREFIX}deny:{request_id}:{round}"),
    }
}

/// Reads a modal's `custom_id` back; `None` for anyone else's modal.
pub fn parse_modal_id(s: &str) -> Option<FormKind> {
    let rest = s.strip_prefix(PREFIX)?;
    if let Some(target) = rest.strip_prefix("request:") {
        return Some(FormKind::Request {
            target: Some(target.to_string()).filter(|t| !t.is_empty()),
        });
    }
    let (request_id, round) = rest.strip_prefix("deny:")?.rsplit_once(':')?;
    Some(FormKind::Deny {
        request_id: request_id.to_string(),
        round: round.parse().ok().filter(|r: &i64| *r >= 0)?,
    })
}

/// The answer that shows `form`: the target menu while no target is chosen, else the modal.
pub fn form_response(form: &Form) -> Value {
    match (&form.kind, form.field(FieldId::Target)) {
        (FormKind::Request { target: None }, Some(field)) => target_menu(form, &field.input),
        _ => modal(form),
    }
}

/// Type 4, ephemeral: "Which target?" with a select menu of the member's targets (≤ 25).
fn target_menu(form: &Form, input: &Input) -> Value {
    let Input::Choice { options, .. } = input else {
        return modal(form);
    };
    let options = options
        .iter()
        .take(25)
        .map(|c| CreateSelectMenuOption::new(truncate(&c.label, 100), truncate(&c.value, 100)))
        .collect();
    let menu = CreateSelectMenu::new(PICK, CreateSelectMenuKind::String { options })
        .placeholder("Which target?")
        .min_values(1)
        .max_values(1);
    let message = CreateInteractionResponseMessage::new()
        .content(form.intro.clone().unwrap_or_else(|| "Which target?".into()))
        .components(vec![CreateActionRow::SelectMenu(menu)])
        .ephemeral(true);
    to_json(&CreateInteractionResponse::Message(message))
}

/// Type 9: the form's fields (other than the chosen target) as text inputs, at most five.
fn modal(form: &Form) -> Value {
    let rows = form
        .fields
        .iter()
        .filter(|f| f.id != FieldId::Target)
        .take(5)
        .map(|f| {
            let (style, value, placeholder, max) = match &f.input {
                Input::Text {
                    value,
                    placeholder,
                    multiline,
                    max_length,
                } => {
                    let style = if *multiline {
                        InputTextStyle::Paragraph
                    } else {
                        InputTextStyle::Short
                    };
                    (style, value.clone(), placeholder.clone(), *max_length)
                }
                Input::Choice {
                    options, selected, ..
                } => {
                    let all: Vec<&str> = options.iter().map(|c| c.value.as_str()).collect();
                    let hint = format!("one of: {}", all.join(", "));
                    (
                        InputTextStyle::Short,
                        Some(selected.join(",")),
                        Some(hint),
                        100,
                    )
                }
            };
            let mut input = CreateInputText::new(style, truncate(&f.label, 45), f.id.as_str())
                .required(!f.optional)
                .max_length(max.clamp(1, 4000));
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                input = input.value(truncate(&v, usize::from(max.clamp(1, 4000))));
            }
            if let Some(p) = placeholder.or_else(|| f.hint.clone()) {
                input = input.placeholder(truncate(&p, 100));
            }
            CreateActionRow::InputText(input)
        })
        .collect();
    let modal = CreateModal::new(modal_id(&form.kind), truncate(&form.title, 45)).components(rows);
    to_json(&CreateInteractionResponse::Modal(modal))
}

/// The submitted inputs by field (unknown ids and empty inputs left out).
pub fn values(rows: &[serenity::all::ActionRow]) -> FormValues {
    rows.iter()
        .flat_map(|r| r.components.iter())
        .filter_map(|c| match c {
            ActionRowComponent::InputText(t) => {
                let field = FieldId::parse(&t.custom_id)?;
                let v = t
                    .value
                    .as_deref()
                    .map(str::trim)
                    .filter(|v| !v.is_empty())?;
                Some((field, v.to_string()))
            }
            _ => None,
        })
        .collect()
}
