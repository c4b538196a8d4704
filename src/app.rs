//! Wiring: build every part from [`Settings`], start the HTTP server and the worker, stop them.

use crate::azure::{self, Azure, AzureOverrides};
use crate::chat::ChatApi;
use crate::chat::discord::DiscordApi;
use crate::chat::slack::SlackApi;
use crate::config::Settings;
use crate::domain::Platform;
use crate::http::{self, HttpState};
use crate::metrics::Metrics;
use crate::outbox::Destinations;
use crate::service::Service;
use crate::store::{AuditKind, Store, now_ms};
use crate::worker::Worker;
use anyhow::Context;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest a graceful stop may take before the process exits anyway (orchestrators send
/// SIGKILL after 10 s by default). Unfinished jobs keep their state and lease and run again in
/// the next process.
pub const SHUTDOWN_BUDGET: std::time::Duration = std::time::Duration::from_secs(9);

/// Test and demo hooks: replace what would otherwise come from the environment.
#[derive(Default)]
pub struct Overrides {
    pub azure: AzureOverrides,
    /// Bind here instead of `server.listen` (tests bind 127.0.0.1:0).
    pub listener: Option<tokio::net::TcpListener>,
}

/// A running jitbot: HTTP server + worker.
pub struct Application {
    pub addr: SocketAddr,
    pub store: Store,
    pub service: Service,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    worker: JoinHandle<()>,
    /// The Slack Socket Mode client (`slack.mode = "socket"`).
    socket: Option<JoinHandle<()>>,
    _azure: Azure,
    _simulated_arm: Option<SimulatedArm>,
}

/// The Entra ID client of step-up sign-in, when `[entra]` is configured.
fn step_up_client(settings: &Settings) -> anyhow::Result<Option<Arc<crate::oidc::EntraClient>>> {
    settings
        .entra
        .clone()
        .map(|entra| {
            crate::oidc::EntraClient::new(entra)
                .map(Arc::new)
                .context("setting up the [entra] sign-in")
        })
        .transpose()
}

/// This process's name on the job leases it holds: its pid and a random suffix.
fn lease_owner() -> String {
    let suffix = crate::domain::RequestId::generate();
    format!(
        "{}-{}",
        std::process::id(),
        suffix.as_str().trim_start_matches("req_")
    )
}

async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))
}

impl Application {
    pub async fn build(settings: Settings, overrides: Overrides) -> anyhow::Result<Application> {
        let store = Store::connect(&settings.database_url)
            .await
            .with_context(|| {
                format!(
                    "opening the database {}",
                    redact_url(&settings.database_url)
                )
            })?;
        let metrics = Metrics::new();
        let siem = crate::siem::Sinks::build(
            &settings.siem,
            &settings.azure,
            overrides.azure.credential_factory.clone(),
        )
        .context("setting up the [siem] sinks")?;
        let (azure, simulated_arm) =
            connect_azure(&settings, overrides.azure, metrics.clone()).await?;
        let policy = Arc::new(settings.policy.clone());
        let ChatClients {
            chats,
            out,
            slack,
            discord: discord_endpoint,
        } = chat_clients(&settings)?;
        let service = Service {
            store: store.clone(),
            policy: policy.clone(),
            public_url: settings.server.public_url.clone(),
            out: out.clone(),
            simulated: azure.simulated,
            metrics: metrics.clone(),
            step_up: step_up_client(&settings)?,
        };
        audit_start(&store, policy.targets.len(), azure.simulated).await?;
        let heartbeat = Arc::new(AtomicI64::new(now_ms()));
        let worker = Arc::new(Worker {
            store: store.clone(),
            nsgs: azure.nsgs.clone(),
            inventory: azure.inventory.clone(),
            chats,
            policy,
            out,
            settings: settings.worker.clone(),
            simulated: azure.simulated,
            owner: lease_owner(),
            heartbeat: heartbeat.clone(),
            metrics: metrics.clone(),
            fallback_audited: Default::default(),
            siem,
        });
        let (shutdown, rx) = watch::channel(false);
        let worker = tokio::spawn(worker.run(rx.clone()));
        let listener = match overrides.listener {
            Some(l) => l,
            None => bind(&settings.server.listen).await?,
        };
        let addr = listener.local_addr()?;
        let state = HttpState {
            service: service.clone(),
            slack: slack.clone(),
            discord: discord_endpoint,
            worker_heartbeat: heartbeat,
            metrics,
            trusted_proxies: Arc::new(settings.server.trusted_proxies.clone()),
        };
        let socket = slack_socket(&state, slack.as_deref(), rx.clone())?;
        let router = http::router(state, settings.server.max_body_bytes);
        let server = tokio::spawn(crate::server::serve(
            listener,
            router,
            settings.server.limits(),
            rx,
        ));
        tracing::info!(%addr, "jitbot is listening");
        Ok(Application {
            addr,
            store,
            service,
            shutdown,
            server,
            worker,
            socket,
            _azure: azure,
            _simulated_arm: simulated_arm,
        })
    }

    /// Graceful stop: no new requests, running jobs finish (or keep their lease), then return.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        // The server, the worker and the Socket Mode client wind down side by side.
        let socket = async {
            if let Some(s) = self.socket {
                let _ = s.await;
            }
        };
        let _ = tokio::join!(self.server, self.worker, socket);
        self.store.close().await;
    }

    /// Stops everything at once, as a crash would: nothing is allowed to finish.
    pub async fn crash(self) {
        self.server.abort();
        self.worker.abort();
        if let Some(s) = self.socket {
            s.abort();
            let _ = s.await;
        }
        let _ = self.server.await;
        let _ = self.worker.await;
        self.store.close().await;
    }

    /// Waits for SIGINT or SIGTERM, then stops gracefully.
    pub async fn run_until_stopped(self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            if let Ok(mut s) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                s.recv().await;
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down: no new requests; running jobs get a few seconds");
        let started = std::time::Instant::now();
        if tokio::time::timeout(SHUTDOWN_BUDGET, self.stop())
            .await
            .is_err()
        {
            tracing::warn!("shutdown took too long; leaving unfinished jobs to the next process");
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "stopped");
    }
}

/// The simulated backend's emulator (`demo` builds), kept alive as long as the application.
#[cfg(feature = "demo")]
type SimulatedArm = crate::demo::SimulatedArm;
/// Builds without `demo` have no emulator (and refuse `backend = "simulated"`).
#[cfg(not(feature = "demo"))]
type SimulatedArm = std::convert::Infallible;

/// Connects Azure; for `backend = "simulated"` (demo builds) first starts the emulator and
/// points the ARM client at it.
async fn connect_azure(
    settings: &Settings,
    mut overrides: AzureOverrides,
    metrics: Metrics,
) -> anyhow::Result<(Azure, Option<SimulatedArm>)> {
    overrides.metrics = metrics;
    #[cfg(feature = "demo")]
    let simulated_arm = match settings.azure.backend {
        azure::Backend::Simulated => {
            let sim = crate::demo::simulated_arm().await?;
            overrides.simulated_endpoint = Some(url::Url::parse(sim.base_url())?);
            Some(sim)
        }
        azure::Backend::Arm => None,
    };
    #[cfg(not(feature = "demo"))]
    let simulated_arm = None;
    let azure = azure::connect(&settings.azure, overrides).await?;
    if azure.simulated {
        tracing::warn!(
            "SIMULATED AZURE BACKEND: no real NSG is changed; every message and audit event says so"
        );
    }
    Ok((azure, simulated_arm))
}

/// The configured chat platforms: their API clients, where chat output goes, and what the HTTP
/// endpoints need to verify incoming requests.
struct ChatClients {
    chats: HashMap<Platform, Arc<dyn ChatApi>>,
    out: Destinations,
    slack: Option<Arc<crate::config::SlackSettings>>,
    discord: Option<Arc<http::DiscordEndpoint>>,
}

fn chat_clients(settings: &Settings) -> anyhow::Result<ChatClients> {
    let mut chats: HashMap<Platform, Arc<dyn ChatApi>> = HashMap::new();
    let mut out = Destinations::default();
    let slack = settings.slack.clone().map(Arc::new);
    if let Some(s) = &slack {
        let api = SlackApi::new(&s.api_base_url, s.bot_token.expose().to_string())
            .map_err(|e| anyhow::anyhow!("Slack client: {e}"))?;
        chats.insert(Platform::Slack, Arc::new(api));
        out.platforms
            .push((Platform::Slack, s.audit_channel.clone()));
    }
    let discord = match &settings.discord {
        Some(d) => {
            let api = Arc::new(
                DiscordApi::new(&d.api_base_url, d.bot_token.expose())
                    .map_err(|e| anyhow::anyhow!("Discord client: {e}"))?,
            );
            chats.insert(Platform::Discord, api.clone());
            out.platforms
                .push((Platform::Discord, d.audit_channel.clone()));
            let verifier = crate::chat::discord::verifier(&d.public_key)
                .map_err(|e| anyhow::anyhow!("discord.public_key: {e}"))?;
            Some(Arc::new(http::DiscordEndpoint { verifier, api }))
        }
        None => None,
    };
    Ok(ChatClients {
        chats,
        out,
        slack,
        discord,
    })
}

/// In Socket Mode, starts the client that receives Slack's commands and clicks over the
/// WebSocket (answered by the same code as the HTTP routes, which are then off).
fn slack_socket(
    state: &HttpState,
    slack: Option<&crate::config::SlackSettings>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some((slack, app_token)) = slack.and_then(|s| s.app_token().map(|t| (s, t))) else {
        return Ok(None);
    };
    let handle = crate::slack_socket::spawn(
        state.clone(),
        &slack.api_base_url,
        app_token.clone(),
        shutdown,
    )
    .context("starting Slack Socket Mode")?;
    Ok(Some(handle))
}

/// The audit trail records every start, with the version and whether Azure is simulated.
async fn audit_start(store: &Store, targets: usize, simulated: bool) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.audit(
        AuditKind::Started,
        None,
        Some("jitbot"),
        json!({ "version": env!("CARGO_PKG_VERSION"), "targets": targets, "simulated": simulated }),
        simulated,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
