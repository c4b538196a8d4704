//! The form interactions of both platforms, after the signature check: open (the request form,
//! **Deny with reason**), change (Slack: the target rebuilds the modal) and submit. Each answers
//! within the handler's budget and counts once (the replay cache), like a command or a click.

use super::{
    HANDLER_BUDGET, HttpState, Origin, SlackAnswer, discord_unavailable, first_copy, replayed,
    unavailable,
};
use crate::chat::discord;
use crate::chat::form::{FormKind, FormValues, Submitted};
use crate::chat::slack::{self, ButtonClick, FormChange, FormSubmission};
use crate::chat::{ButtonAction, Message, Tone};
use crate::messages::{form_errors, reply};
use crate::service::{ChatUser, FormOpened, FormVia};
use crate::store::StoreError;
use axum::Json;
use axum::response::{IntoResponse, Response};
use std::future::Future;

/// Runs `work` if this is the first copy of the request (`origin`'s replay key), within the
/// handler's budget. `Ok(None)`: a copy, which changes nothing.
async fn once<T>(
    st: &HttpState,
    origin: &Origin,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<Option<T>, &'static str> {
    let path = origin.path;
    let run = async {
        if !first_copy(st, origin).await? {
            return Ok(None);
        }
        work.await.map(Some)
    };
    match tokio::time::timeout(HANDLER_BUDGET, run).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, path, "form interaction failed");
            st.metrics.request("unavailable");
            Err("the database did not answer")
        }
        Err(_) => {
            tracing::error!(path, "form interaction took longer than the handler budget");
            st.metrics.request("unavailable");
            Err("the handler budget ran out")
        }
    }
}

fn slack_user(user_id: &str, user_name: &str) -> ChatUser {
    ChatUser {
        platform: crate::domain::Platform::Slack,
        user_id: user_id.to_string(),
        user_name: user_name.to_string(),
        roles: vec![],
    }
}

/// `/jit` with no arguments on Slack: the request form opens (a queued `views.open`; the slash
/// command gets an empty answer), or the reply that says why not.
pub(super) async fn slack_open_request_form(
    st: &HttpState,
    origin: &Origin,
    user: &ChatUser,
    trigger_id: &str,
) -> SlackAnswer {
    let via = FormVia::Trigger(trigger_id.to_string());
    let work = st.service.open_request_form(user, None, via);
    match once(st, origin, work).await {
        Ok(Some(FormOpened::Reply(msg))) => SlackAnswer::Json(slack::ephemeral_response(&msg)),
        Ok(Some(_)) => SlackAnswer::Empty,
        Ok(None) => SlackAnswer::Copy,
        Err(_) => SlackAnswer::Json(unavailable()),
    }
}

/// **Deny with reason** on Slack: the form opens from the click's `trigger_id`; a refusal goes
/// to the clicker as for any refused click.
pub(super) async fn slack_deny_button(
    st: &HttpState,
    origin: &Origin,
    click: &ButtonClick,
) -> SlackAnswer {
    let user = slack_user(&click.user_id, &click.user_name);
    let via = FormVia::Trigger(click.trigger_id.clone());
    let work = async {
        match st.service.open_deny_form(&user, &click.action, via).await? {
            FormOpened::Reply(answer) => {
                st.service
                    .tell_clicker(&user, &click.action.request_id, &answer)
                    .await
            }
            _ => Ok(None),
        }
    };
    match once(st, origin, work).await {
        Ok(Some(None)) => SlackAnswer::Empty,
        Ok(Some(Some(answer))) => SlackAnswer::Json(super::click_response(&answer)),
        Ok(None) => SlackAnswer::Copy,
        Err(_) => SlackAnswer::Json(super::click_unavailable()),
    }
}

/// A new target chosen in an open request form: a queued `views.update`; Slack gets an empty
/// acknowledgement.
pub(super) async fn slack_form_changed(
    st: &HttpState,
    origin: &Origin,
    change: &FormChange,
) -> SlackAnswer {
    if change.field != crate::chat::form::FieldId::Target {
        return SlackAnswer::Empty;
    }
    let user = slack_user(&change.user_id, &change.user_name);
    let work = st.service.change_request_form(
        &user,
        &change.view_id,
        change.hash.as_deref(),
        &change.value,
    );
    match once(st, origin, work).await {
        Ok(Some(())) => SlackAnswer::Empty,
        Ok(None) => SlackAnswer::Copy,
        // Nothing to show the person here; the form stays as it is.
        Err(_) => SlackAnswer::Empty,
    }
}

/// A submitted modal: errors beside their fields (`response_action: errors`), the answer in
/// place of the form (`response_action: update`), or the form closes (empty 200).
pub(super) async fn slack_form_submitted(
    st: &HttpState,
    origin: &Origin,
    submission: &FormSubmission,
) -> SlackAnswer {
    let user = slack_user(&submission.user_id, &submission.user_name);
    let work = submit(st, &user, &submission.kind, &submission.values);
    match once(st, origin, work).await {
        Ok(Some(Submitted::Errors(errors))) => {
            SlackAnswer::Json(slack::form_errors(submission, &errors))
        }
        Ok(Some(Submitted::Answer(msg))) => SlackAnswer::Json(slack::form_answer(&msg)),
        Ok(Some(Submitted::Closed)) => SlackAnswer::Empty,
        Ok(None) => SlackAnswer::Copy,
        Err(_) => SlackAnswer::Json(slack::form_answer(&not_recorded())),
    }
}

fn not_recorded() -> Message {
    reply(
        Tone::Danger,
        "Not recorded",
        "jitbot could not record this right now (its database is not answering). Nothing was changed; please try again in a minute.",
        false,
    )
}

async fn submit(
    st: &HttpState,
    user: &ChatUser,
    kind: &FormKind,
    values: &FormValues,
) -> Result<Submitted, StoreError> {
    match kind {
        FormKind::Request { target } => {
            st.service
                .submit_request_form(user, target.as_deref(), values)
                .await
        }
        FormKind::Deny { request_id, round } => {
            st.service
                .submit_deny_form(user, request_id, *round, values)
                .await
        }
    }
}

/// Discord: what opening a form answers (type 9 modal, type 4 target menu, or a reply).
fn discord_opened(opened: FormOpened) -> Response {
    match opened {
        FormOpened::Show(form) => Json(discord::form_response(&form)).into_response(),
        FormOpened::Reply(msg) => {
            Json(discord::ephemeral(&discord::discord_idiom(msg))).into_response()
        }
        // Discord forms are never queued; acknowledge without a message.
        FormOpened::Queued => Json(discord::deferred_update()).into_response(),
    }
}

/// `/jit form [target]` or a target picked in the menu: the menu or the modal.
pub(super) async fn discord_open_request_form(
    st: &HttpState,
    origin: &Origin,
    user: &ChatUser,
    target: Option<&str>,
) -> Response {
    let work = st
        .service
        .open_request_form(user, target, FormVia::Response);
    match once(st, origin, work).await {
        Ok(Some(opened)) => discord_opened(opened),
        Ok(None) => replayed(),
        Err(_) => discord_unavailable(st, "this"),
    }
}

/// **Deny with reason** on Discord: the modal, or the refusal for the clicker alone.
pub(super) async fn discord_deny_button(
    st: &HttpState,
    origin: &Origin,
    user: &ChatUser,
    action: &ButtonAction,
) -> Response {
    let work = st.service.open_deny_form(user, action, FormVia::Response);
    match once(st, origin, work).await {
        Ok(Some(opened)) => discord_opened(opened),
        Ok(None) => replayed(),
        Err(_) => discord_unavailable(st, "your decision"),
    }
}

/// A submitted Discord modal (type 5): the answer or the errors for the member alone, or a
/// deferred update when the card says it all (a deny).
pub(super) async fn discord_form_submitted(
    st: &HttpState,
    origin: &Origin,
    user: &ChatUser,
    kind: &FormKind,
    values: &FormValues,
) -> Response {
    let work = submit(st, user, kind, values);
    match once(st, origin, work).await {
        Ok(Some(Submitted::Errors(errors))) => {
            let msg = form_errors(&errors, st.service.simulated);
            Json(discord::ephemeral(&msg)).into_response()
        }
        Ok(Some(Submitted::Answer(msg))) => {
            Json(discord::ephemeral(&discord::discord_idiom(msg))).into_response()
        }
        Ok(Some(Submitted::Closed)) => Json(discord::deferred_update()).into_response(),
        Ok(None) => replayed(),
        Err(_) => discord_unavailable(st, "this"),
    }
}
