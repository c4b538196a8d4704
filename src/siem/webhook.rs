//! The generic webhook sink: `POST <url>` with `{"sink": "<name>", "events": [ … ]}`, signed
//! with HMAC-SHA256 over `v1:<timestamp>:<body>` (the scheme Slack uses for its own requests):
//!
//! ```text
//! Content-Type: application/json
//! X-Jitbot-Timestamp: 1700000000
//! X-Jitbot-Signature: v1=<hex HMAC-SHA256(secret, "v1:1700000000:" + raw body)>
//! ```
//!
//! A receiver verifies the signature over the raw bytes before parsing, compares in constant
//! time, refuses timestamps more than 5 minutes away, and drops events whose `seq` it already has.
//! Any 2xx is success; 413 makes jitbot split the batch; anything else (or no answer) is retried
//! later with the same events, honouring `Retry-After` on 429 and 503.

use super::{
    ChainEvent, SendError, answer_excerpt, detail_value, retry_after, rfc3339, transport_error,
    truncated_detail,
};
use crate::domain::Secret;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Unix seconds when the body was signed.
pub const TIMESTAMP_HEADER: &str = "X-Jitbot-Timestamp";
/// `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Jitbot-Signature";

pub(super) struct Webhook {
    pub(super) http: reqwest::Client,
    /// Never logged: it may carry a token.
    pub(super) url: url::Url,
    pub(super) secret: Secret,
    pub(super) name: String,
}

/// `v1=<hex HMAC-SHA256(secret, "v1:{timestamp}:{body}")>`. `None` only if the HMAC cannot be
/// keyed, which HMAC allows with any key.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(format!("v1:{timestamp}:").as_bytes());
    mac.update(body);
    Some(format!("v1={}", hex::encode(mac.finalize().into_bytes())))
}

/// One event as the webhook receives it. `detail_text` is the detail exactly as hashed:
/// `hash = sha256_hex(json([prev_hash, seq, at, kind, request_id, actor, detail_text, simulated]))`
/// with JSON written compactly (no spaces, non-ASCII as is).
pub(super) fn record(e: &ChainEvent, truncated: bool) -> Value {
    let (detail, detail_text) = if truncated {
        (truncated_detail(e), Value::Null)
    } else {
        (detail_value(e), Value::String(e.detail_text.clone()))
    };
    json!({
        "seq": e.seq,
        "at": e.at,
        "time": rfc3339(e.at),
        "kind": e.kind,
        "request_id": e.request_id,
        "actor": e.actor,
        "detail": detail,
        "detail_text": detail_text,
        "simulated": e.simulated,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
        "truncated": truncated,
    })
}

/// `{"sink":"<name>","events":[<records>]}`.
pub(super) fn envelope(name: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let mut body = format!("{{\"sink\":{},\"events\":[", Value::from(name)).into_bytes();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(r);
    }
    body.extend_from_slice(b"]}");
    body
}

impl Webhook {
    pub(super) async fn send(&self, records: &[Vec<u8>]) -> Result<(), SendError> {
        let who = format!("webhook {}", self.name);
        let body = envelope(&self.name, records);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(self.secret.expose().as_bytes(), timestamp, &body)
            .ok_or_else(|| SendError::failed(format!("{who}: cannot key the HMAC")))?;
        let resp = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&who, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(SendError::TooLarge);
        }
        let wait = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        Err(SendError::Failed {
            message: format!("{who} answered {status}: {}", answer_excerpt(&text)),
            retry_after: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_version_timestamp_and_body() {
        // Python: hmac.new(b"s3cret", b"v1:1700000000:" + body, hashlib.sha256).hexdigest()
        let body = br#"{"sink":"soc","events":[]}"#;
        assert_eq!(
            sign(b"s3cret", 1_700_000_000, body).unwrap(),
            "v1=c91c5ca6d0eb7004cd9a077d9d5ffca81ca73495736d45587b1702b71660ab39"
        );
    }

    #[test]
    fn the_envelope_is_json_with_the_records_in_order() {
        let body = envelope("soc", &[b"{\"seq\":1}".to_vec(), b"{\"seq\":2}".to_vec()]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"sink": "soc", "events": [{"seq": 1}, {"seq": 2}]})
        );
    }
}
