//! The Discord adapter on its own: signature verification with the RFC 8032 test key and the
//! project vectors, interaction parsing, rendering, and `DiscordApi` against `DiscordSim`
//! (429, outage, lost responses and nonce dedupe).

use jitbot::chat::discord::{
    self, DiscordApi, Incoming, command_text, custom_id, parse_custom_id, parse_interaction,
    verify_request,
};
use jitbot::chat::{
    Button, ButtonAction, ButtonKind, ChatApi, ChatError, Dedupe, Field, Message, MessageRef, Tone,
};
use jitbot_sim::discord::{DiscordFault, DiscordSim};
use jitbot_sim::discord_user::{self, TEST_PUBLIC_KEY, TEST_SEED};
use std::time::{Duration, Instant};

const PING: &[u8] = include_bytes!("vectors/discord_ping.body");
const COMMAND: &[u8] = include_bytes!("vectors/discord_command.body");
const COMPONENT: &[u8] = include_bytes!("vectors/discord_component.body");
const PING_SIGNATURE: &str = "69751a9e9bdb13f957127cdcf40b03bf3d40e78cfa22cdefb479a3d195bc15a5bd34863e2b2a5ed074a2646ef7ed92fb8e0c2764f0b4366bbc7b9b65d1e8c300";
const TOKEN: &str = "bot-token-for-tests";

fn headers(signature: &str, timestamp: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("x-signature-ed25519", signature.parse().unwrap());
    h.insert("x-signature-timestamp", timestamp.parse().unwrap());
    h
}

#[test]
fn the_published_ping_vector_verifies_with_the_rfc8032_key() {
    let v = discord::verifier(TEST_PUBLIC_KEY).unwrap();
    assert_eq!(
        verify_request(
            &v,
            &headers(PING_SIGNATURE, "1700000000"),
            PING,
            1_700_000_000
        ),
        Ok(())
    );
    // Our signer produces the same signature as the reference.
    assert_eq!(
        discord_user::sign(TEST_SEED, "1700000000", PING),
        PING_SIGNATURE
    );
}

#[test]
fn tampering_wrong_key_missing_headers_and_stale_timestamps_are_refused() {
    let v = discord::verifier(TEST_PUBLIC_KEY).unwrap();
    let ok = headers(PING_SIGNATURE, "1700000000");
    let mut body = PING.to_vec();
    body[10] ^= 1;
    assert_eq!(
        verify_request(&v, &ok, &body, 1_700_000_000),
        Err(discord::VerifyError::BadSignature)
    );
    // Another timestamp changes the signed bytes.
    assert_eq!(
        verify_request(
            &v,
            &headers(PING_SIGNATURE, "1700000001"),
            PING,
            1_700_000_000
        ),
        Err(discord::VerifyError::BadSignature)
    );
    // A different application's key.
    let other = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let other_key = hex::encode(other.verifying_key().to_bytes());
    let v2 = discord::verifier(&other_key).unwrap();
    assert_eq!(
        verify_request(&v2, &ok, PING, 1_700_000_000),
        Err(discord::VerifyError::BadSignature)
    );
    // Not hex, wrong length.
    assert_eq!(
        verify_request(&v, &headers("zz", "1700000000"), PING, 1_700_000_000),
        Err(discord::VerifyError::BadSignature)
    );
    let mut missing = http::HeaderMap::new();
    missing.insert("x-signature-timestamp", "1700000000".parse().unwrap());
    assert_eq!(
        verify_request(&v, &missing, PING, 1_700_000_000),
        Err(discord::VerifyError::Missing("x-signature-ed25519"))
    );
    // A valid signature replayed ten minutes later.
    assert_eq!(
        verify_request(&v, &ok, PING, 1_700_000_600),
        Err(discord::VerifyError::Stale)
    );
    assert!(discord::verifier("not hex").is_err());
    assert!(discord::verifier(&"ab".repeat(31)).is_err());
}

#[test]
fn the_project_vectors_parse() {
    assert_eq!(parse_interaction(PING).unwrap(), Incoming::Ping);
    match parse_interaction(COMMAND).unwrap() {
        Incoming::Command {
            user, text, token, ..
        } => {
            assert!(token.starts_with("aW50ZXJhY3Rpb24"));
            assert_eq!(user.id, "53908232506183680");
            assert_eq!(user.roles, vec!["539082325061836999".to_string()]);
            assert_eq!(text, "web1 22 1h");
        }
        other => panic!("{other:?}"),
    }
    // The vector's custom_id has no round: round 0.
    match parse_interaction(COMPONENT).unwrap() {
        Incoming::Button {
            user,
            action,
            channel_id,
            message_id,
        } => {
            assert_eq!(user.id, "80351110224678912");
            assert_eq!(user.roles, vec!["700000000000000001".to_string()]);
            assert_eq!(action.kind, ButtonKind::Approve);
            assert_eq!(action.request_id, "req_7f3a");
            assert_eq!(action.round, 0);
            assert_eq!(channel_id, "645027906669510999");
            assert_eq!(message_id, "1218321600000000020");
        }
        other => panic!("{other:?}"),
    }
    assert!(parse_interaction(b"{not json").is_err());
    assert!(parse_interaction(b"{\"type\":2}").is_err());
}

#[test]
fn subcommands_become_the_jit_grammar() {
    let text = |body: String| match parse_interaction(body.as_bytes()).unwrap() {
        Incoming::Command { text, .. } => text,
        other => panic!("{other:?}"),
    };
    use discord_user::{command, opt};
    assert_eq!(
        text(command(
            "1",
            &[],
            "request",
            vec![
                opt("target", "web1"),
                opt("ports", "22,3389"),
                opt("duration", "90m"),
                opt("source", "203.0.113.7"),
                opt("reason", "deploy hotfix"),
            ]
        )),
        "web1 22,3389 90m from 203.0.113.7 deploy hotfix"
    );
    assert_eq!(text(command("1", &[], "list", vec![])), "list");
    assert_eq!(text(command("1", &[], "targets", vec![])), "targets");
    assert_eq!(text(command("1", &[], "help", vec![])), "help");
    assert_eq!(
        text(command("1", &[], "status", vec![opt("id", "req_1")])),
        "status req_1"
    );
    assert_eq!(
        text(command(
            "1",
            &[],
            "extend",
            vec![opt("id", "req_1"), opt("duration", "30m")]
        )),
        "extend req_1 30m"
    );
    // A missing middle option stops the words so the parser names it.
    assert_eq!(
        text(command(
            "1",
            &[],
            "request",
            vec![opt("target", "web1"), opt("duration", "1h")]
        )),
        "web1"
    );
    assert_eq!(command_text("jit", &[]), "");
    match parse_interaction(discord_user::autocomplete("1", &["555"], "we").as_bytes()).unwrap() {
        Incoming::Autocomplete {
            option,
            value,
            user,
        } => {
            assert_eq!((option.as_str(), value.as_str()), ("target", "we"));
            assert_eq!(user.roles, vec!["555".to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn custom_ids_round_trip() {
    let a = ButtonAction {
        kind: ButtonKind::Deny,
        request_id: "req_0123abcd".into(),
        round: 2,
    };
    assert_eq!(custom_id(&a), "jit:deny:req_0123abcd:2");
    assert_eq!(parse_custom_id(&custom_id(&a)), Some(a));
    for kind in [ButtonKind::Approve, ButtonKind::Extend, ButtonKind::Done] {
        let a = ButtonAction {
            kind,
            request_id: "req_0123abcd".into(),
            round: 1200,
        };
        assert_eq!(parse_custom_id(&custom_id(&a)), Some(a));
    }
    assert_eq!(
        custom_id(&ButtonAction {
            kind: ButtonKind::Extend,
            request_id: "req_1".into(),
            round: 60
        }),
        "jit:extend:req_1:60"
    );
    for bad in [
        "",
        "jit",
        "jit:maybe:req_1",
        "other:approve:req_1",
        "jit:approve:",
        "jit:approve:req_1:x",
        "jit:approve:req_1:1:2",
    ] {
        assert_eq!(parse_custom_id(bad), None, "{bad}");
    }
}

fn card() -> Message {
    let button = |kind, label: &str| Button {
        label: label.into(),
        action: ButtonAction {
            kind,
            request_id: "req_0123abcd".into(),
            round: 0,
        },
        confirm: None,
    };
    Message {
        title: "JIT access request".into(),
        text: "<@42> asks for web1".into(),
        fields: vec![Field {
            label: "Ports".into(),
            value: "22".into(),
        }],
        buttons: vec![
            button(ButtonKind::Approve, "Approve"),
            button(ButtonKind::Deny, "Deny"),
        ],
        footer: Some("SIMULATED".into()),
        tone: Tone::Pending,
    }
}

#[test]
fn rendering_uses_an_embed_and_green_and_red_buttons() {
    let dedupe = Dedupe::for_job(123, 1_700_000_000_000, 1);
    let v = serde_json::to_value(discord::create_message(&card(), &dedupe)).unwrap();
    assert_eq!(v["embeds"][0]["title"], "JIT access request");
    assert_eq!(v["embeds"][0]["description"], "<@42> asks for web1");
    assert_eq!(v["embeds"][0]["fields"][0]["name"], "Ports");
    assert_eq!(v["embeds"][0]["footer"]["text"], "SIMULATED");
    let row = &v["components"][0];
    assert_eq!(row["type"], 1);
    assert_eq!(row["components"][0]["style"], 3);
    assert_eq!(
        row["components"][0]["custom_id"],
        "jit:approve:req_0123abcd:0"
    );
    assert_eq!(row["components"][1]["style"], 4);
    assert_eq!(v["nonce"], discord::nonce("jitbot-job-123-1700000000000"));
    assert_eq!(v["nonce"].as_str().map(str::len), Some(25));
    assert_eq!(v["enforce_nonce"], true);
    // Keys longer than Discord's 25 characters become hashes, stable per key; short ones stay.
    let long = discord::nonce("jitbot-job-123456789012345678");
    assert_eq!(long.len(), 25);
    assert_eq!(long, discord::nonce("jitbot-job-123456789012345678"));
    assert_ne!(long, discord::nonce("jitbot-job-123456789012345679"));
    assert_eq!(discord::nonce("jitbot-job-1"), "jitbot-job-1");
    // Editing a decided card removes the buttons.
    let decided = Message {
        buttons: vec![],
        ..card()
    };
    let e = serde_json::to_value(discord::edit_message(&decided)).unwrap();
    assert_eq!(e["components"], serde_json::json!([]));
    // Interaction responses.
    assert_eq!(discord::pong(), serde_json::json!({"type": 1}));
    let eph = discord::ephemeral(&card());
    assert_eq!(eph["type"], 4);
    assert_eq!(eph["data"]["flags"], 64);
    assert_eq!(discord::deferred_update()["type"], 6);
    let ac = discord::autocomplete(&["web1".into(), "web2".into()]);
    assert_eq!(ac["type"], 8);
    assert_eq!(ac["data"]["choices"][1]["value"], "web2");
    // Overlong text is cut to Discord's limits.
    let huge = Message {
        title: "t".repeat(500),
        text: "x".repeat(5000),
        ..Message::default()
    };
    let v = serde_json::to_value(discord::embed(&huge)).unwrap();
    assert_eq!(v["title"].as_str().unwrap().chars().count(), 256);
    assert_eq!(v["description"].as_str().unwrap().chars().count(), 4096);
}

#[test]
fn command_definitions_have_the_slack_verbs_as_subcommands() {
    let v = serde_json::to_value(discord::command_definitions()).unwrap();
    assert_eq!(v[0]["name"], "jit");
    let subs: Vec<&str> = v[0]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        subs,
        [
            "request", "form", "list", "targets", "status", "revoke", "extend", "help"
        ]
    );
    let request = &v[0]["options"][0]["options"];
    assert_eq!(request[0]["name"], "target");
    assert_eq!(request[0]["autocomplete"], true);
    assert_eq!(request[0]["required"], true);
}

async fn api() -> (DiscordSim, DiscordApi) {
    jitbot::install_crypto();
    let sim = DiscordSim::start(TOKEN).await.unwrap();
    let api = DiscordApi::new(&sim.base_url, TOKEN).unwrap();
    (sim, api)
}

#[tokio::test]
async fn posts_edits_and_opens_dms_with_the_bot_token() {
    let (sim, api) = api().await;
    let at = api
        .post("900", &card(), &Dedupe::for_job(1, 1_700_000_000_000, 1))
        .await
        .unwrap();
    assert_eq!(at.channel, "900");
    let msgs = sim.messages("900");
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].text().contains("asks for web1"));
    assert_eq!(
        msgs[0].buttons(),
        vec![("Approve".to_string(), 3), ("Deny".to_string(), 4)]
    );
    let decided = Message {
        buttons: vec![],
        text: "Approved by <@7>".into(),
        ..card()
    };
    api.update(&at, &decided).await.unwrap();
    let msgs = sim.messages("900");
    assert_eq!(msgs[0].edits, 1);
    assert!(msgs[0].components.is_empty());
    assert!(msgs[0].text().contains("Approved by"));
    // A DM: the channel is opened once and reused.
    let dm = jitbot::chat::direct_address(jitbot::domain::Platform::Discord, "4242");
    assert_eq!(dm, "user:4242");
    let a = api
        .post(&dm, &card(), &Dedupe::for_job(2, 1_700_000_000_000, 1))
        .await
        .unwrap();
    let b = api
        .post(&dm, &card(), &Dedupe::for_job(3, 1_700_000_000_000, 1))
        .await
        .unwrap();
    assert_eq!(a.channel, b.channel);
    assert_eq!(sim.dm_channel("4242"), Some(a.channel.clone()));
    assert_eq!(sim.messages("4242").len(), 2);
    let opens = sim
        .calls()
        .iter()
        .filter(|c| c.path == "/users/@me/channels")
        .count();
    assert_eq!(opens, 1);
    assert!(sim.calls().iter().all(|c| c.auth_ok));
    // A wrong token is a permanent refusal; an unknown message too.
    let bad = DiscordApi::new(&sim.base_url, "wrong").unwrap();
    assert!(matches!(
        bad.post("900", &card(), &Dedupe::for_job(4, 1_700_000_000_000, 1))
            .await,
        Err(ChatError::Permanent(_))
    ));
    let gone = MessageRef {
        channel: "900".into(),
        id: "1".into(),
    };
    assert!(matches!(
        api.update(&gone, &card()).await,
        Err(ChatError::Permanent(_))
    ));
}

#[tokio::test]
async fn rate_limits_are_honoured() {
    let (sim, api) = api().await;
    sim.inject(DiscordFault::RateLimited {
        retry_after: 2.5,
        global: false,
    });
    match api
        .post("900", &card(), &Dedupe::for_job(1, 1_700_000_000_000, 1))
        .await
    {
        Err(ChatError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Duration::from_millis(2500))
        }
        other => panic!("{other:?}"),
    }
    // The bucket is blocked: the next call to that channel does not reach Discord.
    let calls = sim.calls().len();
    assert!(matches!(
        api.post("900", &card(), &Dedupe::for_job(1, 1_700_000_000_000, 2))
            .await,
        Err(ChatError::RateLimited { .. })
    ));
    assert_eq!(
        sim.calls().len(),
        calls,
        "a blocked bucket must not be called"
    );
    // Another channel is another bucket.
    api.post("901", &card(), &Dedupe::for_job(2, 1_700_000_000_000, 1))
        .await
        .unwrap();
    // A short wait is slept through.
    sim.inject(DiscordFault::RateLimited {
        retry_after: 0.3,
        global: false,
    });
    assert!(matches!(
        api.post("902", &card(), &Dedupe::for_job(3, 1_700_000_000_000, 1))
            .await,
        Err(ChatError::RateLimited { .. })
    ));
    let t = Instant::now();
    api.post("902", &card(), &Dedupe::for_job(3, 1_700_000_000_000, 2))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(sim.messages("902").len(), 1);
    // A success that empties the bucket: the next call waits for the reset instead of
    // provoking a 429.
    sim.inject(DiscordFault::BucketExhausted { reset_after: 5.0 });
    api.post("903", &card(), &Dedupe::for_job(4, 1_700_000_000_000, 1))
        .await
        .unwrap();
    let calls = sim.calls().len();
    match api
        .post("903", &card(), &Dedupe::for_job(5, 1_700_000_000_000, 1))
        .await
    {
        Err(ChatError::RateLimited { retry_after }) => {
            assert!(retry_after > Duration::from_secs(4), "{retry_after:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sim.calls().len(),
        calls,
        "an empty bucket must not be called"
    );
    sim.inject(DiscordFault::BucketExhausted { reset_after: 0.4 });
    api.post("904", &card(), &Dedupe::for_job(6, 1_700_000_000_000, 1))
        .await
        .unwrap();
    let t = Instant::now();
    api.post("904", &card(), &Dedupe::for_job(7, 1_700_000_000_000, 1))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(sim.messages("904").len(), 2);
    let throttled: Vec<String> = sim
        .calls()
        .iter()
        .filter(|c| c.status == 429)
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(
        throttled,
        ["/channels/900/messages", "/channels/902/messages"]
    );
}

#[tokio::test]
async fn outages_are_transient_and_nonces_prevent_duplicates() {
    let (sim, api) = api().await;
    sim.set_down(true);
    assert!(matches!(
        api.post("900", &card(), &Dedupe::for_job(1, 1_700_000_000_000, 1))
            .await,
        Err(ChatError::Transient(_))
    ));
    sim.set_down(false);
    sim.inject(DiscordFault::ServerError);
    assert!(matches!(
        api.post("900", &card(), &Dedupe::for_job(1, 1_700_000_000_000, 2))
            .await,
        Err(ChatError::Transient(_))
    ));
    // The message is created but the answer is lost: the retry carries the same nonce and
    // Discord returns the first message instead of creating a second.
    sim.inject(DiscordFault::LostResponse);
    assert!(matches!(
        api.post("900", &card(), &Dedupe::for_job(1, 1_700_000_000_000, 3))
            .await,
        Err(ChatError::Transient(_))
    ));
    let again = api
        .post("900", &card(), &Dedupe::for_job(1, 1_700_000_000_000, 4))
        .await
        .unwrap();
    let msgs = sim.messages("900");
    assert_eq!(msgs.len(), 1, "delivered exactly once");
    assert_eq!(msgs[0].id, again.id);
    // Connection refused.
    let dead = DiscordApi::new("http://127.0.0.1:9/api/v10", TOKEN).unwrap();
    assert!(matches!(
        dead.post("900", &card(), &Dedupe::for_job(9, 1_700_000_000_000, 1))
            .await,
        Err(ChatError::Transient(_))
    ));
}

#[tokio::test]
async fn register_overwrites_guild_and_global_commands_through_serenity() {
    let (sim, _api) = api().await;
    let settings = jitbot::config::DiscordSettings {
        application_id: discord_user::APPLICATION_ID.into(),
        public_key: TEST_PUBLIC_KEY.into(),
        api_base_url: sim.base_url.clone(),
        audit_channel: None,
        bot_token: jitbot::config::Secret::new(TOKEN),
    };
    let installed = discord::register(&settings, Some(290926798626357999))
        .await
        .unwrap();
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].name, "jit");
    let stored = sim.commands(Some("290926798626357999")).unwrap();
    assert_eq!(stored[0]["options"].as_array().unwrap().len(), 8);
    discord::register(&settings, None).await.unwrap();
    assert!(sim.commands(None).is_some());
    let puts: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2);
    assert!(puts.iter().all(|c| c.auth_ok));
    assert_eq!(
        puts[0].path,
        format!(
            "/applications/{}/guilds/290926798626357999/commands",
            discord_user::APPLICATION_ID
        )
    );
}

fn resolve(text: &str) -> Result<jitbot::config::Settings, Vec<String>> {
    let file: jitbot::config::ConfigFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    jitbot::config::Settings::resolve(file, |name| match name {
        "DISCORD_BOT_TOKEN" | "AZURE_CLIENT_SECRET" => Ok(Some(jitbot::config::Secret::new("x"))),
        _ => Ok(None),
    })
}

#[test]
fn the_discord_only_example_config_is_valid() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/jitbot-discord.toml"
    ))
    .unwrap();
    let s = resolve(&text).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(s.slack.is_none());
    let d = s.discord.unwrap();
    assert_eq!(d.api_base_url, discord::DEFAULT_API_BASE);
    assert_eq!(format!("{:?}", d.bot_token), "Secret(…)");
}

#[test]
fn discord_config_problems_are_listed() {
    let base = |discord: &str, channel: &str| {
        format!(
            "[azure]\nbackend = \"arm\"\ncredential = \"azure_cli\"\n{discord}\n[people.a]\ndiscord = \"1\"\n[targets.web1]\nnsg = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n\"\ndestination = \"10.0.0.4\"\nports = [22]\nmax_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\nrequesters = [\"a\"]\napprovers = [\"a\"]\npriority_range = [100, 199]\n{channel}\n"
        )
    };
    // Nothing configured.
    let errors = resolve(&base("", "approval_channel.discord = \"5\"")).unwrap_err();
    assert!(errors.join(" ").contains("no chat platform"), "{errors:?}");
    // A key that is not a key, an id that is not an id, and a target without a Discord channel.
    let errors = resolve(&base(
        "[discord]\napplication_id = \"abc\"\npublic_key = \"1234\"",
        "approval_channel.slack = \"C1\"",
    ))
    .unwrap_err();
    let all = errors.join("\n");
    for needle in [
        "discord.public_key",
        "discord.application_id",
        "approval_channel.discord",
    ] {
        assert!(all.contains(needle), "missing {needle}: {all}");
    }
    // The public key may come from DISCORD_PUBLIC_KEY; without it, the check says where to find it.
    let text = base(
        "[discord]\napplication_id = \"1\"",
        "approval_channel.discord = \"5\"",
    );
    let errors = resolve(&text).unwrap_err();
    assert!(
        errors.join(" ").contains("DISCORD_PUBLIC_KEY"),
        "{errors:?}"
    );
    let file: jitbot::config::ConfigFile = toml::from_str(&text).unwrap();
    let ok = jitbot::config::Settings::resolve(file, |name| {
        Ok(Some(jitbot::config::Secret::new(match name {
            "DISCORD_PUBLIC_KEY" => TEST_PUBLIC_KEY,
            _ => "x",
        })))
    });
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[tokio::test]
async fn the_register_cli_installs_the_command_in_a_guild() {
    let (sim, _api) = api().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jitbot.toml");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/jitbot-discord.toml"
    ))
    .unwrap();
    let text = example.replace(
        "# api_base_url = \"https://discord.com/api/v10\"",
        &format!("api_base_url = \"{}\"", sim.base_url),
    );
    std::fs::write(&config, text).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .args([
            "discord",
            "register",
            "--guild",
            "290926798626357999",
            "--config",
        ])
        .arg(&config)
        .env("DISCORD_BOT_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("installed 1 command(s) guild 290926798626357999"),
        "{stdout}"
    );
    assert!(stdout.contains("/jit"), "{stdout}");
    assert!(
        stdout.contains("request, form, list, targets, status, revoke, extend, help"),
        "{stdout}"
    );
    assert!(sim.commands(Some("290926798626357999")).is_some());
    // Without the token it says what to set, and calls nothing.
    let calls = sim.calls().len();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .args(["discord", "register", "--config"])
        .arg(&config)
        .env_remove("DISCORD_BOT_TOKEN")
        .env_remove("DISCORD_BOT_TOKEN_FILE")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DISCORD_BOT_TOKEN"));
    assert_eq!(sim.calls().len(), calls);
}
