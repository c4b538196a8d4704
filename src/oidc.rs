//! Signing an approver in with Microsoft Entra ID for step-up approval: OpenID Connect, the
//! authorization code flow with PKCE (S256), `state` and `nonce`, and the ID token's RS256
//! signature checked against the tenant's keys (JWKS).
//!
//! This module only speaks the protocol: the `[entra]` settings, the authorize URL, the code
//! redemption (`client_secret_post`) and the ID token's checks (signature by `kid`, `iss`, `aud`,
//! `exp`, `nonce`). Where `state`, `nonce` and the PKCE verifier are kept (the database), and who
//! the signed-in identity may be, is `service/step_up.rs`'s business.
//!
//! Discovery is read once and kept; the keys are kept and fetched again when a token names a
//! `kid` they do not hold (Entra rotates its keys), at most once per [`KEYS_REFRESH_MIN`].
//! *Invariant:* the client secret is sent only in the token request's body and never reaches a
//! log, an error or a page; an ID token is never logged either.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::domain::{GrantDuration, Secret, bounded};

/// The environment variable of the client secret unless `entra.client_secret_env` names another.
pub const DEFAULT_SECRET_ENV: &str = "JITBOT_ENTRA_CLIENT_SECRET";
/// Unknown `kid`s do not make jitbot fetch the keys more often than this.
pub const KEYS_REFRESH_MIN: Duration = Duration::from_secs(2);
/// How long a sign-in may take by default, from the redirect to Entra to the callback.
const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(600);

/// `[entra]` of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraFile {
    /// The tenant-specific v2.0 issuer, `https://login.microsoftonline.com/<tenant id>/v2.0`.
    pub issuer: url::Url,
    /// The application (client) id of jitbot's app registration.
    pub client_id: String,
    /// The environment variable holding the client secret (or `<NAME>_FILE`).
    #[serde(default = "default_secret_env")]
    pub client_secret_env: String,
    /// How long a sign-in may take (default `10m`): a `state` older than this is refused.
    pub login_timeout: Option<String>,
}

fn default_secret_env() -> String {
    DEFAULT_SECRET_ENV.to_string()
}

/// `[entra]` resolved: what the client needs.
#[derive(Debug, Clone)]
pub struct EntraSettings {
    pub issuer: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// `<server.public_url>step-up/callback`.
    pub redirect_uri: url::Url,
    pub login_timeout: Duration,
}

impl EntraSettings {
    /// Checks `[entra]`; every problem goes to `errors`. `None` without the section.
    pub fn resolve(
        file: Option<&EntraFile>,
        public_url: Option<&url::Url>,
        secrets: &impl Fn(&str) -> Result<Option<Secret>, String>,
        errors: &mut Vec<String>,
    ) -> Option<EntraSettings> {
        let file = file?;
        let before = errors.len();
        if let Err(e) = check_issuer(&file.issuer) {
            errors.push(format!("entra.issuer: {e}"));
        }
        if file.client_id.trim().is_empty() {
            errors.push(
                "entra.client_id: give the application (client) id of jitbot's app registration"
                    .into(),
            );
        }
        let client_secret = match secrets(&file.client_secret_env) {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                errors.push(format!(
                    "secret {0} is not set (set {0} or {0}_FILE): the client secret of the app registration ([entra])",
                    file.client_secret_env
                ));
                None
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let redirect_uri = match public_url.map(|u| u.join("step-up/callback")) {
            Some(Ok(u)) => Some(u),
            _ => {
                errors.push("entra: step-up sign-in needs server.public_url (the redirect URI is <public_url>/step-up/callback)".into());
                None
            }
        };
        let login_timeout = match file.login_timeout.as_deref().map(GrantDuration::parse) {
            None => DEFAULT_LOGIN_TIMEOUT,
            Some(Ok(d)) => d.as_duration(),
            Some(Err(e)) => {
                errors.push(format!("entra.login_timeout: {e}"));
                DEFAULT_LOGIN_TIMEOUT
            }
        };
        if errors.len() > before {
            return None;
        }
        Some(EntraSettings {
            issuer: file.issuer.clone(),
            client_id: file.client_id.trim().to_string(),
            client_secret: client_secret?,
            redirect_uri: redirect_uri?,
            login_timeout,
        })
    }
}

/// The issuer must be one tenant's v2.0 issuer: `common`, `organizations` and `consumers` have
/// `{tenantid}` in their metadata, so no token could be checked against them; and https, except
/// on loopback (tests, the demo).
fn check_issuer(issuer: &url::Url) -> Result<(), String> {
    let loopback = matches!(issuer.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if issuer.scheme() != "https" && !loopback {
        return Err(format!("`{issuer}` must be https"));
    }
    let segments: Vec<&str> = issuer
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    match segments.as_slice() {
        [tenant, "v2.0"]
            if !["common", "organizations", "consumers"]
                .contains(&tenant.to_ascii_lowercase().as_str()) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "`{issuer}` is not a tenant-specific v2.0 issuer: use https://login.microsoftonline.com/<tenant id>/v2.0"
        )),
    }
}

/// Why a sign-in failed; `reason()` is what the audit event records.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("Entra's OpenID configuration could not be read: {0}")]
    Discovery(String),
    #[error("Entra's signing keys could not be read: {0}")]
    Keys(String),
    #[error("Entra refused the sign-in code: {0}")]
    Exchange(String),
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
    #[error("the ID token was not issued for this sign-in (nonce)")]
    Nonce,
}

impl OidcError {
    /// A short machine-readable name for the audit trail.
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::Discovery(_) => "discovery_failed",
            OidcError::Keys(_) => "keys_unavailable",
            OidcError::Exchange(_) => "code_refused",
            OidcError::InvalidToken(_) => "id_token_invalid",
            OidcError::Nonce => "nonce_mismatch",
        }
    }
}

/// A fresh random value for `state`, `nonce`, a PKCE verifier or a link token (256 bits,
/// base64url).
pub fn random_value() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The PKCE S256 challenge of a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Who signed in, as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's object id (`oid`), what `people.<name>.entra` names.
    pub oid: String,
    /// `preferred_username` (the UPN), for people reading the audit trail.
    pub upn: String,
}

/// The issuer's OpenID configuration, as far as jitbot uses it.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: url::Url,
    pub token_endpoint: url::Url,
    pub jwks_uri: url::Url,
}

#[derive(Debug, Deserialize)]
struct Claims {
    oid: Option<String>,
    preferred_username: Option<String>,
    nonce: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenRefusal {
    error: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

/// The keys and when they were fetched.
struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// The OpenID Connect client of one tenant and app registration. Cheap to share (`Arc`).
pub struct EntraClient {
    settings: EntraSettings,
    http: reqwest::Client,
    metadata: Mutex<Option<Metadata>>,
    keys: Mutex<Option<Keys>>,
}

impl std::fmt::Debug for EntraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraClient")
            .field("issuer", &self.settings.issuer.as_str())
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

impl EntraClient {
    /// A client that follows no redirects (the endpoints come from the issuer's metadata).
    pub fn new(settings: EntraSettings) -> Result<EntraClient, OidcError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Discovery(e.to_string()))?;
        Ok(EntraClient {
            settings,
            http,
            metadata: Mutex::new(None),
            keys: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &EntraSettings {
        &self.settings
    }

    /// The issuer's metadata, read once; its `issuer` must be the configured one.
    async fn metadata(&self) -> Result<Metadata, OidcError> {
        let mut cached = self.metadata.lock().await;
        if let Some(m) = cached.as_ref() {
            return Ok(m.clone());
        }
        let issuer = self.settings.issuer.as_str().trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let body = get_body(&self.http, &url)
            .await
            .map_err(OidcError::Discovery)?;
        let m = read_metadata(&body, issuer)?;
        *cached = Some(m.clone());
        Ok(m)
    }

    /// Where to send the browser: the authorize endpoint with code flow, PKCE S256, `state`
    /// and `nonce`.
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<url::Url, OidcError> {
        let mut url = self.metadata().await?.authorization_endpoint;
        url.query_pairs_mut()
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("response_type", "code")
            .append_pair("response_mode", "query")
            .append_pair("redirect_uri", self.settings.redirect_uri.as_str())
            .append_pair("scope", "openid profile")
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce_challenge(verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("prompt", "login");
        Ok(url)
    }

    /// Redeems `code` with the PKCE verifier and returns who signed in, once the ID token's
    /// signature, `iss`, `aud`, `exp` and `nonce` are checked.
    pub async fn redeem(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let meta = self.metadata().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("client_id", self.settings.client_id.as_str()),
            ("client_secret", self.settings.client_secret.expose()),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", self.settings.redirect_uri.as_str()),
            ("scope", "openid profile"),
        ];
        let resp = self
            .http
            .post(meta.token_endpoint.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Exchange(e.without_url().to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| OidcError::Exchange(e.to_string()))?;
        if !status.is_success() {
            let refusal: Option<TokenRefusal> = serde_json::from_slice(&body).ok();
            let (error, codes) = refusal
                .map(|r| (r.error.unwrap_or_default(), r.error_codes))
                .unwrap_or_default();
            return Err(OidcError::Exchange(format!("{status} {error} {codes:?}")));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| OidcError::Exchange(format!("unreadable answer: {e}")))?;
        let token = answer
            .id_token
            .ok_or_else(|| OidcError::Exchange("the answer has no id_token".into()))?;
        self.verify(&meta, &token, nonce).await
    }

    /// The ID token's checks; `nonce` must be the one sent with this sign-in.
    async fn verify(
        &self,
        meta: &Metadata,
        token: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        let kid = token_kid(token)?;
        let key = self.key(meta, &kid).await?;
        let expect = Expected {
            issuer: &meta.issuer,
            audience: &self.settings.client_id,
            nonce,
        };
        check_id_token(token, &key, &expect)
    }

    /// The key `kid`: from the kept set, or from a fresh fetch when the set does not hold it
    /// (not more often than [`KEYS_REFRESH_MIN`]).
    async fn key(&self, meta: &Metadata, kid: &str) -> Result<DecodingKey, OidcError> {
        let mut keys = self.keys.lock().await;
        let stale = keys
            .as_ref()
            .is_none_or(|k| k.set.find(kid).is_none() && k.fetched.elapsed() >= KEYS_REFRESH_MIN);
        if stale {
            let body = get_body(&self.http, meta.jwks_uri.as_str())
                .await
                .map_err(OidcError::Keys)?;
            let set = read_keys(&body)?;
            *keys = Some(Keys {
                set,
                fetched: Instant::now(),
            });
        }
        let jwk = keys
            .as_ref()
            .and_then(|k| k.set.find(kid))
            .ok_or_else(|| OidcError::InvalidToken(format!("unknown signing key `{kid}`")))?;
        DecodingKey::from_jwk(jwk).map_err(|e| OidcError::Keys(e.to_string()))
    }
}

/// The body of a successful GET.
async fn get_body(http: &reqwest::Client, url: &str) -> Result<bytes::Bytes, String> {
    let resp = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    resp.bytes().await.map_err(|e| e.to_string())
}

// The parsers of what Entra (or whoever answers in its place) sends, pure so that `fuzz/` and
// `tests/props.rs` can feed them anything.

/// Reads the issuer's discovery document (`/.well-known/openid-configuration`); its `issuer`
/// must be `issuer` (trailing `/` ignored).
pub fn read_metadata(body: &[u8], issuer: &str) -> Result<Metadata, OidcError> {
    let m: Metadata = serde_json::from_slice(body)
        .map_err(|e| OidcError::Discovery(format!("unreadable metadata: {e}")))?;
    let issuer = issuer.trim_end_matches('/');
    if m.issuer.trim_end_matches('/') != issuer {
        return Err(OidcError::Discovery(format!(
            "the metadata names issuer `{}`, not the configured `{issuer}`",
            bounded(&m.issuer)
        )));
    }
    Ok(m)
}

/// Reads the tenant's signing keys (`jwks_uri`).
pub fn read_keys(body: &[u8]) -> Result<JwkSet, OidcError> {
    serde_json::from_slice(body).map_err(|e| OidcError::Keys(format!("unreadable keys: {e}")))
}

/// The `kid` of an ID token signed with RS256, read from its header (nothing verified yet).
pub fn token_kid(token: &str) -> Result<String, OidcError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| OidcError::InvalidToken(e.to_string()))?;
    if header.alg != Algorithm::RS256 {
        return Err(OidcError::InvalidToken(format!(
            "algorithm {:?}",
            header.alg
        )));
    }
    header
        .kid
        .ok_or_else(|| OidcError::InvalidToken("no kid".into()))
}

/// What an ID token must say to be this sign-in's.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// `iss`: the metadata's issuer.
    pub issuer: &'a str,
    /// `aud`: the app registration's client id.
    pub audience: &'a str,
    /// `nonce`: the one sent with this sign-in.
    pub nonce: &'a str,
}

/// Checks an ID token against `key` (RS256 signature, `iss`, `aud`, `exp` with 60 s of leeway,
/// `sub` present, `nonce`) and returns who signed in.
pub fn check_id_token(
    token: &str,
    key: &DecodingKey,
    expect: &Expected<'_>,
) -> Result<Identity, OidcError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[expect.issuer]);
    validation.set_audience(&[expect.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 60;
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| OidcError::InvalidToken(e.to_string()))?;
    let claims = data.claims;
    // Compared in constant time: the nonce is a secret of this sign-in.
    let expected = Sha256::digest(expect.nonce.as_bytes());
    let got = Sha256::digest(claims.nonce.unwrap_or_default().as_bytes());
    if expected != got {
        return Err(OidcError::Nonce);
    }
    let oid = claims
        .oid
        .ok_or_else(|| OidcError::InvalidToken("no oid claim".into()))?;
    Ok(Identity {
        oid: oid.to_ascii_lowercase(),
        upn: claims.preferred_username.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tenant_specific_v2_issuer_is_accepted() {
        let ok = |s: &str| check_issuer(&url::Url::parse(s).unwrap()).is_ok();
        assert!(ok(
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        ));
        assert!(ok("http://127.0.0.1:4000/tenant-1/v2.0"));
        assert!(!ok("https://login.microsoftonline.com/common/v2.0"));
        assert!(!ok("https://login.microsoftonline.com/organizations/v2.0"));
        assert!(!ok(
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47"
        ));
        assert!(!ok(
            "http://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        ));
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636_s256() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
