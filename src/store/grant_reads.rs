//! Reads of grants sized for many of them (the reconciler's, with 10,000 active grants over 50
//! NSGs): only the rows one NSG needs, a batch of requests by id, and the NSGs open grants live in.
//!
//! Loading every active grant once per NSG cost 10,000 rows × 50 NSGs per pass and held tens of
//! megabytes at once, which the allocator kept (the README's Performance section has the figures).
//!
//! A grant's NSGs are JSON text in `rules` (`[{"nsg": "...", "priority": 123}]`; `NULL` on rows
//! from before it, whose one NSG is the `nsg` column). The SQL filter on them is a `LIKE`
//! prefilter that may let through rows of other NSGs but never leaves out one of `nsg`'s;
//! [`RequestRow::rule_in`] then decides, exactly as before.

use super::{GrantRule, RequestRow, Result, Store, StoreError};
use sqlx::Row;
use std::collections::BTreeSet;

/// Most ids bound in one `IN (…)` (SQLite allows 32,766 parameters, PostgreSQL 65,535).
const IDS_PER_QUERY: usize = 500;

/// A `LIKE` pattern (to be matched against `LOWER(column)`) that every string equal to `s` up to
/// ASCII case matches: ASCII letters lowercased; `%`, `_`, the backslash (PostgreSQL's escape
/// character) and every non-ASCII character (whose `LOWER` differs between the databases) become
/// `_`, which matches any one character. It may match more strings; never fewer.
pub fn like_pattern(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '%' | '_' | '\\' => '_',
            c if !c.is_ascii() => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// How `nsg` appears inside the `rules` JSON text: serde_json's string escaping, without quotes.
fn json_inner(nsg: &str) -> String {
    let quoted = serde_json::to_string(nsg).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

impl Store {
    /// Active grants with a rule in `nsg` (compared case-insensitively), oldest first.
    pub async fn active_grants_in(&self, nsg: &str) -> Result<Vec<RequestRow>> {
        let rows = sqlx::query(
            "SELECT * FROM requests WHERE status = 'active'
             AND (LOWER(nsg) LIKE $1 OR LOWER(rules) LIKE $2) ORDER BY created_at",
        )
        .bind(like_pattern(nsg))
        .bind(format!("%{}%", like_pattern(&json_inner(nsg))))
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let req = RequestRow::from_row(row)?;
            if req.rule_in(nsg).is_some() {
                out.push(req);
            }
        }
        Ok(out)
    }

    /// The requests with these ids that exist, in no particular order.
    pub async fn requests_by_ids(&self, ids: &[&str]) -> Result<Vec<RequestRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let params = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!("SELECT * FROM requests WHERE id IN ({params})");
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for row in &query.fetch_all(self.pool()).await? {
                out.push(RequestRow::from_row(row)?);
            }
        }
        Ok(out)
    }

    /// Every NSG an active or revoking grant has a rule in, once each (as first written).
    pub async fn open_grant_nsgs(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT nsg, rules FROM requests WHERE status IN ('active','revoking')",
        )
        .fetch_all(self.pool())
        .await?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for row in &rows {
            let nsgs: Vec<String> = match row.try_get::<Option<String>, _>("rules")? {
                Some(json) => serde_json::from_str::<Vec<GrantRule>>(&json)
                    .map_err(|e| StoreError::Corrupt(format!("rules {json}: {e}")))?
                    .into_iter()
                    .map(|r| r.nsg)
                    .collect(),
                None => vec![row.try_get("nsg")?],
            };
            for nsg in nsgs {
                if seen.insert(nsg.to_ascii_lowercase()) {
                    out.push(nsg);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Platform, Status};
    use crate::store::NewRequest;

    const NSG_A: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg_a";
    const NSG_A1: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/nsg_a1";

    /// An active grant `id` with rules in `nsgs`.
    async fn grant(store: &Store, id: &str, nsgs: &[&str]) {
        let mut tx = store.begin().await.unwrap();
        tx.insert_request(&NewRequest {
            id: id.into(),
            requester: "p".into(),
            platform: Platform::Slack,
            requester_chat_id: "U0P".into(),
            target: "web".into(),
            nsgs: nsgs.iter().map(|n| n.to_string()).collect(),
            ports: "22".into(),
            protocol: "Tcp".into(),
            source: "203.0.113.7".into(),
            destination: "10.0.0.4".into(),
            duration_ms: 3_600_000,
            reason: None,
            status: Status::Approved,
            approvals_required: 1,
            created_at: 1,
            pending_until: 2,
            rule_name: format!("jitbot-{id}"),
            simulated: false,
        })
        .await
        .unwrap();
        assert!(tx.begin_apply(id, 3).await.unwrap());
        let rules = GrantRule::unopened(&nsgs.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert!(tx.activate(id, &rules, 4, 10_000).await.unwrap());
        tx.commit().await.unwrap();
    }

    fn ids(rows: &[RequestRow]) -> Vec<&str> {
        let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn active_grants_in_finds_every_grant_of_the_nsg_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        grant(&store, "req_a", &[NSG_A]).await;
        grant(&store, "req_upper", &[&NSG_A.to_uppercase()]).await;
        grant(&store, "req_second", &[NSG_A1, NSG_A]).await; // a VM grant: NSG_A second
        grant(&store, "req_a1", &[NSG_A1]).await; // `nsg_a` is a prefix of it, `_` a wildcard
        grant(&store, "req_legacy", &[NSG_A]).await;
        // A row from before the `rules` column: its one NSG is `nsg`.
        sqlx::query("UPDATE requests SET rules = NULL WHERE id = 'req_legacy'")
            .execute(store.pool())
            .await
            .unwrap();
        grant(&store, "req_closed", &[NSG_A]).await;
        let mut tx = store.begin().await.unwrap();
        assert!(
            tx.transition("req_closed", Status::Active, Status::Revoked, None)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();

        let found = store.active_grants_in(NSG_A).await.unwrap();
        assert_eq!(
            ids(&found),
            ["req_a", "req_legacy", "req_second", "req_upper"]
        );
        let found = store
            .active_grants_in(&NSG_A1.to_uppercase())
            .await
            .unwrap();
        assert_eq!(ids(&found), ["req_a1", "req_second"]);

        let by_id = store
            .requests_by_ids(&["req_a", "req_closed", "req_unknown"])
            .await
            .unwrap();
        assert_eq!(ids(&by_id), ["req_a", "req_closed"]);

        let nsgs = store.open_grant_nsgs().await.unwrap();
        let mut lower: Vec<String> = nsgs.iter().map(|n| n.to_ascii_lowercase()).collect();
        lower.sort();
        assert_eq!(
            lower,
            [NSG_A.to_ascii_lowercase(), NSG_A1.to_ascii_lowercase()]
        );
    }

    #[test]
    fn like_pattern_matches_every_case_variant_and_never_narrows() {
        assert_eq!(like_pattern("/Subs/RG/nsg_1"), "/subs/rg/nsg_1");
        assert_eq!(like_pattern("a%b\\c"), "a_b_c");
        assert_eq!(like_pattern("nsgÄ"), "nsg_");
    }

    #[test]
    fn json_inner_is_the_escaped_string_without_quotes() {
        assert_eq!(json_inner("/a/b"), "/a/b");
        assert_eq!(json_inner("a\"b"), "a\\\"b");
    }
}
