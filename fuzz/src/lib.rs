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
