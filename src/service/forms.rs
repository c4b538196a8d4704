//! Forms: `/jit` with no arguments opens the request form, and **Deny with reason** on a card
//! opens a form for the reason. What a submitted form does goes through exactly the code the
//! typed command and the Deny button use ([`Service::request`], the click path), so policy,
//! conditions, replay protection and audit all apply; errors found on submission are mapped to
//! the field they are about.
//!
//! Handlers never call a chat API: on Slack, opening or changing a form is a job the worker runs
//! at once (the commit wakes it); on Discord the form is the interaction response itself.

use super::{ChatUser, Service};
use crate::chat::form::{FieldErrors, FieldId, Form, FormValues, Submitted};
use crate::chat::{ButtonAction, ButtonKind, Message, Tone};
use crate::command::AccessRequest;
use crate::decision;
use crate::domain::{GrantDuration, Platform, Ports, SourceSpec};
use crate::job::Job;
use crate::messages::{self, RequestFormInput};
use crate::policy::{Actor, Refusal};
use crate::store::{Result, now_ms};
use serde_json::json;

/// How long Slack's `trigger_id` opens a form.
const TRIGGER_TTL_MS: i64 = 3_000;

/// How a form reaches the person.
#[derive(Debug, Clone)]
pub enum FormVia {
    /// Slack: `views.open` with this `trigger_id`, as a job the worker runs at once.
    Trigger(String),
    /// Discord: the form is the interaction response.
    Response,
}

/// What opening a form answers.
#[derive(Debug, Clone, PartialEq)]
pub enum FormOpened {
    /// Show this form in the response (Discord).
    Show(Form),
    /// The form is on its way (a queued `views.open`); acknowledge with nothing.
    Queued,
    /// No form: say this instead (refused, or nothing to request).
    Reply(Message),
}

/// The field a policy refusal is about (anything else is shown at the target).
fn field_of(rule: &str) -> FieldId {
    match rule {
        "port_not_allowed" => FieldId::Ports,
        "duration_over_max" => FieldId::Duration,
        "reason_required" | "reason_pattern" => FieldId::Reason,
        r if r.starts_with("source") => FieldId::Source,
        _ => FieldId::Target,
    }
}

/// The request the form's values describe, parsed with the typed command's parsers; or the
/// error of each field that does not parse. A blank source is `from me` when `links`.
fn parse_request(
    values: &FormValues,
    links: bool,
) -> std::result::Result<AccessRequest, FieldErrors> {
    let get = |f: FieldId| values.get(&f).map(|v| v.trim()).unwrap_or("");
    let mut errors = FieldErrors::new();
    let mut need = |f: FieldId, what: &str| {
        if get(f).is_empty() {
            errors.insert(f, format!("choose {what}"));
        }
    };
    need(FieldId::Target, "a target");
    need(FieldId::Ports, "at least one port");
    need(FieldId::Duration, "how long");
    let ports = Ports::parse(get(FieldId::Ports)).map_err(|e| (FieldId::Ports, e));
    let duration = GrantDuration::parse(get(FieldId::Duration)).map_err(|e| (FieldId::Duration, e));
    let source = match get(FieldId::Source) {
        "" if links => Ok(Some(SourceSpec::Me)),
        "" => Ok(None),
        s => SourceSpec::parse(s)
            .map(Some)
            .map_err(|e| (FieldId::Source, e)),
    };
    for (f, e) in [
        ports.as_ref().err(),
        duration.as_ref().err(),
        source.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        errors.entry(*f).or_insert_with(|| e.clone());
    }
    match (ports, duration, source) {
        (Ok(ports), Ok(duration), Ok(source)) if errors.is_empty() => Ok(AccessRequest {
            target: get(FieldId::Target).to_string(),
            ports,
            duration,
            source,
            reason: Some(get(FieldId::Reason).to_string()).filter(|r| !r.is_empty()),
            break_glass: false,
        }),
        _ => Err(errors),
    }
}

/// The `/jit` text the form stands for (the audit trail's `text`, as if typed).
fn command_text(r: &AccessRequest) -> String {
    let mut words = vec![r.target.clone(), r.ports.to_csv(), r.duration.to_string()];
    match &r.source {
        Some(SourceSpec::Me) => words.push("from me".into()),
        Some(SourceSpec::Any) => words.push("from any".into()),
        Some(SourceSpec::Cidr(c)) => words.push(format!("from {c}")),
        None => {}
    }
    words.extend(r.reason.clone());
    words.join(" ")
}

impl Service {
    /// The request form for this person (the target they chose, else their first), or the
    /// reply that says why there is none.
    fn request_form_for(
        &self,
        actor: &Actor<'_>,
        target: Option<&str>,
    ) -> std::result::Result<Form, Box<Message>> {
        let mut targets = self.policy.requestable(actor);
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        let chosen = target.and_then(|t| targets.iter().copied().find(|x| x.name == t));
        let Some(first) = chosen.or_else(|| targets.first().copied()) else {
            let text = "there is no target you may request; ask an administrator to add you as a requester";
            return Err(Box::new(self.reply(
                Tone::Warning,
                "Nothing to request",
                text,
            )));
        };
        Ok(messages::request_form(&RequestFormInput {
            targets: targets.clone(),
            target: first,
            chosen: chosen.is_some(),
            person: actor.person,
            links: self.public_url.is_some(),
        }))
    }

    /// Queues `form` to open through `via`, or hands it back to show in the response.
    async fn deliver_form(
        &self,
        platform: Platform,
        form: Form,
        via: FormVia,
    ) -> Result<FormOpened> {
        let FormVia::Trigger(trigger_id) = via else {
            return Ok(FormOpened::Show(form));
        };
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        Job::FormOpen {
            platform,
            trigger_id,
            form,
            expires_at: now + TRIGGER_TTL_MS,
        }
        .enqueue(&mut tx, now)
        .await?;
        // The commit wakes the worker, which opens the form at once.
        tx.commit().await?;
        Ok(FormOpened::Queued)
    }

    /// `/jit` with no arguments (Slack) or `/jit form [target]` (Discord): the request form.
    pub async fn open_request_form(
        &self,
        user: &ChatUser,
        target: Option<&str>,
        via: FormVia,
    ) -> Result<FormOpened> {
        let Some(person) = self.person(user) else {
            // The same refusal as any command from someone jitbot does not know.
            return self.command(user, "").await.map(FormOpened::Reply);
        };
        let groups = self.memberships(user).await?;
        let actor = Actor {
            person,
            discord_roles: &user.roles,
            slack_groups: &groups,
        };
        match self.request_form_for(&actor, target) {
            Ok(form) => self.deliver_form(user.platform, form, via).await,
            Err(reply) => Ok(FormOpened::Reply(*reply)),
        }
    }

    /// The person chose another target in an open request form (Slack): the form is rebuilt for
    /// it by `views.update` (refused by Slack if the view changed meanwhile). A target they may
    /// not request changes nothing.
    pub async fn change_request_form(
        &self,
        user: &ChatUser,
        view_id: &str,
        hash: Option<&str>,
        target: &str,
    ) -> Result<()> {
        let Some(person) = self.person(user) else {
            return Ok(());
        };
        let groups = self.memberships(user).await?;
        let actor = Actor {
            person,
            discord_roles: &user.roles,
            slack_groups: &groups,
        };
        let Ok(form) = self.request_form_for(&actor, Some(target)) else {
            return Ok(());
        };
        let mut tx = self.store.begin().await?;
        Job::FormUpdate {
            platform: user.platform,
            view_id: view_id.to_string(),
            hash: hash.map(str::to_string),
            form,
        }
        .enqueue(&mut tx, now_ms())
        .await?;
        tx.commit().await
    }

    /// A submitted request form: field errors (audited as a refusal, nothing recorded), or the
    /// answer of [`Service::request`] for exactly the request the form describes.
    pub async fn submit_request_form(
        &self,
        user: &ChatUser,
        target: Option<&str>,
        values: &FormValues,
    ) -> Result<Submitted> {
        let Some(person) = self.person(user) else {
            return self.command(user, "").await.map(Submitted::Answer);
        };
        let groups = self.memberships(user).await?;
        let actor = Actor {
            person,
            discord_roles: &user.roles,
            slack_groups: &groups,
        };
        let mut values = values.clone();
        if let Some(t) = target {
            values
                .entry(FieldId::Target)
                .or_insert_with(|| t.to_string());
        }
        let links = self.public_url.is_some();
        let r = match parse_request(&values, links) {
            Ok(r) => r,
            Err(errors) => return self.form_refused(&actor, "bad_form", errors, &values).await,
        };
        // The policy's answer, field by field, before anything is recorded; `from me` is
        // checked without the address, as the link flow does.
        let checked = AccessRequest {
            source: r.source.clone().filter(|s| *s != SourceSpec::Me),
            ..r.clone()
        };
        if let Err(refusal) = self.policy.evaluate(&actor, &checked)
            && !(r.source == Some(SourceSpec::Me) && refusal.rule == "source_required")
        {
            let errors = FieldErrors::from([(field_of(refusal.rule), refusal.message.clone())]);
            return self
                .form_refused(&actor, refusal.rule, errors, &values)
                .await;
        }
        let text = command_text(&r);
        let answer = self.request(user, &actor, &r, &text).await?;
        Ok(Submitted::Answer(answer))
    }

    /// Audits a refused form (one event with every field's error) and returns the errors.
    async fn form_refused(
        &self,
        actor: &Actor<'_>,
        rule: &'static str,
        errors: FieldErrors,
        values: &FormValues,
    ) -> Result<Submitted> {
        let all: Vec<String> = errors
            .iter()
            .map(|(f, m)| format!("{}: {m}", f.as_str()))
            .collect();
        let refusal = Refusal::new(rule, all.join("; "));
        let context = json!({ "form": "request", "values": values });
        self.refuse(Some(&actor.person.name), None, &refusal, context)
            .await?;
        Ok(Submitted::Errors(errors))
    }

    /// **Deny with reason** clicked: the form, if this approver may decide this round now
    /// (else the refusal, audited, as for a Deny click).
    pub async fn open_deny_form(
        &self,
        user: &ChatUser,
        action: &ButtonAction,
        via: FormVia,
    ) -> Result<FormOpened> {
        let deny = ButtonAction {
            kind: ButtonKind::Deny,
            ..action.clone()
        };
        let (_, req) = match self.authorise_click(user, &deny).await? {
            Ok(allowed) => allowed,
            Err(refused) => return Ok(FormOpened::Reply(refused)),
        };
        // A round already decided gets the answer its Deny button would get, not a form.
        let round = action.round;
        let open = req.status == decision::open_status(round)
            && req.round == round
            && decision::accepts_votes(true, round, req.extension_ms.is_some());
        if !open {
            return self.nothing_to_decide(&req).await.map(FormOpened::Reply);
        }
        let form = messages::deny_form(&req, round);
        self.deliver_form(user.platform, form, via).await
    }

    /// A submitted deny form: the Deny click with the reason (authorised again; the card update
    /// and the notices say the rest).
    pub async fn submit_deny_form(
        &self,
        user: &ChatUser,
        request_id: &str,
        round: i64,
        values: &FormValues,
    ) -> Result<Submitted> {
        let Some(reason) = values
            .get(&FieldId::Reason)
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
        else {
            let errors =
                FieldErrors::from([(FieldId::Reason, messages::DENY_REASON_MISSING.into())]);
            return Ok(Submitted::Errors(errors));
        };
        let action = ButtonAction {
            kind: ButtonKind::Deny,
            request_id: request_id.to_string(),
            round,
        };
        Ok(match self.decide(user, &action, Some(reason)).await? {
            None => Submitted::Closed,
            Some(answer) => Submitted::Answer(answer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(FieldId, &str)]) -> FormValues {
        pairs.iter().map(|(f, v)| (*f, v.to_string())).collect()
    }

    #[test]
    fn a_form_is_the_request_the_typed_command_would_make() {
        let v = values(&[
            (FieldId::Target, "web1"),
            (FieldId::Ports, "22,3389"),
            (FieldId::Duration, "30m"),
            (FieldId::Source, "203.0.113.9"),
            (FieldId::Reason, "deploy hotfix"),
        ]);
        let r = parse_request(&v, false).unwrap();
        assert_eq!(
            command_text(&r),
            "web1 22,3389 30m from 203.0.113.9/32 deploy hotfix"
        );
        let typed = crate::command::Command::parse(&command_text(&r)).unwrap();
        assert_eq!(typed, crate::command::Command::Request(r));
    }

    #[test]
    fn a_blank_source_is_the_link_flow_only_where_links_exist() {
        let v = values(&[
            (FieldId::Target, "web1"),
            (FieldId::Ports, "22"),
            (FieldId::Duration, "1h"),
        ]);
        assert_eq!(
            parse_request(&v, true).unwrap().source,
            Some(SourceSpec::Me)
        );
        assert_eq!(parse_request(&v, false).unwrap().source, None);
    }

    #[test]
    fn each_unreadable_field_gets_its_own_error() {
        let v = values(&[
            (FieldId::Target, "web1"),
            (FieldId::Ports, "telnet"),
            (FieldId::Duration, "forever"),
            (FieldId::Source, "somewhere"),
        ]);
        let errors = parse_request(&v, false).unwrap_err();
        let fields: Vec<FieldId> = errors.keys().copied().collect();
        assert_eq!(fields, [FieldId::Ports, FieldId::Duration, FieldId::Source]);
        let missing = parse_request(&FormValues::new(), false).unwrap_err();
        assert_eq!(missing.len(), 3, "{missing:?}");
    }

    #[test]
    fn refusals_land_on_their_field() {
        assert_eq!(field_of("port_not_allowed"), FieldId::Ports);
        assert_eq!(field_of("duration_over_max"), FieldId::Duration);
        assert_eq!(field_of("reason_pattern"), FieldId::Reason);
        assert_eq!(field_of("source_not_allowed"), FieldId::Source);
        assert_eq!(field_of("not_a_requester"), FieldId::Target);
    }
}
