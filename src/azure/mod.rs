//! Azure: NSG rule management through the Azure Resource Manager REST API.
//!
//! * [`AzureSettings`] is the `[azure]` config section; [`connect`] turns it into an [`Azure`]
//!   handle whose [`NsgManager`] is all the worker needs.
//! * [`NsgManager`] keeps one write in flight per NSG in this process (a *lane*), picks the lowest
//!   free priority in the target's band from a fresh read, PUTs/DELETEs the rule and follows the
//!   long-running operation to its end.
//! * The ARM client (`arm.rs`) retries what ARM says is transient (408, 429, 409
//!   `AnotherOperationInProgress`, 5xx, timeouts, connection errors) within a time budget,
//!   honouring `Retry-After`, and answers a 401 by building a fresh credential (bypassing
//!   azure_identity's token cache) and retrying once.
//! * `backend = "simulated"` runs the same client code against the in-process ARM emulator that
//!   `crate::demo` starts; nothing in Azure is touched. Only builds with the `demo` feature have
//!   it: without, the config check and [`connect`] refuse it ([`SimulatedUnavailable`]).

mod arm;
mod budget;
pub mod inventory;
mod model;
mod nsg;
mod token;

use std::sync::Arc;
use std::time::Duration;

use crate::domain::RulePrefix;
use serde::Deserialize;

pub use inventory::{Inventory, ResolveError, Scope, Unsupported, VmPath};
pub use model::{
    AsyncOperationResult, CloudError, CloudErrorBody, NetworkSecurityGroup,
    NetworkSecurityGroupProperties, SecurityRule, SecurityRuleListResult, SecurityRuleProperties,
};
pub use nsg::{Access, AppliedRule, NsgManager, RuleSpec};
pub use token::ResourceTokens;

/// How jitbot writes an NSG when several changes to it are due at once (`azure.nsg_writes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NsgWrites {
    /// Coalesce: one NSG-level PUT (`If-Match`) for all changes due on an NSG, one rule-level
    /// PUT/DELETE for a lone change. Needs `Microsoft.Network/networkSecurityGroups/write`;
    /// without it (a 403) jitbot switches to `per_rule` for good, with one warning.
    #[default]
    Auto,
    /// One rule-level PUT or DELETE per change (least privilege: no NSG write permission).
    PerRule,
}

/// ARM api-version jitbot speaks by default (the swagger extract in `shared/reference`).
pub const API_VERSION_DEFAULT: &str = "2024-05-01";

/// Public-cloud ARM endpoint.
pub const ARM_ENDPOINT_DEFAULT: &str = "https://management.azure.com";

/// Which Azure jitbot talks to. There is deliberately no default: running against the simulator
/// by accident would make every grant a no-op, so the operator must choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The real Azure Resource Manager.
    Arm,
    /// The in-process ARM emulator (demo, tests): no real NSG is changed. Needs the `demo`
    /// feature; a build without it parses the value and refuses it.
    Simulated,
}

impl Backend {
    /// Whether this build can run the backend: the simulated one starts the ARM emulator, which
    /// ships only with the `demo` feature. The config check calls it and [`connect`] refuses the
    /// same way, so a build without the emulator fails `jitbot check` and start-up.
    pub fn ensure_available(self) -> Result<(), SimulatedUnavailable> {
        match self {
            Backend::Simulated if !cfg!(feature = "demo") => Err(SimulatedUnavailable),
            _ => Ok(()),
        }
    }
}

/// `azure.backend = "simulated"` in a jitbot built without the `demo` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "azure.backend = \"simulated\" is not available: this jitbot was built without the `demo` \
     feature (cargo build --no-default-features); use backend = \"arm\""
)]
pub struct SimulatedUnavailable;

/// How jitbot obtains its Entra ID token (azure_identity 1.0 has no `DefaultAzureCredential`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Service principal with a secret from `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_SECRET_FILE`.
    ClientSecret,
    /// VM / App Service managed identity (user-assigned when `client_id` is set).
    ManagedIdentity,
    /// AKS workload identity (`AZURE_FEDERATED_TOKEN_FILE`, re-read for every exchange).
    WorkloadIdentity,
    /// The signed-in Azure CLI (`az account get-access-token`), for development.
    AzureCli,
}

/// `[azure]` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    /// `"arm"` or `"simulated"`; must be chosen explicitly.
    pub backend: Backend,
    /// ARM endpoint; sovereign clouds use e.g. `https://management.usgovcloudapi.net`.
    #[serde(default = "default_arm_endpoint")]
    pub arm_endpoint: url::Url,
    /// ARM api-version for Microsoft.Network calls.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Required when `backend = "arm"`.
    #[serde(default)]
    pub credential: Option<CredentialKind>,
    /// Entra tenant; falls back to env `AZURE_TENANT_ID`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Application (client) id; falls back to env `AZURE_CLIENT_ID`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Entra authority, e.g. `https://login.microsoftonline.us`; falls back to env
    /// `AZURE_AUTHORITY_HOST`, then the public cloud. Must be https.
    #[serde(default)]
    pub authority_host: Option<url::Url>,
    /// Timeout of one HTTP call, e.g. `"30s"`.
    #[serde(
        default = "default_request_timeout",
        with = "crate::domain::duration_str"
    )]
    pub request_timeout: Duration,
    /// Longest wait for one asynchronous ARM operation, e.g. `"5m"`.
    #[serde(
        default = "default_operation_timeout",
        with = "crate::domain::duration_str"
    )]
    pub operation_timeout: Duration,
    /// How long one call keeps retrying transient errors before it gives up with a retryable
    /// [`AzureError::Transient`], e.g. `"2m"`.
    #[serde(default = "default_retry_budget", with = "crate::domain::duration_str")]
    pub retry_budget: Duration,
    /// jitbot's namespace in the NSGs (default `jitbot-`): every rule it writes starts with it,
    /// and every other rule that does is removed as a stray. See [`RulePrefix`].
    #[serde(default)]
    pub rule_prefix: RulePrefix,
    /// Prefixes of other jitbot deployments that share these NSGs; `jitbot check` refuses a
    /// `rule_prefix` that overlaps one of them (one would remove the other's rules).
    #[serde(default)]
    pub other_prefixes: Vec<RulePrefix>,
    /// `"auto"` (default: coalesce the changes due on one NSG into one NSG-level write, falling
    /// back to per-rule writes on a 403) or `"per_rule"`. See [`NsgWrites`].
    #[serde(default)]
    pub nsg_writes: NsgWrites,
}

impl AzureSettings {
    /// Settings with every default filled in for the given backend (tests, `jitbot demo`).
    pub fn with_backend(backend: Backend) -> Self {
        AzureSettings {
            backend,
            arm_endpoint: default_arm_endpoint(),
            api_version: default_api_version(),
            credential: None,
            tenant_id: None,
            client_id: None,
            authority_host: None,
            request_timeout: default_request_timeout(),
            operation_timeout: default_operation_timeout(),
            retry_budget: default_retry_budget(),
            rule_prefix: RulePrefix::default(),
            other_prefixes: Vec::new(),
            nsg_writes: NsgWrites::default(),
        }
    }

    /// What is wrong with this section, as sentences for `jitbot check`.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(unavailable) = self.backend.ensure_available() {
            errors.push(unavailable.to_string());
        }
        if self.backend == Backend::Arm && self.credential.is_none() {
            errors.push("azure.credential: choose client_secret, managed_identity, workload_identity or azure_cli (or backend = \"simulated\" to try jitbot without Azure)".into());
        }
        for other in &self.other_prefixes {
            if self.rule_prefix.overlaps(other) {
                errors.push(format!(
                    "azure.rule_prefix: `{}` overlaps `{other}` of another deployment (one starts the other), so each would remove the other's rules; choose prefixes like `jitbot-prod-` and `jitbot-staging-`",
                    self.rule_prefix
                ));
            }
        }
        errors
    }
}

fn default_arm_endpoint() -> url::Url {
    // Start-up only, on a constant that parses.
    url::Url::parse(ARM_ENDPOINT_DEFAULT).expect("ARM_ENDPOINT_DEFAULT is a valid URL")
}

fn default_api_version() -> String {
    API_VERSION_DEFAULT.to_string()
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_operation_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_retry_budget() -> Duration {
    Duration::from_secs(2 * 60)
}

/// A factory that builds a fresh, uncached credential. Called once at start and again whenever
/// ARM rejects a token (401), so the retry does not get the same cached token back.
pub type CredentialFactory = Arc<
    dyn Fn() -> anyhow::Result<Arc<dyn azure_core::credentials::TokenCredential>> + Send + Sync,
>;

/// Hooks for tests and embedding.
#[derive(Default, Clone)]
pub struct AzureOverrides {
    /// How to build the credential (called again to get a fresh, uncached credential after a
    /// 401). When set it replaces the credential chosen by `AzureSettings::credential`, for both
    /// backends.
    pub credential_factory: Option<CredentialFactory>,
    /// Where ARM calls are counted; `app.rs` passes the application's [`crate::metrics::Metrics`]
    /// (the default is a detached set nobody scrapes).
    pub metrics: crate::metrics::Metrics,
    /// Where the ARM emulator of `backend = "simulated"` listens: `app.rs` starts it (builds with
    /// the `demo` feature only) and passes its address here. Without it, `simulated` is refused.
    pub simulated_endpoint: Option<url::Url>,
}

/// A connected Azure backend.
pub struct Azure {
    /// NSG rule operations.
    pub nsgs: NsgManager,
    /// Read-only: VMs, NICs, subnets, NSGs, permissions (same client as `nsgs`).
    pub inventory: Inventory,
    /// True when `backend = "simulated"`: no real Azure is touched.
    pub simulated: bool,
}

impl Azure {
    /// Both halves over one client.
    fn over(client: arm::ArmClient, simulated: bool, writes: NsgWrites) -> Azure {
        let client = Arc::new(client);
        Azure {
            nsgs: NsgManager::new(client.clone(), writes),
            inventory: Inventory::new(client),
            simulated,
        }
    }
}

/// Build the Azure backend from settings.
///
/// `backend = "simulated"` points the real ARM client, with a static fake token, at the emulator
/// `app.rs` started (`AzureOverrides::simulated_endpoint`; builds with the `demo` feature only,
/// refused otherwise), so the simulated path runs the same client code. `backend = "arm"` builds the credential named by `credential`; missing
/// settings produce an error that says what to set.
pub async fn connect(settings: &AzureSettings, overrides: AzureOverrides) -> anyhow::Result<Azure> {
    let http = arm::build_http_client(settings.request_timeout)?;
    match settings.backend {
        #[cfg(not(feature = "demo"))]
        Backend::Simulated => Err(SimulatedUnavailable.into()),
        #[cfg(feature = "demo")]
        Backend::Simulated => {
            let Some(endpoint) = overrides.simulated_endpoint else {
                return Err(SimulatedUnavailable.into());
            };
            tracing::warn!(
                sim_url = %endpoint,
                "azure.backend = \"simulated\": NSG changes go to an in-process ARM emulator; \
                 NO REAL AZURE NETWORK SECURITY GROUP IS OPENED OR CLOSED"
            );
            let factory = overrides
                .credential_factory
                .unwrap_or_else(token::static_token_factory);
            let tokens = token::TokenSource::new(&endpoint, factory)?;
            let client =
                arm::ArmClient::new(http, endpoint, settings, tokens, overrides.metrics.clone());
            Ok(Azure::over(client, true, settings.nsg_writes))
        }
        Backend::Arm => {
            let factory = match overrides.credential_factory {
                Some(factory) => factory,
                None => token::factory_from_settings(settings, http.clone())?,
            };
            let endpoint = settings.arm_endpoint.clone();
            let tokens = token::TokenSource::new(&endpoint, factory)?;
            tracing::info!(
                arm_endpoint = %endpoint,
                api_version = %settings.api_version,
                credential = ?settings.credential,
                "Azure Resource Manager backend configured"
            );
            let client =
                arm::ArmClient::new(http, endpoint, settings, tokens, overrides.metrics.clone());
            Ok(Azure::over(client, false, settings.nsg_writes))
        }
    }
}

/// Why an Azure call failed, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    /// 403 `AuthorizationFailed`: the bot's identity lacks a permission. Not retryable.
    #[error("Azure denied the request (403 AuthorizationFailed): {0}")]
    Forbidden(String),
    /// 404 on the NSG itself.
    #[error("network security group not found: {0}; check the target's `nsg` resource id")]
    NsgNotFound(String),
    /// ARM rejected the request (400 and other 4xx); not retryable.
    #[error("Azure rejected the request: {code}: {message}")]
    Invalid {
        /// ARM error code, e.g. `SecurityRuleInvalidPortRange`.
        code: String,
        /// ARM's message.
        message: String,
    },
    /// Every priority in the band is taken by other inbound rules.
    #[error(
        "no free inbound priority left in band {}-{}; wait for grants to close or widen the \
         target's priority_range",
        band.0,
        band.1
    )]
    BandFull {
        /// The inclusive band that was searched.
        band: (u16, u16),
    },
    /// No token could be obtained (or ARM rejected a freshly obtained one).
    #[error("cannot authenticate to Azure: {0}")]
    Auth(String),
    /// The retry budget ran out on transient errors; retry the job later.
    #[error("Azure is temporarily unavailable: {0}")]
    Transient(String),
    /// The asynchronous operation ended `Failed`/`Canceled` with a non-retryable error.
    #[error("Azure operation failed: {code}: {message}")]
    OperationFailed {
        /// ARM error code from the operation status.
        code: String,
        /// ARM's message.
        message: String,
    },
}

impl AzureError {
    /// Whether running the same call again later may succeed without anyone changing anything.
    /// `Auth` counts as retryable: an Entra outage heals by itself, and a revoke must keep being
    /// retried until the port is closed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AzureError::Transient(_) | AzureError::Auth(_))
    }
}
