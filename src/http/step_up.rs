//! `/step-up/…`: the browser side of step-up approval (`service/step_up.rs`). `GET
//! /step-up/<token>` starts the Entra ID sign-in (a redirect), `GET /step-up/callback` is the
//! redirect URI, `POST /step-up/confirm` records the approval. Every page has the strict headers
//! of [`crate::pages::HEADERS`] (no caching, no referrer: tokens and codes are in URLs).

use super::{HttpState, html};
use crate::service::{CallbackQuery, StepUpPage};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The Confirm button's form.
#[derive(Debug, serde::Deserialize)]
pub struct ConfirmForm {
    token: String,
}

fn answer(outcome: Result<StepUpPage, crate::store::StoreError>) -> Response {
    match outcome {
        Ok(StepUpPage::SignIn(url)) => {
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(v) = HeaderValue::from_str(url.as_str()) {
                resp.headers_mut().insert(header::LOCATION, v);
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
    answer(st.service.step_up_begin(&token).await)
}

/// `GET /step-up/callback?code=…&state=…` (or `?error=…&state=…`).
pub async fn callback(State(st): State<HttpState>, Query(q): Query<CallbackQuery>) -> Response {
    answer(st.service.step_up_callback(&q).await)
}

/// `POST /step-up/confirm`.
pub async fn confirm(
    State(st): State<HttpState>,
    axum::Form(form): axum::Form<ConfirmForm>,
) -> Response {
    answer(st.service.step_up_confirm(&form.token).await)
}
