//! The fake Entra ID as an OpenID provider (authorization code flow with PKCE), for step-up
//! approval: discovery (`/<tenant>/v2.0/.well-known/openid-configuration`), the tenant's keys
//! (`/<tenant>/discovery/v2.0/keys`), `/<tenant>/oauth2/v2.0/authorize` and the
//! `authorization_code` grant of the token endpoint.
//!
//! There is no real login: the test chooses who is signed in ([`super::EntraSim::set_signed_in_user`]);
//! the authorize endpoint shows a page with a "Sign in" link (`id="signin"`) that 302s back to
//! the `redirect_uri` with `code` and `state`, as Entra does after a login. Codes are single use
//! (a second redemption is `invalid_grant`, AADSTS54005), bound to the client, the redirect URI
//! and the PKCE challenge (S256 only). ID tokens are RS256 JWTs signed with the committed test
//! keys (`fixtures/`); [`IdTokenFault`] makes the provider issue a bad one.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const KEY_1: &str = include_str!("../../fixtures/entra-key-1.pem");
const KEY_2: &str = include_str!("../../fixtures/entra-key-2.pem");
const ROGUE: &str = include_str!("../../fixtures/entra-rogue.pem");
const JWK_1: &str = include_str!("../../fixtures/entra-key-1.jwk.json");
const JWK_2: &str = include_str!("../../fixtures/entra-key-2.jwk.json");

/// How the next ID tokens are spoiled (until set back to `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdTokenFault {
    #[default]
    None,
    /// Signed with a key that is not in the JWKS, under a published `kid`.
    BadSignature,
    /// The `nonce` claim is not the one of the authorization request.
    WrongNonce,
    /// `aud` is another application.
    WrongAudience,
    /// `exp` lies an hour in the past.
    Expired,
}

/// One authorization request waiting for the user to "sign in".
#[derive(Debug, Clone)]
struct Pending {
    redirect_uri: String,
    state: String,
    code: Grant,
}

/// What a code was issued for.
#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    oid: String,
    upn: String,
}

/// The provider's part of the emulator's state.
#[derive(Debug, Default)]
pub(super) struct OidcState {
    signed_in: Option<(String, String)>,
    fault: IdTokenFault,
    /// Sign with `entra-key-2` (published next to key 1): a key rotation.
    rotated: bool,
    flows: HashMap<String, Pending>,
    codes: HashMap<String, Grant>,
    redeemed: Vec<String>,
    pub(super) jwks_requests: usize,
    /// `(code prefix, outcome)` of every authorization_code redemption.
    pub(super) redemptions: Vec<String>,
}

impl OidcState {
    pub(super) fn sign_in(&mut self, oid: &str, upn: &str) {
        self.signed_in = Some((oid.to_string(), upn.to_string()));
    }
    pub(super) fn set_fault(&mut self, fault: IdTokenFault) {
        self.fault = fault;
    }
    pub(super) fn rotate(&mut self) {
        self.rotated = true;
    }
}

fn random() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
}

/// The OpenID configuration of tenant `tenant` on `base`.
pub(super) fn discovery(base: &str, tenant: &str) -> Value {
    json!({
        "issuer": format!("{base}/{tenant}/v2.0"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "oid", "tid", "preferred_username", "name"],
        "tenant_region_scope": "EU",
    })
}

/// The published keys: key 1, and key 2 once rotated.
pub(super) fn jwks(st: &mut OidcState) -> Value {
    st.jwks_requests += 1;
    let mut keys = vec![serde_json::from_str::<Value>(JWK_1).unwrap_or(Value::Null)];
    if st.rotated {
        keys.push(serde_json::from_str::<Value>(JWK_2).unwrap_or(Value::Null));
    }
    json!({ "keys": keys })
}

fn error_page(status: StatusCode, code: u32, what: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><title>Sign in</title><h1>Sorry, but we're having trouble signing you in.</h1>\
             <p id=\"error\">AADSTS{code}: {what}</p>"
        )),
    )
        .into_response()
}

/// `GET /<tenant>/oauth2/v2.0/authorize`: checks the request like Entra, then shows the login
/// page of the signed-in user with a link that completes it.
pub(super) fn authorize(
    st: &mut OidcState,
    client_id: &str,
    q: &HashMap<String, String>,
) -> Response {
    let field = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if field("client_id") != client_id {
        return error_page(
            StatusCode::BAD_REQUEST,
            700016,
            "Application was not found in the directory.",
        );
    }
    if field("response_type") != "code" {
        return error_page(
            StatusCode::BAD_REQUEST,
            700054,
            "response_type 'code' is required here.",
        );
    }
    if !field("scope").split(' ').any(|s| s == "openid") {
        return error_page(
            StatusCode::BAD_REQUEST,
            900144,
            "The request must contain the scope 'openid'.",
        );
    }
    if field("code_challenge").is_empty() || field("code_challenge_method") != "S256" {
        return error_page(
            StatusCode::BAD_REQUEST,
            9002325,
            "Proof Key for Code Exchange (S256) is required.",
        );
    }
    let redirect_uri = field("redirect_uri");
    if url::Url::parse(redirect_uri).is_err() {
        return error_page(
            StatusCode::BAD_REQUEST,
            50011,
            "The redirect URI is not valid.",
        );
    }
    let Some((oid, upn)) = st.signed_in.clone() else {
        return error_page(
            StatusCode::OK,
            50058,
            "No user is signed in (the test did not choose one).",
        );
    };
    let flow = random();
    st.flows.insert(
        flow.clone(),
        Pending {
            redirect_uri: redirect_uri.to_string(),
            state: field("state").to_string(),
            code: Grant {
                client_id: client_id.to_string(),
                redirect_uri: redirect_uri.to_string(),
                nonce: q.get("nonce").cloned(),
                challenge: field("code_challenge").to_string(),
                oid,
                upn: upn.clone(),
            },
        },
    );
    Html(format!(
        "<!doctype html><title>Sign in to your account</title><h1>Microsoft (emulated)</h1>\
         <p>Signed in as <span id=\"upn\">{upn}</span></p>\
         <p><a id=\"signin\" href=\"login?flow={flow}\">Continue</a></p>"
    ))
    .into_response()
}

/// `GET /<tenant>/oauth2/v2.0/login?flow=…`: the "login" completes; 302 to the client.
pub(super) fn complete(st: &mut OidcState, flow: &str) -> Response {
    let Some(p) = st.flows.remove(flow) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            50058,
            "This sign-in flow is unknown or done.",
        );
    };
    let code = format!("code-{}", random());
    st.codes.insert(code.clone(), p.code);
    let mut to = match url::Url::parse(&p.redirect_uri) {
        Ok(u) => u,
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                50011,
                "The redirect URI is not valid.",
            );
        }
    };
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &p.state)
        .append_pair("session_state", "00000000-0000-0000-0000-000000000000");
    Redirect::to(to.as_str()).into_response()
}

fn token_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    super::entra_error(status, error, code, description)
}

/// The `authorization_code` grant: single-use code, client, redirect URI and PKCE checked.
pub(super) fn redeem(
    st: &mut OidcState,
    issuer: &str,
    tenant: &str,
    client: (&str, &str),
    form: &HashMap<String, String>,
) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let code = field("code").to_string();
    let outcome = redeem_checked(st, client, form);
    st.redemptions.push(format!(
        "{}: {}",
        code.chars().take(12).collect::<String>(),
        if outcome.is_ok() { "ok" } else { "refused" }
    ));
    let grant = match outcome {
        Ok(g) => g,
        Err(resp) => return *resp,
    };
    match id_token(st, issuer, tenant, client.0, &grant) {
        Ok(id_token) => (
            StatusCode::OK,
            axum::Json(json!({
                "token_type": "Bearer",
                "scope": "openid profile",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": format!("entra-access-{}", random()),
                "id_token": id_token,
            })),
        )
            .into_response(),
        Err(e) => token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 50000, &e),
    }
}

fn redeem_checked(
    st: &mut OidcState,
    (client_id, client_secret): (&str, &str),
    form: &HashMap<String, String>,
) -> Result<Grant, Box<Response>> {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("client_id") != client_id {
        return Err(Box::new(token_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        )));
    }
    if field("client_secret") != client_secret {
        return Err(Box::new(token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        )));
    }
    let code = field("code");
    if st.redeemed.iter().any(|c| c == code) {
        return Err(Box::new(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        )));
    }
    let Some(grant) = st.codes.remove(code) else {
        return Err(Box::new(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        )));
    };
    st.redeemed.push(code.to_string());
    if grant.client_id != client_id || grant.redirect_uri != field("redirect_uri") {
        return Err(Box::new(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50148,
            "The code_verifier or redirect_uri does not match the authorization request.",
        )));
    }
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes()));
    if challenge != grant.challenge {
        return Err(Box::new(token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        )));
    }
    Ok(grant)
}

fn id_token(
    st: &OidcState,
    issuer: &str,
    tenant: &str,
    client_id: &str,
    g: &Grant,
) -> Result<String, String> {
    let now = chrono::Utc::now().timestamp();
    let (mut aud, mut nonce, mut exp) = (client_id.to_string(), g.nonce.clone(), now + 3600);
    match st.fault {
        IdTokenFault::WrongAudience => aud = "00000000-1111-2222-3333-444444444444".into(),
        IdTokenFault::WrongNonce => nonce = Some(random()),
        IdTokenFault::Expired => exp = now - 3600,
        IdTokenFault::None | IdTokenFault::BadSignature => {}
    }
    let claims = json!({
        "ver": "2.0", "iss": issuer, "sub": format!("sub-{}", g.oid), "aud": aud,
        "exp": exp, "iat": now - 5, "nbf": now - 5, "nonce": nonce,
        "oid": g.oid, "tid": tenant, "preferred_username": g.upn, "name": g.upn,
    });
    let (kid, pem) = if st.rotated {
        ("entra-key-2", KEY_2)
    } else {
        ("entra-key-1", KEY_1)
    };
    let pem = if st.fault == IdTokenFault::BadSignature {
        ROGUE
    } else {
        pem
    };
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    header.typ = Some("JWT".into());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
}
