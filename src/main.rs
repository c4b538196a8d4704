//! The `jitbot` command line.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use jitbot::app::{Application, Overrides};
use jitbot::config::Settings;
use jitbot::store::{Store, audit};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "jitbot",
    version,
    about = "Just-in-time network access to Azure VMs, approved in Slack or Discord"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot: HTTP endpoints for Slack and Discord plus the worker that opens and closes rules.
    Serve {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
    },
    /// Check a configuration file (policy included); exits non-zero and lists every problem.
    Check {
        #[arg(env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
        /// The configuration file (instead of the positional argument).
        #[arg(long = "config", short = 'c', id = "config_file", value_name = "FILE")]
        config_file: Option<PathBuf>,
        /// Also require the secrets (SLACK_SIGNING_SECRET or, in Socket Mode, SLACK_APP_TOKEN
        /// (xapp-…); SLACK_BOT_TOKEN, DISCORD_BOT_TOKEN) to be set.
        #[arg(long)]
        secrets: bool,
        /// Also check every target against Azure without writing: its NSG, the permissions there,
        /// free priorities in its band, its lockdown baseline and exposed management ports.
        #[arg(long)]
        live: bool,
    },
    /// List every VM in scope as configured, not configured or unsupported, and every rule that
    /// opens a management port to the Internet. Exit 0: nothing exposed; 1: findings; 2: error.
    Scan {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
        /// A subscription or resource group id (repeatable); default: the subscriptions of the
        /// configured targets.
        #[arg(long = "scope", value_name = "ID")]
        scopes: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ScanFormat,
    },
    /// "Enable JIT": make sure a Deny for each target's ports, from anywhere to its address,
    /// sits right after its priority band in every NSG on its path. Dry run unless --apply.
    /// Refuses (exit 1, nothing written) while a rule jitbot does not own would still let the
    /// Internet reach a port ahead of the Deny. Exit 2: something could not be read.
    Lockdown {
        /// Target names (or --all).
        targets: Vec<String>,
        #[arg(long)]
        all: bool,
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
        /// Write the rules (default: print what would be written).
        #[arg(long)]
        apply: bool,
    },
    /// See the whole flow locally in seconds: simulated Azure, simulated Slack, a scripted request.
    // A build without the `demo` feature keeps the command (to say why it cannot run) but hides it.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo,
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Discord setup.
    Discord {
        #[command(subcommand)]
        command: DiscordCmd,
    },
    /// Delete every rule in jitbot's namespace whose description says it expired more than
    /// `--grace` ago. Needs only ARM (read + securityRules/delete): no database, no chat. Safe
    /// while jitbot runs. Exits non-zero if an NSG could not be read or a deletion failed.
    Sweep {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
        /// What to sweep: an NSG, or every NSG of a subscription (`/subscriptions/<id>`) or a
        /// resource group (`…/resourceGroups/<name>`). Default: the configured targets' NSGs.
        #[arg(long = "scope", value_name = "ID")]
        scopes: Vec<String>,
        /// How long past its expiry a rule may stay before the sweep deletes it.
        #[arg(long, default_value = "5m")]
        grace: String,
        /// Print what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List grants that are open or about to be.
    Grants {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute the hash chain; exits non-zero if any event was altered, removed or reordered.
    Verify {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
        /// Also check that event <seq> still has <hash>, as posted to the audit channel by an
        /// "Audit checkpoint" message (catches a rewritten and re-hashed database).
        #[arg(long, value_name = "SEQ:HASH")]
        checkpoint: Option<audit::Checkpoint>,
    },
    /// Write events as JSON lines or CSV to stdout.
    Export {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Only events at or after this time (RFC 3339, e.g. 2026-11-21T00:00:00Z) or this long ago (e.g. 24h).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum DiscordCmd {
    /// Install or update the `/jit` command (bulk overwrite): in one guild (instant) or globally.
    Register {
        #[arg(long, short, env = "JITBOT_CONFIG", default_value = "jitbot.toml")]
        config: PathBuf,
        /// Guild (server) id; without it the command is registered globally.
        #[arg(long)]
        guild: Option<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ScanFormat {
    Table,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Csv,
}

/// `jitbot sweep`: reads only the `[azure]` section and the targets' NSGs from the file.
async fn sweep(
    config: &Path,
    scopes: Vec<String>,
    grace: &str,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let file: jitbot::config::ConfigFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let problems = file.azure.problems();
    if !problems.is_empty() {
        bail!(
            "the [azure] section has problems:\n  - {}",
            problems.join("\n  - ")
        );
    }
    if file.azure.backend == jitbot::azure::Backend::Simulated {
        bail!(
            "azure.backend = \"simulated\": the emulator lives inside `jitbot serve`; there is nothing to sweep"
        );
    }
    let grace = jitbot::domain::GrantDuration::parse(grace)
        .map_err(|e| anyhow::anyhow!("--grace {grace}: {e}"))?
        .as_duration();
    let azure = jitbot::azure::connect(&file.azure, Default::default()).await?;
    let mut nsgs: Vec<String> = Vec::new();
    if scopes.is_empty() {
        for (name, t) in &file.targets {
            if let Some(nsg) = &t.nsg {
                nsgs.push(nsg.clone());
            } else if let Some(vm) = &t.vm {
                let path = azure
                    .inventory
                    .resolve_vm(vm)
                    .await
                    .with_context(|| format!("target {name}"))?;
                nsgs.extend(path.nsgs.iter().map(|n| n.as_str().to_string()));
            }
        }
    } else {
        for scope in &scopes {
            if jitbot::domain::NsgId::parse(scope).is_ok() {
                nsgs.push(scope.clone());
                continue;
            }
            let scope = jitbot::azure::inventory::Scope::parse(scope)
                .map_err(|e| anyhow::anyhow!("--scope: {e}, nor an NSG resource id"))?;
            let listed = azure.inventory.list_nsgs(&scope).await?;
            nsgs.extend(listed.into_iter().map(|n| n.id));
        }
    }
    nsgs.sort_by_key(|n| n.to_ascii_lowercase());
    nsgs.dedup_by_key(|n| n.to_ascii_lowercase());
    let report = jitbot::sweep::Sweep {
        nsgs: &azure.nsgs,
        namespace: &file.azure.rule_prefix,
        grace,
        dry_run,
    }
    .run(&nsgs, jitbot::store::now_ms())
    .await;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(report.ok())
}

/// Settings for commands that only need the database (no secrets required).
fn database_url(config: &Path) -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("JITBOT_DATABASE_URL") {
        return Ok(url);
    }
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let file: jitbot::config::ConfigFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    Ok(file.database.url)
}

fn load(config: &Path) -> anyhow::Result<Settings> {
    Settings::load(config).map_err(|errors| {
        anyhow::anyhow!(
            "the configuration has problems:\n  - {}",
            errors.join("\n  - ")
        )
    })
}

/// The configuration without its secrets (none of `check`, `check --live` and `scan` needs them);
/// Discord's public key is not a secret and is checked wherever it comes from.
fn resolve_without_secrets(text: &str) -> Result<Settings, Vec<String>> {
    let file: jitbot::config::ConfigFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    Settings::resolve(file, |name| {
        match name {
            "DISCORD_PUBLIC_KEY" => jitbot::config::secret(name),
            // Its form is checked with `--secrets`; the stand-in has the right one.
            "SLACK_APP_TOKEN" => Ok(Some(jitbot::config::Secret::new("xapp-unchecked"))),
            _ => Ok(Some(jitbot::config::Secret::new("unchecked"))),
        }
    })
}

/// Reads and resolves the config for the Azure-reading commands, or says why not.
fn settings_for_azure(config: &Path) -> anyhow::Result<Settings> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    resolve_without_secrets(&text).map_err(|errors| {
        anyhow::anyhow!(
            "{}: the configuration has problems:\n  - {}",
            config.display(),
            errors.join("\n  - ")
        )
    })
}

/// `jitbot scan`: 0 nothing exposed, 1 findings, 2 errors.
async fn scan(config: &Path, scopes: &[String], format: ScanFormat) -> anyhow::Result<i32> {
    use jitbot::scan;
    let settings = settings_for_azure(config)?;
    let targets = scan::scan_targets(&settings.policy);
    let scopes = scan::scopes(scopes, &targets)?;
    let azure = jitbot::azure::connect(&settings.azure, Default::default()).await?;
    let report = scan::scan(
        &azure.inventory,
        &scopes,
        &targets,
        &settings.scan.management_ports(),
        settings.policy.namespace.as_str(),
    )
    .await?;
    match format {
        ScanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&scan::to_json(&report, &scopes))?
        ),
        ScanFormat::Table => print!("{}", scan::to_table(&report, &scopes)),
    }
    Ok(i32::from(!report.findings.is_empty()))
}

/// `jitbot check --live`: one line per target; 0 when every target is fine.
async fn check_live(config: &Path) -> anyhow::Result<i32> {
    use jitbot::scan;
    let settings = settings_for_azure(config)?;
    let azure = jitbot::azure::connect(&settings.azure, Default::default()).await?;
    let targets = scan::LiveTarget::from_policy(&settings.policy);
    let checks = scan::check_live(
        &azure.inventory,
        &targets,
        &settings.scan.management_ports(),
        settings.policy.namespace.as_str(),
    )
    .await;
    for c in &checks {
        println!("{}", c.line());
    }
    let failed = checks.iter().filter(|c| !c.problems.is_empty()).count();
    if failed > 0 {
        eprintln!("{failed} of {} target(s) need attention", checks.len());
    }
    Ok(i32::from(failed > 0))
}

/// `jitbot lockdown`: see [`jitbot::lockdown::run`].
async fn lockdown(config: &Path, names: &[String], all: bool, apply: bool) -> anyhow::Result<i32> {
    let settings = settings_for_azure(config)?;
    let policy = &settings.policy;
    let targets: Vec<&jitbot::policy::Target> = match (all, names.is_empty()) {
        (true, true) => policy.targets.values().collect(),
        (false, false) => names
            .iter()
            .map(|n| {
                policy.targets.get(n).ok_or_else(|| {
                    let known: Vec<&str> = policy.targets.keys().map(String::as_str).collect();
                    anyhow::anyhow!("{n} is not a target (targets: {})", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?,
        _ => bail!("name the targets to lock down, or give --all (not both)"),
    };
    let azure = jitbot::azure::connect(&settings.azure, Default::default()).await?;
    let report = jitbot::lockdown::run(&azure, policy, &targets, apply).await;
    for line in &report.lines {
        println!("{line}");
    }
    Ok(report.exit_code())
}

/// Runs an Azure-reading command: its own exit code, or 2 with the error on stderr.
fn exit_with(result: anyhow::Result<i32>) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        }
    }
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    match jitbot::domain::GrantDuration::parse(s) {
        Ok(d) => Ok(jitbot::store::now_ms() - d.as_millis()),
        Err(_) => {
            bail!("--since {s}: give an RFC 3339 time (2026-11-21T00:00:00Z) or a duration (24h)")
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jitbot::install_crypto();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve { config } => {
            let settings = load(&config)?;
            jitbot::telemetry::init(settings.server.log_format);
            let app = Application::build(settings, Overrides::default()).await?;
            app.run_until_stopped().await;
        }
        Cmd::Check {
            config,
            config_file,
            secrets,
            live,
        } => {
            let config = config_file.unwrap_or(config);
            if live {
                exit_with(check_live(&config).await);
            }
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let result = if secrets {
                Settings::parse(&text)
            } else {
                resolve_without_secrets(&text)
            };
            match result {
                Ok(s) => {
                    println!(
                        "{}: OK — {} people, {} groups, {} targets; Azure backend {:?}",
                        config.display(),
                        s.policy.people.len(),
                        s.policy.groups.len(),
                        s.policy.targets.len(),
                        s.azure.backend
                    );
                    for t in s.policy.targets.values() {
                        println!(
                            "  {}: ports {} ({}), max {}, sources {}, approvers {} ({} needed), band {}-{}",
                            t.name,
                            t.ports_text(),
                            t.protocol,
                            t.max_duration,
                            t.sources_text(),
                            t.approvers_text(),
                            t.approvals_required,
                            t.priority_band.0,
                            t.priority_band.1
                        );
                    }
                }
                Err(errors) => {
                    eprintln!("{}: {} problem(s):", config.display(), errors.len());
                    for e in errors {
                        eprintln!("  - {e}");
                    }
                    std::process::exit(1);
                }
            }
        }
        #[cfg(feature = "demo")]
        Cmd::Demo => {
            jitbot::telemetry::init_with_default(
                jitbot::config::LogFormat::Text,
                "warn,jitbot_sim::arm=info",
            );
            jitbot::demo::run().await?;
        }
        #[cfg(not(feature = "demo"))]
        Cmd::Demo => bail!(
            "`jitbot demo` is not available: this jitbot was built without the `demo` feature \
             (cargo build --no-default-features); build it with the default features to run the demo"
        ),
        Cmd::Scan {
            config,
            scopes,
            format,
        } => exit_with(scan(&config, &scopes, format).await),
        Cmd::Lockdown {
            targets,
            all,
            config,
            apply,
        } => exit_with(lockdown(&config, &targets, all, apply).await),
        Cmd::Migrate { config } => {
            Store::connect(&database_url(&config)?).await?;
            println!("migrations applied");
        }
        Cmd::Audit {
            command: AuditCmd::Verify { config, checkpoint },
        } => {
            let store = Store::connect(&database_url(&config)?).await?;
            let report = match &checkpoint {
                None => store.verify_audit().await?,
                Some(cp) => store.verify_audit_against(cp).await?,
            };
            match report.broken {
                None => {
                    println!(
                        "audit chain OK: {} events, head {}",
                        report.events, report.head_hash
                    );
                    if let Some(cp) = checkpoint {
                        println!("checkpoint OK: event {} has hash {}", cp.seq, cp.hash);
                    }
                }
                Some((seq, why)) => {
                    eprintln!(
                        "audit chain BROKEN at event {seq}: {why} ({} events verified before it)",
                        report.events
                    );
                    std::process::exit(2);
                }
            }
        }
        Cmd::Audit {
            command:
                AuditCmd::Export {
                    config,
                    format,
                    since,
                },
        } => {
            let store = Store::connect(&database_url(&config)?).await?;
            let since = since.as_deref().map(parse_since).transpose()?;
            let events = store.audit_events(0, since).await?;
            let mut out = std::io::stdout().lock();
            if let ExportFormat::Csv = format {
                writeln!(
                    out,
                    "seq,at,kind,request_id,actor,simulated,detail,prev_hash,hash"
                )?;
            }
            for e in events {
                match format {
                    ExportFormat::Jsonl => writeln!(out, "{}", serde_json::to_string(&e)?)?,
                    ExportFormat::Csv => writeln!(
                        out,
                        "{},{},{},{},{},{},{},{},{}",
                        e.seq,
                        jitbot::messages::timestamp(e.at),
                        e.kind,
                        csv_field(e.request_id.as_deref().unwrap_or("")),
                        csv_field(e.actor.as_deref().unwrap_or("")),
                        e.simulated,
                        csv_field(&e.detail.to_string()),
                        e.prev_hash,
                        e.hash
                    )?,
                }
            }
        }
        Cmd::Discord {
            command: DiscordCmd::Register { config, guild },
        } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let file: jitbot::config::ConfigFile =
                toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
            let Some(d) = file.discord else {
                bail!("{}: there is no [discord] section", config.display());
            };
            let Some(bot_token) =
                jitbot::config::secret("DISCORD_BOT_TOKEN").map_err(anyhow::Error::msg)?
            else {
                bail!("set DISCORD_BOT_TOKEN (or DISCORD_BOT_TOKEN_FILE) to the bot's token");
            };
            let settings = jitbot::config::DiscordSettings {
                application_id: d.application_id,
                public_key: d.public_key.unwrap_or_default(),
                api_base_url: d.api_base_url.trim_end_matches('/').to_string(),
                audit_channel: d.audit_channel,
                bot_token,
            };
            let installed = jitbot::chat::discord::register(&settings, guild)
                .await
                .map_err(anyhow::Error::msg)?;
            let scope = match guild {
                Some(g) => format!("guild {g}"),
                None => "globally (may take up to an hour to appear)".to_string(),
            };
            println!("installed {} command(s) {scope}:", installed.len());
            for c in installed {
                let subs: Vec<String> = c.options.iter().map(|o| o.name.clone()).collect();
                println!("  /{} (id {}): {}", c.name, c.id, subs.join(", "));
            }
        }
        Cmd::Sweep {
            config,
            scopes,
            grace,
            dry_run,
        } => {
            if !sweep(&config, scopes, &grace, dry_run).await? {
                std::process::exit(1);
            }
        }
        Cmd::Grants { config } => {
            let store = Store::connect(&database_url(&config)?).await?;
            use jitbot::domain::Status;
            let rows = store
                .requests_in(&[
                    Status::Pending,
                    Status::Approved,
                    Status::Applying,
                    Status::Active,
                    Status::Revoking,
                ])
                .await?;
            if rows.is_empty() {
                println!("no open grants or pending requests");
            }
            for r in rows {
                println!("{} ({})", jitbot::messages::line(&r), r.requester);
            }
        }
    }
    Ok(())
}
