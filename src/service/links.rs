//! `from me`: a person does not have to know their public address. `/jit web1 22 1h from me`
//! answers with a one-time link (valid 10 minutes, `server.public_url`); the person opens it from
//! the computer they will connect from; the page shows the address jitbot sees and asks them to
//! confirm; the confirmation makes exactly the request the typed command with `from <address>`
//! would, with every policy check. Only the token's SHA-256 is stored.

use std::net::IpAddr;

use super::{ChatUser, Service};
use crate::chat::{Message, Tone};
use crate::command::AccessRequest;
use crate::domain::{GrantDuration, Ports, SourceCidr, SourceSpec};
use crate::policy::{Actor, Refusal};
use crate::store::{AuditKind, Result, SourceLink, now_ms};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long a link works.
pub const LINK_TTL_MS: i64 = 600_000;

/// The stored form of a token.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Service {
    /// Answers `… from me` with a link, after checking everything but the address.
    pub(super) async fn source_link(
        &self,
        user: &ChatUser,
        actor: &Actor<'_>,
        r: &AccessRequest,
        text: &str,
    ) -> Result<Message> {
        let context = json!({ "text": text, "target": r.target });
        let Some(base) = &self.public_url else {
            let refusal = Refusal::new(
                "link_unavailable",
                "`from me` needs jitbot's public address (server.public_url), which is not set here: name your address with `from <ip>`",
            );
            return self
                .refuse(Some(&actor.person.name), None, &refusal, context)
                .await;
        };
        if r.break_glass {
            let refusal = Refusal::new(
                "break_glass_needs_address",
                "break-glass cannot wait for a link: name your address with `from <ip>`",
            );
            return self
                .refuse(Some(&actor.person.name), None, &refusal, context)
                .await;
        }
        let without_source = AccessRequest {
            source: None,
            ..r.clone()
        };
        if let Err(refusal) = self.policy.evaluate(actor, &without_source)
            && refusal.rule != "source_required"
        {
            return self
                .refuse(Some(&actor.person.name), None, &refusal, context)
                .await;
        }
        let token = hex::encode(rand::random::<[u8; 32]>());
        let now = now_ms();
        let link = SourceLink {
            person: actor.person.name.clone(),
            platform: user.platform.as_str().to_string(),
            user_id: user.user_id.clone(),
            target: r.target.clone(),
            ports: r.ports.to_csv(),
            duration_ms: r.duration.as_millis(),
            reason: r.reason.clone(),
            expires_at: now + LINK_TTL_MS,
        };
        let mut tx = self.store.begin().await?;
        tx.insert_source_link(&token_hash(&token), &link, now)
            .await?;
        tx.audit(
            AuditKind::SourceLinkIssued,
            None,
            Some(&actor.person.name),
            json!({ "target": link.target, "ports": link.ports, "duration_s": r.duration.as_secs(), "expires_at": link.expires_at }),
            self.simulated,
        )
        .await?;
        tx.commit().await?;
        let url = base
            .join(&format!("ip/{token}"))
            .map(|u| u.to_string())
            .unwrap_or_default();
        let text = format!(
            "Open {url} from the computer you will connect from: it shows the address jitbot sees and asks you to confirm {} port {} for {}. The link works once, for 10 minutes.",
            r.target, link.ports, r.duration
        );
        Ok(self.reply(Tone::Pending, "Confirm your address", text))
    }

    /// The link behind `token`, while it is usable (for the page).
    pub async fn source_link_for(&self, token: &str) -> Result<Option<SourceLink>> {
        self.store.source_link(&token_hash(token), now_ms()).await
    }

    /// Uses the link up and makes the request from `address`; `None` when the link is unknown,
    /// used or expired.
    pub async fn confirm_source_link(
        &self,
        token: &str,
        address: IpAddr,
    ) -> Result<Option<Message>> {
        let Some(link) = self
            .store
            .take_source_link(&token_hash(token), now_ms())
            .await?
        else {
            return Ok(None);
        };
        let Some(person) = self.policy.people.get(&link.person) else {
            let text = format!("{} is no longer in jitbot's policy", link.person);
            return Ok(Some(self.reply(Tone::Danger, "Refused", text)));
        };
        let (Some(platform), Ok(ports)) = (
            crate::domain::Platform::parse(&link.platform),
            Ports::parse(&link.ports),
        ) else {
            return Ok(None);
        };
        let user = ChatUser {
            platform,
            user_id: link.user_id.clone(),
            user_name: link.person.clone(),
            roles: Vec::new(),
        };
        let groups = self.memberships(&user).await?;
        let actor = Actor {
            person,
            discord_roles: &[],
            slack_groups: &groups,
        };
        let source = SourceCidr::parse(&address.to_string())
            .ok()
            .map(SourceSpec::Cidr);
        let r = AccessRequest {
            target: link.target.clone(),
            ports,
            duration: GrantDuration::from_millis(link.duration_ms),
            source,
            reason: link.reason.clone(),
            break_glass: false,
        };
        let text = format!(
            "{} {} {} from {address} (confirmed through a link)",
            link.target, link.ports, r.duration
        );
        self.request(&user, &actor, &r, &text).await.map(Some)
    }
}
