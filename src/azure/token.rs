//! Entra ID tokens for ARM.
//!
//! azure_identity credentials cache their token until five minutes before it expires and offer
//! no way to bypass that cache. When ARM nevertheless rejects a token (401
//! `ExpiredAuthenticationToken` / `InvalidAuthenticationToken`: clock skew, revoked sessions, a
//! rotated secret), asking the same credential again would return the same rejected token. So
//! [`TokenSource`] holds a *factory* and, on [`TokenSource::invalidate`], replaces the credential
//! with a freshly built one whose cache is empty. A generation counter makes concurrent callers
//! that saw the same rejected token rebuild only once.

use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};

use super::{AzureError, AzureSettings, CredentialFactory, CredentialKind};

/// The current credential and its generation.
struct Current {
    credential: Arc<dyn TokenCredential>,
    generation: u64,
}

/// Bearer tokens for one ARM endpoint.
pub(crate) struct TokenSource {
    scope: String,
    factory: CredentialFactory,
    current: Mutex<Current>,
}

/// A token plus the generation of the credential that produced it.
pub(crate) struct Bearer {
    pub(crate) token: String,
    pub(crate) generation: u64,
}

impl TokenSource {
    /// Build the first credential now, so configuration errors surface at start.
    pub(crate) fn new(endpoint: &url::Url, factory: CredentialFactory) -> anyhow::Result<Self> {
        let credential = factory().context("building the Azure credential")?;
        Ok(TokenSource {
            scope: scope_for(endpoint),
            factory,
            current: Mutex::new(Current {
                credential,
                generation: 0,
            }),
        })
    }

    /// A (possibly cached) token for `{arm_endpoint}/.default`.
    pub(crate) async fn token(&self) -> Result<Bearer, AzureError> {
        let (credential, generation) = {
            let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            (cur.credential.clone(), cur.generation)
        };
        let token = credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| {
                AzureError::Auth(format!(
                    "could not get a token for scope {}: {e}",
                    self.scope
                ))
            })?;
        Ok(Bearer {
            token: token.token.secret().to_string(),
            generation,
        })
    }

    /// ARM rejected a token of `generation`: replace the credential (and so its cache) unless
    /// another caller already did.
    pub(crate) fn invalidate(&self, generation: u64) -> Result<(), AzureError> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.generation != generation {
            return Ok(());
        }
        let credential = (self.factory)().map_err(|e| {
            AzureError::Auth(format!(
                "could not rebuild the Azure credential after its token for {} was rejected: {e:#}",
                self.scope
            ))
        })?;
        cur.credential = credential;
        cur.generation += 1;
        tracing::info!(
            generation = cur.generation,
            scope = %self.scope,
            "the access token was rejected; built a fresh credential to get a new one"
        );
        Ok(())
    }
}

/// Bearer tokens for an Azure resource other than ARM (Azure Monitor's Logs Ingestion API,
/// scope `https://monitor.azure.com/.default`) from the same credential jitbot uses for ARM
/// (`azure.credential`, or the override's factory). Its own [`TokenSource`]: its own cache, and
/// a 401 from that resource rebuilds only this credential.
#[derive(Clone)]
pub struct ResourceTokens(Arc<TokenSource>);

impl ResourceTokens {
    /// Builds the credential now, so configuration errors surface at start.
    pub fn new(
        settings: &AzureSettings,
        factory: Option<CredentialFactory>,
        scope: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<ResourceTokens> {
        let factory = match factory {
            Some(f) => f,
            #[cfg(feature = "demo")]
            None if settings.backend == super::Backend::Simulated => static_token_factory(),
            None => factory_from_settings(settings, http)?,
        };
        let credential = factory().context("building the Azure credential")?;
        Ok(ResourceTokens(Arc::new(TokenSource {
            scope: scope.to_string(),
            factory,
            current: Mutex::new(Current {
                credential,
                generation: 0,
            }),
        })))
    }

    /// A (possibly cached) token for the scope, and the generation to pass to
    /// [`ResourceTokens::rejected`] if the resource refuses it.
    pub async fn token(&self) -> Result<(String, u64), AzureError> {
        let bearer = self.0.token().await?;
        Ok((bearer.token, bearer.generation))
    }

    /// The resource answered 401 to a token of `generation`: the next token comes from a fresh
    /// credential (azure_identity's cache cannot be bypassed otherwise).
    pub fn rejected(&self, generation: u64) -> Result<(), AzureError> {
        self.0.invalidate(generation)
    }
}

/// `https://management.azure.com` -> `https://management.azure.com/.default`.
fn scope_for(endpoint: &url::Url) -> String {
    format!("{}/.default", endpoint.as_str().trim_end_matches('/'))
}

/// A credential that always returns the same fake token (simulated backend only).
#[cfg(feature = "demo")]
#[derive(Debug)]
struct StaticTokenCredential(String);

#[cfg(feature = "demo")]
#[async_trait::async_trait]
impl TokenCredential for StaticTokenCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            Secret::new(self.0.clone()),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// Factory of the static fake token the simulated backend uses.
#[cfg(feature = "demo")]
pub(crate) fn static_token_factory() -> CredentialFactory {
    Arc::new(|| {
        let credential: Arc<dyn TokenCredential> =
            Arc::new(StaticTokenCredential("simulated-token".to_string()));
        Ok(credential)
    })
}

/// Factory for the credential chosen by `azure.credential`. Environment lookups and the secret
/// file happen on every build, so a rotated secret is picked up after a 401.
pub(crate) fn factory_from_settings(
    settings: &AzureSettings,
    http: reqwest::Client,
) -> anyhow::Result<CredentialFactory> {
    let Some(kind) = settings.credential else {
        bail!(
            "azure.credential must be set when azure.backend = \"arm\": one of \
             \"client_secret\", \"managed_identity\", \"workload_identity\", \"azure_cli\""
        );
    };
    let tenant_id = settings.tenant_id.clone();
    let client_id = settings.client_id.clone();
    let authority = settings.authority_host.clone();
    if let Some(a) = &authority
        && a.scheme() != "https"
    {
        bail!("azure.authority_host must be an https URL, got {a}");
    }
    if kind == CredentialKind::ClientSecret {
        // Check once now so a missing setting stops start-up with a clear message.
        client_secret_inputs(tenant_id.as_deref(), client_id.as_deref())?;
    }
    let factory: CredentialFactory = Arc::new(move || {
        let client_options = || ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            cloud: authority.as_ref().map(|a| {
                let mut custom = azure_core::cloud::CustomConfiguration::default();
                custom.authority_host = a.as_str().trim_end_matches('/').to_string();
                Arc::new(azure_core::cloud::CloudConfiguration::Custom(custom))
            }),
            ..ClientOptions::default()
        };
        let credential: Arc<dyn TokenCredential> = match kind {
            CredentialKind::ClientSecret => {
                let (tenant, client, secret) =
                    client_secret_inputs(tenant_id.as_deref(), client_id.as_deref())?;
                azure_identity::ClientSecretCredential::new(
                    &tenant,
                    client,
                    Secret::new(secret),
                    Some(azure_identity::ClientSecretCredentialOptions {
                        client_options: client_options(),
                    }),
                )
                .context("building ClientSecretCredential")?
            }
            CredentialKind::ManagedIdentity => azure_identity::ManagedIdentityCredential::new(
                Some(azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id
                        .clone()
                        .map(azure_identity::UserAssignedId::ClientId),
                    client_options: client_options(),
                }),
            )
            .context("building ManagedIdentityCredential")?,
            CredentialKind::WorkloadIdentity => azure_identity::WorkloadIdentityCredential::new(
                Some(azure_identity::WorkloadIdentityCredentialOptions {
                    credential_options: azure_identity::ClientAssertionCredentialOptions {
                        client_options: client_options(),
                    },
                    client_id: client_id.clone(),
                    tenant_id: tenant_id.clone(),
                    ..Default::default()
                }),
            )
            .context(
                "building WorkloadIdentityCredential (needs AZURE_FEDERATED_TOKEN_FILE, and \
                 AZURE_TENANT_ID/AZURE_CLIENT_ID unless azure.tenant_id/azure.client_id are set)",
            )?,
            CredentialKind::AzureCli => azure_identity::AzureCliCredential::new(Some(
                azure_identity::AzureCliCredentialOptions {
                    tenant_id: tenant_id.clone(),
                    ..Default::default()
                },
            ))
            .context("building AzureCliCredential")?,
        };
        Ok(credential)
    });
    Ok(factory)
}

/// Tenant, client id and secret for the client-secret credential, from settings or environment.
/// The secret never comes from the config file.
fn client_secret_inputs(
    tenant_id: Option<&str>,
    client_id: Option<&str>,
) -> anyhow::Result<(String, String, String)> {
    let tenant = match tenant_id {
        Some(t) => t.to_string(),
        None => std::env::var("AZURE_TENANT_ID").map_err(|_| {
            anyhow::anyhow!("client_secret credential: set azure.tenant_id or AZURE_TENANT_ID")
        })?,
    };
    let client = match client_id {
        Some(c) => c.to_string(),
        None => std::env::var("AZURE_CLIENT_ID").map_err(|_| {
            anyhow::anyhow!("client_secret credential: set azure.client_id or AZURE_CLIENT_ID")
        })?,
    };
    let secret = match std::env::var("AZURE_CLIENT_SECRET") {
        Ok(s) if !s.is_empty() => s,
        _ => match std::env::var("AZURE_CLIENT_SECRET_FILE") {
            Ok(path) if !path.is_empty() => std::fs::read_to_string(&path)
                .with_context(|| format!("reading AZURE_CLIENT_SECRET_FILE {path}"))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            _ => bail!(
                "client_secret credential: set AZURE_CLIENT_SECRET or AZURE_CLIENT_SECRET_FILE \
                 (the secret is never read from the config file)"
            ),
        },
    };
    if secret.is_empty() {
        bail!("client_secret credential: the client secret is empty");
    }
    Ok((tenant, client, secret))
}
