//! The requester's buttons on their open grant: **Extend** and **I'm done**. They do exactly what
//! `/jit extend <id> <duration>` and `/jit revoke <id>` do, with the same checks and audit events.

use super::{ChatUser, Service};
use crate::chat::{ButtonAction, ButtonKind, Message, Tone};
use crate::domain::{GrantDuration, RequestId};
use crate::policy::{Actor, Refusal};
use crate::store::Result;
use serde_json::json;

impl Service {
    pub(super) async fn grant_button(
        &self,
        user: &ChatUser,
        action: &ButtonAction,
    ) -> Result<Message> {
        let Some(person) = self.person(user) else {
            let refusal = Refusal::new(
                "unknown_person",
                "you are not in jitbot's policy, so you have no grants",
            );
            let ctx = json!({ "button": action.kind.as_str(), "user": user.address() });
            return self
                .refuse(
                    Some(&user.address()),
                    Some(&action.request_id),
                    &refusal,
                    ctx,
                )
                .await;
        };
        let Ok(id) = RequestId::parse(&action.request_id) else {
            let text = format!("there is no request `{}`", action.request_id);
            return Ok(self.reply(Tone::Warning, "Unknown request", text));
        };
        let groups = self.memberships(user).await?;
        let actor = Actor {
            person,
            discord_roles: &user.roles,
            slack_groups: &groups,
        };
        match action.kind {
            // The button says by how much (in seconds); policy decides as for the command.
            ButtonKind::Extend => {
                let secs = u64::try_from(action.round.max(1)).unwrap_or(1);
                self.extend(&actor, &id, GrantDuration::from_secs(secs))
                    .await
            }
            ButtonKind::Done => self.revoke(&actor, &id).await,
            ButtonKind::Approve | ButtonKind::Deny | ButtonKind::DenyWithReason => Ok(self.reply(
                Tone::Warning,
                "Not a grant button",
                "this button decides a request; use it on the approval card",
            )),
        }
    }
}
