//! Step-up approval: on a `step_up` target an Approve click is answered with a one-time link;
//! the approver signs in with (fake) Entra ID in a real headless Chromium and confirms; only
//! then does the approval count, with the directory identity in its audit event. The fake
//! OpenID provider is `jitbot_sim::entra` (discovery, JWKS, authorize, token).
//!
//! The browser tests skip when chromedriver is missing, unless `JITBOT_TEST_REQUIRE_BROWSER=1`.

use crate::browser::{browser, chromedriver};
use crate::helpers::*;
use fantoccini::{Client, Locator};
use jitbot::domain::Status;
use jitbot_sim::entra::IdTokenFault;
use jitbot_sim::slack_user;
use std::time::Duration;

const ALICE_OID: &str = "4f1c2b1e-8d0a-4c55-9a53-0b6f6f3c2a10";
const BOB_OID: &str = "9b2e6c3d-1f4a-4e8b-8c7d-2a5b6c7d8e9f";
const ALICE_UPN: &str = "alice@contoso.test";
const BOB_UPN: &str = "bob@contoso.test";

/// `lab`: admits loopback, one approval by secops, step-up on. Alice and Bob have object ids;
/// a sign-in has 3 seconds.
async fn spawn_step_up_app() -> TestApp {
    let lab = format!(
        "[targets.lab]\nnsg = \"{NSG}\"\ndestination = \"10.0.9.4\"\nports = [22]\nmax_duration = \"1h\"\n\
         allowed_sources = [\"127.0.0.0/8\"]\nrequesters = [\"steve\"]\napprovers = [\"group:secops\"]\n\
         approval_channel.slack = \"{APPROVALS}\"\npriority_range = [300, 399]\n"
    );
    let mut app = spawn_app_with(&lab).await;
    let issuer = app.entra.issuer();
    app.restart_with(move |text| {
        text.replacen(
            "[database]",
            &format!(
                "[server]\npublic_url = \"@@BASE@@\"\n\n[entra]\nissuer = \"{issuer}\"\n\
                 client_id = \"client-1\"\nlogin_timeout = \"3s\"\n\n[database]"
            ),
            1,
        )
        .replacen("[targets.lab]\n", "[targets.lab]\nstep_up = true\n", 1)
        .replacen(
            "[people.alice]\n",
            &format!("[people.alice]\nentra = \"{ALICE_OID}\"\n"),
            1,
        )
        .replacen(
            "[people.bob]\n",
            &format!("[people.bob]\nentra = \"{BOB_OID}\"\n"),
            1,
        )
    })
    .await;
    app
}

/// `user` clicks Approve on the request's card; the interaction response's text.
async fn approve_click(app: &TestApp, user: &str, id: &str) -> String {
    let ts = app.card_ts(id).await;
    let body = slack_user::block_action(user, "someone", APPROVALS, &ts, "jit_approve", id);
    let resp = slack_user::send(
        &app.http,
        &format!("{}/slack/interactions", app.base),
        SECRET,
        &body,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    json["text"].as_str().unwrap_or_default().to_string()
}

/// The step-up link in an answer.
fn step_up_link(answer: &str) -> String {
    answer
        .split_whitespace()
        .find(|w| w.contains("/step-up/"))
        .unwrap_or_else(|| panic!("no step-up link in {answer}"))
        .to_string()
}

/// A pending `lab` request of Steve's and Alice's step-up link for it.
async fn request_and_link(app: &TestApp) -> (String, String) {
    let id = app.submit(STEVE, "lab 22 30m from 127.0.0.1 deploy").await;
    let link = link_by_dm(app, ALICE, &id).await;
    (id, link)
}

/// `user` clicks Approve on `id` and gets a new step-up link: by direct message, because Slack
/// shows nothing of what a click's response carries.
async fn link_by_dm(app: &TestApp, user: &str, id: &str) -> String {
    let links = |a: &TestApp| -> Vec<String> {
        a.dms(user)
            .into_iter()
            .filter(|m| m.contains("/step-up/"))
            .collect()
    };
    let before = links(app).len();
    let answer = approve_click(app, user, id).await;
    assert!(!answer.contains("/step-up/"), "{answer}");
    app.wait_until("the step-up link by DM", Duration::from_secs(5), |a| {
        links(a).len() > before
    })
    .await;
    step_up_link(links(app).last().map(String::as_str).unwrap_or_default())
}

/// A step-up test in Chromium: the app with Entra signing in as `user` (object id, UPN), Steve's
/// pending `lab` request, Alice's link for it and a fresh browser. `None`: no browser here
/// (the test is skipped, unless `JITBOT_TEST_REQUIRE_BROWSER=1`).
struct Scene {
    app: TestApp,
    c: Client,
    id: String,
    link: String,
    _profile: tempfile::TempDir,
    _driver: tokio::process::Child,
}

async fn scene(user: (&str, &str)) -> Option<Scene> {
    let (driver, driver_url) = chromedriver().await?;
    let app = spawn_step_up_app().await;
    app.entra.set_signed_in_user(user.0, user.1);
    let (id, link) = request_and_link(&app).await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;
    Some(Scene {
        app,
        c,
        id,
        link,
        _profile: profile,
        _driver: driver,
    })
}

/// The text of the element `id` on the current page (waiting up to 5 s for it).
async fn text_of(c: &Client, id: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id} on the page: {e}"))
        .text()
        .await
        .unwrap()
}

/// Opens the link and signs in at the fake Entra; `pause` on its login page first.
async fn sign_in(c: &Client, link: &str, pause: Duration) {
    c.goto(link).await.unwrap();
    let signin = c
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Id("signin"))
        .await
        .expect("the fake Entra login page");
    tokio::time::sleep(pause).await;
    signin.click().await.unwrap();
}

/// The reasons of the `step_up_refused` events.
async fn refusal_reasons(app: &TestApp) -> Vec<String> {
    app.events_of("step_up_refused")
        .await
        .into_iter()
        .map(|e| e.detail["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Nothing was approved: pending, no decision recorded, no rule.
async fn nothing_approved(app: &TestApp, id: &str) {
    assert_eq!(app.request(id).await.status, Status::Pending);
    let kinds = app.audit_kinds(id).await;
    assert!(
        !kinds
            .iter()
            .any(|k| k == "approved" || k == "approval_recorded"),
        "{kinds:?}"
    );
    assert!(app.rule(id).is_none());
}

backends! {
#[tokio::test]
async fn a_step_up_approve_click_is_answered_with_a_link_and_counts_nothing() {
    let app = spawn_step_up_app().await;
    let id = app.submit(STEVE, "lab 22 30m from 127.0.0.1 deploy").await;
    let link = link_by_dm(&app, ALICE, &id).await;
    assert!(link.starts_with(&format!("{}/step-up/", app.base)), "{link}");
    let dm = app.dms(ALICE).into_iter().find(|m| m.contains(&link)).unwrap();
    assert!(dm.contains("sign in with Microsoft Entra ID"), "{dm}");
    // Only the clicker gets it: no other message anywhere carries the link.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = app.slack.calls();
    let carrying = calls.iter().filter(|c| c.body.to_string().contains(&link));
    assert_eq!(carrying.count(), 1, "one DM, nothing else");
    nothing_approved(&app, &id).await;
    let issued = app.events_of("step_up_link_issued").await;
    assert_eq!(issued.len(), 1);
    let token = link.rsplit('/').next().unwrap();
    assert!(!issued[0].detail.to_string().contains(token), "the token is never recorded");
    // A Deny needs no sign-in.
    app.click(BOB, &id, false).await;
    app.wait_status(&id, Status::Denied, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn on_discord_the_step_up_link_is_the_ephemeral_answer_to_the_click() {
    let mut app = spawn_discord_app().await;
    let issuer = app.entra.issuer();
    app.restart_with(move |text| {
        text.replacen(
            "[database]",
            &format!(
                "[server]\npublic_url = \"@@BASE@@\"\n\n[entra]\nissuer = \"{issuer}\"\n\
                 client_id = \"client-1\"\n\n[database]"
            ),
            1,
        )
        .replacen("[targets.web1]\n", "[targets.web1]\nstep_up = true\n", 1)
        .replacen("[people.alice]\n", &format!("[people.alice]\nentra = \"{ALICE_OID}\"\n"), 1)
    })
    .await;
    let id = app.submit(D_STEVE, "web1", "22", "30m").await;
    let (status, json) = app.click(D_ALICE, &[], &id, true).await;
    assert_eq!(status, 200);
    assert_eq!(json["type"], 4, "{json}");
    assert_eq!(json["data"]["flags"], 64, "not ephemeral: {json}");
    let text = embed_text(&json["data"]);
    assert!(text.contains(&format!("{}/step-up/", app.base)), "{text}");
    assert_eq!(app.request(&id).await.status, Status::Pending);
    assert_eq!(app.events_of("step_up_link_issued").await.len(), 1);
    assert!(app.events_of("approval_recorded").await.is_empty());
    assert!(app.events_of("approved").await.is_empty());
}

#[tokio::test]
async fn an_approver_without_an_entra_id_gets_no_link() {
    let mut app = spawn_step_up_app().await;
    let id = app.submit(STEVE, "lab 22 30m from 127.0.0.1").await;
    app.restart_with(|t| t.replacen(&format!("entra = \"{BOB_OID}\"\n"), "", 1)).await;
    let answer = approve_click(&app, BOB, &id).await;
    assert!(!answer.contains("/step-up/"), "{answer}");
    // Bob is in the policy: his refusal comes by direct message, like any refused click.
    app.wait_until("bob is told", Duration::from_secs(5), |a| {
        a.dms(BOB).iter().any(|m| m.contains("people.bob.entra"))
    })
    .await;
    assert!(app.dms(BOB).iter().all(|m| !m.contains("/step-up/")));
    nothing_approved(&app, &id).await;
}
}

#[tokio::test]
async fn step_up_in_chromium_signs_in_confirms_and_opens_the_rule() {
    let Some(Scene {
        app,
        c,
        id,
        link,
        _profile,
        _driver,
    }) = scene((ALICE_OID, ALICE_UPN)).await
    else {
        return;
    };
    sign_in(&c, &link, Duration::ZERO).await;
    assert_eq!(text_of(&c, "upn").await, ALICE_UPN);
    assert_eq!(text_of(&c, "request").await, id);
    let callback = c.current_url().await.unwrap();
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string())
            .unwrap()
    };
    let (code, state) = (param("code"), param("state"));
    assert_eq!(
        text_of(&c, "what").await,
        "lab port 22 from 127.0.0.1/32 for 30m, for steve (reason: deploy)"
    );
    // Signed in, not yet confirmed: nothing counted.
    nothing_approved(&app, &id).await;
    if let Ok(dir) = std::env::var("JITBOT_SCREENSHOT_DIR") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join("step-up.png"), png).unwrap();
    }
    c.find(Locator::Id("confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = text_of(&c, "result").await;
    assert!(result.contains("approval"), "{result}");
    app.wait_status(&id, Status::Active, Duration::from_secs(10))
        .await;
    assert!(app.rule(&id).is_some());
    let approved = app.events_of("approved").await;
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].actor.as_deref(), Some("alice"));
    assert_eq!(approved[0].detail["entra_oid"], ALICE_OID);
    assert_eq!(approved[0].detail["entra_upn"], ALICE_UPN);
    // The confirmation works once: posting it again changes nothing.
    c.back().await.unwrap();
    if let Ok(button) = c.find(Locator::Id("confirm")).await {
        button.click().await.unwrap();
        let again = text_of(&c, "result").await;
        assert!(again.contains("not valid"), "{again}");
    }
    assert_eq!(app.events_of("approved").await.len(), 1);
    app.assert_chain_intact().await;
    // No token, code, state or secret reaches the audit trail.
    let trail = serde_json::to_string(&app.store.audit_events(0, None).await.unwrap()).unwrap();
    let token = link.rsplit('/').next().unwrap();
    for secret in [token, code.as_str(), state.as_str(), ENTRA_SECRET] {
        assert!(!trail.contains(secret), "{secret} is in the audit trail");
    }
    c.close().await.unwrap();
}

#[tokio::test]
async fn step_up_in_chromium_refuses_a_directory_user_who_is_not_the_clicker() {
    // Alice's chat account clicks; Bob (an approver too) signs in.
    let Some(Scene {
        app,
        c,
        id,
        link,
        _profile,
        _driver,
    }) = scene((BOB_OID, BOB_UPN)).await
    else {
        return;
    };
    sign_in(&c, &link, Duration::ZERO).await;
    let page = text_of(&c, "result").await;
    assert!(
        page.contains(&format!("You signed in as {BOB_UPN}, who is not alice")),
        "{page}"
    );
    assert!(c.find(Locator::Id("confirm")).await.is_err());
    nothing_approved(&app, &id).await;
    assert_eq!(refusal_reasons(&app).await, ["wrong_user"]);
    let refused = &app.events_of("step_up_refused").await[0];
    assert_eq!(refused.detail["entra_oid"], BOB_OID);
    assert_eq!(refused.actor.as_deref(), Some("alice"));
    // The link was used up by that attempt.
    c.goto(&link).await.unwrap();
    assert!(text_of(&c, "result").await.contains("not valid"));
    c.close().await.unwrap();
}

#[tokio::test]
async fn step_up_in_chromium_refuses_an_expired_state() {
    let Some(Scene {
        app,
        c,
        id,
        link,
        _profile,
        _driver,
    }) = scene((ALICE_OID, ALICE_UPN)).await
    else {
        return;
    };
    // The sign-in takes longer than `entra.login_timeout` (3 s).
    sign_in(&c, &link, Duration::from_millis(3500)).await;
    let page = text_of(&c, "result").await;
    assert!(page.contains("took too long"), "{page}");
    nothing_approved(&app, &id).await;
    assert_eq!(refusal_reasons(&app).await, ["state_expired"]);
    // jitbot never redeemed the code.
    assert!(
        app.entra.redemptions().is_empty(),
        "{:?}",
        app.entra.redemptions()
    );
    c.close().await.unwrap();
}

#[tokio::test]
async fn step_up_in_chromium_refuses_a_replayed_code() {
    let Some(Scene {
        app,
        c,
        id,
        link,
        _profile,
        _driver,
    }) = scene((ALICE_OID, ALICE_UPN)).await
    else {
        return;
    };
    sign_in(&c, &link, Duration::ZERO).await;
    assert_eq!(text_of(&c, "upn").await, ALICE_UPN);
    let callback = c.current_url().await.unwrap();
    assert!(callback.path().ends_with("/step-up/callback"), "{callback}");
    // The same callback again (code and state replayed): jitbot refuses the used state.
    c.goto(callback.as_str()).await.unwrap();
    let page = text_of(&c, "result").await;
    assert!(page.contains("already used"), "{page}");
    assert_eq!(refusal_reasons(&app).await, ["state_used"]);
    // And the provider refuses a second redemption of the code.
    let code = callback
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .unwrap();
    let resp = app
        .http
        .post(format!("{}/tenant-1/oauth2/v2.0/token", app.entra.base_url))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "client-1"),
            ("client_secret", ENTRA_SECRET),
            ("code", code.as_str()),
            ("redirect_uri", &format!("{}/step-up/callback", app.base)),
            ("code_verifier", "whatever"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"][0], 54005);
    let redemptions = app.entra.redemptions();
    assert_eq!(redemptions.len(), 2, "{redemptions:?}");
    assert!(redemptions[0].ends_with("ok") && redemptions[1].ends_with("refused"));
    nothing_approved(&app, &id).await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn step_up_in_chromium_refuses_a_tampered_or_misdirected_id_token() {
    let Some((_driver, driver_url)) = chromedriver().await else {
        return;
    };
    let app = spawn_step_up_app().await;
    app.entra.set_signed_in_user(ALICE_OID, ALICE_UPN);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;
    let id = app.submit(STEVE, "lab 22 30m from 127.0.0.1").await;
    for fault in [
        IdTokenFault::BadSignature,
        IdTokenFault::WrongNonce,
        IdTokenFault::WrongAudience,
        IdTokenFault::Expired,
    ] {
        app.entra.set_id_token_fault(fault);
        let link = link_by_dm(&app, ALICE, &id).await;
        sign_in(&c, &link, Duration::ZERO).await;
        let page = text_of(&c, "result").await;
        assert!(page.contains("could not be verified"), "{fault:?}: {page}");
        assert!(c.find(Locator::Id("confirm")).await.is_err(), "{fault:?}");
    }
    assert_eq!(
        refusal_reasons(&app).await,
        [
            "id_token_invalid",
            "nonce_mismatch",
            "id_token_invalid",
            "id_token_invalid"
        ]
    );
    nothing_approved(&app, &id).await;
    // A good token after all that still works: the refusals changed nothing.
    app.entra.set_id_token_fault(IdTokenFault::None);
    let link = link_by_dm(&app, ALICE, &id).await;
    sign_in(&c, &link, Duration::ZERO).await;
    assert_eq!(text_of(&c, "upn").await, ALICE_UPN);
    c.close().await.unwrap();
}

#[tokio::test]
async fn step_up_keeps_the_keys_and_fetches_them_again_for_a_new_kid() {
    let Some((_driver, driver_url)) = chromedriver().await else {
        return;
    };
    let app = spawn_step_up_app().await;
    app.entra.set_signed_in_user(ALICE_OID, ALICE_UPN);
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver_url, profile.path()).await;
    let id = app.submit(STEVE, "lab 22 30m from 127.0.0.1").await;
    let sign_in_once = async || {
        let link = link_by_dm(&app, ALICE, &id).await;
        sign_in(&c, &link, Duration::ZERO).await;
        assert_eq!(text_of(&c, "upn").await, ALICE_UPN);
    };
    sign_in_once().await;
    sign_in_once().await;
    assert_eq!(app.entra.jwks_requests(), 1, "the keys are kept");
    // Entra rotates: the next token names a kid jitbot does not hold.
    app.entra.rotate_signing_key();
    tokio::time::sleep(jitbot::oidc::KEYS_REFRESH_MIN + Duration::from_millis(100)).await;
    sign_in_once().await;
    assert_eq!(
        app.entra.jwks_requests(),
        2,
        "fetched again for the new kid"
    );
    assert!(refusal_reasons(&app).await.is_empty());
    c.close().await.unwrap();
}

#[tokio::test]
async fn step_up_in_chromium_refuses_a_sign_in_finished_in_another_browser() {
    let Some((_driver, driver_url)) = chromedriver().await else {
        return;
    };
    let app = spawn_step_up_app().await;
    app.entra.set_signed_in_user(ALICE_OID, ALICE_UPN);
    let (id, link) = request_and_link(&app).await;
    // Both browsers are up before the sign-in's clock (`login_timeout`, 3 s) starts.
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let attacker = browser(&driver_url, one.path()).await;
    let victim = browser(&driver_url, two.path()).await;
    // Whoever holds the chat account opens the link and forwards Entra's sign-in page…
    attacker.goto(&link).await.unwrap();
    text_of(&attacker, "upn").await;
    let sign_in_page = attacker.current_url().await.unwrap();
    // … and the approver signs in there, in her own browser.
    victim.goto(sign_in_page.as_str()).await.unwrap();
    victim
        .find(Locator::Id("signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let page = text_of(&victim, "result").await;
    assert!(page.contains("started in another browser"), "{page}");
    assert!(victim.find(Locator::Id("confirm")).await.is_err());
    assert_eq!(refusal_reasons(&app).await, ["other_browser"]);
    assert!(
        app.entra.redemptions().is_empty(),
        "the code is never redeemed"
    );
    nothing_approved(&app, &id).await;
    attacker.close().await.unwrap();
    victim.close().await.unwrap();
}
