//! Property tests of the parsers of untrusted input (the `/jit` grammar, Slack's form and JSON
//! bodies, Discord's interactions, the forms on both platforms, Socket Mode frames, Entra's
//! sign-in answers, the config file, ARM's answers) and of `access`'s set logic.
//!
//! Each property runs a bounded number of cases (256) so `cargo test` stays fast; the fuzz
//! targets (`fuzz/`) search the same parsers for much longer. What they hold every parser to: no
//! panic, every rejection a sentence, and what is accepted reads back as what was sent.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use jitbot::access::{AddressSet, PortSet};
use jitbot::chat::form::{Choice, FieldId, Form, FormField, FormKind, FormValues, Input};
use jitbot::chat::slack::{self, Interaction};
use jitbot::chat::{ButtonAction, ButtonKind, discord};
use jitbot::command::Command;
use jitbot::domain::{LOGGED_TEXT_MAX, bounded};
use jitbot::slack_socket::{Incoming, read_frame};
use jitbot_sim::{discord_user, slack_user};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Words the grammar knows, numbers at and past its limits, and junk.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "web1",
            "22",
            "3389",
            "ssh",
            "rdp",
            "0",
            "65535",
            "65536",
            "-1",
            "1h",
            "90s",
            "PT1H",
            "1h30m",
            "0s",
            "1d",
            "99999999999999999999h",
            "from",
            "FROM",
            "203.0.113.7",
            "2001:db8::/32",
            "0.0.0.0/0",
            "*",
            "status",
            "revoke",
            "extend",
            "list",
            "targets",
            "help",
            "req_abc12345",
            "req_",
            "22,3389",
            ",",
            "h",
            "PT",
        ])
        .prop_map(String::from),
        "\\PC{1,12}",
    ]
}

fn v4_net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
        Ipv4Net::new(Ipv4Addr::from(a), len)
            .expect("0..=32 is a valid prefix length")
            .trunc()
    })
}

fn v6_net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, len)| {
        Ipv6Net::new(Ipv6Addr::from(a), len)
            .expect("0..=128 is a valid prefix length")
            .trunc()
    })
}

/// Port ranges `lo..=hi` as NSG rules write them.
fn port_ranges() -> impl Strategy<Value = Vec<(u16, u16)>> {
    prop::collection::vec(
        (any::<u16>(), any::<u16>()).prop_map(|(a, b)| (a.min(b), a.max(b))),
        1..6,
    )
}

fn range_text(r: &[(u16, u16)]) -> Vec<String> {
    r.iter()
        .map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect()
}

fn in_ranges(r: &[(u16, u16)], p: u16) -> bool {
    r.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p))
}

fn set_of(nets: &[IpNet]) -> AddressSet {
    let text: Vec<String> = nets.iter().map(IpNet::to_string).collect();
    AddressSet::parse(&text)
}

fn host(addr: IpAddr) -> AddressSet {
    AddressSet::parse(&[addr.to_string()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // ── the /jit grammar ──────────────────────────────────────────────────────────────────

    #[test]
    fn any_text_parses_or_gets_a_sentence(text in "\\PC{0,300}") {
        harness::check_command(&text);
    }

    #[test]
    fn sequences_of_known_words_parse_or_get_a_sentence(words in prop::collection::vec(word(), 0..8)) {
        harness::check_command(&words.join(" "));
    }

    #[test]
    fn a_valid_request_reads_back_as_typed(
        target in "[a-z][a-z0-9_.-]{0,20}",
        ports in prop::collection::btree_set(1u16..=65535, 1..4),
        secs in 1u64..=30 * 86_400,
        reason in prop::collection::vec("[a-z]{1,8}", 0..6),
    ) {
        let verbs = ["help", "targets", "list", "ls", "status", "revoke", "close", "extend"];
        prop_assume!(!verbs.contains(&target.as_str()));
        prop_assume!(reason.first().is_none_or(|w| w != "from"));
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let text = format!("{target} {} {secs}s {}", list.join(","), reason.join(" "));
        let Ok(Command::Request(r)) = Command::parse(&text) else {
            return Err(TestCaseError::fail(format!("`{text}` was not read as a request")));
        };
        prop_assert_eq!(r.target, target);
        let want: Vec<u16> = ports.iter().copied().collect();
        prop_assert_eq!(r.ports.as_slice(), want.as_slice());
        prop_assert_eq!(r.duration.as_secs(), secs);
        prop_assert_eq!(r.source, None);
        prop_assert_eq!(r.reason, (!reason.is_empty()).then(|| reason.join(" ")));
    }

    // ── Slack ─────────────────────────────────────────────────────────────────────────────

    #[test]
    fn slack_bodies_never_panic(mode in 0u8..5, body in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut data = vec![mode];
        data.extend(body);
        harness::slack(&data);
    }

    #[test]
    fn a_slash_command_text_arrives_exactly(user in "U[A-Z0-9]{1,11}", text in "\\PC{0,200}") {
        let body = slack_user::slash_command(&user, "someone", "C0OPS", &text);
        let cmd = slack::parse_slash_command(body.as_bytes()).expect("Slack's own shape parses");
        prop_assert_eq!(cmd.user_id, user);
        prop_assert_eq!(cmd.command, "/jit");
        prop_assert_eq!(cmd.text, text);
    }

    #[test]
    fn a_button_reads_back_whatever_its_value(
        user in "U[A-Z0-9]{1,11}",
        value in "\\PC{0,60}",
        approve in any::<bool>(),
    ) {
        let action_id = if approve { slack::ACTION_APPROVE } else { slack::ACTION_DENY };
        let body = slack_user::block_action(&user, "someone", "C0APPROVALS", "1700000100.000200", action_id, &value);
        match slack::parse_interaction(body.as_bytes()) {
            Ok(Interaction::Button(click)) => {
                prop_assert_eq!(click.user_id, user);
                prop_assert_eq!(Some(click.action), slack::decode_action(action_id, &value));
            }
            Ok(Interaction::Other { .. }) => prop_assert!(slack::decode_action(action_id, &value).is_none()),
            Ok(other) => return Err(TestCaseError::fail(format!("a message button read as a form: {other:?}"))),
            Err(e) => return Err(TestCaseError::fail(format!("a well-formed click was refused: {e}"))),
        }
    }

    #[test]
    fn slack_button_values_round_trip(id in "req_[a-z0-9]{1,12}", round in 0i64..10_000) {
        let value = if round == 0 { id.clone() } else { format!("{id}:{round}") };
        let action = slack::decode_action(slack::ACTION_APPROVE, &value);
        prop_assert_eq!(action, Some(ButtonAction { kind: ButtonKind::Approve, request_id: id, round }));
    }

    // ── Discord ───────────────────────────────────────────────────────────────────────────

    #[test]
    fn discord_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..400)) {
        harness::discord(&body);
    }

    #[test]
    fn discord_buttons_read_back_whatever_their_custom_id(
        user in "[1-9][0-9]{16,18}",
        custom_id in "\\PC{0,100}",
    ) {
        let body = discord_user::button(&user, &[], "700000000000000010", "1234567890123456789", &custom_id);
        match discord::parse_interaction(body.as_bytes()) {
            Ok(discord::Incoming::Button { user: who, action, .. }) => {
                prop_assert_eq!(who.id, user);
                prop_assert_eq!(Some(action), discord::parse_custom_id(&custom_id));
            }
            Ok(discord::Incoming::Other { .. }) => prop_assert!(discord::parse_custom_id(&custom_id).is_none()),
            other => return Err(TestCaseError::fail(format!("a button was read as {other:?}"))),
        }
    }

    #[test]
    fn discord_custom_ids_round_trip(id in "req_[a-z0-9]{1,12}", round in 0i64..10_000, approve in any::<bool>()) {
        let action = ButtonAction {
            kind: if approve { ButtonKind::Approve } else { ButtonKind::Deny },
            request_id: id,
            round,
        };
        prop_assert_eq!(discord::parse_custom_id(&discord::custom_id(&action)), Some(action));
    }

    #[test]
    fn discord_command_options_become_grammar_or_a_sentence(
        target in "\\PC{0,30}", ports in "\\PC{0,10}", duration in "\\PC{0,10}",
    ) {
        let body = discord_user::request("800000000000000001", &[], &target, &ports, &duration);
        match discord::parse_interaction(body.as_bytes()) {
            Ok(discord::Incoming::Command { text, .. }) => harness::check_command(&text),
            other => return Err(TestCaseError::fail(format!("a command was read as {other:?}"))),
        }
    }

    // ── forms ─────────────────────────────────────────────────────────────────────────────

    #[test]
    fn slack_form_payloads_never_panic(mode in 0u8..3, body in "\\PC{0,300}") {
        let mut data = vec![mode];
        data.extend(body.bytes());
        harness::slack_form(&data);
    }

    #[test]
    fn a_submitted_slack_form_reads_back_its_fields(
        user in "U[A-Z0-9]{1,11}",
        target in "[a-z][a-z0-9_.-]{0,20}",
        ports in prop::collection::vec("[^,]{0,6}", 0..4),
        duration in "\\PC{0,8}",
        source in "\\PC{0,40}",
        reason in "\\PC{0,80}",
    ) {
        let view = modal(&FormKind::Request { target: Some(target.clone()) });
        let ports = ports.join(",");
        let changes = [("ports", ports.as_str()), ("duration", &duration), ("source", &source), ("reason", &reason)];
        let payload = slack_user::view_submission_payload(&user, "someone", &view, &changes);
        let Ok(Interaction::FormSubmitted(s)) = slack::interaction_from_json(&payload) else {
            return Err(TestCaseError::fail(format!("a submission was not read as one: {payload}")));
        };
        prop_assert_eq!(&s.user_id, &user);
        prop_assert_eq!(&s.kind, &FormKind::Request { target: Some(target.clone()) });
        // Selects arrive as chosen, typed text trimmed; what is empty is absent.
        let multi: Vec<&str> = ports.split(',').filter(|p| !p.is_empty()).collect();
        let mut want = FormValues::new();
        for (field, value) in [
            (FieldId::Target, target.clone()),
            (FieldId::Ports, multi.join(",")),
            (FieldId::Duration, duration.clone()),
            (FieldId::Source, source.trim().to_string()),
            (FieldId::Reason, reason.trim().to_string()),
        ] {
            if !value.is_empty() {
                want.insert(field, value);
            }
        }
        prop_assert_eq!(&s.values, &want);
        for field in s.values.keys() {
            let block = &s.block_ids[field];
            let expected = if *field == FieldId::Target { "target".to_string() } else { format!("{}:{target}", field.as_str()) };
            prop_assert_eq!(block, &expected);
        }
        harness::check_slack_payload(&payload);
    }

    #[test]
    fn a_slack_deny_form_reads_back_its_request_and_round(
        request_id in "\\PC{1,40}",
        round in 0i64..1_000_000,
        reason in "\\PC{0,200}",
    ) {
        let kind = FormKind::Deny { request_id, round };
        let payload = slack_user::view_submission_payload("U0ALICE", "alice", &modal(&kind), &[("reason", &reason)]);
        let Ok(Interaction::FormSubmitted(s)) = slack::interaction_from_json(&payload) else {
            return Err(TestCaseError::fail(format!("a deny form was not read: {payload}")));
        };
        prop_assert_eq!(s.kind, kind);
        prop_assert_eq!(s.values.get(&FieldId::Reason).map(String::as_str), Some(reason.trim()).filter(|r| !r.is_empty()));
    }

    #[test]
    fn a_target_chosen_in_a_slack_modal_reads_back(choice in "\\PC{0,60}", user in "U[A-Z0-9]{1,11}") {
        let view = modal(&FormKind::Request { target: None });
        let payload = slack_user::view_block_action_payload(&user, "someone", &view, "target", &choice);
        let Ok(Interaction::FormChanged(c)) = slack::interaction_from_json(&payload) else {
            return Err(TestCaseError::fail(format!("a change was not read as one: {payload}")));
        };
        prop_assert_eq!((c.user_id, c.field, c.value), (user, FieldId::Target, choice));
        prop_assert_eq!(c.view_id, "V0PROPS");
        prop_assert_eq!(c.hash.as_deref(), Some("1.props"));
    }

    #[test]
    fn discord_form_bodies_never_panic(mode in 0u8..3, body in "\\PC{0,300}") {
        let mut data = vec![mode];
        data.extend(body.bytes());
        harness::discord_form(&data);
    }

    #[test]
    fn discord_modal_ids_round_trip(kind in form_kind()) {
        prop_assert_eq!(discord::parse_modal_id(&discord::modal_id(&kind)), Some(kind));
    }

    #[test]
    fn a_discord_modal_submission_reads_back_its_fields(
        kind in form_kind(),
        inputs in prop::collection::vec((prop::sample::select(vec!["ports", "duration", "source", "reason", "other"]), "\\PC{0,60}"), 0..5),
    ) {
        let pairs: Vec<(&str, &str)> = inputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = discord_user::modal_submit("800000000000000001", &[], &discord::modal_id(&kind), &pairs);
        let Ok(discord::Incoming::FormSubmit { user, kind: read, values }) = discord::parse_interaction(body.as_bytes()) else {
            return Err(TestCaseError::fail(format!("a modal submission was not read: {body}")));
        };
        prop_assert_eq!(user.id, "800000000000000001");
        prop_assert_eq!(read, kind);
        let mut want = FormValues::new();
        for (k, v) in &inputs {
            if let Some(field) = FieldId::parse(k) && !v.trim().is_empty() {
                want.insert(field, v.trim().to_string());
            }
        }
        prop_assert_eq!(values, want);
    }

    #[test]
    fn a_target_chosen_in_the_discord_menu_reads_back(target in "\\PC{1,100}") {
        let body = discord_user::select("800000000000000001", &[], "700000000000000010", "1300000000000000009", discord::FORM_PICK, &[&target]);
        match discord::parse_interaction(body.as_bytes()) {
            Ok(discord::Incoming::FormPick { user, target: read }) => {
                prop_assert_eq!(user.id, "800000000000000001");
                prop_assert_eq!(read, target);
            }
            other => return Err(TestCaseError::fail(format!("a choice was read as {other:?}"))),
        }
    }

    // ── Slack Socket Mode ─────────────────────────────────────────────────────────────────

    #[test]
    fn socket_frames_never_panic(mode in 0u8..3, body in "\\PC{0,300}") {
        let mut data = vec![mode];
        data.extend(body.bytes());
        harness::socket(&data);
    }

    #[test]
    fn an_envelope_reads_back_as_sent(
        envelope_id in "\\PC{0,40}",
        kind in prop::sample::select(vec!["slash_commands", "interactive", "events_api", "something_new"]),
        accepts in any::<bool>(),
        retry in any::<u32>(),
        text in "\\PC{0,100}",
    ) {
        let payload = json!({ "text": text });
        let frame = json!({ "envelope_id": envelope_id, "type": kind, "payload": payload,
            "accepts_response_payload": accepts, "retry_attempt": retry });
        let Incoming::Envelope(e) = read_frame(&frame.to_string()) else {
            return Err(TestCaseError::fail(format!("an envelope was not read: {frame}")));
        };
        prop_assert_eq!((e.envelope_id, e.kind.as_str(), e.payload, e.accepts_response_payload, e.retry_attempt),
            (envelope_id, kind, payload, accepts, retry));
    }

    #[test]
    fn a_slash_command_reads_the_same_over_both_transports(user in "U[A-Z0-9]{1,11}", text in "\\PC{0,200}") {
        let payload = slack_user::slash_command_payload(&user, "someone", "C0OPS", &text);
        let pairs: Vec<(String, String)> = payload.as_object().unwrap().iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
        let form = serde_urlencoded::to_string(&pairs).unwrap();
        let over_socket = slack::slash_command_from_json(&payload).expect("Slack's own shape parses");
        prop_assert_eq!(&over_socket, &slack::parse_slash_command(form.as_bytes()).unwrap());
        prop_assert_eq!(over_socket.text, text);
    }

    #[test]
    fn an_interaction_reads_the_same_over_both_transports(
        value in "\\PC{0,60}",
        reason in "\\PC{0,60}",
        submit in any::<bool>(),
    ) {
        let payload = if submit {
            let kind = FormKind::Deny { request_id: value.clone(), round: 0 };
            slack_user::view_submission_payload("U0ALICE", "alice", &modal(&kind), &[("reason", &reason)])
        } else {
            slack_user::block_action_payload("U0ALICE", "alice", "C0APPROVALS", "1700000100.000200", slack::ACTION_APPROVE, &value)
        };
        let form = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        let over_http = slack::parse_interaction(form.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let over_socket = slack::interaction_from_json(&payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(over_http, over_socket);
    }

    // ── Entra ID sign-in ──────────────────────────────────────────────────────────────────

    #[test]
    fn entra_answers_never_panic(mode in 0u8..3, body in "\\PC{0,400}") {
        // Mode 3 (signed claims) is `an_id_token_passes_only_for_its_sign_in`, with fewer cases.
        let mut data = vec![mode];
        data.extend(body.bytes());
        harness::oidc(&data);
    }

    #[test]
    fn discovery_is_kept_only_for_the_configured_issuer(issuer in "\\PC{0,80}") {
        let doc = json!({ "issuer": issuer, "authorization_endpoint": "https://login.example/a",
            "token_endpoint": "https://login.example/t", "jwks_uri": "https://login.example/k" });
        let read = jitbot::oidc::read_metadata(doc.to_string().as_bytes(), harness::ISSUER);
        prop_assert_eq!(read.is_ok(), issuer.trim_end_matches('/') == harness::ISSUER);
    }

    // ── the config file and ARM's answers ─────────────────────────────────────────────────

    #[test]
    fn config_text_never_panics(text in "\\PC{0,300}") {
        harness::config(text.as_bytes());
    }

    #[test]
    fn config_values_are_checked_not_trusted(
        duration in "\\PC{0,12}",
        ports in prop::collection::vec(any::<i64>(), 0..4),
        source in "\\PC{0,20}",
    ) {
        let text = EXAMPLE
            .replace("max_duration = \"4h\"", &format!("max_duration = {duration:?}"))
            .replace("ports = [22, 3389]", &format!("ports = {ports:?}"))
            .replace("\"203.0.113.0/24\"", &format!("{source:?}"));
        harness::config(text.as_bytes());
    }

    #[test]
    fn arm_answers_never_panic(mode in 0u8..10, body in "\\PC{0,300}") {
        let mut data = vec![mode];
        data.extend(body.bytes());
        harness::arm(&data);
    }

    // ── access: set logic agrees with membership ──────────────────────────────────────────

    #[test]
    fn v4_prefix_containment_is_membership(a in v4_net(), b in v4_net(), x in any::<u32>()) {
        let (sa, sb) = (set_of(&[IpNet::V4(a)]), set_of(&[IpNet::V4(b)]));
        prop_assert_eq!(sa.contains(&sb), a.contains(&b));
        let x = Ipv4Addr::from(x);
        prop_assert_eq!(sa.contains(&host(IpAddr::V4(x))), a.contains(&x));
    }

    #[test]
    fn v6_prefix_containment_is_membership(a in v6_net(), b in v6_net(), x in any::<u128>()) {
        let (sa, sb) = (set_of(&[IpNet::V6(a)]), set_of(&[IpNet::V6(b)]));
        prop_assert_eq!(sa.contains(&sb), a.contains(&b));
        let x = Ipv6Addr::from(x);
        prop_assert_eq!(sa.contains(&host(IpAddr::V6(x))), a.contains(&x));
    }

    #[test]
    fn a_union_of_prefixes_holds_exactly_their_addresses(
        nets in prop::collection::vec(v4_net(), 1..5),
        x in any::<u32>(),
    ) {
        let all: Vec<IpNet> = nets.iter().copied().map(IpNet::V4).collect();
        let x = Ipv4Addr::from(x);
        let member = nets.iter().any(|n| n.contains(&x));
        prop_assert_eq!(set_of(&all).contains(&host(IpAddr::V4(x))), member);
        // Each part is contained in the union; the union in a part only if the part covers it.
        for n in &nets {
            prop_assert!(set_of(&all).contains(&set_of(&[IpNet::V4(*n)])));
        }
    }

    #[test]
    fn port_sets_agree_with_membership(a in port_ranges(), b in port_ranges(), p in any::<u16>()) {
        let sa = PortSet::parse(&range_text(&a));
        let sb = PortSet::parse(&range_text(&b));
        let one = PortSet::of(&[p]);
        prop_assert_eq!(sa.contains(&one), in_ranges(&a, p));
        prop_assert_eq!(sa.union(&sb).contains(&one), in_ranges(&a, p) || in_ranges(&b, p));
        prop_assert_eq!(sa.intersection(&sb).contains(&one), in_ranges(&a, p) && in_ranges(&b, p));
        prop_assert_eq!(sa.difference(&sb).contains(&one), in_ranges(&a, p) && !in_ranges(&b, p));
        // Containment of sets is containment of every member.
        let every = (0..=u16::MAX).all(|q| !in_ranges(&b, q) || in_ranges(&a, q));
        prop_assert_eq!(sa.contains(&sb), every);
        // What is shown reads back as the same set.
        prop_assert_eq!(PortSet::parse(&[sa.to_string()]), sa);
    }

    #[test]
    fn unreadable_port_lists_count_as_every_port(junk in "[^0-9*,\\- ]{1,8}", a in port_ranges()) {
        let mut text = range_text(&a);
        text.push(junk);
        prop_assert_eq!(PortSet::parse(&text), PortSet::any());
        prop_assert!(PortSet::parse_strict(&text).is_none());
    }

    // ── bounded text ──────────────────────────────────────────────────────────────────────

    #[test]
    fn bounded_text_is_a_marked_prefix(text in "\\PC{0,1200}") {
        let out = bounded(&text);
        if text.chars().count() <= LOGGED_TEXT_MAX {
            prop_assert_eq!(out.as_ref(), text.as_str());
        } else {
            let kept: String = text.chars().take(LOGGED_TEXT_MAX).collect();
            prop_assert!(out.starts_with(&kept));
            prop_assert!(out.contains("[truncated:"));
            prop_assert!(out.chars().count() <= LOGGED_TEXT_MAX + 40);
        }
    }
}

proptest! {
    // Each case signs a token with a 2048-bit RSA key in an unoptimised build: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn an_id_token_passes_only_for_its_sign_in(
        flaw in prop::sample::select(vec![
            None, None, Some("nonce"), Some("aud"), Some("iss"), Some("exp"), Some("oid"), Some("sub"),
        ]),
        oid in "[0-9A-Fa-f-]{1,36}",
        skew in -50i64..3_600,
    ) {
        // A token for this sign-in (expired less than the 60 s of leeway ago at worst), with at
        // most one flaw.
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({ "iss": harness::ISSUER, "aud": harness::CLIENT_ID,
            "exp": now + skew, "nonce": harness::NONCE, "oid": oid,
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "preferred_username": "alice@example.com" });
        match flaw {
            Some("nonce") => claims["nonce"] = json!("another-sign-in"),
            Some("aud") => claims["aud"] = json!("22222222-2222-3333-4444-555555555555"),
            Some("iss") => claims["iss"] = json!("https://login.microsoftonline.com/common/v2.0"),
            Some("exp") => claims["exp"] = json!(now - 120 - skew.abs()),
            Some(claim) => { claims.as_object_mut().unwrap().remove(claim); }
            None => {}
        }
        let token = harness::sign(&claims);
        prop_assert!(!token.is_empty(), "the claims were not signed");
        match harness::check_token(&token) {
            Ok(who) => {
                prop_assert!(flaw.is_none(), "accepted with a wrong {flaw:?}: {claims}");
                prop_assert_eq!(who.oid, oid.to_ascii_lowercase());
                prop_assert_eq!(who.upn, "alice@example.com");
            }
            Err(e) => prop_assert!(flaw.is_some(), "refused {claims}: {e}"),
        }
        harness::oidc(&[&[3u8][..], claims.to_string().as_bytes()].concat());
    }
}

/// Form kinds as they travel (Slack `private_metadata`, Discord `custom_id`).
fn form_kind() -> impl Strategy<Value = FormKind> {
    prop_oneof![
        prop::option::of("[^\\p{Cc}]{1,40}").prop_map(|target| FormKind::Request { target }),
        ("[^\\p{Cc}]{1,40}", 0i64..1_000_000)
            .prop_map(|(request_id, round)| FormKind::Deny { request_id, round }),
    ]
}

/// The modal jitbot renders for `kind`, as the Slack emulator holds it once opened (with an id
/// and a hash): a target select, ports (several), a duration, a source and a reason.
fn modal(kind: &FormKind) -> Value {
    let choice = |values: &[&str], multiple: bool, updates_form: bool| Input::Choice {
        options: values
            .iter()
            .map(|v| Choice {
                label: v.to_string(),
                value: v.to_string(),
            })
            .collect(),
        selected: values.iter().take(1).map(|v| v.to_string()).collect(),
        multiple,
        updates_form,
    };
    let text = || Input::Text {
        value: None,
        placeholder: None,
        multiline: false,
        max_length: 500,
    };
    let field = |id: FieldId, input| FormField {
        id,
        label: id.as_str().into(),
        hint: None,
        optional: true,
        input,
    };
    let fields = match kind {
        FormKind::Deny { .. } => vec![field(FieldId::Reason, text())],
        FormKind::Request { target } => vec![
            field(
                FieldId::Target,
                choice(&[target.as_deref().unwrap_or("web1")], false, true),
            ),
            field(FieldId::Ports, choice(&["22", "3389"], true, false)),
            field(FieldId::Duration, choice(&["30m", "1h"], false, false)),
            field(FieldId::Source, text()),
            field(FieldId::Reason, text()),
        ],
    };
    let form = Form {
        kind: kind.clone(),
        title: "Request access".into(),
        intro: None,
        fields,
        submit: "Request".into(),
    };
    let mut view = slack::render_form(&form);
    view["id"] = json!("V0PROPS");
    view["hash"] = json!("1.props");
    view
}

/// The shipped example config, the base the config property edits.
const EXAMPLE: &str = include_str!("../examples/jitbot.toml");

/// The config property edits these lines; without them it would test the example unchanged.
#[test]
fn the_example_config_has_the_lines_the_property_edits() {
    for line in [
        "max_duration = \"4h\"",
        "ports = [22, 3389]",
        "\"203.0.113.0/24\"",
    ] {
        assert!(EXAMPLE.contains(line), "examples/jitbot.toml lost `{line}`");
    }
}
