//! Slack adapter and Slack emulator tests: signature verification against the published and
//! project vectors, inbound parsing, Block Kit rendering, and `SlackApi` against `SlackSim`.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use jitbot::chat::slack::{
    Interaction, ParseError, SignatureError, SlackApi, decode_action, ephemeral_response,
    parse_interaction, parse_slash_command, render_blocks, verify_request,
};
use jitbot::chat::{
    Button, ButtonAction, ButtonKind, ChatApi, ChatError, Dedupe, Field, Message, MessageRef, Tone,
};
use jitbot_sim::slack::{SlackFault, SlackSim, sign};
use serde_json::{Value, json};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TOKEN: &str = "xoxb-test-token";
const VECTOR_TS: i64 = 1_700_000_000;

/// Slack's published example (PROTOCOLS.md).
const OFFICIAL_TS: i64 = 1_531_420_618;
const OFFICIAL_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const OFFICIAL_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

/// Copies of `shared/reference/vectors/slack_slash.body` and `slack_block_actions.body`
/// (byte-exact, no trailing newline), so the tests do not depend on files outside the crate.
const SLASH_BODY: &str = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example&enterprise_id=E0001&enterprise_name=Globular%20Construct%20Inc&channel_id=C2147483705&channel_name=ops&user_id=U2147483697&user_name=steve&command=%2Fjit&text=web1%2022%201h&api_app_id=A123456&is_enterprise_install=false&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0001%2F1234567890123%2FabcdEFGHijklMNOPqrstUVWX&trigger_id=13345224609.738474920.8088930838d88f008e0";
const SLASH_SIG: &str = "v0=364808621a5f746c60bb4d34486ea76bd54de0e51c3c3ca47c992791b5ea8a7b";
const BLOCK_ACTIONS_BODY: &str = "payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U0APPROVER%22%2C%22username%22%3A%22alice%22%2C%22name%22%3A%22alice%22%2C%22team_id%22%3A%22T0001%22%7D%2C%22api_app_id%22%3A%22A123456%22%2C%22token%22%3A%22gIkuvaNzQIHg97ATvDxqgjtO%22%2C%22container%22%3A%7B%22type%22%3A%22message%22%2C%22message_ts%22%3A%221700000100.000200%22%2C%22channel_id%22%3A%22C0APPROVALS%22%2C%22is_ephemeral%22%3Afalse%7D%2C%22trigger_id%22%3A%226260451215763.1234567890.6a1f0c0d5c4b4e0e8f1a2b3c4d5e6f70%22%2C%22team%22%3A%7B%22id%22%3A%22T0001%22%2C%22domain%22%3A%22example%22%7D%2C%22enterprise%22%3Anull%2C%22is_enterprise_install%22%3Afalse%2C%22channel%22%3A%7B%22id%22%3A%22C0APPROVALS%22%2C%22name%22%3A%22jit-approvals%22%7D%2C%22message%22%3A%7B%22user%22%3A%22U0BOTUSER%22%2C%22type%22%3A%22message%22%2C%22ts%22%3A%221700000100.000200%22%2C%22bot_id%22%3A%22B0BOTID%22%2C%22app_id%22%3A%22A123456%22%2C%22text%22%3A%22JIT%20request%20req_7f3a%3A%20steve%20wants%20web1%3A22%20for%201h%22%2C%22team%22%3A%22T0001%22%2C%22blocks%22%3A%5B%7B%22type%22%3A%22section%22%2C%22block_id%22%3A%22jit_summary%3Areq_7f3a%22%2C%22text%22%3A%7B%22type%22%3A%22mrkdwn%22%2C%22text%22%3A%22%2AJIT%20access%20request%2A%20%60req_7f3a%60%5Cn%3C%40U2147483697%3E%20requests%20%2Aweb1%2A%20port%20%2A22%2A%20for%20%2A1h%2A%22%2C%22verbatim%22%3Afalse%7D%7D%2C%7B%22type%22%3A%22actions%22%2C%22block_id%22%3A%22jit_actions%3Areq_7f3a%22%2C%22elements%22%3A%5B%7B%22type%22%3A%22button%22%2C%22action_id%22%3A%22jit_approve%22%2C%22text%22%3A%7B%22type%22%3A%22plain_text%22%2C%22text%22%3A%22Approve%22%2C%22emoji%22%3Atrue%7D%2C%22style%22%3A%22primary%22%2C%22value%22%3A%22req_7f3a%22%2C%22confirm%22%3A%7B%22title%22%3A%7B%22type%22%3A%22plain_text%22%2C%22text%22%3A%22Approve%20access%3F%22%2C%22emoji%22%3Atrue%7D%2C%22text%22%3A%7B%22type%22%3A%22plain_text%22%2C%22text%22%3A%22Open%20web1%3A22%20for%201h%20to%20steve%3F%22%2C%22emoji%22%3Atrue%7D%2C%22confirm%22%3A%7B%22type%22%3A%22plain_text%22%2C%22text%22%3A%22Approve%22%2C%22emoji%22%3Atrue%7D%2C%22deny%22%3A%7B%22type%22%3A%22plain_text%22%2C%22text%22%3A%22Cancel%22%2C%22emoji%22%3Atrue%7D%2C%22style%22%3A%22primary%22%7D%7D%2C%7B%22type%22%3A%22button%22%2C%22action_id%22%3A%22jit_deny%22%2C%22text%22%3A%7B%22type%22%3A%22plain_text%22%2C%22text%22%3A%22Deny%22%2C%22emoji%22%3Atrue%7D%2C%22style%22%3A%22danger%22%2C%22value%22%3A%22req_7f3a%22%7D%5D%7D%5D%7D%2C%22state%22%3A%7B%22values%22%3A%7B%7D%7D%2C%22response_url%22%3A%22https%3A%2F%2Fhooks.slack.com%2Factions%2FT0001%2F6260451215764%2Fr4nd0mT0k3nV4lu3xyz12345%22%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22jit_approve%22%2C%22block_id%22%3A%22jit_actions%3Areq_7f3a%22%2C%22text%22%3A%7B%22type%22%3A%22plain_text%22%2C%22text%22%3A%22Approve%22%2C%22emoji%22%3Atrue%7D%2C%22value%22%3A%22req_7f3a%22%2C%22style%22%3A%22primary%22%2C%22type%22%3A%22button%22%2C%22action_ts%22%3A%221700000160.123456%22%7D%5D%7D";
const BLOCK_ACTIONS_SIG: &str =
    "v0=87a3c2a04436971bd391d51bcf94e94828edb51935a774007b5e5079e7b20212";

const WAIT: Duration = Duration::from_secs(5);

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn signed_headers(ts: i64, sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "X-Slack-Request-Timestamp",
        HeaderValue::from_str(&ts.to_string()).expect("header"),
    );
    h.insert(
        "X-Slack-Signature",
        HeaderValue::from_str(sig).expect("header"),
    );
    h
}

fn key() -> Dedupe {
    Dedupe::for_job(1, 1_700_000_000_000, 1)
}

fn card(request_id: &str, round: i64) -> Message {
    Message {
        title: "JIT access request".into(),
        text: format!("<@U2147483697> requests `web1` port 22 for 1h (`{request_id}`)"),
        fields: vec![
            Field {
                label: "Target".into(),
                value: "web1".into(),
            },
            Field {
                label: "Port".into(),
                value: "22/tcp".into(),
            },
        ],
        buttons: vec![
            Button {
                label: "Approve".into(),
                action: ButtonAction {
                    kind: ButtonKind::Approve,
                    request_id: request_id.into(),
                    round,
                },
                confirm: Some("Open web1:22 for 1h to <@U2147483697>?".into()),
            },
            Button {
                label: "Deny".into(),
                action: ButtonAction {
                    kind: ButtonKind::Deny,
                    request_id: request_id.into(),
                    round,
                },
                confirm: None,
            },
        ],
        footer: Some("SIMULATED AZURE BACKEND — no real rule was changed".into()),
        tone: Tone::Pending,
    }
}

fn notice(title: &str, text: &str, tone: Tone) -> Message {
    Message {
        title: title.into(),
        text: text.into(),
        tone,
        ..Message::default()
    }
}

async fn sim_and_api() -> (SlackSim, SlackApi) {
    let sim = SlackSim::start(TOKEN).await.expect("start sim");
    let api = SlackApi::new(&sim.base_url, TOKEN.to_string()).expect("api");
    (sim, api)
}

/// Every button element in rendered blocks with its block_id, as JSON.
fn buttons_of(blocks: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for b in blocks.as_array().into_iter().flatten() {
        if b["type"] == "actions" {
            let block_id = b["block_id"].as_str().unwrap_or_default().to_string();
            for e in b["elements"].as_array().expect("elements") {
                out.push((block_id.clone(), e.clone()));
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Signatures
// ------------------------------------------------------------------------------------------

#[test]
fn verify_accepts_official_slack_test_vector() {
    init();
    let h = signed_headers(OFFICIAL_TS, OFFICIAL_SIG);
    for now in [
        OFFICIAL_TS,
        OFFICIAL_TS + 42,
        OFFICIAL_TS - 300,
        OFFICIAL_TS + 300,
    ] {
        assert_eq!(
            verify_request(SECRET, &h, OFFICIAL_BODY.as_bytes(), now),
            Ok(()),
            "now = {now}"
        );
    }
}

#[test]
fn verify_accepts_project_vectors() {
    init();
    for (body, sig) in [
        (SLASH_BODY, SLASH_SIG),
        (BLOCK_ACTIONS_BODY, BLOCK_ACTIONS_SIG),
    ] {
        let h = signed_headers(VECTOR_TS, sig);
        assert_eq!(
            verify_request(SECRET, &h, body.as_bytes(), VECTOR_TS + 5),
            Ok(())
        );
    }
}

#[test]
fn embedded_vectors_match_reference_files_when_present() {
    let dir = std::path::Path::new("/work/shared/reference/vectors");
    for (file, body) in [
        ("slack_slash.body", SLASH_BODY),
        ("slack_block_actions.body", BLOCK_ACTIONS_BODY),
    ] {
        if let Ok(bytes) = std::fs::read(dir.join(file)) {
            assert_eq!(
                bytes,
                body.as_bytes(),
                "{file} differs from the embedded copy"
            );
        }
    }
}

#[test]
fn sim_sign_reproduces_documented_signatures() {
    assert_eq!(
        sign(SECRET, OFFICIAL_TS, OFFICIAL_BODY.as_bytes()),
        OFFICIAL_SIG
    );
    assert_eq!(sign(SECRET, VECTOR_TS, SLASH_BODY.as_bytes()), SLASH_SIG);
    assert_eq!(
        sign(SECRET, VECTOR_TS, BLOCK_ACTIONS_BODY.as_bytes()),
        BLOCK_ACTIONS_SIG
    );
}

#[test]
fn verify_rejects_flipped_byte() {
    init();
    let h = signed_headers(VECTOR_TS, SLASH_SIG);
    let mut body = SLASH_BODY.as_bytes().to_vec();
    // "web1%2022%201h" -> "web1%2022%202h": the kind of change an attacker wants.
    let pos = SLASH_BODY.find("%201h").expect("text") + 3;
    body[pos] ^= 0x03;
    assert_eq!(
        verify_request(SECRET, &h, &body, VECTOR_TS),
        Err(SignatureError::Mismatch)
    );
    // A flipped character in the signature itself.
    let mut sig = SLASH_SIG.to_string();
    let replacement = if &SLASH_SIG[10..11] == "0" { "1" } else { "0" };
    sig.replace_range(10..11, replacement);
    let h = signed_headers(VECTOR_TS, &sig);
    assert_eq!(
        verify_request(SECRET, &h, SLASH_BODY.as_bytes(), VECTOR_TS),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn verify_rejects_wrong_secret() {
    init();
    let h = signed_headers(VECTOR_TS, SLASH_SIG);
    assert_eq!(
        verify_request(
            "8f742231b10e8888abcd99yyyzzz85a6",
            &h,
            SLASH_BODY.as_bytes(),
            VECTOR_TS
        ),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_request("", &h, SLASH_BODY.as_bytes(), VECTOR_TS),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn verify_rejects_stale_timestamp() {
    init();
    let h = signed_headers(VECTOR_TS, SLASH_SIG);
    let result = verify_request(SECRET, &h, SLASH_BODY.as_bytes(), VECTOR_TS + 301);
    assert_eq!(result, Err(SignatureError::Stale { skew_secs: 301 }));
    let text = result.expect_err("stale").to_string();
    assert!(text.contains("301"), "{text}");
    // The boundary itself is accepted.
    assert_eq!(
        verify_request(SECRET, &h, SLASH_BODY.as_bytes(), VECTOR_TS + 300),
        Ok(())
    );
}

#[test]
fn verify_rejects_future_timestamp() {
    init();
    let h = signed_headers(VECTOR_TS, SLASH_SIG);
    assert_eq!(
        verify_request(SECRET, &h, SLASH_BODY.as_bytes(), VECTOR_TS - 301),
        Err(SignatureError::Stale { skew_secs: -301 })
    );
}

#[test]
fn verify_rejects_missing_and_malformed_headers() {
    init();
    let body = SLASH_BODY.as_bytes();
    let mut no_ts = HeaderMap::new();
    no_ts.insert("X-Slack-Signature", HeaderValue::from_static(SLASH_SIG));
    assert!(matches!(
        verify_request(SECRET, &no_ts, body, VECTOR_TS),
        Err(SignatureError::MissingHeader(h)) if h.eq_ignore_ascii_case("x-slack-request-timestamp")
    ));

    let mut no_sig = HeaderMap::new();
    no_sig.insert(
        "X-Slack-Request-Timestamp",
        HeaderValue::from_static("1700000000"),
    );
    assert!(matches!(
        verify_request(SECRET, &no_sig, body, VECTOR_TS),
        Err(SignatureError::MissingHeader(h)) if h.eq_ignore_ascii_case("x-slack-signature")
    ));

    assert!(matches!(
        verify_request(SECRET, &HeaderMap::new(), body, VECTOR_TS),
        Err(SignatureError::MissingHeader(_))
    ));

    let mut bad_ts = HeaderMap::new();
    bad_ts.insert(
        "X-Slack-Request-Timestamp",
        HeaderValue::from_static("yesterday"),
    );
    bad_ts.insert("X-Slack-Signature", HeaderValue::from_static(SLASH_SIG));
    assert_eq!(
        verify_request(SECRET, &bad_ts, body, VECTOR_TS),
        Err(SignatureError::BadTimestamp)
    );

    let h = signed_headers(VECTOR_TS, "v1=abc");
    assert_eq!(
        verify_request(SECRET, &h, body, VECTOR_TS),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn signature_error_texts_do_not_leak_secrets() {
    let errors = [
        SignatureError::MissingHeader("X-Slack-Signature"),
        SignatureError::BadTimestamp,
        SignatureError::Stale { skew_secs: -999 },
        SignatureError::Mismatch,
    ];
    for e in errors {
        let text = e.to_string();
        assert!(!text.is_empty());
        assert!(!text.contains(SECRET) && !text.contains("v0="), "{text}");
    }
}

// ------------------------------------------------------------------------------------------
// Inbound parsing
// ------------------------------------------------------------------------------------------

#[test]
fn parse_slash_command_vector() {
    let cmd = parse_slash_command(SLASH_BODY.as_bytes()).expect("parse");
    assert_eq!(cmd.user_id, "U2147483697");
    assert_eq!(cmd.user_name, "steve");
    assert_eq!(cmd.team_id, "T0001");
    assert_eq!(cmd.enterprise_id.as_deref(), Some("E0001"));
    assert_eq!(cmd.channel_id, "C2147483705");
    assert_eq!(cmd.command, "/jit");
    assert_eq!(cmd.text, "web1 22 1h");
    assert_eq!(
        cmd.response_url,
        "https://hooks.slack.com/commands/T0001/1234567890123/abcdEFGHijklMNOPqrstUVWX"
    );
    assert_eq!(cmd.trigger_id, "13345224609.738474920.8088930838d88f008e0");
}

#[test]
fn parse_slash_command_decodes_plus_and_requires_fields() {
    let cmd = parse_slash_command(
        b"user_id=U1&command=%2Fjit&text=web1+22%201h&channel_id=C1&unknown_field=x",
    )
    .expect("parse");
    assert_eq!(cmd.text, "web1 22 1h");
    assert_eq!(cmd.enterprise_id, None);
    assert_eq!(cmd.user_name, "");

    assert!(matches!(
        parse_slash_command(b"command=%2Fjit&text=x"),
        Err(ParseError::MissingField("user_id"))
    ));
    assert!(matches!(
        parse_slash_command(b"user_id=U1&text=x"),
        Err(ParseError::MissingField("command"))
    ));
    let err = parse_slash_command(b"user_id=&command=%2Fjit").expect_err("empty user");
    assert!(err.to_string().contains("user_id"), "{err}");
}

#[test]
fn parse_interaction_vector_is_approve_click() {
    let parsed = parse_interaction(BLOCK_ACTIONS_BODY.as_bytes()).expect("parse");
    let Interaction::Button(click) = parsed else {
        panic!("expected a button click, got {parsed:?}");
    };
    assert_eq!(
        click.action,
        ButtonAction {
            kind: ButtonKind::Approve,
            request_id: "req_7f3a".into(),
            round: 0
        }
    );
    assert_eq!(click.user_id, "U0APPROVER");
    assert_eq!(click.user_name, "alice");
    assert_eq!(click.team_id, "T0001");
    assert_eq!(click.channel_id, "C0APPROVALS");
    assert_eq!(click.message_ts, "1700000100.000200");
    assert_eq!(
        click.response_url,
        "https://hooks.slack.com/actions/T0001/6260451215764/r4nd0mT0k3nV4lu3xyz12345"
    );
}

fn form_payload(payload: &Value) -> Vec<u8> {
    serde_urlencoded::to_string([("payload", payload.to_string())])
        .expect("encode")
        .into_bytes()
}

#[test]
fn parse_interaction_other_kinds_and_errors() {
    let view = json!({"type": "view_submission", "user": {"id": "U1"}, "view": {}});
    assert_eq!(
        parse_interaction(&form_payload(&view)).expect("parse"),
        Interaction::Other {
            kind: "view_submission".into()
        }
    );

    let foreign = json!({
        "type": "block_actions",
        "user": {"id": "U1"},
        "container": {"channel_id": "C1", "message_ts": "1.2"},
        "actions": [{"action_id": "somebody_elses_button", "value": "x"}]
    });
    assert!(matches!(
        parse_interaction(&form_payload(&foreign)).expect("parse"),
        Interaction::Other { kind } if kind.contains("somebody_elses_button")
    ));

    // Round and Deny travel through the value; `channel.id` / `message.ts` are fallbacks.
    let deny = json!({
        "type": "block_actions",
        "user": {"id": "U2", "name": "bob"},
        "team": {"id": "T1"},
        "channel": {"id": "C9"},
        "message": {"ts": "1700000200.000200"},
        "actions": [{"action_id": "jit_deny", "value": "req_1:2", "block_id": "jit_actions:req_1:2"}]
    });
    let parsed = parse_interaction(&form_payload(&deny)).expect("parse");
    let Interaction::Button(click) = parsed else {
        panic!("expected a click, got {parsed:?}");
    };
    assert_eq!(click.action.kind, ButtonKind::Deny);
    assert_eq!(click.action.request_id, "req_1");
    assert_eq!(click.action.round, 2);
    assert_eq!(click.user_name, "bob");
    assert_eq!(click.team_id, "T1");
    assert_eq!(click.channel_id, "C9");
    assert_eq!(click.message_ts, "1700000200.000200");
    assert_eq!(click.response_url, "");

    assert!(matches!(
        parse_interaction(b"nothing=here"),
        Err(ParseError::MissingField("payload"))
    ));
    assert!(matches!(
        parse_interaction(b"payload=%7Bnot+json"),
        Err(ParseError::PayloadJson(_))
    ));
    let no_user = json!({
        "type": "block_actions",
        "container": {"channel_id": "C1", "message_ts": "1.2"},
        "actions": [{"action_id": "jit_approve", "value": "req_1"}]
    });
    let err = parse_interaction(&form_payload(&no_user)).expect_err("no user");
    assert!(err.to_string().contains("user.id"), "{err}");
}

// ------------------------------------------------------------------------------------------
// Rendering
// ------------------------------------------------------------------------------------------

#[test]
fn render_blocks_round_trips_through_decode_action() {
    for round in [0, 1, 7] {
        let msg = card("req_7f3a", round);
        let blocks = serde_json::to_value(render_blocks(&msg)).expect("json");
        let buttons = buttons_of(&blocks);
        assert_eq!(buttons.len(), 2);
        let expected_value = if round == 0 {
            "req_7f3a".to_string()
        } else {
            format!("req_7f3a:{round}")
        };
        for ((block_id, b), original) in buttons.iter().zip(&msg.buttons) {
            assert_eq!(block_id, &format!("jit_actions:{expected_value}"));
            assert_eq!(b["value"], expected_value.as_str());
            let decoded = decode_action(
                b["action_id"].as_str().expect("action_id"),
                b["value"].as_str().expect("value"),
            )
            .expect("decodes");
            assert_eq!(decoded, original.action);
        }
        let (_, approve) = &buttons[0];
        assert_eq!(approve["action_id"], "jit_approve");
        assert_eq!(approve["style"], "primary");
        assert_eq!(approve["text"]["text"], "Approve");
        assert_eq!(approve["confirm"]["confirm"]["text"], "Approve");
        assert_eq!(approve["confirm"]["deny"]["text"], "Cancel");
        assert!(
            approve["confirm"]["text"]["text"]
                .as_str()
                .expect("confirm text")
                .contains("web1:22")
        );
        let (_, deny) = &buttons[1];
        assert_eq!(deny["action_id"], "jit_deny");
        assert_eq!(deny["style"], "danger");
        assert!(deny.get("confirm").is_none());
    }
}

#[test]
fn render_blocks_layout_and_tone() {
    let blocks = serde_json::to_value(render_blocks(&card("req_1", 0))).expect("json");
    let blocks = blocks.as_array().expect("array");
    let types: Vec<&str> = blocks
        .iter()
        .map(|b| b["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        ["header", "section", "section", "actions", "context"]
    );
    assert_eq!(blocks[0]["text"]["text"], ":hourglass: JIT access request");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    assert_eq!(blocks[2]["fields"][0]["text"], "*Target*\nweb1");
    assert_eq!(blocks[4]["elements"][0]["type"], "mrkdwn");

    for (tone, emoji) in [
        (Tone::Success, ":white_check_mark:"),
        (Tone::Warning, ":warning:"),
        (Tone::Danger, ":no_entry:"),
        (Tone::Pending, ":hourglass:"),
    ] {
        let b = serde_json::to_value(render_blocks(&notice("Done", "x", tone))).expect("json");
        assert!(
            b[0]["text"]["text"]
                .as_str()
                .expect("title")
                .starts_with(emoji),
            "{tone:?}"
        );
    }
}

#[test]
fn decode_action_rejects_foreign_and_malformed() {
    assert_eq!(decode_action("other", "req_1"), None);
    assert_eq!(decode_action("jit_approve", ""), None);
    assert_eq!(decode_action("jit_approve", "req_1:-1"), None);
    assert_eq!(decode_action("jit_approve", "req_1:x"), None);
    assert_eq!(
        decode_action("jit_deny", "req_1:3"),
        Some(ButtonAction {
            kind: ButtonKind::Deny,
            request_id: "req_1".into(),
            round: 3
        })
    );
}

fn oversized_message() -> Message {
    let mut msg = card("req_big", 2);
    msg.title = "T".repeat(400);
    msg.text = "line of text\n".repeat(700); // 9,100 characters
    msg.fields = (0..23)
        .map(|i| Field {
            label: format!("Label {i}"),
            value: "v".repeat(2500),
        })
        .collect();
    msg.buttons[0].label = "A".repeat(200);
    msg.buttons[0].confirm = Some("c".repeat(1000));
    msg.footer = Some("f".repeat(5000));
    msg
}

#[test]
fn render_blocks_respects_limits() {
    let msg = oversized_message();
    let blocks = serde_json::to_value(render_blocks(&msg)).expect("json");
    let arr = blocks.as_array().expect("array");
    assert!(arr.len() <= 50);
    let mut sections_with_fields = 0;
    let mut text_chars = 0;
    let chars = |v: &Value| v.as_str().expect("string").chars().count();
    for b in arr {
        match b["type"].as_str() {
            Some("header") => assert!(chars(&b["text"]["text"]) <= 150),
            Some("section") => {
                if b["text"].is_object() {
                    assert!(chars(&b["text"]["text"]) <= 3000);
                    text_chars += chars(&b["text"]["text"]);
                }
                if let Some(fields) = b["fields"].as_array() {
                    sections_with_fields += 1;
                    assert!(fields.len() <= 10);
                    for f in fields {
                        assert!(chars(&f["text"]) <= 2000);
                    }
                }
            }
            Some("context") => assert!(chars(&b["elements"][0]["text"]) <= 3000),
            _ => {}
        }
    }
    assert_eq!(sections_with_fields, 3, "23 fields need 3 sections");
    assert!(text_chars >= 9000, "long text is split, not dropped");
    let buttons = buttons_of(&blocks);
    let (_, approve) = &buttons[0];
    let label = approve["text"]["text"].as_str().expect("label");
    assert_eq!(label.chars().count(), 75);
    assert!(label.ends_with('…'));
    assert!(chars(&approve["confirm"]["text"]["text"]) <= 300);
    assert!(chars(&approve["confirm"]["confirm"]["text"]) <= 30);
    assert_eq!(
        decode_action("jit_approve", approve["value"].as_str().expect("value")),
        Some(msg.buttons[0].action.clone())
    );
}

#[test]
fn render_blocks_groups_buttons_per_round_and_drops_duplicates() {
    let mut msg = card("req_1", 0);
    msg.buttons.extend(card("req_1", 1).buttons);
    msg.buttons.push(msg.buttons[0].clone()); // a duplicate Approve for round 0
    let blocks = serde_json::to_value(render_blocks(&msg)).expect("json");
    let buttons = buttons_of(&blocks);
    assert_eq!(buttons.len(), 4, "duplicate left out");
    let ids: Vec<&str> = buttons.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "jit_actions:req_1",
            "jit_actions:req_1",
            "jit_actions:req_1:1",
            "jit_actions:req_1:1"
        ]
    );
}

#[test]
fn ephemeral_response_shape() {
    let msg = notice(
        "Request submitted",
        "Waiting for approval of `req_1`",
        Tone::Pending,
    );
    let v = ephemeral_response(&msg);
    assert_eq!(v["response_type"], "ephemeral");
    assert_eq!(v["text"], msg.plain_text());
    assert!(v["blocks"].as_array().is_some_and(|b| !b.is_empty()));
}

// ------------------------------------------------------------------------------------------
// SlackApi against SlackSim
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn api_posts_then_updates_a_card() {
    init();
    let (sim, api) = sim_and_api().await;
    let msg = card("req_7f3a", 0);
    let at = api.post("C0APPROVALS", &msg, &key()).await.expect("post");
    assert_eq!(at.channel, "C0APPROVALS");
    assert_eq!(at.id, "1700000100.000200");

    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "chat.postMessage");
    assert_eq!(
        call.authorization.as_deref(),
        Some("Bearer xoxb-test-token")
    );
    assert!(call.auth_ok);
    assert!(
        call.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        call.content_type
    );
    assert_eq!(call.body["channel"], "C0APPROVALS");
    assert_eq!(
        call.body["text"],
        msg.plain_text(),
        "text fallback sent with blocks"
    );
    assert!(call.body["blocks"].as_array().is_some_and(|b| b.len() == 5));
    assert!(call.ok && call.status == 200);
    assert!(
        !format!("{call:?}").contains(TOKEN),
        "Debug redacts the token"
    );

    let mut done = notice(
        "Approved",
        "<@U0APPROVER> approved `req_7f3a`",
        Tone::Success,
    );
    done.fields = msg.fields.clone();
    api.update(&at, &done).await.expect("update");
    sim.wait_for("the card to show the approval", WAIT, |s| {
        s.message("C0APPROVALS", &at.id)
            .is_some_and(|m| m.updates == 1 && m.text.starts_with("Approved"))
    })
    .await
    .expect("updated");
    let shown = sim.messages("C0APPROVALS");
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].text, done.plain_text());
    assert!(buttons_of(&shown[0].blocks).is_empty(), "buttons removed");
    let update_call = &sim.calls()[1];
    assert_eq!(update_call.method, "chat.update");
    assert_eq!(update_call.body["ts"], at.id.as_str());
    assert_eq!(update_call.body["text"], done.plain_text());

    // A second post gets a later ts.
    let second = api.post("C0APPROVALS", &msg, &key()).await.expect("post 2");
    assert!(second.id > at.id);
}

#[tokio::test]
async fn api_dm_to_a_user_id() {
    init();
    let (sim, api) = sim_and_api().await;
    let msg = notice("Access granted", "web1:22 is open for 1h", Tone::Success);
    let at = api.post("U123", &msg, &key()).await.expect("dm");
    assert!(
        at.channel.starts_with('D'),
        "DM channel id answered: {}",
        at.channel
    );
    let dms = sim.messages("U123");
    assert_eq!(dms.len(), 1);
    assert_eq!(dms[0].text, msg.plain_text());
    assert_eq!(sim.messages(&at.channel), dms);
    assert_eq!(sim.calls()[0].body["channel"], "U123");

    let closed = notice("Access closed", "rule removed", Tone::Info);
    api.update(&at, &closed).await.expect("update DM");
    assert_eq!(sim.messages("U123")[0].updates, 1);
}

#[tokio::test]
async fn api_rate_limited_by_429_with_retry_after() {
    init();
    let (sim, api) = sim_and_api().await;
    sim.inject(SlackFault::RateLimited {
        retry_after_secs: 3,
    });
    let started = Instant::now();
    let err = api
        .post("C1", &card("req_1", 0), &key())
        .await
        .expect_err("429");
    assert!(
        matches!(err, ChatError::RateLimited { retry_after } if retry_after == Duration::from_secs(3)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "returned promptly"
    );
    let calls = sim.calls();
    assert_eq!(calls.len(), 1, "no internal retry");
    assert_eq!(calls[0].status, 429);
    // The fault was consumed: the next call succeeds.
    api.post("C1", &card("req_1", 0), &key())
        .await
        .expect("post after 429");

    sim.inject(SlackFault::OkFalse("ratelimited".into()));
    let err = api
        .post("C1", &card("req_1", 0), &key())
        .await
        .expect_err("ok:false ratelimited");
    assert!(
        matches!(err, ChatError::RateLimited { retry_after } if retry_after == Duration::from_secs(1)),
        "{err:?}"
    );
}

#[tokio::test]
async fn api_channel_not_found_and_other_codes_are_permanent() {
    init();
    let (sim, api) = sim_and_api().await;
    sim.set_known_channels(Some(vec!["C0APPROVALS".into()]));
    let err = api
        .post("C0NOPE", &card("req_1", 0), &key())
        .await
        .expect_err("unknown channel");
    assert!(
        matches!(&err, ChatError::Permanent(m) if m.contains("channel_not_found")),
        "{err:?}"
    );
    api.post("C0APPROVALS", &card("req_1", 0), &key())
        .await
        .expect("known channel");

    sim.inject(SlackFault::OkFalse("not_in_channel".into()));
    let err = api
        .post("C0APPROVALS", &card("req_1", 0), &key())
        .await
        .expect_err("not in channel");
    assert!(
        matches!(&err, ChatError::Permanent(m) if m.contains("not_in_channel")),
        "{err:?}"
    );

    let unknown = MessageRef {
        channel: "C0APPROVALS".into(),
        id: "1.000000".into(),
    };
    let err = api
        .update(&unknown, &card("req_1", 0))
        .await
        .expect_err("unknown ts");
    assert!(
        matches!(&err, ChatError::Permanent(m) if m.contains("message_not_found")),
        "{err:?}"
    );
}

#[tokio::test]
async fn api_server_errors_and_outage_are_transient() {
    init();
    let (sim, api) = sim_and_api().await;
    sim.inject(SlackFault::ServerError);
    let err = api
        .post("C1", &card("req_1", 0), &key())
        .await
        .expect_err("500");
    assert!(matches!(err, ChatError::Transient(_)), "{err:?}");

    for code in [
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    ] {
        sim.inject(SlackFault::OkFalse(code.into()));
        let err = api
            .post("C1", &card("req_1", 0), &key())
            .await
            .expect_err(code);
        assert!(
            matches!(&err, ChatError::Transient(m) if m.contains(code)),
            "{err:?}"
        );
    }

    sim.set_down(true);
    let err = api
        .post("C1", &card("req_1", 0), &key())
        .await
        .expect_err("down");
    assert!(
        matches!(&err, ChatError::Transient(m) if m.contains("503")),
        "{err:?}"
    );
    let somewhere = MessageRef {
        channel: "C1".into(),
        id: "1.1".into(),
    };
    let err = api
        .update(&somewhere, &card("req_1", 0))
        .await
        .expect_err("down update");
    assert!(matches!(err, ChatError::Transient(_)), "{err:?}");
    sim.set_down(false);
    api.post("C1", &card("req_1", 0), &key())
        .await
        .expect("back up");
    assert_eq!(sim.calls().iter().filter(|c| c.status == 503).count(), 2);
}

#[tokio::test]
async fn api_connection_refused_is_transient() {
    init();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let api = SlackApi::new(&format!("http://127.0.0.1:{port}/api/"), TOKEN.into()).expect("api");
    let err = api
        .post("C1", &card("req_1", 0), &key())
        .await
        .expect_err("refused");
    assert!(matches!(err, ChatError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn api_invalid_token_is_permanent() {
    init();
    let sim = SlackSim::start(TOKEN).await.expect("sim");
    let api = SlackApi::new(&sim.base_url, "xoxb-wrong".into()).expect("api");
    let err = api
        .post("C1", &card("req_1", 0), &key())
        .await
        .expect_err("bad token");
    assert!(
        matches!(&err, ChatError::Permanent(m) if m.contains("invalid_auth")),
        "{err:?}"
    );
    let calls = sim.calls();
    assert!(!calls[0].auth_ok);
    assert_eq!(calls[0].authorization.as_deref(), Some("Bearer xoxb-wrong"));
    assert_eq!(calls[0].error.as_deref(), Some("invalid_auth"));
    assert!(sim.messages("C1").is_empty());
    assert!(!err.to_string().contains("xoxb-wrong"));
}

#[test]
fn api_new_rejects_bad_configuration() {
    init();
    assert!(matches!(
        SlackApi::new("not a url", TOKEN.into()),
        Err(ChatError::Permanent(_))
    ));
    assert!(matches!(
        SlackApi::new("ftp://example.com/api/", TOKEN.into()),
        Err(ChatError::Permanent(_))
    ));
    assert!(matches!(
        SlackApi::new("https://slack.com/api/", " ".into()),
        Err(ChatError::Permanent(_))
    ));
    let api = SlackApi::new("https://slack.com/api/", TOKEN.into()).expect("default url");
    assert!(!format!("{api:?}").contains(TOKEN));
}

#[tokio::test]
async fn api_oversized_message_passes_the_emulators_block_validation() {
    init();
    let (sim, api) = sim_and_api().await;
    api.post("C1", &oversized_message(), &key())
        .await
        .expect("rendered limits accepted by the emulator's Block Kit validator");
    let m = &sim.messages("C1")[0];
    assert!(m.text.chars().count() <= 40_000);
}

// ------------------------------------------------------------------------------------------
// The emulator on its own (raw HTTP, as any other client would call it)
// ------------------------------------------------------------------------------------------

/// (method, bearer token, form fields, expected `error` code).
type ErrorCase<'a> = (&'a str, Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

async fn raw_post(
    sim: &SlackSim,
    method: &str,
    auth: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{method}", sim.base_url))
        .form(form);
    if let Some(a) = auth {
        req = req.bearer_auth(a);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn sim_emulates_web_api_conventions() {
    init();
    let sim = SlackSim::start(TOKEN).await.expect("sim");
    assert!(sim.base_url.ends_with("/api/"));

    // Form body with blocks as a JSON-encoded string.
    let blocks =
        json!([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]).to_string();
    let (status, body) = raw_post(
        &sim,
        "chat.postMessage",
        Some(TOKEN),
        &[("channel", "C1"), ("text", "hi"), ("blocks", &blocks)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(sim.messages("C1")[0].blocks[0]["type"], "section");

    let long_button = json!([{"type": "actions", "elements": [{"type": "button",
        "text": {"type": "plain_text", "text": "x".repeat(76)}, "action_id": "a"}]}])
    .to_string();
    let too_long = "x".repeat(40_001);
    let cases: Vec<ErrorCase> = vec![
        (
            "chat.postMessage",
            None,
            vec![("channel", "C1"), ("text", "x")],
            "not_authed",
        ),
        (
            "chat.postMessage",
            Some("xoxb-nope"),
            vec![("channel", "C1"), ("text", "x")],
            "invalid_auth",
        ),
        (
            "chat.postMessage",
            Some(TOKEN),
            vec![("text", "x")],
            "channel_not_found",
        ),
        (
            "chat.postMessage",
            Some(TOKEN),
            vec![("channel", "C1")],
            "no_text",
        ),
        (
            "chat.postMessage",
            Some(TOKEN),
            vec![("channel", "C1"), ("text", &too_long)],
            "msg_too_long",
        ),
        (
            "chat.postMessage",
            Some(TOKEN),
            vec![("channel", "C1"), ("blocks", "{\"type\":\"section\"}")],
            "invalid_blocks",
        ),
        (
            "chat.postMessage",
            Some(TOKEN),
            vec![("channel", "C1"), ("blocks", &long_button)],
            "invalid_blocks",
        ),
        (
            "chat.update",
            Some(TOKEN),
            vec![("channel", "C1"), ("ts", "9.9"), ("text", "x")],
            "message_not_found",
        ),
        (
            "chat.postEphemeral",
            Some(TOKEN),
            vec![("channel", "C1"), ("text", "x")],
            "user_not_in_channel",
        ),
        (
            "conversations.open",
            Some(TOKEN),
            vec![],
            "users_list_not_supplied",
        ),
        ("no.such.method", Some(TOKEN), vec![], "unknown_method"),
    ];
    for (method, auth, form, code) in cases {
        let (status, body) = raw_post(&sim, method, auth, &form).await;
        assert_eq!(status, 200, "{method} {code}");
        assert_eq!(body["ok"], false, "{method}: {body}");
        assert_eq!(body["error"], code, "{method}: {body}");
    }

    let (_, body) = raw_post(&sim, "auth.test", Some(TOKEN), &[]).await;
    assert_eq!(body["ok"], true, "{body}");
    let (_, body) = raw_post(
        &sim,
        "conversations.open",
        Some(TOKEN),
        &[("users", "U777")],
    )
    .await;
    let dm = body["channel"]["id"].as_str().expect("dm id").to_string();
    assert!(dm.starts_with('D'));
    let (_, body) = raw_post(
        &sim,
        "chat.postMessage",
        Some(TOKEN),
        &[("channel", &dm), ("text", "hello")],
    )
    .await;
    assert_eq!(body["channel"], dm.as_str());
    assert_eq!(sim.messages("U777")[0].text, "hello");
    let (_, body) = raw_post(
        &sim,
        "chat.postEphemeral",
        Some(TOKEN),
        &[("channel", "C1"), ("user", "U1"), ("text", "psst")],
    )
    .await;
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(sim.ephemerals()[0].user, "U1");

    sim.inject(SlackFault::RateLimited {
        retry_after_secs: 7,
    });
    let resp = reqwest::Client::new()
        .post(format!("{}chat.postMessage", sim.base_url))
        .bearer_auth(TOKEN)
        .json(&json!({"channel": "C1", "text": "x"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
}

#[tokio::test]
async fn sim_wait_for_names_what_it_waited_for() {
    init();
    let sim = SlackSim::start(TOKEN).await.expect("sim");
    let err = sim
        .wait_for("a message in #nowhere", Duration::from_millis(100), |s| {
            !s.messages("C0NOWHERE").is_empty()
        })
        .await
        .expect_err("times out");
    assert!(err.to_string().contains("a message in #nowhere"), "{err}");
}

#[tokio::test]
async fn api_a_post_that_timed_out_after_delivery_is_found_in_the_history_not_posted_again() {
    init();
    let sim = SlackSim::start(TOKEN).await.expect("start sim");
    let api = SlackApi::new(&sim.base_url, TOKEN.to_string())
        .expect("api")
        .with_timeout(Duration::from_millis(300));
    let msg = notice("Access open", "web1 port 22 is open", Tone::Success);
    // Something else is in the channel too, with and without jitbot metadata.
    api.post(
        "C0FEED",
        &notice("Other", "earlier", Tone::Info),
        &Dedupe::for_job(1, 1_700_000_000_000, 1),
    )
    .await
    .expect("first post");
    sim.inject(SlackFault::DeliverThenHang(Duration::from_secs(2)));
    let first = api
        .post("C0FEED", &msg, &Dedupe::for_job(7, 1_700_000_000_000, 1))
        .await;
    assert!(
        matches!(first, Err(ChatError::Transient(_))),
        "a lost answer is transient: {first:?}"
    );
    assert_eq!(
        sim.messages("C0FEED").len(),
        2,
        "it was delivered all the same"
    );
    let again = api
        .post("C0FEED", &msg, &Dedupe::for_job(7, 1_700_000_000_000, 2))
        .await
        .expect("retry");
    let delivered = sim.messages("C0FEED");
    assert_eq!(delivered.len(), 2, "not posted twice");
    assert_eq!(again.id, delivered[1].ts);
    assert_eq!(again.channel, "C0FEED");
    assert_eq!(
        delivered[1].metadata,
        json!({"event_type": "jitbot_message", "event_payload": {"key": "jitbot-job-7-1700000000000"}})
    );
    let history = sim
        .calls()
        .into_iter()
        .find(|c| c.method == "conversations.history")
        .expect("the retry searched the history");
    assert_eq!(history.body["include_all_metadata"], "true");
    assert_eq!(history.body["channel"], "C0FEED");
    // A retry of a message that never arrived is posted.
    let other = api
        .post("C0FEED", &msg, &Dedupe::for_job(8, 1_700_000_000_000, 2))
        .await
        .expect("post");
    assert_ne!(other.id, again.id);
    assert_eq!(sim.messages("C0FEED").len(), 3);
}

#[tokio::test]
async fn sim_history_needs_a_conversation_id_and_hides_metadata_unless_asked() {
    init();
    let (sim, api) = sim_and_api().await;
    let at = api
        .post(
            "U0STEVE",
            &notice("Hi", "there", Tone::Info),
            &Dedupe::for_job(3, 1_700_000_000_000, 1),
        )
        .await
        .expect("dm");
    let http = reqwest::Client::new();
    let get = |query: String| {
        let http = http.clone();
        let url = format!("{}conversations.history?{query}", sim.base_url);
        async move {
            http.get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("history")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    let by_user = get("channel=U0STEVE".into()).await;
    assert_eq!(by_user["ok"], false);
    assert_eq!(by_user["error"], "channel_not_found");
    let plain = get(format!("channel={}", at.channel)).await;
    assert_eq!(plain["ok"], true, "{plain}");
    assert_eq!(plain["messages"][0]["ts"], Value::String(at.id.clone()));
    assert!(plain["messages"][0].get("metadata").is_none(), "{plain}");
    let with = get(format!("channel={}&include_all_metadata=true", at.channel)).await;
    assert_eq!(
        with["messages"][0]["metadata"]["event_payload"]["key"],
        "jitbot-job-3-1700000000000"
    );
}

#[tokio::test]
async fn group_members_come_from_usergroups_users_list_and_errors_are_classified() {
    init();
    let sim = SlackSim::start(TOKEN).await.expect("sim");
    let api = SlackApi::new(&sim.base_url, TOKEN.to_string()).expect("api");
    sim.set_usergroup("S0OPS", &["U1", "U2"]);
    assert_eq!(
        api.group_members("S0OPS").await.expect("members"),
        vec!["U1".to_string(), "U2".to_string()]
    );
    let call = sim
        .calls()
        .into_iter()
        .find(|c| c.method == "usergroups.users.list")
        .expect("the call");
    assert_eq!(call.body["usergroup"], "S0OPS", "{call:?}");
    assert!(call.auth_ok);
    // Slack answers an unknown group with HTTP 200 and ok:false: never a member list.
    match api.group_members("S0NOPE").await {
        Err(ChatError::Permanent(e)) => assert!(e.contains("no_such_subteam"), "{e}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    sim.inject(SlackFault::RateLimited {
        retry_after_secs: 3,
    });
    assert!(matches!(
        api.group_members("S0OPS").await,
        Err(ChatError::RateLimited { .. })
    ));
}

/// Socket Mode delivers the same command and click as JSON payloads: they parse to exactly what
/// the HTTP form bodies parse to, and a payload that is not an object is refused.
#[test]
fn socket_mode_payloads_parse_like_the_http_bodies() {
    use jitbot_sim::slack_user;
    let payload = slack_user::slash_command_payload("U1", "ann", "C1", "web1 22 1h from me");
    let form = serde_urlencoded::to_string(
        payload
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let over_socket = jitbot::chat::slack::slash_command_from_json(&payload).unwrap();
    assert_eq!(
        over_socket,
        jitbot::chat::slack::parse_slash_command(form.as_bytes()).unwrap()
    );
    assert_eq!(over_socket.text, "web1 22 1h from me");

    let click = slack_user::block_action_payload(
        "U2",
        "bob",
        "C1",
        "1700000100.000200",
        "jit_approve",
        "req_1:2",
    );
    let form = serde_urlencoded::to_string([("payload", click.to_string())]).unwrap();
    let over_socket = jitbot::chat::slack::interaction_from_json(&click).unwrap();
    assert_eq!(
        over_socket,
        jitbot::chat::slack::parse_interaction(form.as_bytes()).unwrap()
    );
    assert!(
        matches!(over_socket, jitbot::chat::slack::Interaction::Button(ref c) if c.action.round == 2)
    );

    assert!(jitbot::chat::slack::slash_command_from_json(&json!("text")).is_err());
    assert!(jitbot::chat::slack::slash_command_from_json(&json!({ "command": "/jit" })).is_err());
    assert!(jitbot::chat::slack::interaction_from_json(&json!([])).is_err());
}
