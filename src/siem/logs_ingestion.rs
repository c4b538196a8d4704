//! Azure Monitor's Logs Ingestion API (for Microsoft Sentinel): `POST
//! {endpoint}/dataCollectionRules/{dcr_immutable_id}/streams/{stream}?api-version=2023-01-01`
//! with a JSON array of records and a bearer token for `https://monitor.azure.com/.default`
//! from the credential jitbot uses for ARM. The identity needs the *Monitoring Metrics
//! Publisher* role on the data collection rule.
//!
//! Answers: 204 (accepted); 413 (the call is over the API's 1 MB: jitbot splits the batch); 429
//! and 503 with `Retry-After` (waited for); 401 (the token is refused: the next send gets one
//! from a fresh credential); anything else is retried later with the same records.
//!
//! The stream's columns (declare them in the DCR's `streamDeclarations`; README, "Audit events
//! to a SIEM"): `TimeGenerated` datetime, `Seq` long, `At` long, `Kind` string, `RequestId`
//! string, `Actor` string, `Detail` dynamic, `DetailText` string, `Simulated` boolean,
//! `PrevHash` string, `Hash` string, `Truncated` boolean.

use super::{
    ChainEvent, SendError, answer_excerpt, detail_value, retry_after, rfc3339, transport_error,
    truncated_detail,
};
use crate::azure::ResourceTokens;
use serde_json::{Value, json};

/// The api-version jitbot speaks.
pub const API_VERSION: &str = "2023-01-01";
/// The token scope of the public cloud's Azure Monitor.
pub const MONITOR_SCOPE: &str = "https://monitor.azure.com/.default";

pub(super) struct LogsIngestion {
    pub(super) http: reqwest::Client,
    pub(super) url: url::Url,
    pub(super) tokens: ResourceTokens,
}

/// `{endpoint}/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01`.
pub(super) fn upload_url(
    endpoint: &url::Url,
    dcr_immutable_id: &str,
    stream: &str,
) -> anyhow::Result<url::Url> {
    let mut url = endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the Logs Ingestion endpoint {endpoint} cannot take a path"))?
        .pop_if_empty()
        .extend(["dataCollectionRules", dcr_immutable_id, "streams", stream]);
    url.query_pairs_mut()
        .append_pair("api-version", API_VERSION);
    Ok(url)
}

/// One event as a record of the stream (see the module documentation for the columns).
pub(super) fn record(e: &ChainEvent, truncated: bool) -> Value {
    let (detail, detail_text) = if truncated {
        (truncated_detail(e), Value::Null)
    } else {
        (detail_value(e), Value::String(e.detail_text.clone()))
    };
    json!({
        "TimeGenerated": rfc3339(e.at),
        "Seq": e.seq,
        "At": e.at,
        "Kind": e.kind,
        "RequestId": e.request_id,
        "Actor": e.actor,
        "Detail": detail,
        "DetailText": detail_text,
        "Simulated": e.simulated,
        "PrevHash": e.prev_hash,
        "Hash": e.hash,
        "Truncated": truncated,
    })
}

impl LogsIngestion {
    pub(super) async fn send(&self, records: &[Vec<u8>]) -> Result<(), SendError> {
        let who = "Logs Ingestion API";
        let (token, generation) = self
            .tokens
            .token()
            .await
            .map_err(|e| SendError::failed(format!("{who}: {e}")))?;
        let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(r);
        }
        body.push(b']');
        let resp = self
            .http
            .post(self.url.clone())
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(who, e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(SendError::TooLarge);
        }
        let wait = retry_after(resp.headers());
        let text = answer_excerpt(&resp.text().await.unwrap_or_default());
        let message = match status.as_u16() {
            401 => {
                if let Err(e) = self.tokens.rejected(generation) {
                    tracing::warn!(error = %e, "could not rebuild the Azure credential");
                }
                format!("{who} refused the token (401): {text}; the next try gets a new one")
            }
            403 => format!(
                "{who} answered 403: {text}; give jitbot's identity the Monitoring Metrics \
                 Publisher role on the data collection rule"
            ),
            _ => format!("{who} answered {status}: {text}"),
        };
        Err(SendError::Failed {
            message,
            retry_after: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_url_names_the_rule_and_the_stream() {
        let endpoint =
            url::Url::parse("https://dce-1.westeurope-1.ingest.monitor.azure.com/").unwrap();
        let url = upload_url(
            &endpoint,
            "dcr-0123456789abcdef0123456789abcdef",
            "Custom-JitbotAudit",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://dce-1.westeurope-1.ingest.monitor.azure.com/dataCollectionRules/dcr-0123456789abcdef0123456789abcdef/streams/Custom-JitbotAudit?api-version=2023-01-01"
        );
    }

    #[test]
    fn records_carry_the_chain_and_a_time_for_time_generated() {
        let e = ChainEvent {
            seq: 7,
            at: 1_700_000_000_123,
            kind: "approved".into(),
            request_id: Some("req_1".into()),
            actor: Some("alice".into()),
            detail_text: r#"{"round":1}"#.into(),
            simulated: false,
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
        };
        let r = record(&e, false);
        assert_eq!(r["TimeGenerated"], "2023-11-14T22:13:20.123Z");
        assert_eq!(r["Seq"], 7);
        assert_eq!(r["Detail"]["round"], 1);
        assert_eq!(r["DetailText"], r#"{"round":1}"#);
        assert_eq!(r["Hash"], "b".repeat(64));
        let t = record(&e, true);
        assert_eq!(t["Truncated"], true);
        assert_eq!(t["DetailText"], Value::Null);
        assert_eq!(t["Hash"], "b".repeat(64));
    }
}
