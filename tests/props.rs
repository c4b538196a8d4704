//! Property tests of the parsers of untrusted input (the `/jit` grammar, Slack's form and JSON
//! bodies, Discord's interactions, the config file, ARM's answers) and of `access`'s set logic.
//!
//! Each property runs a bounded number of cases (256) so `cargo test` stays fast; the fuzz
//! targets (`fuzz/`) search the same parsers for much longer. What they hold every parser to: no
//! panic, every rejection a sentence, and what is accepted reads back as what was sent.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use jitbot::access::{AddressSet, PortSet};
use jitbot::chat::slack::{self, Interaction};
use jitbot::chat::{ButtonAction, ButtonKind, discord};
use jitbot::command::Command;
use jitbot::domain::{LOGGED_TEXT_MAX, bounded};
use jitbot_sim::{discord_user, slack_user};
use proptest::prelude::*;
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
