//! `/step-up/…`: the browser side of step-up approval (`service/step_up.rs`). `GET
//! /step-up/<token>` starts the Entra ID sign-in (a redirect), `GET /step-up/callback` is the
//! redirect URI, `POST /step-up/confirm` records the approval. Every page has the strict headers
//! of [`crate::pages::HEADERS`] (no caching, no referrer: tokens and codes are in URLs).

use super::{HttpState, html};
use crate::service::{CallbackQuery, StepUpPage};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

/// The cookie that ties a sign-in to the browser that started it (`Path=<public_url path>step-up`, `HttpOnly`,
/// `SameSite=Lax`: sent on Entra's top-level redirect back, never to other sites' requests).
const COOKIE: &str = "jitbot_step_up";
use axum::response::{IntoResponse, Response};

/// The Confirm button's form.
#[derive(Debug, serde::Deserialize)]
pub struct ConfirmForm {
    token: String,
}

/// `Set-Cookie` for the sign-in's browser token; `Secure` when jitbot is served over https.
fn browser_cookie(st: &HttpState, browser: &str) -> String {
    let secure = st
        .service
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https");
    let max_age = st
        .service
        .step_up
        .as_ref()
        .map(|c| c.settings().login_timeout.as_secs())
        .unwrap_or(600);
    // Where the callback lives (`public_url` may carry a path prefix).
    let path = st
        .service
        .public_url
        .as_ref()
        .and_then(|u| u.join("step-up").ok())
        .map(|u| u.path().to_string())
        .unwrap_or_else(|| "/step-up".into());
    format!(
        "{COOKIE}={browser}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The browser token in the request's cookies, if any.
fn browser_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

fn answer(st: &HttpState, outcome: Result<StepUpPage, crate::store::StoreError>) -> Response {
    match outcome {
        Ok(StepUpPage::SignIn { url, browser }) => {
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(url.as_str()) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            if let Ok(v) = HeaderValue::from_str(&browser_cookie(st, &browser)) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            for (name, value) in crate::pages::HEADERS {
                if let Ok(v) = HeaderValue::from_str(value) {
                    resp.headers_mut().insert(name, v);
                }
            }
            resp
        }
        Ok(StepUpPage::Confirm {
            request_id,
            what,
            person,
            upn,
            confirm_token,
        }) => html(
            StatusCode::OK,
            crate::pages::step_up_confirm(&request_id, &what, &person, &upn, &confirm_token),
        ),
        Ok(StepUpPage::Done(message)) => html(StatusCode::OK, crate::pages::result(&message)),
        Ok(StepUpPage::Refused(text)) => {
            html(StatusCode::FORBIDDEN, crate::pages::step_up_refused(&text))
        }
        Err(e) => {
            tracing::error!(error = %e, "step-up page");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::pages::step_up_refused(
                    "jitbot's database is not answering. Nothing was approved; try again in a minute.",
                ),
            )
        }
    }
}

/// `GET /step-up/<token>`.
pub async fn begin(State(st): State<HttpState>, Path(token): Path<String>) -> Response {
    answer(&st, st.service.step_up_begin(&token).await)
}

/// `GET /step-up/callback?code=…&state=…` (or `?error=…&state=…`).
pub async fn callback(
    State(st): State<HttpState>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let browser = browser_of(&headers);
    answer(
        &st,
        st.service.step_up_callback(&q, browser.as_deref()).await,
    )
}

/// `POST /step-up/confirm`.
pub async fn confirm(
    State(st): State<HttpState>,
    axum::Form(form): axum::Form<ConfirmForm>,
) -> Response {
    answer(&st, st.service.step_up_confirm(&form.token).await)
}
