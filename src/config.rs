//! The configuration file (TOML): server, database, worker, Azure, chat platforms and the policy.
//!
//! Secrets never live in this file. They come from environment variables, or from files named by
//! `<NAME>_FILE` (Kubernetes secrets mounted as files): see [`secret`].

use crate::azure::AzureSettings;
use crate::domain::GrantDuration;
use crate::policy::{PersonFile, Policy, TargetFile};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub worker: WorkerFile,
    pub azure: AzureSettings,
    pub slack: Option<SlackFile>,
    pub discord: Option<DiscordFile>,
    #[serde(default)]
    pub people: BTreeMap<String, PersonFile>,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetFile>,
    #[serde(default)]
    pub scan: crate::exposure::ScanSettings,
    /// `[digest] at = "09:00"`: the daily access review to the audit channel (UTC).
    #[serde(default)]
    pub digest: DigestFile,
    /// `[siem]`: where audit events are pushed (webhooks, Azure Monitor Logs Ingestion).
    #[serde(default)]
    pub siem: crate::siem::SiemFile,
    /// Per-person abuse limits.
    #[serde(default)]
    pub limits: crate::policy::PersonLimits,
    /// `[entra]`: the app registration approvers of `step_up` targets sign in with.
    pub entra: Option<crate::oidc::EntraFile>,
}

/// `[digest]` of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestFile {
    /// Time of day (UTC), `HH:MM`; none: no digest.
    pub at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the HTTP server binds (`0.0.0.0:8080` in a container).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The address people reach jitbot at (`https://jitbot.example.com`): enables `from me`
    /// links. None: `from me` is refused with what to do instead.
    #[serde(default)]
    pub public_url: Option<url::Url>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (CIDRs); from anyone else the
    /// connection's own address is the client's.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `text` (default) or `json` logs.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Connections served at once; more get an immediate 503 (and never more than the open-files
    /// limit allows while keeping descriptors for the worker). Default 512.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time for a request's head to arrive; also how long an idle connection is kept. Default 10s.
    #[serde(default = "default_read_timeout", with = "crate::domain::duration_str")]
    pub header_timeout: Duration,
    /// Time for a request's body to arrive after its head. Default 10s.
    #[serde(default = "default_read_timeout", with = "crate::domain::duration_str")]
    pub body_timeout: Duration,
    /// Largest request body read (413 beyond). Default 262144 (256 KiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: default_listen(),
            public_url: None,
            trusted_proxies: Vec::new(),
            log_format: LogFormat::Text,
            max_connections: default_max_connections(),
            header_timeout: default_read_timeout(),
            body_timeout: default_read_timeout(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

impl ServerSettings {
    /// The HTTP limits `server.rs` enforces.
    pub fn limits(&self) -> crate::server::Limits {
        crate::server::Limits {
            max_connections: self.max_connections,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            max_body_bytes: self.max_body_bytes,
        }
    }
}

fn default_max_connections() -> usize {
    crate::server::Limits::default().max_connections
}

fn default_read_timeout() -> Duration {
    crate::server::Limits::default().header_timeout
}

fn default_max_body_bytes() -> usize {
    crate::server::Limits::default().max_body_bytes
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://jitbot.db` (created if missing) or `postgres://…`. `JITBOT_DATABASE_URL` overrides.
    #[serde(default = "default_db")]
    pub url: String,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings { url: default_db() }
    }
}

fn default_db() -> String {
    "sqlite://jitbot.db".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    /// Jobs run at once (ARM calls, chat posts), besides the reserved slots. Default 512.
    pub concurrency: Option<usize>,
    /// Jobs that close rules (revocations, clean-ups) run at once, in slots of their own so a
    /// burst of openings never delays a closing. An expiry wave larger than this takes an extra
    /// NSG write per NSG. Default 1024.
    pub closing_concurrency: Option<usize>,
    /// How long an approved request may keep failing to apply before it is marked failed. Default 10m.
    pub apply_deadline: Option<String>,
    /// How often the reconciler compares every NSG in the policy with the database. Default 60s.
    pub reconcile_interval: Option<String>,
    /// How long after its expiry a grant may stay open (ARM down, throttling) before the audit
    /// channel gets a "revocation delayed" alert. Default 2m.
    pub revocation_alert_after: Option<String>,
    /// How often the head of the audit hash chain is posted to the audit channel. Default 1h.
    pub checkpoint_interval: Option<String>,
    /// How often `vm` targets are looked up again in Azure (their address and NSGs), e.g. `"5m"`.
    pub resolve_interval: Option<String>,
    /// How long before a grant closes its requester is reminded (grants at least three times
    /// as long), e.g. `"10m"`; `"0s"` turns reminders off.
    pub reminder_before: Option<String>,
    /// How long a claimed job stays this replica's without a renewal (renewed every third of it);
    /// after a crash, another replica takes the job over once it lapses, so it bounds how late a
    /// revocation a dying replica held can be. Default 10s.
    pub lease: Option<String>,
}

/// Worker tuning, resolved.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// Slots reserved for jobs that close rules.
    pub closing_concurrency: usize,
    pub apply_deadline: Duration,
    /// How long a claimed job stays ours without a heartbeat.
    pub lease: Duration,
    /// Period of the reconcile pass (it also runs at start).
    pub reconcile_interval: Duration,
    /// Period of looking `vm` targets up again (it also runs at start).
    pub resolve_interval: Duration,
    /// Remind requesters this long before their grant closes (0: never).
    pub reminder_before: Duration,
    /// When the daily access review is posted (UTC); none: never.
    pub digest_at: Option<crate::digest::DigestAt>,
    /// Alert when a grant is still open this long after it should have closed.
    pub revocation_alert_after: Duration,
    /// Period of audit checkpoints (skipped when the chain has not moved).
    pub checkpoint_interval: Duration,
}

/// `slack.group_refresh` (default 60s, between 1s and 1h), and checks that `slack-group:`
/// principals come with a `[slack]` section to fetch them and that no limit is 0.
fn slack_group_refresh(
    file: &ConfigFile,
    policy: Option<&Policy>,
    errors: &mut Vec<String>,
) -> Duration {
    let default = Duration::from_secs(60);
    if file.limits.max_pending_per_person == 0 || file.limits.max_requests_per_hour == 0 {
        errors.push("limits: 0 would refuse every request; the smallest limit is 1".into());
    }
    if file.slack.is_none() && policy.is_some_and(|p| !p.slack_groups().is_empty()) {
        errors.push("the policy names slack-group: principals but there is no [slack] section to look their members up".into());
    }
    let Some(text) = file.slack.as_ref().and_then(|s| s.group_refresh.as_deref()) else {
        return default;
    };
    match humantime::parse_duration(text) {
        Ok(d) if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) => d,
        Ok(_) => {
            errors.push(format!(
                "slack.group_refresh: `{text}` must be between 1s and 1h"
            ));
            default
        }
        Err(e) => {
            errors.push(format!("slack.group_refresh: `{text}`: {e}"));
            default
        }
    }
}

impl WorkerSettings {
    /// Jobs at once: most wait on ARM's asynchronous operations or a chat API, so many are
    /// cheap, and few make a burst of openings wait behind each other (see README, Performance).
    pub const DEFAULT_CONCURRENCY: usize = 512;
    /// Closing jobs at once: an expiry wave fits in one claim, so it reaches each NSG's lane
    /// together and costs one NSG write per NSG.
    pub const DEFAULT_CLOSING_CONCURRENCY: usize = 1024;
    pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
    pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(300);
    pub const DEFAULT_REMINDER_BEFORE: Duration = Duration::from_secs(600);
    pub const DEFAULT_REVOCATION_ALERT_AFTER: Duration = Duration::from_secs(120);
    pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(3600);
    /// A claimed job lapses this long after its last renewal (renewed every third of it).
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
}

/// Parses an optional `[worker]` period written like `"500ms"`, `"30s"`, `"5m"` or `"1h"`.
fn period(
    key: &str,
    value: &Option<String>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    let Some(text) = value else {
        return default;
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= Duration::from_millis(100) => d,
        Ok(_) => {
            errors.push(format!(
                "worker.{key}: {text:?} is too short; use at least \"100ms\""
            ));
            default
        }
        Err(e) => {
            errors.push(format!(
                "worker.{key}: {text:?} is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\""
            ));
            default
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFile {
    /// Web API base (GovSlack, proxies, tests). Default `https://slack.com/api/`.
    #[serde(default = "default_slack_api")]
    pub api_base_url: String,
    /// Channel id that receives every event (the audit feed).
    pub audit_channel: Option<String>,
    /// How often the members of the Slack user groups named in the policy (`slack-group:<id>`)
    /// are fetched (`usergroups.users.list`). Default 60s.
    pub group_refresh: Option<String>,
    /// How Slack's commands and clicks reach jitbot: `http` (Slack posts to `/slack/*`, signed
    /// with `SLACK_SIGNING_SECRET`) or `socket` (jitbot opens a WebSocket with
    /// `SLACK_APP_TOKEN`; no public endpoint). Default `http`.
    #[serde(default)]
    pub mode: SlackMode,
}

/// `slack.mode`: where Slack's commands and clicks arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlackMode {
    /// Slack posts to `/slack/commands` and `/slack/interactions` (a public HTTPS endpoint).
    #[default]
    Http,
    /// Socket Mode: jitbot connects out to Slack (`apps.connections.open`).
    Socket,
}

fn default_slack_api() -> String {
    "https://slack.com/api/".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordFile {
    /// The application id (Developer Portal → General Information).
    pub application_id: String,
    /// The application's public key (hex). Not a secret; `DISCORD_PUBLIC_KEY` may supply it instead.
    pub public_key: Option<String>,
    /// REST base (proxies, tests). Default `https://discord.com/api/v10`.
    #[serde(default = "default_discord_api")]
    pub api_base_url: String,
    /// Channel id that receives every event (the audit feed).
    pub audit_channel: Option<String>,
}

fn default_discord_api() -> String {
    crate::chat::discord::DEFAULT_API_BASE.into()
}

pub use crate::chat::discord::DiscordSettings;
pub use crate::domain::Secret;

/// Reads secret `NAME` from the environment, or from the file named by `NAME_FILE`.
pub fn secret(name: &str) -> Result<Option<Secret>, String> {
    if let Ok(v) = std::env::var(name)
        && !v.trim().is_empty()
    {
        return Ok(Some(Secret::new(v.trim())));
    }
    let file_var = format!("{name}_FILE");
    if let Ok(path) = std::env::var(&file_var) {
        let v = std::fs::read_to_string(&path)
            .map_err(|e| format!("{file_var}={path}: cannot read the secret file: {e}"))?;
        return Ok(Some(Secret::new(v.trim())));
    }
    Ok(None)
}

/// Secret `name` through `secrets`; its absence (or an unreadable file) is an error in `errors`.
fn needed_secret(
    secrets: &impl Fn(&str) -> Result<Option<Secret>, String>,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<Secret> {
    match secrets(name) {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            errors.push(format!(
                "secret {name} is not set (set {name} or {name}_FILE)"
            ));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// Slack, resolved with its secrets.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    pub api_base_url: String,
    pub audit_channel: Option<String>,
    /// How commands and clicks arrive, with the secret that authenticates them.
    pub inbound: SlackInbound,
    /// For Web API calls (cards, direct messages), whatever the inbound transport.
    pub bot_token: Secret,
}

/// How Slack's commands and clicks reach jitbot, with the secret that proves they are Slack's.
#[derive(Debug, Clone)]
pub enum SlackInbound {
    /// Signed HTTP requests to `/slack/*`, checked with `SLACK_SIGNING_SECRET`.
    Http { signing_secret: Secret },
    /// Socket Mode: the WebSocket jitbot opens with `SLACK_APP_TOKEN` (`xapp-…`) is the
    /// authentication; its envelopes carry no signature.
    Socket { app_token: Secret },
}

impl SlackSettings {
    /// The signing secret when Slack posts to the HTTP endpoints; `None` in Socket Mode (the
    /// `/slack/*` routes are then off).
    pub fn signing_secret(&self) -> Option<&Secret> {
        match &self.inbound {
            SlackInbound::Http { signing_secret } => Some(signing_secret),
            SlackInbound::Socket { .. } => None,
        }
    }

    /// The app-level token in Socket Mode.
    pub fn app_token(&self) -> Option<&Secret> {
        match &self.inbound {
            SlackInbound::Socket { app_token } => Some(app_token),
            SlackInbound::Http { .. } => None,
        }
    }

    /// Resolves `[slack]` with its secrets; every problem goes to `errors`. The secrets are
    /// never quoted.
    fn resolve(
        file: &SlackFile,
        secrets: &impl Fn(&str) -> Result<Option<Secret>, String>,
        errors: &mut Vec<String>,
    ) -> Option<SlackSettings> {
        let mut need = |name: &str| needed_secret(secrets, name, errors);
        let inbound = match file.mode {
            SlackMode::Http => need("SLACK_SIGNING_SECRET")
                .map(|signing_secret| SlackInbound::Http { signing_secret }),
            SlackMode::Socket => {
                need("SLACK_APP_TOKEN").map(|app_token| SlackInbound::Socket { app_token })
            }
        };
        let bot_token = need("SLACK_BOT_TOKEN");
        if let Some(SlackInbound::Socket { app_token }) = &inbound
            && !app_token.expose().starts_with("xapp-")
        {
            errors.push("SLACK_APP_TOKEN: slack.mode = \"socket\" needs an app-level token (xapp-…: Basic Information → App-Level Tokens, scope connections:write); this one does not start with xapp-".into());
            return None;
        }
        Some(SlackSettings {
            api_base_url: file.api_base_url.clone(),
            audit_channel: file.audit_channel.clone(),
            inbound: inbound?,
            bot_token: bot_token?,
        })
    }
}

/// Everything jitbot runs with, resolved and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database_url: String,
    pub worker: WorkerSettings,
    pub azure: AzureSettings,
    pub slack: Option<SlackSettings>,
    pub discord: Option<DiscordSettings>,
    pub policy: Policy,
    pub scan: crate::exposure::ScanSettings,
    pub siem: crate::siem::SiemSettings,
    /// Step-up sign-in (`[entra]`), when configured.
    pub entra: Option<crate::oidc::EntraSettings>,
}

impl Settings {
    /// Loads and checks a configuration file; every problem is listed.
    pub fn load(path: &Path) -> Result<Settings, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        Settings::parse(&text).map_err(|errs| {
            errs.into_iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect()
        })
    }

    /// Parses configuration text (secrets from the environment).
    pub fn parse(text: &str) -> Result<Settings, Vec<String>> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        Settings::resolve(file, secret)
    }

    /// Resolves a parsed file; `secrets` reads a named secret (tests pass their own).
    pub fn resolve(
        file: ConfigFile,
        secrets: impl Fn(&str) -> Result<Option<Secret>, String>,
    ) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        let policy = match Policy::from_file(&file.people, &file.groups, &file.targets) {
            Ok(p) => Some(p),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        };
        let discord_key = file
            .discord
            .as_ref()
            .and_then(|d| discord_public_key(d, &secrets, &mut errors));
        let slack = file
            .slack
            .as_ref()
            .and_then(|s| SlackSettings::resolve(s, &secrets, &mut errors));
        let discord = file.discord.as_ref().and_then(|d| {
            let bot_token = needed_secret(&secrets, "DISCORD_BOT_TOKEN", &mut errors)?;
            Some(DiscordSettings {
                application_id: d.application_id.clone(),
                public_key: discord_key?,
                api_base_url: d.api_base_url.trim_end_matches('/').to_string(),
                audit_channel: d.audit_channel.clone(),
                bot_token,
            })
        });
        errors.extend(file.azure.problems());
        let siem = crate::siem::SiemSettings::resolve(&file.siem, &secrets, &mut errors);
        let entra = crate::oidc::EntraSettings::resolve(
            file.entra.as_ref(),
            file.server.public_url.as_ref(),
            &secrets,
            &mut errors,
        );
        errors.extend(chat_and_target_problems(&file, policy.as_ref()));
        let worker = WorkerSettings::from_file(&file.worker, &file.digest, &mut errors);
        let group_refresh = slack_group_refresh(&file, policy.as_ref(), &mut errors);
        let database_url =
            std::env::var("JITBOT_DATABASE_URL").unwrap_or_else(|_| file.database.url.clone());
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            errors.push(format!(
                "database.url: `{database_url}` must start with sqlite: or postgres://"
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let Some(mut policy) = policy else {
            return Err(vec!["policy did not resolve".into()]);
        };
        policy.namespace = file.azure.rule_prefix.clone();
        policy.limits = file.limits;
        policy.group_refresh = group_refresh;
        Ok(Settings {
            server: file.server,
            database_url,
            worker,
            azure: file.azure,
            slack,
            discord,
            policy,
            scan: file.scan,
            siem,
            entra,
        })
    }
}

/// Discord's public key (not a secret: the file, or `DISCORD_PUBLIC_KEY`), checked to be one,
/// and the application id checked to be a Discord id.
fn discord_public_key(
    d: &DiscordFile,
    secrets: &impl Fn(&str) -> Result<Option<Secret>, String>,
    errors: &mut Vec<String>,
) -> Option<String> {
    if d.application_id.is_empty() || !d.application_id.chars().all(|c| c.is_ascii_digit()) {
        errors.push(format!("discord.application_id: `{}` is not a Discord id (digits only; Developer Portal → General Information → Application ID)", d.application_id));
    }
    let key = match &d.public_key {
        Some(k) => Some(k.trim().to_string()),
        None => match secrets("DISCORD_PUBLIC_KEY") {
            Ok(k) => k.map(|k| k.expose().to_string()),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let Some(k) = key else {
        errors.push("discord.public_key: set it (Developer Portal → General Information → Public Key) or the DISCORD_PUBLIC_KEY environment variable".into());
        return None;
    };
    match crate::chat::discord::verifier(&k) {
        Ok(_) => Some(k),
        Err(e) => {
            errors.push(format!("discord.public_key: {e}"));
            None
        }
    }
}

/// At least one chat platform; every target has an approval channel on each configured one, the
/// sign-in its `step_up` needs, and there is at least one target.
fn chat_and_target_problems(file: &ConfigFile, policy: Option<&Policy>) -> Vec<String> {
    let mut errors = Vec::new();
    if file.slack.is_none() && file.discord.is_none() {
        errors.push(
            "no chat platform is configured: add a [slack] or a [discord] section (or both)".into(),
        );
    }
    let Some(policy) = policy else {
        return errors;
    };
    for t in policy.targets.values() {
        if file.slack.is_some() && t.approval_channels.slack.is_none() {
            errors.push(format!("targets.{}.approval_channel.slack: Slack is configured, so say which channel gets the approval cards", t.name));
        }
        if file.discord.is_some() && t.approval_channels.discord.is_none() {
            errors.push(format!("targets.{}.approval_channel.discord: Discord is configured, so say which channel id gets the approval cards", t.name));
        }
    }
    errors.extend(step_up_problems(policy, file));
    if policy.targets.is_empty() {
        errors.push("no [targets.*] are defined, so nothing can be requested".into());
    }
    errors
}

/// `step_up` targets need the sign-in configured: `[entra]` and `server.public_url`.
fn step_up_problems(policy: &Policy, file: &ConfigFile) -> Vec<String> {
    policy
        .targets
        .values()
        .filter(|t| t.step_up)
        .filter_map(|t| {
            let missing = match (&file.entra, &file.server.public_url) {
                (Some(_), Some(_)) => return None,
                (None, Some(_)) => "an [entra] section (issuer, client_id)",
                (Some(_), None) => "server.public_url",
                (None, None) => "an [entra] section and server.public_url",
            };
            Some(format!(
                "targets.{}.step_up: approvers sign in with Entra ID on jitbot's page, which needs {missing}",
                t.name
            ))
        })
        .collect()
}

impl WorkerSettings {
    /// `[worker]` and `[digest]` resolved; every problem goes to `errors`.
    fn from_file(w: &WorkerFile, digest: &DigestFile, errors: &mut Vec<String>) -> WorkerSettings {
        let apply_deadline = match &w.apply_deadline {
            None => Duration::from_secs(600),
            Some(s) => match GrantDuration::parse(s) {
                Ok(d) => d.as_duration(),
                Err(e) => {
                    errors.push(format!("worker.apply_deadline: {e}"));
                    Duration::from_secs(600)
                }
            },
        };
        let reconcile_interval = period(
            "reconcile_interval",
            &w.reconcile_interval,
            WorkerSettings::DEFAULT_RECONCILE_INTERVAL,
            errors,
        );
        let revocation_alert_after = period(
            "revocation_alert_after",
            &w.revocation_alert_after,
            WorkerSettings::DEFAULT_REVOCATION_ALERT_AFTER,
            errors,
        );
        let digest_at = match digest.at.as_deref().map(crate::digest::DigestAt::parse) {
            Some(Ok(at)) => Some(at),
            Some(Err(e)) => {
                errors.push(e);
                None
            }
            None => None,
        };
        let reminder_before = match &w.reminder_before {
            None => WorkerSettings::DEFAULT_REMINDER_BEFORE,
            Some(s) if s.trim() == "0s" || s.trim() == "0" => Duration::ZERO,
            Some(s) => match GrantDuration::parse(s) {
                Ok(d) => d.as_duration(),
                Err(e) => {
                    errors.push(format!("worker.reminder_before: {e}"));
                    Duration::ZERO
                }
            },
        };
        let resolve_interval = period(
            "resolve_interval",
            &w.resolve_interval,
            WorkerSettings::DEFAULT_RESOLVE_INTERVAL,
            errors,
        );
        let checkpoint_interval = period(
            "checkpoint_interval",
            &w.checkpoint_interval,
            WorkerSettings::DEFAULT_CHECKPOINT_INTERVAL,
            errors,
        );
        let lease = match &w.lease {
            None => WorkerSettings::DEFAULT_LEASE,
            Some(s) => match GrantDuration::parse(s) {
                Ok(d) if (1..=600).contains(&d.as_duration().as_secs()) => d.as_duration(),
                Ok(_) => {
                    errors.push(format!(
                        "worker.lease: `{s}` must be between 1s and 10m (10s suits most: a crashed replica's revocations are taken over within it)"
                    ));
                    WorkerSettings::DEFAULT_LEASE
                }
                Err(e) => {
                    errors.push(format!("worker.lease: {e}"));
                    WorkerSettings::DEFAULT_LEASE
                }
            },
        };
        WorkerSettings {
            concurrency: w.concurrency.unwrap_or(Self::DEFAULT_CONCURRENCY).max(1),
            closing_concurrency: w
                .closing_concurrency
                .unwrap_or(Self::DEFAULT_CLOSING_CONCURRENCY)
                .max(1),
            apply_deadline,
            lease,
            reconcile_interval,
            resolve_interval,
            reminder_before,
            digest_at,
            revocation_alert_after,
            checkpoint_interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Vec<String> {
        let file: ConfigFile = toml::from_str(text).expect("valid TOML");
        match Settings::resolve(file, |_| Ok(Some(Secret::new("x")))) {
            Ok(_) => vec![],
            Err(e) => e,
        }
    }

    /// The fixtures' Azure backend: the real one, which every build has (the simulated one needs
    /// the `demo` feature, see `the_simulated_backend_needs_the_demo_feature`).
    const ARM: &str = "backend = \"arm\"\ncredential = \"azure_cli\"";

    const BASE: &str = r#"
[azure]
backend = "arm"
credential = "azure_cli"
[slack]
audit_channel = "C1"
[people.alice]
slack = "U1"
[groups]
ops = ["alice"]
"#;

    #[test]
    fn a_rule_prefix_must_be_its_own_namespace() {
        let body = "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]";
        let with = |azure: &str| {
            let text = target(body).replace(
                "credential = \"azure_cli\"\n",
                &format!("credential = \"azure_cli\"\n{azure}\n"),
            );
            toml::from_str::<ConfigFile>(&text)
                .map_err(|e| vec![e.to_string()])
                .and_then(|f| Settings::resolve(f, |_| Ok(Some(Secret::new("x")))).map(drop))
        };
        assert_eq!(with(""), Ok(()));
        assert_eq!(
            with("rule_prefix = \"jitbot-prod-\"\nother_prefixes = [\"jitbot-staging-\"]"),
            Ok(())
        );
        let overlap = with("other_prefixes = [\"jitbot-staging-\"]").unwrap_err();
        assert!(
            overlap[0].contains("`jitbot-` overlaps `jitbot-staging-`"),
            "{overlap:?}"
        );
        let empty = with("rule_prefix = \"\"").unwrap_err();
        assert!(empty[0].contains("the rule prefix is empty"), "{empty:?}");
        let odd = with("rule_prefix = \"jit bot\"").unwrap_err();
        assert!(odd[0].contains("ARM's rule-name characters"), "{odd:?}");
    }

    fn target(body: &str) -> String {
        format!(
            "{BASE}\n[targets.web1]\nnsg = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n\"\ndestination = \"10.0.0.4\"\nports = [22]\nrequesters = [\"*\"]\napproval_channel.slack = \"C2\"\n{body}"
        )
    }

    /// `web1` with `step_up = true`, plus `top` before everything (`[server]`, `[entra]`).
    fn step_up_config(top: &str) -> Vec<String> {
        let body = "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]\nstep_up = true";
        check(&format!("{top}\n{}", target(body)))
    }

    const ENTRA: &str = "[entra]\nissuer = \"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0\"\nclient_id = \"0c2b7d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e\"";
    const PUBLIC: &str = "[server]\npublic_url = \"https://jitbot.example.com/\"";

    #[test]
    fn step_up_targets_need_entra_and_a_public_url() {
        assert_eq!(
            step_up_config(&format!("{PUBLIC}\n{ENTRA}")),
            Vec::<String>::new()
        );
        let no_entra = step_up_config(PUBLIC);
        assert!(
            no_entra
                .iter()
                .any(|e| e.contains("targets.web1.step_up") && e.contains("[entra]")),
            "{no_entra:?}"
        );
        let no_url = step_up_config(ENTRA);
        assert!(
            no_url
                .iter()
                .any(|e| e.contains("targets.web1.step_up") && e.contains("server.public_url")),
            "{no_url:?}"
        );
        let common = step_up_config(&format!(
            "{PUBLIC}\n{}",
            ENTRA.replace("72f988bf-86f1-41af-91ab-2d7cd011db47", "common")
        ));
        assert!(
            common
                .iter()
                .any(|e| e.contains("entra.issuer") && e.contains("tenant-specific")),
            "{common:?}"
        );
    }

    #[test]
    fn an_entra_object_id_must_be_a_guid() {
        let with = |id: &str| {
            check(
                &target("max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]")
                .replace("slack = \"U1\"\n", &format!("slack = \"U1\"\nentra = \"{id}\"\n")),
            )
        };
        assert_eq!(
            with("4F1C2B1E-8D0A-4C55-9A53-0B6F6F3C2A10"),
            Vec::<String>::new()
        );
        for bad in [
            "alice@contoso.com",
            "4f1c2b1e8d0a4c559a530b6f6f3c2a10",
            "4f1c2b1e-8d0a-4c55-9a53-0b6f6f3c2a1g",
        ] {
            let errors = with(bad);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("people.alice.entra")
                        && e.contains("not an Entra object id")),
                "{bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn a_good_policy_passes() {
        let errors = check(&target(
            "max_duration = \"4h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"group:ops\"]\npriority_range = [100, 199]",
        ));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn check_lists_every_problem_readably() {
        let errors = check(&target(
            "max_duration = \"25h\"\nallowed_sources = []\napprovers = [\"carol\", \"group:nobody\"]\npriority_range = [50, 5000]\napprovals_required = 3",
        ));
        let all = errors.join("\n");
        for needle in [
            "over 24h",
            "allowed_sources: is empty",
            "unknown person `carol`",
            "unknown group `nobody`",
            "priority_range: [50, 5000] must be a range inside 100–4096",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn the_whole_internet_needs_an_explicit_yes() {
        let errors = check(&target(
            "max_duration = \"1h\"\nallowed_sources = [\"0.0.0.0/0\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]",
        ));
        assert!(errors.join(" ").contains("whole Internet"), "{errors:?}");
    }

    #[test]
    fn limits_and_slack_groups_have_defaults_and_are_checked() {
        let body = "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"slack-group:S0OPS\"]\npriority_range = [100, 199]";
        let file: ConfigFile = toml::from_str(&target(body)).unwrap();
        let s = Settings::resolve(file, |_| Ok(Some(Secret::new("x")))).unwrap();
        assert_eq!(s.policy.limits, crate::policy::PersonLimits::default());
        assert_eq!(s.policy.group_refresh, Duration::from_secs(60));
        assert_eq!(s.policy.group_max_age(), Duration::from_secs(180));
        let bad = target(&format!(
            "{body}\nmax_concurrent_grants = 0\nauto_approve = {{ requesters = [\"alice\"], max_duration = \"1h\", max_uses = 2 }}"
        ))
        .replace("[slack]", "[limits]\nmax_pending_per_person = 0\n[slack]\ngroup_refresh = \"2h\"")
        .replace("slack-group:S0OPS", "slack-group:S0-OPS");
        let all = check(&bad).join("\n");
        for want in [
            "limits: 0 would refuse every request",
            "slack.group_refresh: `2h` must be between 1s and 1h",
            "targets.web1.max_concurrent_grants: 0 would refuse every request",
            "targets.web1.auto_approve.max_uses: say over how long",
            "`slack-group:S0-OPS` needs a Slack user group id",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn a_step_up_target_opens_nothing_without_a_signed_in_approver() {
        let body = "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"group:ops\"]\npriority_range = [100, 199]\nstep_up = true";
        for extra in [
            "auto_approve = { requesters = [\"alice\"], max_duration = \"1h\" }",
            "extend_without_approval = true",
        ] {
            let all = check(&target(&format!("{body}\n{extra}"))).join("\n");
            assert!(
                all.contains("targets.web1.step_up: a step-up target needs a signed-in approver"),
                "{extra}: {all}"
            );
        }
    }

    #[test]
    fn reconciler_periods_have_defaults_and_are_checked() {
        let file: ConfigFile = toml::from_str(&target(
            "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]",
        ))
        .unwrap();
        let s = Settings::resolve(file, |_| Ok(Some(Secret::new("x")))).unwrap();
        assert_eq!(s.worker.reconcile_interval, Duration::from_secs(60));
        assert_eq!(s.worker.revocation_alert_after, Duration::from_secs(120));
        assert_eq!(s.worker.checkpoint_interval, Duration::from_secs(3600));
        let text = target(
            "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]",
        )
        .replace(
            "[azure]",
            "[worker]\nreconcile_interval = \"soon\"\ncheckpoint_interval = \"1ms\"\nrevocation_alert_after = \"90s\"\n[azure]",
        );
        let all = check(&text).join("\n");
        assert!(
            all.contains("worker.reconcile_interval: \"soon\" is not a duration"),
            "{all}"
        );
        assert!(
            all.contains("worker.checkpoint_interval: \"1ms\" is too short"),
            "{all}"
        );
        assert!(!all.contains("revocation_alert_after"), "{all}");
    }

    #[test]
    fn the_job_lease_is_configurable_within_bounds() {
        let policy = "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]";
        let with = |lease: &str| format!("[worker]\nlease = \"{lease}\"\n{}", target(policy));
        let file: ConfigFile = toml::from_str(&with("2s")).expect("valid TOML");
        let settings = Settings::resolve(file, |_| Ok(Some(Secret::new("x")))).expect("valid");
        assert_eq!(settings.worker.lease, Duration::from_secs(2));
        let errors = check(&with("1h")).join(" ");
        assert!(
            errors.contains("worker.lease: `1h` must be between 1s and 10m"),
            "{errors}"
        );
        let file: ConfigFile = toml::from_str(&target(policy)).expect("valid TOML");
        let settings = Settings::resolve(file, |_| Ok(Some(Secret::new("x")))).expect("valid");
        assert_eq!(settings.worker.lease, Duration::from_secs(10), "default");
    }

    #[test]
    fn the_simulated_backend_needs_the_demo_feature() {
        let text = target(
            "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]",
        )
        .replace(ARM, "backend = \"simulated\"");
        let errors = check(&text);
        if cfg!(feature = "demo") {
            assert!(errors.is_empty(), "{errors:?}");
        } else {
            assert_eq!(
                errors,
                vec![
                    "azure.backend = \"simulated\" is not available: this jitbot was built \
                     without the `demo` feature (cargo build --no-default-features); use \
                     backend = \"arm\""
                        .to_string()
                ]
            );
        }
    }

    #[test]
    fn socket_mode_needs_an_app_token_and_no_signing_secret() {
        let policy = "max_duration = \"1h\"\nallowed_sources = [\"203.0.113.0/24\"]\napprovers = [\"alice\"]\npriority_range = [100, 199]";
        let text = target(policy).replace("[slack]\n", "[slack]\nmode = \"socket\"\n");
        let resolve = |app_token: Option<&'static str>| {
            let file: ConfigFile = toml::from_str(&text).expect("valid TOML");
            Settings::resolve(file, move |name| {
                Ok(match name {
                    "SLACK_APP_TOKEN" => app_token.map(Secret::new),
                    "SLACK_BOT_TOKEN" => Some(Secret::new("xoxb-1")),
                    _ => None,
                })
            })
        };
        let settings = resolve(Some("xapp-1-A1-secret")).expect("no signing secret needed");
        let slack = settings.slack.expect("slack");
        assert!(slack.signing_secret().is_none());
        assert_eq!(
            slack.app_token().map(Secret::expose),
            Some("xapp-1-A1-secret")
        );
        let missing = resolve(None).unwrap_err().join(" ");
        assert!(
            missing.contains("secret SLACK_APP_TOKEN is not set"),
            "{missing}"
        );
        let bot = resolve(Some("xoxb-not-an-app-token"))
            .unwrap_err()
            .join(" ");
        assert!(bot.contains("needs an app-level token (xapp-"), "{bot}");
        assert!(
            !bot.contains("xoxb-not"),
            "the token is never quoted: {bot}"
        );
        // Over HTTP the signing secret is what is needed, as before.
        let http = check(&target(policy));
        assert!(http.is_empty(), "{http:?}");
        let unknown = text.replace("mode = \"socket\"", "mode = \"websocket\"");
        assert!(toml::from_str::<ConfigFile>(&unknown).is_err());
    }

    #[test]
    fn the_real_backend_needs_a_credential_and_unknown_keys_are_refused() {
        let errors = check(&BASE.replace(ARM, "backend = \"arm\""));
        assert!(errors.join(" ").contains("azure.credential"), "{errors:?}");
        assert!(
            toml::from_str::<ConfigFile>(&format!("{BASE}\n[server]\nlisten = \"x\"\nlisen = 1"))
                .is_err()
        );
    }
}
