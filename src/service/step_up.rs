//! Step-up approval: on a target with `step_up = true`, an approver's Approve click counts only
//! after they sign in with Microsoft Entra ID and confirm on jitbot's page, so a compromised chat
//! account alone cannot approve.
//!
//! 1. The click (authorised like any click) is not counted: it is answered with a one-time link
//!    `<public_url>step-up/<token>` (10 minutes, single use, bound to the request, the round and
//!    the clicking chat user; only the token's SHA-256 is stored).
//! 2. Opening it uses the link up and starts one sign-in: `state`, `nonce` and the PKCE verifier
//!    are kept in the database (`step_up_links`), and the browser goes to Entra's authorize
//!    endpoint.
//! 3. The callback uses the `state` up (once, within `entra.login_timeout`), redeems the code,
//!    checks the ID token ([`crate::oidc`]) and maps its `oid` to a person (`people.<name>.entra`):
//!    it must be the person the clicking chat user is, and still an approver of this round.
//! 4. Confirm records the approval through the same path as a click (same round lock, same
//!    thresholds, same four-eyes rule), with the object id and UPN in its audit event.
//!
//! Every refusal after a link was issued is audited (`step_up_refused`, with `reason`) and shown
//! as a page that says what to do; no token, code or secret is ever recorded or shown.

use super::{ChatUser, Service};
use crate::chat::{ButtonAction, ButtonKind, Message, Tone};
use crate::domain::{Platform, bounded};
use crate::oidc::{Identity, random_value};
use crate::policy::{Actor, Person, Refusal};
use crate::store::{AuditKind, RequestRow, Result, StepUpLink, StepUpLogin, now_ms};
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long a step-up link works.
pub const STEP_UP_TTL_MS: i64 = 600_000;
/// How long the Confirm button works after the sign-in.
const CONFIRM_TTL_MS: i64 = 300_000;

fn hashed(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The query of `GET /step-up/callback` (what Entra appends to the redirect URI).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// What the step-up pages show next.
#[derive(Debug, Clone)]
pub enum StepUpPage {
    /// Send the browser to Entra's authorize endpoint, with `browser` in a cookie: the
    /// callback must come back to the browser that started the sign-in.
    SignIn { url: url::Url, browser: String },
    /// Signed in as the approver: what is being approved, and the Confirm button's token.
    Confirm {
        request_id: String,
        what: String,
        person: String,
        upn: String,
        confirm_token: String,
    },
    /// What the confirmed approval did (jitbot's answer, as in chat).
    Done(Message),
    /// Refused: a sentence for the person.
    Refused(String),
}

impl Service {
    /// Whether an approval of this request needs the Entra sign-in first.
    pub(super) fn needs_step_up(&self, req: &RequestRow) -> bool {
        self.policy
            .targets
            .get(&req.target)
            .is_some_and(|t| t.step_up)
    }

    /// The answer to an authorised Approve click on a `step_up` target: a one-time link.
    pub(super) async fn step_up_link(
        &self,
        user: &ChatUser,
        person: &Person,
        req: &RequestRow,
        action: &ButtonAction,
    ) -> Result<Option<Message>> {
        let Some(base) = self.public_url.as_ref().filter(|_| self.step_up.is_some()) else {
            return self.refuse_link(person, req, action, unavailable()).await;
        };
        if person.entra.is_none() {
            let refusal = Refusal::new(
                "step_up_no_entra",
                format!(
                    "approving {} needs an Entra ID sign-in, and jitbot's policy does not know your directory identity (people.{}.entra): ask an administrator to add it",
                    req.target, person.name
                ),
            );
            return self.refuse_link(person, req, action, refusal).await;
        }
        let token = random_value();
        let now = now_ms();
        let link = StepUpLink {
            request_id: req.id.clone(),
            round: action.round,
            person: person.name.clone(),
            platform: user.platform.as_str().to_string(),
            user_id: user.user_id.clone(),
            roles: user.roles.clone(),
            expires_at: now + STEP_UP_TTL_MS,
            nonce: None,
            pkce_verifier: None,
            login_expires_at: None,
            callback_at: None,
            browser_hash: None,
            entra_oid: None,
            entra_upn: None,
        };
        let mut tx = self.store.begin().await?;
        tx.insert_step_up_link(&hashed(&token), &link, now).await?;
        tx.audit(
            AuditKind::StepUpLinkIssued,
            Some(&req.id),
            Some(&person.name),
            json!({ "round": action.round, "expires_at": link.expires_at }),
            self.simulated,
        )
        .await?;
        tx.commit().await?;
        let url = base
            .join(&format!("step-up/{token}"))
            .map(|u| u.to_string())
            .unwrap_or_default();
        let text = format!(
            "Approving `{}` ({} port {}) needs you to sign in with Microsoft Entra ID: open {url} and confirm there. Your click is not counted until then. The link works once, for 10 minutes, and only for you.",
            req.id, req.target, req.ports
        );
        let link = self.reply(Tone::Pending, "Sign in to approve", text);
        Ok(Some(link))
    }

    /// A click that gets no link: audited and answered like any refused click.
    async fn refuse_link(
        &self,
        person: &Person,
        req: &RequestRow,
        action: &ButtonAction,
        refusal: Refusal,
    ) -> Result<Option<Message>> {
        let ctx = json!({ "round": action.round, "step_up": true });
        self.refuse(Some(&person.name), Some(&req.id), &refusal, ctx)
            .await
            .map(Some)
    }

    /// Audits a refused step-up step and returns its page.
    async fn step_up_refused(
        &self,
        link: &StepUpLink,
        reason: &str,
        detail: serde_json::Value,
        page: &str,
    ) -> Result<StepUpPage> {
        let mut tx = self.store.begin().await?;
        let mut event = json!({ "reason": reason, "round": link.round });
        if let (Some(map), serde_json::Value::Object(more)) = (event.as_object_mut(), detail) {
            map.extend(more);
        }
        tx.audit(
            AuditKind::StepUpRefused,
            Some(&link.request_id),
            Some(&link.person),
            event,
            self.simulated,
        )
        .await?;
        tx.commit().await?;
        self.metrics.request("refused");
        tracing::info!(request_id = %link.request_id, person = %link.person, reason, "step-up refused");
        Ok(StepUpPage::Refused(page.to_string()))
    }

    /// `GET /step-up/<token>`: uses the link up and starts the sign-in.
    pub async fn step_up_begin(&self, token: &str) -> Result<StepUpPage> {
        let Some(client) = &self.step_up else {
            return Ok(StepUpPage::Refused(GONE.into()));
        };
        let (state, nonce, verifier) = (random_value(), random_value(), random_value());
        let browser = random_value();
        let now = now_ms();
        let login = StepUpLogin {
            state_hash: &hashed(&state),
            browser_hash: &hashed(&browser),
            nonce: &nonce,
            pkce_verifier: &verifier,
            login_expires_at: now + client.settings().login_timeout.as_millis() as i64,
        };
        let Some(link) = self
            .store
            .open_step_up_link(&hashed(token), &login, now)
            .await?
        else {
            return Ok(StepUpPage::Refused(GONE.into()));
        };
        match client.authorize_url(&state, &nonce, &verifier).await {
            Ok(url) => Ok(StepUpPage::SignIn { url, browser }),
            Err(e) => {
                let detail = json!({ "error": bounded(&e.to_string()) });
                self.step_up_refused(&link, e.reason(), detail, UNAVAILABLE)
                    .await
            }
        }
    }
}

/// What an approval of `round` opens, for the Confirm page: `lab port 22 from 203.0.113.7/32
/// for 30m, for steve (reason: deploy)`, or the extension it grants.
fn what_is_approved(req: &RequestRow, round: i64) -> String {
    let reason = req
        .reason
        .as_deref()
        .map(|r| format!(" (reason: {})", bounded(r)))
        .unwrap_or_default();
    let grant = format!("{} port {} from {}", req.target, req.ports, req.source);
    match (round, req.extension_ms) {
        (0, _) | (_, None) => format!(
            "{grant} for {}, for {}{reason}",
            crate::domain::GrantDuration::from_millis(req.duration_ms),
            req.requester
        ),
        (_, Some(ms)) => format!(
            "{grant}: {} more, for {}",
            crate::domain::GrantDuration::from_millis(ms),
            req.extension_by.as_deref().unwrap_or(&req.requester)
        ),
    }
}

fn unavailable() -> Refusal {
    Refusal::new(
        "step_up_unavailable",
        "this target needs an Entra ID sign-in to approve, which is not configured here ([entra] and server.public_url)",
    )
}

/// The page of an unknown, used or expired link.
pub const GONE: &str = "This link is not valid: it has expired, was already used, or never existed. Click Approve again in chat for a new one.";
const UNAVAILABLE: &str = "jitbot could not reach Microsoft Entra ID to sign you in. Nothing was approved; click Approve again in chat in a minute.";
const OTHER_BROWSER: &str = "This sign-in was started in another browser, so nothing was approved. Open the link from chat in the browser you sign in with.";
const SIGN_IN_FAILED: &str = "The sign-in could not be verified, so nothing was approved. Click Approve again in chat for a new link.";

impl Service {
    /// `GET /step-up/callback`: the sign-in's answer, in the browser whose cookie is `browser`.
    /// Uses the `state` up, redeems the code and checks who signed in; on success the page asks
    /// to confirm.
    pub async fn step_up_callback(
        &self,
        q: &CallbackQuery,
        browser: Option<&str>,
    ) -> Result<StepUpPage> {
        let (Some(client), Some(state)) = (&self.step_up, q.state.as_deref()) else {
            return Ok(StepUpPage::Refused(GONE.into()));
        };
        let state_hash = hashed(state);
        let Some(link) = self.store.step_up_by_state(&state_hash).await? else {
            return Ok(StepUpPage::Refused(GONE.into()));
        };
        if !self.store.take_step_up_state(&state_hash, now_ms()).await? {
            let (reason, page) = if link.callback_at.is_some() {
                (
                    "state_used",
                    "This sign-in was already used. Nothing more was approved; click Approve again in chat if you need to.",
                )
            } else {
                (
                    "state_expired",
                    "This sign-in took too long and has expired. Nothing was approved; click Approve again in chat for a new link.",
                )
            };
            return self.step_up_refused(&link, reason, json!({}), page).await;
        }
        if browser.map(hashed) != link.browser_hash {
            // Someone else's sign-in page, forwarded: never completes here.
            return self
                .step_up_refused(&link, "other_browser", json!({}), OTHER_BROWSER)
                .await;
        }
        if let Some(error) = &q.error {
            let detail = json!({ "error": bounded(error) });
            return self
                .step_up_refused(&link, "entra_error", detail, SIGN_IN_FAILED)
                .await;
        }
        let (code, Some(nonce), Some(verifier)) = (
            q.code.as_deref().unwrap_or_default(),
            link.nonce.as_deref(),
            link.pkce_verifier.as_deref(),
        ) else {
            return self
                .step_up_refused(&link, "incomplete", json!({}), SIGN_IN_FAILED)
                .await;
        };
        let identity = match client.redeem(code, verifier, nonce).await {
            Ok(identity) => identity,
            Err(e) => {
                let detail = json!({ "error": bounded(&e.to_string()) });
                return self
                    .step_up_refused(&link, e.reason(), detail, SIGN_IN_FAILED)
                    .await;
            }
        };
        self.step_up_signed_in(&link, &state_hash, identity).await
    }

    /// After a verified sign-in: the identity must be the clicking person's, who must still be
    /// an approver of this round; then the Confirm page.
    async fn step_up_signed_in(
        &self,
        link: &StepUpLink,
        state_hash: &str,
        identity: Identity,
    ) -> Result<StepUpPage> {
        let who = json!({ "entra_oid": identity.oid, "entra_upn": bounded(&identity.upn) });
        let person = self.policy.people.get(&link.person);
        if person.and_then(|p| p.entra.as_deref()) != Some(identity.oid.as_str()) {
            let page = format!(
                "You signed in as {}, who is not {} in jitbot's policy. Nothing was approved. Sign in with your own directory account: click Approve again in chat for a new link.",
                identity.upn, link.person
            );
            return self.step_up_refused(link, "wrong_user", who, &page).await;
        }
        let Some(req) = self.store.request(&link.request_id).await? else {
            return self
                .step_up_refused(link, "unknown_request", who, GONE)
                .await;
        };
        let refusal = match person {
            Some(p) => self.may_still_decide(p, link, &req).await?,
            None => None,
        };
        if let Some(refusal) = refusal {
            let page = format!("Nothing was approved: {}", refusal.message);
            return self.step_up_refused(link, refusal.rule, who, &page).await;
        }
        let confirm_token = random_value();
        let expires = now_ms() + CONFIRM_TTL_MS;
        self.store
            .record_step_up_identity(
                state_hash,
                &identity.oid,
                &identity.upn,
                &hashed(&confirm_token),
                expires,
            )
            .await?;
        Ok(StepUpPage::Confirm {
            request_id: req.id.clone(),
            what: what_is_approved(&req, link.round),
            person: link.person.clone(),
            upn: identity.upn,
            confirm_token,
        })
    }

    /// The policy's answer for this approver and round now (`None`: they may decide).
    async fn may_still_decide(
        &self,
        person: &Person,
        link: &StepUpLink,
        req: &RequestRow,
    ) -> Result<Option<Refusal>> {
        let Some(platform) = Platform::parse(&link.platform) else {
            let why = format!(
                "the link names an unknown chat platform `{}`",
                link.platform
            );
            return Ok(Some(Refusal::new("unknown_platform", why)));
        };
        let groups = self.memberships_of(platform, &link.user_id).await?;
        let actor = Actor {
            person,
            discord_roles: &link.roles,
            slack_groups: &groups,
        };
        Ok(self
            .policy
            .may_decide(&actor, &self.decidable(req, link.round))
            .err())
    }

    /// `POST /step-up/confirm`: records the approval, once.
    pub async fn step_up_confirm(&self, confirm_token: &str) -> Result<StepUpPage> {
        let Some(link) = self
            .store
            .take_step_up_confirm(&hashed(confirm_token), now_ms())
            .await?
        else {
            return Ok(StepUpPage::Refused(
                "This confirmation is not valid: it was already used or has expired. Click Approve again in chat for a new link.".into(),
            ));
        };
        let (Some(platform), Some(oid), Some(upn)) = (
            Platform::parse(&link.platform),
            link.entra_oid.clone(),
            link.entra_upn.clone(),
        ) else {
            return Ok(StepUpPage::Refused(GONE.into()));
        };
        let user = ChatUser {
            platform,
            user_id: link.user_id.clone(),
            user_name: link.person.clone(),
            roles: link.roles.clone(),
        };
        let action = ButtonAction {
            kind: ButtonKind::Approve,
            request_id: link.request_id.clone(),
            round: link.round,
        };
        let identity = Identity { oid, upn };
        let answer = self.click_signed_in(&user, &action, &identity).await?;
        Ok(StepUpPage::Done(answer.unwrap_or_else(|| {
            self.reply(
                Tone::Success,
                "Approval recorded",
                format!(
                    "your approval of `{}` is recorded (signed in as {})",
                    link.request_id, identity.upn
                ),
            )
        })))
    }
}
