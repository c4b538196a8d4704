//! Fake Microsoft Entra ID token endpoint (client-credentials grant), plus an
//! [`azure_core::http::HttpClient`] that redirects a real azure_identity credential to it; and,
//! on the same server, the OpenID provider that step-up approval signs people in with
//! ([`oidc`]: discovery, keys, authorize, the authorization-code grant).
//!
//! azure_identity insists on an https authority host, so tests build a real
//! `ClientSecretCredential` with authority `https://login.test/` and
//! `ClientOptions { transport: Some(redirecting_transport(&entra.base_url)), .. }`: every request
//! keeps its path and body but goes to the plain-http emulator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

mod oidc;

pub use oidc::IdTokenFault;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport};
use serde_json::json;

/// A factory of fresh, uncached credentials: the same type as `jitbot::azure::CredentialFactory`
/// (a type alias of one type in both crates), so [`EntraSim::credential_factory`] can be passed as
/// `AzureOverrides::credential_factory` without this crate depending on jitbot.
pub type CredentialFactory = Arc<
    dyn Fn() -> anyhow::Result<Arc<dyn azure_core::credentials::TokenCredential>> + Send + Sync,
>;

/// The running token endpoint. The server stops when the last clone is dropped.
#[derive(Clone)]
pub struct EntraSim {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    state: Arc<Mutex<EntraState>>,
    _server: Arc<ServerTask>,
}

struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct EntraState {
    tenant: String,
    client_id: String,
    client_secret: String,
    expires_in: u64,
    requests: usize,
    issued: Vec<String>,
    scopes: Vec<String>,
    /// The scope each issued token was asked for (what its `aud` would be in Entra).
    audience: HashMap<String, String>,
    /// `http://127.0.0.1:<port>`, for the issuer and endpoint URLs.
    base_url: String,
    oidc: oidc::OidcState,
}

fn lock(state: &Mutex<EntraState>) -> MutexGuard<'_, EntraState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl EntraSim {
    /// A credential factory for jitbot that gets its tokens from this emulator with the client
    /// secret `secret` (the tenant and client id it was started with); what the tests, the
    /// benchmark and embedders pass as `AzureOverrides::credential_factory`.
    pub fn credential_factory(&self, secret: &str) -> CredentialFactory {
        let (tenant, client_id) = {
            let st = lock(&self.state);
            (st.tenant.clone(), st.client_id.clone())
        };
        let base_url = self.base_url.clone();
        let secret = secret.to_string();
        Arc::new(move || {
            let options = azure_identity::ClientSecretCredentialOptions {
                client_options: azure_core::http::ClientOptions {
                    transport: Some(redirecting_transport(&base_url)),
                    ..Default::default()
                },
            };
            let credential = azure_identity::ClientSecretCredential::new(
                &tenant,
                client_id.clone(),
                azure_core::credentials::Secret::new(secret.clone()),
                Some(options),
            )?;
            Ok(credential as Arc<dyn azure_core::credentials::TokenCredential>)
        })
    }

    /// Start on 127.0.0.1 with an ephemeral port, accepting exactly these credentials and issuing
    /// tokens `entra-token-1`, `entra-token-2`, … valid for `expires_in_secs`.
    pub async fn start(
        tenant: &str,
        client_id: &str,
        client_secret: &str,
        expires_in_secs: u64,
    ) -> anyhow::Result<EntraSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(EntraState {
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            expires_in: expires_in_secs,
            requests: 0,
            issued: Vec::new(),
            scopes: Vec::new(),
            audience: HashMap::new(),
            base_url: base_url.clone(),
            oidc: oidc::OidcState::default(),
        }));
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/{tenant}/discovery/v2.0/keys", get(jwks))
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
            .route("/{tenant}/oauth2/v2.0/login", get(login))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(target: "jitbot_sim::entra", error = %e, "Entra emulator stopped");
            }
        });
        Ok(EntraSim {
            base_url,
            state,
            _server: Arc::new(ServerTask(server)),
        })
    }

    /// Tokens issued so far, oldest first.
    pub fn issued(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// Token requests received (successful or not).
    pub fn requests(&self) -> usize {
        lock(&self.state).requests
    }

    /// The scope a token issued by this emulator was asked for (a real token says so in its
    /// `aud` claim, which the resource checks); `None` for a token it never issued.
    pub fn scope_of(&self, token: &str) -> Option<String> {
        lock(&self.state).audience.get(token).cloned()
    }

    /// The `scope` of every token request, in order.
    pub fn scopes(&self) -> Vec<String> {
        lock(&self.state).scopes.clone()
    }

    /// The tenant-specific v2.0 issuer: `<base_url>/<tenant>/v2.0`.
    pub fn issuer(&self) -> String {
        let st = lock(&self.state);
        format!("{}/{}/v2.0", st.base_url, st.tenant)
    }

    /// Who the authorize endpoint signs in from now on (directory object id and UPN).
    pub fn set_signed_in_user(&self, oid: &str, upn: &str) {
        lock(&self.state).oidc.sign_in(oid, upn);
    }

    /// Spoils the ID tokens issued from now on (`IdTokenFault::None` to stop).
    pub fn set_id_token_fault(&self, fault: IdTokenFault) {
        lock(&self.state).oidc.set_fault(fault);
    }

    /// Rotates the signing key: tokens are signed with a second key, published next to the first.
    pub fn rotate_signing_key(&self) {
        lock(&self.state).oidc.rotate();
    }

    /// How often the keys (JWKS) were fetched.
    pub fn jwks_requests(&self) -> usize {
        lock(&self.state).oidc.jwks_requests
    }

    /// Every authorization-code redemption, `"<code prefix>: ok|refused"`, in order.
    pub fn redemptions(&self) -> Vec<String> {
        lock(&self.state).oidc.redemptions.clone()
    }
}

/// A tenant other than the emulator's: 400 like Entra.
fn unknown_tenant(tenant: &str) -> Response {
    entra_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!("Tenant '{tenant}' not found."),
    )
}

async fn discovery(
    State(state): State<Arc<Mutex<EntraState>>>,
    Path(tenant): Path<String>,
) -> Response {
    let st = lock(&state);
    if !tenant.eq_ignore_ascii_case(&st.tenant) {
        return unknown_tenant(&tenant);
    }
    Json(oidc::discovery(&st.base_url, &st.tenant)).into_response()
}

async fn jwks(State(state): State<Arc<Mutex<EntraState>>>, Path(tenant): Path<String>) -> Response {
    let mut st = lock(&state);
    if !tenant.eq_ignore_ascii_case(&st.tenant) {
        return unknown_tenant(&tenant);
    }
    Json(oidc::jwks(&mut st.oidc)).into_response()
}

async fn authorize(
    State(state): State<Arc<Mutex<EntraState>>>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = lock(&state);
    if !tenant.eq_ignore_ascii_case(&st.tenant) {
        return unknown_tenant(&tenant);
    }
    let client_id = st.client_id.clone();
    oidc::authorize(&mut st.oidc, &client_id, &q)
}

async fn login(
    State(state): State<Arc<Mutex<EntraState>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut st = lock(&state);
    oidc::complete(
        &mut st.oidc,
        q.get("flow").map(String::as_str).unwrap_or(""),
    )
}

fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000",
        })),
    )
        .into_response()
}

async fn token(
    State(state): State<Arc<Mutex<EntraState>>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut st = lock(&state);
    st.requests += 1;
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if let Some(scope) = form.get("scope") {
        st.scopes.push(scope.clone());
    }
    if !tenant.eq_ignore_ascii_case(&st.tenant) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") == "authorization_code" {
        let issuer = format!("{}/{}/v2.0", st.base_url, st.tenant);
        let (tenant, id, secret) = (
            st.tenant.clone(),
            st.client_id.clone(),
            st.client_secret.clone(),
        );
        return oidc::redeem(&mut st.oidc, &issuer, &tenant, (&id, &secret), &form);
    }
    if field("grant_type") != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let scope = field("scope");
    if scope.is_empty() {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    if !scope.ends_with("/.default") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a \
             scope value with /.default suffixed to the resource identifier.",
        );
    }
    if field("client_id") != st.client_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    if field("client_secret") != st.client_secret {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the \
             client secret value, not the client secret ID.",
        );
    }
    let token = format!("entra-token-{}", st.issued.len() + 1);
    st.issued.push(token.clone());
    st.audience.insert(token.clone(), scope.to_string());
    (
        StatusCode::OK,
        Json(json!({
            "token_type": "Bearer",
            "expires_in": st.expires_in,
            "ext_expires_in": st.expires_in,
            "access_token": token,
        })),
    )
        .into_response()
}

/// An HTTP client that sends every request to `to` (scheme, host and port replaced; path, query,
/// headers and body kept).
#[derive(Debug)]
struct RedirectingClient {
    to: String,
    http: reqwest::Client,
}

#[async_trait::async_trait]
impl HttpClient for RedirectingClient {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let fail = |what: String| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Other, what)
        };
        let base = url::Url::parse(&self.to)
            .map_err(|e| fail(format!("redirect target {:?} is not a URL: {e}", self.to)))?;
        let mut req = request.clone();
        let url = req.url_mut();
        url.set_scheme(base.scheme())
            .map_err(|()| fail(format!("cannot switch scheme to {}", base.scheme())))?;
        url.set_host(base.host_str())
            .map_err(|e| fail(format!("cannot set host: {e}")))?;
        url.set_port(base.port())
            .map_err(|()| fail("cannot set port".to_string()))?;
        self.http.execute_request(&req).await
    }
}

/// A transport that redirects an azure_core pipeline (e.g. a `ClientSecretCredential` with an
/// https authority) to the plain-http base URL `to`, such as [`EntraSim::base_url`].
pub fn redirecting_transport(to: &str) -> Transport {
    Transport::new(Arc::new(RedirectingClient {
        to: to.to_string(),
        http: reqwest::Client::new(),
    }))
}
