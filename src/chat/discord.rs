//! The only code that knows Discord: the interactions endpoint's Ed25519 signature, interaction
//! payloads (serenity's models), embeds and buttons (serenity's builders), the `/jit` command
//! definitions, and the REST client the worker posts through.
//!
//! Direct messages: Discord user ids and channel ids are both snowflakes, so a destination meant
//! for a person is written `user:<id>` (see [`super::direct_address`]); [`DiscordApi`] opens (and
//! caches) the DM channel with `POST /users/@me/channels` and posts there.
//!
//! REST goes through reqwest with serenity's builders as the bodies, not through serenity's
//! `Http`: `Http` can only be pointed elsewhere with `HttpBuilder::proxy` and its rate limiter
//! disabled, and then a 429 comes back as an `ErrorResponse` without the `retry_after` field or
//! any header, so Discord's rate limits could not be honoured. Command registration (a one-off CLI
//! call) does use serenity's `Http`.

use super::{ButtonAction, ButtonKind, ChatApi, ChatError, Dedupe, Message, MessageRef, Tone};
use async_trait::async_trait;
use serde_json::{Value, json};
use serenity::all::{
    ButtonStyle, CommandDataOption, CommandDataOptionValue, CommandInteraction, CommandOptionType,
    ComponentInteractionDataKind, CreateActionRow, CreateAutocompleteResponse, CreateButton,
    CreateCommand, CreateCommandOption, CreateEmbed, CreateEmbedFooter, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateMessage, EditInteractionResponse, EditMessage,
    Interaction, Nonce,
};
use serenity::interactions_endpoint::Verifier;

mod form;
pub use form::{PICK as FORM_PICK, form_response, modal_id, parse_modal_id};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Discord's REST base.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";
/// Destinations starting with this are user ids: the message goes to the user's DM channel.
pub const DM_PREFIX: &str = "user:";
/// Interaction timestamps further than this from our clock are refused (replays).
pub const MAX_SKEW_SECS: i64 = 300;
/// A rate-limit wait up to this long is slept through; longer ones reschedule the job.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(1);

/// What can go wrong in the Discord adapter outside a REST call (those are [`super::ChatError`]).
/// Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DiscordError {
    #[error(
        "the public key must be 64 hex digits (Developer Portal → General Information → Public Key)"
    )]
    PublicKeyNotHex,
    #[error("the public key must be 64 hex digits (32 bytes)")]
    PublicKeyLength,
    #[error("the public key is not a valid Ed25519 key")]
    PublicKeyInvalid,
    #[error("the body is not a Discord interaction: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the body is not a Discord interaction jitbot can read")]
    Unreadable,
    #[error("discord.application_id must be a number")]
    ApplicationId,
    #[error("discord.api_base_url `{0}` must end with /api/v10 for command registration")]
    ApiBase(String),
    #[error("Discord refused the command registration: {0}")]
    Register(String),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Discord, resolved with its secret.
#[derive(Debug, Clone)]
pub struct DiscordSettings {
    pub application_id: String,
    /// 64 hex digits, checked to be a valid Ed25519 public key.
    pub public_key: String,
    pub api_base_url: String,
    pub audit_channel: Option<String>,
    pub bot_token: crate::domain::Secret,
}

/// Builds the signature verifier from the application's public key (64 hex digits).
pub fn verifier(public_key_hex: &str) -> Result<Verifier, DiscordError> {
    let bytes = hex::decode(public_key_hex.trim()).map_err(|_| DiscordError::PublicKeyNotHex)?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| DiscordError::PublicKeyLength)?;
    Verifier::try_new(key).map_err(|_| DiscordError::PublicKeyInvalid)
}

/// Why an interaction's signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("the Ed25519 signature does not match the body")]
    BadSignature,
    #[error("the request timestamp is more than 5 minutes away from now")]
    Stale,
}

/// Verifies `X-Signature-Ed25519` over `X-Signature-Timestamp + body`, before anything is parsed.
pub fn verify_request(
    verifier: &Verifier,
    headers: &http::HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<(), VerifyError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::Missing(name))
    };
    let signature = header("x-signature-ed25519")?;
    let timestamp = header("x-signature-timestamp")?;
    verifier
        .verify(signature, timestamp, body)
        .map_err(|()| VerifyError::BadSignature)?;
    match timestamp.parse::<i64>() {
        Ok(ts) if (now_unix - ts).abs() <= MAX_SKEW_SECS => Ok(()),
        _ => Err(VerifyError::Stale),
    }
}

/// A button's `custom_id`: `jit:<approve|deny|extend|done>:<request id>:<round>` (≤ 100 chars).
pub fn custom_id(action: &ButtonAction) -> String {
    format!(
        "jit:{}:{}:{}",
        action.kind.as_str(),
        action.request_id,
        action.round
    )
}

/// Reads a `custom_id` back; the round may be missing (round 0).
pub fn parse_custom_id(s: &str) -> Option<ButtonAction> {
    let mut parts = s.split(':');
    if parts.next()? != "jit" {
        return None;
    }
    let kind = ButtonKind::parse(parts.next()?)?;
    let request_id = parts.next().filter(|s| !s.is_empty())?.to_string();
    let round = match parts.next() {
        None => 0,
        Some(r) => r.parse().ok()?,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(ButtonAction {
        kind,
        request_id,
        round,
    })
}

/// Who sent an interaction: `member.user` with `member.roles` in a guild, `user` in a DM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscordUser {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
}

/// A verified interaction, reduced to what jitbot acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Ping,
    /// `/jit …`: the typed options turned into the `/jit` text grammar; `token` answers it later
    /// (a deferred response's follow-up, valid 15 minutes).
    Command {
        user: DiscordUser,
        text: String,
        application_id: String,
        token: String,
    },
    /// The member is typing an option with autocomplete (`target`).
    Autocomplete {
        user: DiscordUser,
        option: String,
        value: String,
    },
    /// A jitbot button.
    Button {
        user: DiscordUser,
        action: ButtonAction,
        channel_id: String,
        message_id: String,
    },
    /// `/jit form [target]`: open the request form (the target menu, or the modal for `target`).
    FormCommand {
        user: DiscordUser,
        target: Option<String>,
    },
    /// A target chosen in the request form's menu: answer with the modal.
    FormPick {
        user: DiscordUser,
        target: String,
    },
    /// A jitbot modal was submitted (type 5).
    FormSubmit {
        user: DiscordUser,
        kind: super::form::FormKind,
        values: super::form::FormValues,
    },
    /// Anything else (a modal, a button that is not ours): acknowledged and ignored.
    Other {
        kind: String,
    },
}

fn user_of(i: &CommandInteraction) -> DiscordUser {
    member_user(&i.user, i.member.as_deref())
}

/// The sender of an interaction, with their roles in a guild.
fn member_user(user: &serenity::all::User, member: Option<&serenity::all::Member>) -> DiscordUser {
    DiscordUser {
        id: user.id.to_string(),
        name: user
            .global_name
            .clone()
            .unwrap_or_else(|| user.name.clone()),
        roles: member
            .map(|m| m.roles.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default(),
    }
}

/// `/jit form [target:<t>]`: the subcommand's target, if it is that subcommand.
fn form_command(options: &[CommandDataOption]) -> Option<Option<String>> {
    match options.first() {
        Some(CommandDataOption {
            name,
            value: CommandDataOptionValue::SubCommand(sub),
            ..
        }) if name == "form" => Some(
            sub.iter()
                .find(|o| o.name == "target")
                .and_then(|o| option_text(&o.value))
                .filter(|t| !t.is_empty()),
        ),
        _ => None,
    }
}

/// The fields serenity 0.12.5 reads as an `ImageHash`.
const IMAGE_HASH_KEYS: &[&str] = &[
    "asset",
    "avatar",
    "badge",
    "banner",
    "cover_image",
    "discovery_splash",
    "icon",
    "icon_hash",
    "image",
    "splash",
];

/// serenity 0.12.5's `ImageHash` cuts its text into byte pairs and panics on a multi-byte
/// character (found by the `discord` fuzz target; the input is in
/// `tests/fuzz-regressions/discord/`). Discord's image hashes are ASCII hex and jitbot reads none
/// of them, so one that is not ASCII is dropped before serenity sees it.
fn drop_unreadable_image_hashes(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                let unreadable = field.as_str().is_some_and(|s| !s.is_ascii());
                if unreadable && IMAGE_HASH_KEYS.contains(&key.as_str()) {
                    *field = Value::Null;
                } else {
                    drop_unreadable_image_hashes(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unreadable_image_hashes),
        _ => {}
    }
}

/// Parses a verified interaction body.
pub fn parse_interaction(body: &[u8]) -> Result<Incoming, DiscordError> {
    // serde_json bounds the nesting (128 levels), so the walk below is bounded too.
    let mut value: Value = serde_json::from_slice(body)?;
    drop_unreadable_image_hashes(&mut value);
    // A backstop for panics inside serenity's models that the line above does not foresee:
    // a body jitbot cannot read is a refused request, never a panic in the handler.
    let interaction: Interaction =
        std::panic::catch_unwind(move || serde_json::from_value::<Interaction>(value))
            .map_err(|_| DiscordError::Unreadable)??;
    Ok(match interaction {
        Interaction::Ping(_) => Incoming::Ping,
        Interaction::Command(c) if form_command(&c.data.options).is_some() => {
            Incoming::FormCommand {
                user: user_of(&c),
                target: form_command(&c.data.options).flatten(),
            }
        }
        Interaction::Command(c) => Incoming::Command {
            user: user_of(&c),
            text: command_text(&c.data.name, &c.data.options),
            application_id: c.application_id.to_string(),
            token: c.token.clone(),
        },
        Interaction::Autocomplete(c) => {
            let (option, value) = c
                .data
                .autocomplete()
                .map(|a| (a.name.to_string(), a.value.to_string()))
                .unwrap_or_default();
            Incoming::Autocomplete {
                user: user_of(&c),
                option,
                value,
            }
        }
        Interaction::Component(c) if c.data.custom_id == FORM_PICK => match &c.data.kind {
            ComponentInteractionDataKind::StringSelect { values } if !values.is_empty() => {
                Incoming::FormPick {
                    user: member_user(&c.user, c.member.as_ref()),
                    target: values[0].clone(),
                }
            }
            _ => Incoming::Other {
                kind: format!("component {}", c.data.custom_id),
            },
        },
        Interaction::Component(c) => {
            let action = match (&c.data.kind, parse_custom_id(&c.data.custom_id)) {
                (ComponentInteractionDataKind::Button, Some(a)) => a,
                _ => {
                    return Ok(Incoming::Other {
                        kind: format!("component {}", c.data.custom_id),
                    });
                }
            };
            Incoming::Button {
                user: DiscordUser {
                    id: c.user.id.to_string(),
                    name: c
                        .user
                        .global_name
                        .clone()
                        .unwrap_or_else(|| c.user.name.clone()),
                    roles: c
                        .member
                        .as_ref()
                        .map(|m| m.roles.iter().map(|r| r.to_string()).collect())
                        .unwrap_or_default(),
                },
                action,
                channel_id: c.channel_id.to_string(),
                message_id: c.message.id.to_string(),
            }
        }
        Interaction::Modal(m) => match parse_modal_id(&m.data.custom_id) {
            Some(kind) => Incoming::FormSubmit {
                user: member_user(&m.user, m.member.as_ref()),
                kind,
                values: form::values(&m.data.components),
            },
            None => Incoming::Other {
                kind: "modal".into(),
            },
        },
        _ => Incoming::Other {
            kind: "unknown".into(),
        },
    })
}

fn option_text(v: &CommandDataOptionValue) -> Option<String> {
    match v {
        CommandDataOptionValue::String(s) => Some(s.trim().to_string()),
        CommandDataOptionValue::Integer(i) => Some(i.to_string()),
        CommandDataOptionValue::Number(n) => Some(n.to_string()),
        CommandDataOptionValue::Boolean(b) => Some(b.to_string()),
        CommandDataOptionValue::Autocomplete { value, .. } => Some(value.trim().to_string()),
        _ => None,
    }
}

/// Turns `/jit <subcommand> option:value…` into the `/jit` text grammar, so Slack and Discord
/// share one parser, one policy check and one set of error messages. Also accepts the request
/// options at the top level (`/jit vm:web1 port:22 duration:1h`).
pub fn command_text(_name: &str, options: &[CommandDataOption]) -> String {
    let (verb, opts): (&str, &[CommandDataOption]) = match options.first() {
        Some(CommandDataOption {
            name,
            value: CommandDataOptionValue::SubCommand(sub),
            ..
        }) => (name.as_str(), sub.as_slice()),
        _ => ("request", options),
    };
    let get = |names: &[&str]| -> Option<String> {
        opts.iter()
            .find(|o| names.contains(&o.name.as_str()))
            .and_then(|o| option_text(&o.value))
            .filter(|s| !s.is_empty())
    };
    let mut words: Vec<String> = Vec::new();
    match verb {
        "request" => {
            for names in [
                &["target", "vm"][..],
                &["ports", "port"][..],
                &["duration"][..],
            ] {
                words.push(get(names).unwrap_or_default());
            }
            // The grammar reads words in order: stop at the first missing one so the parser
            // says what is missing.
            if let Some(i) = words.iter().position(String::is_empty) {
                words.truncate(i);
            }
            if words.len() == 3 {
                if let Some(source) = get(&["source", "from"]) {
                    words.push(format!("from {source}"));
                }
                if let Some(reason) = get(&["reason"]) {
                    words.push(reason);
                }
            }
        }
        "status" | "revoke" | "extend" => {
            words.push(verb.to_string());
            words.extend(get(&["id", "request"]));
            if verb == "extend" {
                words.extend(get(&["duration"]));
            }
        }
        other => words.push(other.to_string()),
    }
    words.join(" ")
}

/// `/jit help` in Discord's own syntax (shown instead of the Slack-style usage text).
pub const USAGE: &str = "\
Usage:
  /jit request target:<vm> ports:<ports> duration:<duration> [source:<ip|cidr>] [reason:<text>]
      e.g. /jit request target:web1 ports:22 duration:1h   ·   ports: 22, 22,3389, ssh, rdp   ·   durations: 90s, 30m, 1h30m, PT1H
  /jit targets                      what you may request
  /jit list                         your pending and active requests
  /jit status id:<id>               one request in detail
  /jit revoke id:<id>               close a grant early (requester or approver)
  /jit extend id:<id> duration:<d>  keep a grant open longer (may need approval again)
  /jit form [target:<vm>]           a form instead of typing
  /jit help                         this text";

/// Replaces the Slack-style usage text in a reply with [`USAGE`].
pub fn discord_idiom(mut message: Message) -> Message {
    if message.text.contains(crate::command::USAGE) {
        message.text = message.text.replace(crate::command::USAGE, USAGE);
    }
    message
}

fn colour(tone: Tone) -> u32 {
    match tone {
        Tone::Info => 0x5865F2,
        Tone::Pending => 0xFEE75C,
        Tone::Success => 0x57F287,
        Tone::Warning => 0xE67E22,
        Tone::Danger => 0xED4245,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The message as one embed: title, description, fields, footer, the tone's colour.
pub fn embed(message: &Message) -> CreateEmbed {
    let mut e = CreateEmbed::new().colour(colour(message.tone));
    if !message.title.is_empty() {
        e = e.title(truncate(&message.title, 256));
    }
    let text = if message.text.is_empty() && message.fields.is_empty() && message.title.is_empty() {
        "—".to_string()
    } else {
        message.text.clone()
    };
    if !text.is_empty() {
        e = e.description(truncate(&text, 4096));
    }
    for f in message.fields.iter().take(25) {
        let value = if f.value.is_empty() { "—" } else { &f.value };
        e = e.field(truncate(&f.label, 256), truncate(value, 1024), true);
    }
    if let Some(footer) = &message.footer {
        e = e.footer(CreateEmbedFooter::new(truncate(footer, 2048)));
    }
    e
}

/// Buttons in action rows of five: Approve is green (success), Deny red (danger).
pub fn components(message: &Message) -> Vec<CreateActionRow> {
    message
        .buttons
        .chunks(5)
        .map(|row| {
            CreateActionRow::Buttons(
                row.iter()
                    .map(|b| {
                        CreateButton::new(custom_id(&b.action))
                            .label(truncate(&b.label, 80))
                            .style(match b.action.kind {
                                ButtonKind::Approve | ButtonKind::Extend => ButtonStyle::Success,
                                ButtonKind::Deny
                                | ButtonKind::Done
                                | ButtonKind::DenyWithReason => ButtonStyle::Danger,
                            })
                    })
                    .collect(),
            )
        })
        .collect()
}

/// A `nonce` of at most 25 characters derived from the job's dedupe key.
pub fn nonce(key: &str) -> String {
    if key.len() <= 25 {
        key.to_string()
    } else {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(key.as_bytes()))[..25].to_string()
    }
}

/// The body of `POST /channels/{id}/messages`.
pub fn create_message(message: &Message, dedupe: &Dedupe) -> CreateMessage {
    CreateMessage::new()
        .embed(embed(message))
        .components(components(message))
        .nonce(Nonce::String(nonce(&dedupe.key)))
        .enforce_nonce(true)
}

/// The body of `PATCH /channels/{id}/messages/{id}`: replaces the embed; no buttons removes them.
pub fn edit_message(message: &Message) -> EditMessage {
    EditMessage::new()
        .embeds(vec![embed(message)])
        .components(components(message))
}

fn response_message(message: &Message) -> CreateInteractionResponseMessage {
    CreateInteractionResponseMessage::new()
        .embed(embed(message))
        .components(components(message))
}

/// Interaction response type 1.
pub fn pong() -> Value {
    // serenity's `Pong` serialises a `"data": null` that Discord does not need.
    json!({ "type": 1 })
}

/// Interaction response type 4 with flags 64: only the member sees it.
pub fn ephemeral(message: &Message) -> Value {
    to_json(&CreateInteractionResponse::Message(
        response_message(message).ephemeral(true),
    ))
}

/// Interaction response type 5 with flags 64: "jitbot is thinking…", only for the member; the
/// answer follows by editing the original response.
pub fn deferred_ephemeral() -> Value {
    json!({ "type": 5, "data": { "flags": 64 } })
}

/// Interaction response type 6: the click is taken; the card-update job edits the message.
pub fn deferred_update() -> Value {
    json!({ "type": 6 })
}

/// Interaction response type 8: up to 25 choices (name = value).
pub fn autocomplete(choices: &[String]) -> Value {
    let mut r = CreateAutocompleteResponse::new();
    for c in choices.iter().take(25) {
        r = r.add_string_choice(truncate(c, 100), truncate(c, 100));
    }
    to_json(&CreateInteractionResponse::Autocomplete(r))
}

fn to_json<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// The `/jit` command with one subcommand per verb (Discord's idiom for the Slack verbs).
pub fn command_definitions() -> Vec<CreateCommand> {
    use CommandOptionType::{String as Str, SubCommand};
    let id = || {
        CreateCommandOption::new(Str, "id", "The request id, e.g. req_7f3a9c01")
            .required(true)
            .max_length(64)
    };
    let jit = CreateCommand::new("jit")
        .description("Just-in-time network access to Azure VMs")
        .add_option(
            CreateCommandOption::new(
                SubCommand,
                "request",
                "Ask for a port to be opened for a while",
            )
            .add_sub_option(
                CreateCommandOption::new(
                    Str,
                    "target",
                    "The VM (targets you may request are suggested)",
                )
                .required(true)
                .set_autocomplete(true),
            )
            .add_sub_option(
                CreateCommandOption::new(Str, "ports", "22, 22,3389, ssh or rdp")
                    .required(true)
                    .max_length(64),
            )
            .add_sub_option(
                CreateCommandOption::new(Str, "duration", "90s, 30m, 1h30m or PT1H")
                    .required(true)
                    .max_length(32),
            )
            .add_sub_option(
                CreateCommandOption::new(Str, "source", "Your IP or CIDR (default: the target's)")
                    .max_length(64),
            )
            .add_sub_option(
                CreateCommandOption::new(Str, "reason", "Why (shown to approvers)").max_length(300),
            ),
        )
        .add_option(
            CreateCommandOption::new(SubCommand, "form", "Ask for access with a form")
                .add_sub_option(
                    CreateCommandOption::new(Str, "target", "The VM (or choose from a menu)")
                        .set_autocomplete(true),
                ),
        )
        .add_option(CreateCommandOption::new(
            SubCommand,
            "list",
            "Your pending and active requests",
        ))
        .add_option(CreateCommandOption::new(
            SubCommand,
            "targets",
            "What you may request",
        ))
        .add_option(
            CreateCommandOption::new(SubCommand, "status", "One request in detail")
                .add_sub_option(id()),
        )
        .add_option(
            CreateCommandOption::new(SubCommand, "revoke", "Close a grant early")
                .add_sub_option(id()),
        )
        .add_option(
            CreateCommandOption::new(SubCommand, "extend", "Keep a grant open longer")
                .add_sub_option(id())
                .add_sub_option(
                    CreateCommandOption::new(Str, "duration", "How much longer: 30m, 1h")
                        .required(true)
                        .max_length(32),
                ),
        )
        .add_option(CreateCommandOption::new(
            SubCommand,
            "help",
            "How to use jitbot",
        ));
    vec![jit]
}

/// Installs (bulk overwrite) the command definitions for one guild, or globally, through
/// serenity's `Http`. Returns the commands as Discord answered them.
pub async fn register(
    settings: &DiscordSettings,
    guild: Option<u64>,
) -> Result<Vec<serenity::all::Command>, DiscordError> {
    use serenity::all::{ApplicationId, GuildId, HttpBuilder};
    let app_id: u64 = settings
        .application_id
        .parse()
        .map_err(|_| DiscordError::ApplicationId)?;
    let mut builder =
        HttpBuilder::new(settings.bot_token.expose()).application_id(ApplicationId::new(app_id));
    if settings.api_base_url != DEFAULT_API_BASE {
        // serenity swaps `https://discord.com` for the proxy and keeps `/api/v10/…`.
        let Some(host) = settings.api_base_url.strip_suffix("/api/v10") else {
            return Err(DiscordError::ApiBase(settings.api_base_url.clone()));
        };
        builder = builder.proxy(host).ratelimiter_disabled(true);
    }
    let http = builder.build();
    let commands = command_definitions();
    let result = match guild {
        Some(g) => GuildId::new(g).set_commands(&http, commands).await,
        None => serenity::all::Command::set_global_commands(&http, commands).await,
    };
    result.map_err(|e| DiscordError::Register(e.to_string()))
}

/// The REST client the worker posts with: `Authorization: Bot <token>`, Discord's rate limits
/// honoured (429 `retry_after`, `X-RateLimit-Remaining: 0` + `X-RateLimit-Reset-After`).
pub struct DiscordApi {
    http: reqwest::Client,
    base: String,
    authorization: String,
    /// user id → DM channel id.
    dm_channels: Mutex<HashMap<String, String>>,
    /// rate-limit key (route's channel, or `global`) → not before.
    blocked: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for DiscordApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl DiscordApi {
    pub fn new(base: &str, bot_token: &str) -> Result<DiscordApi, DiscordError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!(
                "DiscordBot (https://github.com/jitbot/jitbot, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ))
            .build()?;
        Ok(DiscordApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Bot {bot_token}"),
            dm_channels: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashMap::new()),
        })
    }

    fn wait_for(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        [key, "global"]
            .iter()
            .filter_map(|k| blocked.get(*k))
            .filter(|until| **until > now)
            .map(|until| *until - now)
            .max()
    }

    fn block(&self, key: &str, d: Duration) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        blocked.insert(key.to_string(), Instant::now() + d);
    }

    /// One REST call. `key` groups calls that share a rate-limit bucket (per channel).
    async fn call(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<Value, ChatError> {
        self.call_as(method, key, path, body, true).await
    }

    /// [`Self::call`]; `bot_auth` false for interaction webhooks (their token is in the path).
    async fn call_as(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
        body: &impl serde::Serialize,
        bot_auth: bool,
    ) -> Result<Value, ChatError> {
        if let Some(wait) = self.wait_for(key) {
            if wait > MAX_INLINE_WAIT {
                return Err(ChatError::RateLimited { retry_after: wait });
            }
            tokio::time::sleep(wait).await;
        }
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body);
        if bot_auth {
            request = request.header("authorization", &self.authorization);
        }
        let resp = request
            .send()
            .await
            // Without the URL: an interaction webhook's path holds its token.
            .map_err(|e| {
                ChatError::Transient(format!("Discord is unreachable: {}", e.without_url()))
            })?;
        let status = resp.status();
        let header_secs = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
        };
        let remaining = resp
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .map(str::to_string);
        let reset_after = header_secs("x-ratelimit-reset-after");
        let retry_after_header = header_secs("retry-after");
        let global_header = resp
            .headers()
            .get("x-ratelimit-global")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let text = resp.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if remaining.as_deref() == Some("0")
            && let Some(secs) = reset_after
        {
            self.block(key, Duration::from_secs_f64(secs.min(3600.0)));
        }
        if status.as_u16() == 429 {
            let secs = json["retry_after"]
                .as_f64()
                .or(retry_after_header)
                .or(reset_after)
                .unwrap_or(1.0)
                .clamp(0.0, 3600.0);
            let retry_after = Duration::from_secs_f64(secs);
            let global = json["global"].as_bool().unwrap_or(false) || global_header;
            self.block(if global { "global" } else { key }, retry_after);
            return Err(ChatError::RateLimited { retry_after });
        }
        if status.is_server_error() {
            return Err(ChatError::Transient(format!("Discord answered {status}")));
        }
        if !status.is_success() {
            return Err(ChatError::Permanent(format!(
                "Discord answered {status}: {} (code {})",
                json["message"].as_str().unwrap_or("no message"),
                json["code"]
            )));
        }
        Ok(json)
    }

    /// Replaces a deferred interaction response with the answer
    /// (`PATCH /webhooks/{application}/{token}/messages/@original`).
    pub async fn edit_original(
        &self,
        application_id: &str,
        token: &str,
        message: &Message,
    ) -> Result<(), ChatError> {
        let body = EditInteractionResponse::new()
            .embeds(vec![embed(message)])
            .components(components(message));
        self.call_as(
            reqwest::Method::PATCH,
            &format!("webhook:{application_id}"),
            &format!("/webhooks/{application_id}/{token}/messages/@original"),
            &body,
            false,
        )
        .await
        .map(drop)
    }

    /// The channel to post to: `user:<id>` opens (once) the user's DM channel.
    async fn channel_for(&self, destination: &str) -> Result<String, ChatError> {
        let Some(user) = destination.strip_prefix(DM_PREFIX) else {
            return Ok(destination.to_string());
        };
        if let Some(c) = self
            .dm_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
        {
            return Ok(c.clone());
        }
        let answer = self
            .call(
                reqwest::Method::POST,
                "dm",
                "/users/@me/channels",
                &json!({ "recipient_id": user }),
            )
            .await?;
        let Some(channel) = answer["id"].as_str() else {
            return Err(ChatError::Transient(
                "Discord's DM channel answer has no id".into(),
            ));
        };
        self.dm_channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_string(), channel.to_string());
        Ok(channel.to_string())
    }
}

#[async_trait]
impl ChatApi for DiscordApi {
    async fn post(
        &self,
        channel: &str,
        message: &Message,
        dedupe: &Dedupe,
    ) -> Result<MessageRef, ChatError> {
        let channel = self.channel_for(channel).await?;
        let answer = self
            .call(
                reqwest::Method::POST,
                &channel,
                &format!("/channels/{channel}/messages"),
                &create_message(message, dedupe),
            )
            .await?;
        let id = answer["id"]
            .as_str()
            .ok_or_else(|| ChatError::Transient("Discord's answer has no message id".into()))?;
        Ok(MessageRef {
            channel,
            id: id.to_string(),
        })
    }

    async fn update(&self, at: &MessageRef, message: &Message) -> Result<(), ChatError> {
        self.call(
            reqwest::Method::PATCH,
            &at.channel,
            &format!("/channels/{}/messages/{}", at.channel, at.id),
            &edit_message(message),
        )
        .await
        .map(drop)
    }
}
