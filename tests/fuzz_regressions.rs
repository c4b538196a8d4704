//! Every input a fuzz target (`fuzz/`) once failed on, kept under
//! `tests/fuzz-regressions/<target>/` and replayed through the target's own body
//! (`fuzz/src/lib.rs`, included here), plus the targets' seed inputs (`fuzz/seeds/<target>/`).
//! `cargo test` keeps fixed crashes fixed without cargo-fuzz or a nightly compiler.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// The files of `dir` (none if it does not exist), sorted, without the `.keep` placeholder.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".keep"));
    files.sort();
    files
}

/// Runs `target` on every saved input; a panic names the file.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        root.join("tests/fuzz-regressions").join(name),
        root.join("fuzz/seeds").join(name),
    ] {
        for file in inputs(&dir) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{} fails again", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn command_inputs_pass() {
    assert!(replay("command", harness::command) > 0);
}

#[test]
fn slack_inputs_pass() {
    assert!(replay("slack", harness::slack) > 0);
}

#[test]
fn discord_inputs_pass() {
    assert!(replay("discord", harness::discord) > 0);
}

#[test]
fn config_inputs_pass() {
    assert!(replay("config", harness::config) > 0);
}

#[test]
fn arm_inputs_pass() {
    assert!(replay("arm", harness::arm) > 0);
}

#[test]
fn slack_form_inputs_pass() {
    assert!(replay("slack_form", harness::slack_form) > 0);
}

#[test]
fn discord_form_inputs_pass() {
    assert!(replay("discord_form", harness::discord_form) > 0);
}

#[test]
fn socket_inputs_pass() {
    assert!(replay("socket", harness::socket) > 0);
}

#[test]
fn oidc_inputs_pass() {
    assert!(replay("oidc", harness::oidc) > 0);
}

/// The first crash the `discord` target found (saved under `tests/fuzz-regressions/discord/`):
/// serenity 0.12.5 panics on an avatar hash with a multi-byte character. Such an interaction is
/// now read, without its avatar.
#[test]
fn a_non_ascii_image_hash_does_not_stop_an_interaction_being_read() {
    let body = jitbot_sim::discord_user::request("800000000000000001", &[], "web1", "22", "1h");
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["member"]["user"]["avatar"] = "a_d5efa99b3eeaa7dd4\u{25e}cca82f5692432".into();
    v["member"]["avatar"] = "d5efa99b3eeaa7dd4\u{25e}cca82f569243".into();
    let incoming = jitbot::chat::discord::parse_interaction(v.to_string().as_bytes()).unwrap();
    match incoming {
        jitbot::chat::discord::Incoming::Command { text, .. } => assert_eq!(text, "web1 22 1h"),
        other => panic!("read as {other:?}"),
    }
}

/// The shapes the form targets build around the fuzzed part (`fuzz/src/lib.rs`) are read as
/// forms when that part is sound: otherwise the targets would only ever reach a refusal.
#[test]
fn the_form_targets_reach_the_form_parsers() {
    use jitbot::chat::{discord, slack};
    use serde_json::json;
    let mut payload = harness::slack_form_skeleton("view_submission", r#"{"form":"request"}"#);
    payload["view"]["state"]["values"] = json!({ "ports:web1": { "ports": { "value": "22" } } });
    let read = slack::interaction_from_json(&payload).unwrap();
    assert!(
        matches!(read, slack::Interaction::FormSubmitted(_)),
        "{read:?}"
    );
    let mut change = harness::slack_form_skeleton("block_actions", r#"{"form":"request"}"#);
    change["actions"] = json!([{ "action_id": "target", "selected_option": { "value": "db1" } }]);
    let read = slack::interaction_from_json(&change).unwrap();
    assert!(
        matches!(read, slack::Interaction::FormChanged(_)),
        "{read:?}"
    );

    let rows =
        json!([{ "type": 1, "components": [{ "type": 4, "custom_id": "reason", "value": "x" }] }]);
    let submit = harness::discord_skeleton(
        5,
        json!({ "custom_id": "jitform:deny:req_1:0", "components": rows }),
    );
    let read = discord::parse_interaction(submit.to_string().as_bytes()).unwrap();
    assert!(
        matches!(read, discord::Incoming::FormSubmit { .. }),
        "{read:?}"
    );
    let pick = harness::discord_skeleton(
        3,
        json!({ "custom_id": discord::FORM_PICK, "component_type": 3, "values": ["web1"] }),
    );
    let read = discord::parse_interaction(pick.to_string().as_bytes()).unwrap();
    assert!(
        matches!(read, discord::Incoming::FormPick { .. }),
        "{read:?}"
    );
}

/// The `oidc` target's signed-claims mode reaches an accepted sign-in with its seed's claims.
#[test]
fn the_oidc_target_signs_tokens_jitbot_accepts() {
    let seed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/seeds/oidc/claims"
    ))
    .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&seed[1..]).unwrap();
    let who = harness::check_token(&harness::sign(&claims)).unwrap();
    assert_eq!(who.oid, "00000000-0000-0000-66f3-3332eca7ea81");
}
