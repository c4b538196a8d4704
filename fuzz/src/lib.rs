//! The bodies of the fuzz targets: each takes arbitrary bytes, hands them to one of jitbot's
//! parsers of untrusted input, and checks the promises the parser makes (no panic, every
//! rejection a sentence, what is accepted within its bounds). A broken promise is a panic, which
//! libFuzzer reports as a crash.
//!
//! Shared with the main workspace: `tests/fuzz_regressions.rs` includes this file and replays
//! every saved crash input under `tests/fuzz-regressions/<target>/` through the same function,
//! so a fixed crash stays fixed in `cargo test` without cargo-fuzz.

use jitbot::azure::inventory::{self, Listing, ListingKind, VmPath};
use jitbot::azure::{
    AsyncOperationResult, CloudError, NetworkSecurityGroup, SecurityRule, SecurityRuleListResult,
};
use jitbot::chat::{discord, slack};
use jitbot::command::{AccessRequest, Command};
use jitbot::config::{ConfigFile, Settings};
use jitbot::domain::Secret;

/// The `/jit` grammar: text → [`Command`], or a non-empty message for the person.
pub fn command(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_command(text);
    }
}

/// Parses `/jit` text and checks what the grammar promises about the result.
pub fn check_command(text: &str) {
    match Command::parse(text) {
        Ok(Command::Request(r)) => check_request(&r),
        Ok(_) => {}
        Err(e) => assert!(!e.trim().is_empty(), "a rejection without a message"),
    }
}

fn check_request(r: &AccessRequest) {
    assert!(!r.target.is_empty(), "an empty target was accepted");
    assert!(!r.ports.as_slice().is_empty(), "a request without ports");
    assert!(r.duration.as_secs() > 0, "a zero duration was accepted");
    if let Some(reason) = &r.reason {
        assert!(reason.chars().count() <= 500, "an over-long reason");
    }
}

/// Slack's inbound bodies after the signature check. The first byte picks what the rest is:
/// 0 a slash-command form, 1 the JSON of an interaction `payload` (form-encoded here, as Slack
/// sends it), 2 a raw interaction form, 3 a button `action_id` and `value`, 4 the signature
/// headers (timestamp, signature) over the remaining body.
pub fn slack(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => slack_command(rest),
        1 => {
            let payload = String::from_utf8_lossy(rest);
            let body =
                serde_urlencoded::to_string([("payload", payload.as_ref())]).unwrap_or_default();
            slack_interaction(body.as_bytes());
        }
        2 => slack_interaction(rest),
        3 => {
            let text = String::from_utf8_lossy(rest);
            let (action_id, value) = text.split_once('\n').unwrap_or((&text, ""));
            if let Some(a) = slack::decode_action(action_id, value) {
                assert!(!a.request_id.is_empty() && a.round >= 0);
            }
        }
        _ => slack_signature(rest),
    }
}

fn slack_command(body: &[u8]) {
    if let Ok(cmd) = slack::parse_slash_command(body) {
        assert!(!cmd.user_id.trim().is_empty() && !cmd.command.trim().is_empty());
        check_command(&cmd.text);
    }
}

fn slack_interaction(body: &[u8]) {
    if let Ok(slack::Interaction::Button(click)) = slack::parse_interaction(body) {
        assert!(!click.user_id.is_empty(), "a click without a user");
        assert!(!click.action.request_id.is_empty() && click.action.round >= 0);
    }
}

/// Arbitrary headers never pass the check without the secret.
fn slack_signature(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (ts, sig, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("x-slack-request-timestamp", ts),
        ("x-slack-signature", sig),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    let now = ts.trim().parse::<i64>().unwrap_or(0);
    let verdict = slack::verify_request("fuzz-signing-secret", &headers, body.as_bytes(), now);
    // Forging an HMAC-SHA256 by chance does not happen: anything accepted is a bug.
    assert!(verdict.is_err(), "an unsigned request passed the check");
}

/// Discord's interaction bodies after the signature check, and `custom_id`s.
pub fn discord(data: &[u8]) {
    match discord::parse_interaction(data) {
        Ok(discord::Incoming::Command { text, .. }) => check_command(&text),
        Ok(discord::Incoming::Button { action, user, .. }) => {
            assert!(!action.request_id.is_empty());
            assert!(!user.id.is_empty());
        }
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(action) = discord::parse_custom_id(text)
    {
        assert_eq!(
            discord::parse_custom_id(&discord::custom_id(&action)),
            Some(action)
        );
    }
}

/// The config file: TOML → [`ConfigFile`] → [`Settings::resolve`] (every secret set), so the
/// policy checks run on whatever parsed.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<ConfigFile>(text) else {
        return;
    };
    let secrets = |name: &str| Ok(Some(Secret::new(format!("fuzz-{name}"))));
    if let Err(problems) = Settings::resolve(file, secrets) {
        assert!(!problems.is_empty(), "refused without saying why");
        assert!(problems.iter().all(|p| !p.trim().is_empty()));
    }
}

/// ARM answers jitbot parses. The first byte picks the type; what parses is then used the way
/// jitbot uses it (a rule's admission, a VM's path).
pub fn arm(data: &[u8]) {
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    match mode % 10 {
        0 => {
            if let Ok(rule) = serde_json::from_slice::<SecurityRule>(body) {
                let _ = rule.properties.admission();
            }
        }
        1 => {
            if let Ok(nsg) = serde_json::from_slice::<NetworkSecurityGroup>(body) {
                for r in nsg.properties.security_rules.iter() {
                    let _ = r.properties.admission();
                }
            }
        }
        2 => {
            if let Ok(page) = serde_json::from_slice::<SecurityRuleListResult>(body) {
                for r in &page.value {
                    let _ = r.properties.admission();
                }
            }
        }
        3 => {
            let _ = serde_json::from_slice::<CloudError>(body);
        }
        4 => {
            let _ = serde_json::from_slice::<AsyncOperationResult>(body);
        }
        5 => listing(ListingKind::Vms, body),
        6 => listing(ListingKind::Nics, body),
        7 => listing(ListingKind::Vnets, body),
        8 => listing(ListingKind::Nsgs, body),
        _ => {
            if let Ok(Listing::Permissions(perms)) =
                inventory::decode_listing(ListingKind::Permissions, body)
            {
                let _ = inventory::allows(
                    &perms,
                    "Microsoft.Network/networkSecurityGroups/securityRules/write",
                );
            }
        }
    }
}

fn listing(kind: ListingKind, body: &[u8]) {
    match inventory::decode_listing(kind, body) {
        Ok(Listing::Vms(vms)) => {
            // Resolve every VM against a NIC and subnet made from its own ids: the path logic
            // must answer (a path or a reason) for any shape ARM may return.
            for vm in &vms {
                let _ = inventory::primary_nic(vm);
                let _ = VmPath::assemble(vm, |_| None, |_| None);
            }
        }
        Ok(Listing::Nics(nics)) => {
            // A VM with this one NIC, in a subnet whose NSG id is the NIC's subnet id: the path
            // logic and `NsgId::parse` see ARM's strings as they come.
            for nic in &nics {
                let _ = inventory::primary_address(nic);
                let vm = inventory::Vm {
                    id: "vm".into(),
                    name: "vm".into(),
                    nics: vec![inventory::VmNic {
                        id: nic.id.clone(),
                        primary: None,
                    }],
                };
                let subnet_of = |id: &str| inventory::Subnet {
                    id: id.to_string(),
                    name: String::new(),
                    address_prefixes: vec![],
                    nsg: Some(id.to_string()),
                };
                let subnets: Vec<_> = nic
                    .ip_configurations
                    .iter()
                    .filter_map(|c| c.subnet.as_deref().map(subnet_of))
                    .collect();
                if let Ok(path) =
                    VmPath::assemble(&vm, |_| Some(nic), |id| subnets.iter().find(|s| s.id == id))
                {
                    assert!(!path.nsgs.is_empty(), "a path without an NSG");
                }
            }
        }
        Ok(Listing::Nsgs(nsgs)) => {
            for nsg in &nsgs {
                for r in &nsg.rules {
                    let _ = r.properties.admission();
                }
            }
        }
        Ok(_) | Err(_) => {}
    }
}

// ── forms ─────────────────────────────────────────────────────────────────────────────────────

/// Slack's form interactions (`chat/slack/form.rs`): a `view_submission` of a jitbot modal and
/// `block_actions` inside one. The first byte picks what the rest is: 0 any interaction payload
/// (JSON), 1 the `state.values` of a submitted jitbot request form, 2 `private_metadata`, then
/// after a newline the `action_id` and the chosen value of a change in an open jitbot modal.
pub fn slack_form(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(rest) {
                check_slack_payload(&payload);
            }
        }
        1 => {
            let state = serde_json::from_slice(rest).unwrap_or(serde_json::Value::Null);
            let mut payload = slack_form_skeleton("view_submission", r#"{"form":"request"}"#);
            payload["view"]["state"]["values"] = state;
            check_slack_payload(&payload);
        }
        _ => {
            let mut parts = text.splitn(3, '\n');
            let (meta, action_id, value) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let mut payload = slack_form_skeleton("block_actions", meta);
            payload["actions"] = serde_json::json!([{ "type": "static_select",
                "action_id": action_id, "selected_option": { "value": value } }]);
            check_slack_payload(&payload);
        }
    }
}

/// A payload of `kind` from inside a jitbot modal whose `private_metadata` is `meta`.
pub fn slack_form_skeleton(kind: &str, meta: &str) -> serde_json::Value {
    serde_json::json!({
        "type": kind,
        "user": { "id": "U0STEVE", "username": "steve" },
        "container": { "type": "view", "view_id": "V0001" },
        "view": { "id": "V0001", "hash": "1.a", "callback_id": slack::FORM_CALLBACK,
                  "private_metadata": meta, "state": { "values": {} } }
    })
}

/// Parses an interaction payload as the HTTP route and Socket Mode do, and checks what a form
/// interaction promises: a person, each value non-empty and from the block of its own field,
/// and every error answer addressed to a block of the view.
pub fn check_slack_payload(payload: &serde_json::Value) {
    match slack::interaction_from_json(payload) {
        Ok(slack::Interaction::FormSubmitted(s)) => {
            assert!(!s.user_id.is_empty(), "a submission without a person");
            for (field, value) in &s.values {
                assert!(!value.is_empty(), "an empty {field:?} was kept");
                let block = s.block_ids.get(field).expect("a value without its block");
                assert_eq!(block.split(':').next(), Some(field.as_str()));
            }
            let errors = s.values.keys().map(|f| (*f, "wrong".to_string())).collect();
            let answer = slack::form_errors(&s, &errors);
            assert_eq!(answer["response_action"], "errors");
            let shown = answer["errors"].as_object().map_or(0, |e| e.len());
            assert_eq!(shown, s.values.len(), "an error went missing: {answer}");
        }
        Ok(slack::Interaction::FormChanged(c)) => {
            assert!(!c.user_id.is_empty() && !c.view_id.is_empty());
        }
        Ok(slack::Interaction::Button(click)) => {
            assert!(!click.user_id.is_empty(), "a click without a user");
            assert!(!click.action.request_id.is_empty() && click.action.round >= 0);
        }
        Ok(slack::Interaction::Other { kind }) => assert!(!kind.is_empty()),
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
}

/// Discord's form interactions (`chat/discord/form.rs`): the target menu's choice (a string
/// select on `jitform:pick`) and modal submissions (type 5). The first byte picks what the rest
/// is: 0 a modal's `custom_id`, 1 a modal submission's `custom_id`, then after a newline its
/// `components` (JSON), 2 the `values` of a choice in the target menu (JSON).
pub fn discord_form(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 3 {
        0 => {
            // What is read back is what was written: a modal id stays its form kind.
            if let Some(kind) = discord::parse_modal_id(&text) {
                assert_eq!(
                    discord::parse_modal_id(&discord::modal_id(&kind)),
                    Some(kind)
                );
            }
        }
        1 => {
            let (custom_id, components) = text.split_once('\n').unwrap_or((&text, "[]"));
            let components: serde_json::Value =
                serde_json::from_str(components).unwrap_or(serde_json::Value::Null);
            let data = serde_json::json!({ "custom_id": custom_id, "components": components });
            check_discord_form(&discord_skeleton(5, data));
        }
        _ => {
            let values: serde_json::Value =
                serde_json::from_slice(rest).unwrap_or(serde_json::Value::Null);
            let data = serde_json::json!({ "custom_id": discord::FORM_PICK,
                "component_type": 3, "values": values });
            check_discord_form(&discord_skeleton(3, data));
        }
    }
}

/// A guild interaction of `kind` (3 component, 5 modal submit) with `data`, in the shape
/// Discord sends (as `jitbot_sim::discord_user` builds it).
pub fn discord_skeleton(kind: u8, data: serde_json::Value) -> serde_json::Value {
    const APP: &str = "1216441490306502796";
    const GUILD: &str = "290926798626357999";
    const CHANNEL: &str = "700000000000000010";
    let user = serde_json::json!({ "avatar": null, "avatar_decoration_data": null,
        "discriminator": "0", "global_name": "Steve", "id": "800000000000000001",
        "public_flags": 0, "username": "steve" });
    serde_json::json!({
        "app_permissions": "2248473465835073", "application_id": APP,
        "attachment_size_limit": 10485760, "authorizing_integration_owners": { "0": GUILD },
        "channel": { "flags": 0, "guild_id": GUILD, "id": CHANNEL, "last_message_id": null,
                     "name": "ops", "nsfw": false, "parent_id": null,
                     "permissions": "2248473465835073", "position": 3,
                     "rate_limit_per_user": 0, "topic": null, "type": 0 },
        "channel_id": CHANNEL, "context": 0, "data": data, "entitlements": [],
        "guild": { "features": [], "id": GUILD, "locale": "en-US" },
        "guild_id": GUILD, "guild_locale": "en-US", "id": "1218321500000000011",
        "locale": "en-US",
        "member": { "avatar": null, "banner": null, "communication_disabled_until": null,
                    "deaf": false, "flags": 0, "joined_at": "2019-05-01T10:00:00.000000+00:00",
                    "mute": false, "nick": null, "pending": false,
                    "permissions": "2248473465835073", "premium_since": null, "roles": [],
                    "user": user },
        "message": { "application_id": APP, "attachments": [],
                     "author": { "avatar": null, "bot": true, "discriminator": "0",
                                 "global_name": null, "id": APP, "public_flags": 524288,
                                 "username": "jitbot" },
                     "channel_id": CHANNEL, "components": [], "content": "",
                     "edited_timestamp": null, "embeds": [], "flags": 0,
                     "id": "1300000000000000009", "mention_everyone": false,
                     "mention_roles": [], "mentions": [], "pinned": false,
                     "timestamp": "2024-03-15T12:00:00.000000+00:00", "tts": false, "type": 0 },
        "token": "aW50ZXJhY3Rpb246MTIxODMyMTUwMDAwMDAwMDEx", "type": kind, "version": 1
    })
}

/// Reads a Discord interaction and checks what a form interaction promises.
pub fn check_discord_form(body: &serde_json::Value) {
    match discord::parse_interaction(body.to_string().as_bytes()) {
        Ok(discord::Incoming::FormSubmit { user, kind, values }) => {
            assert!(!user.id.is_empty(), "a submission without a person");
            assert_eq!(
                discord::parse_modal_id(&discord::modal_id(&kind)),
                Some(kind)
            );
            for value in values.values() {
                assert!(
                    !value.is_empty() && value.trim() == value,
                    "{value:?} kept as is"
                );
            }
        }
        Ok(discord::Incoming::FormPick { user, .. }) => assert!(!user.id.is_empty()),
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().trim().is_empty()),
    }
}

// ── Slack Socket Mode ────────────────────────────────────────────────────────────────────────

/// What Slack sends on the Socket Mode WebSocket (`slack_socket::read_frame`), and an
/// envelope's payload read as the envelope's kind says. The first byte picks what the rest is:
/// 0 a whole frame, 1 the payload of an `interactive` envelope, 2 the payload of a
/// `slash_commands` envelope.
pub fn socket(data: &[u8]) {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let frame = match mode % 3 {
        0 => text.into_owned(),
        kind => {
            let payload = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            let kind = if kind == 1 {
                "interactive"
            } else {
                "slash_commands"
            };
            serde_json::json!({ "envelope_id": "e-1", "type": kind, "payload": payload,
                "accepts_response_payload": true, "retry_attempt": 0 })
            .to_string()
        }
    };
    match jitbot::slack_socket::read_frame(&frame) {
        jitbot::slack_socket::Incoming::Envelope(e) => match e.kind.as_str() {
            "slash_commands" => match slack::slash_command_from_json(&e.payload) {
                Ok(cmd) => {
                    assert!(!cmd.user_id.trim().is_empty() && !cmd.command.trim().is_empty());
                    check_command(&cmd.text);
                }
                Err(e) => assert!(!e.to_string().trim().is_empty()),
            },
            "interactive" => check_slack_payload(&e.payload),
            _ => {}
        },
        jitbot::slack_socket::Incoming::Disconnect(_)
        | jitbot::slack_socket::Incoming::Closed
        | jitbot::slack_socket::Incoming::Nothing => {}
    }
}

// ── Entra ID sign-in (step-up) ────────────────────────────────────────────────────────────────

pub const ISSUER: &str =
    "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub const NONCE: &str = "fuzz-nonce";
/// The emulated tenant's signing key (`crates/jitbot-sim/fixtures/`), to sign fuzzed claims.
const SIGNING_PEM: &str = include_str!("../../crates/jitbot-sim/fixtures/entra-key-1.pem");
const SIGNING_JWK: &str = include_str!("../../crates/jitbot-sim/fixtures/entra-key-1.jwk.json");

/// What Entra sends for a step-up sign-in (`oidc.rs`). The first byte picks what the rest is:
/// 0 the discovery document, 1 the key set (each key made a decoding key), 2 an ID token (text)
/// checked against the tenant's key, 3 the claims of an ID token signed with the tenant's key.
pub fn oidc(data: &[u8]) {
    use jitbot::oidc;
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            if let Ok(m) = oidc::read_metadata(rest, ISSUER) {
                assert_eq!(m.issuer.trim_end_matches('/'), ISSUER);
            }
        }
        1 => {
            if let Ok(set) = oidc::read_keys(rest) {
                for jwk in &set.keys {
                    let _ = jsonwebtoken::DecodingKey::from_jwk(jwk);
                }
            }
        }
        2 => {
            let token = String::from_utf8_lossy(rest);
            let _ = oidc::token_kid(&token);
            // Forging an RS256 signature by chance does not happen: anything accepted is a bug.
            assert!(
                check_token(&token).is_err(),
                "an unsigned ID token passed the check"
            );
        }
        _ => {
            let Ok(claims) = serde_json::from_slice::<serde_json::Value>(rest) else {
                return;
            };
            let token = sign(&claims);
            if let Ok(who) = check_token(&token) {
                assert_eq!(
                    claims["nonce"], NONCE,
                    "another sign-in's token was accepted"
                );
                assert_eq!(claims["aud"], CLIENT_ID);
                assert_eq!(who.oid, who.oid.to_ascii_lowercase());
            }
        }
    }
}

/// `token` checked as jitbot checks a step-up sign-in's ID token, against the tenant's key.
pub fn check_token(token: &str) -> Result<jitbot::oidc::Identity, jitbot::oidc::OidcError> {
    use std::sync::OnceLock;
    static KEY: OnceLock<jsonwebtoken::DecodingKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let jwk = serde_json::from_str(SIGNING_JWK).expect("the fixture is a JWK");
        jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("the fixture is an RSA key")
    });
    jitbot::oidc::token_kid(token)?;
    let expect = jitbot::oidc::Expected {
        issuer: ISSUER,
        audience: CLIENT_ID,
        nonce: NONCE,
    };
    jitbot::oidc::check_id_token(token, key, &expect)
}

/// `claims` as an RS256 ID token signed with the tenant's key.
pub fn sign(claims: &serde_json::Value) -> String {
    use std::sync::OnceLock;
    static KEY: OnceLock<jsonwebtoken::EncodingKey> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        jsonwebtoken::EncodingKey::from_rsa_pem(SIGNING_PEM.as_bytes()).expect("the fixture")
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("entra-key-1".into());
    jsonwebtoken::encode(&header, claims, key).unwrap_or_default()
}
