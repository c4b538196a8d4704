//! `jitbot sweep`: the backstop that closes expired grants with nothing but ARM.
//!
//! Every grant rule's description says when it expires (`expires=<RFC 3339>`, kept current by
//! extensions; [`crate::domain::grant_description`]). The sweeper lists the NSGs and deletes each
//! rule in jitbot's namespace whose description says it expired more than `grace` ago. It opens
//! no database and no chat connection, so it works when jitbot, its database and its cluster
//! are gone, and it is safe beside a running jitbot: it never deletes a rule that has not expired
//! (a running jitbot closes its grants on time, so within the grace there is nothing to do), nor a
//! rule without an `expires=` (a lockdown baseline, a rule whose description a person rewrote),
//! nor any rule outside the namespace. It needs only read + `securityRules/delete`.

use std::time::Duration;

use crate::azure::{AzureError, NsgManager};
use crate::domain::{RulePrefix, description_expiry, nsg_name};

/// What one sweep saw and did, per rule in the namespace.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub nsgs: usize,
    /// Rules in the namespace (any NSG).
    pub rules_in_namespace: usize,
    /// Expired rules deleted: NSG, rule, expiry (Unix ms).
    pub deleted: Vec<(String, String, i64)>,
    /// Expired rules that would be deleted (`--dry-run`).
    pub would_delete: Vec<(String, String, i64)>,
    /// Rules still valid (or expired within the grace).
    pub valid: usize,
    /// Lockdown baselines (`<prefix>lockdown-…`): never expire, never swept.
    pub baselines: usize,
    /// Rules in the namespace whose description carries no expiry: NSG, rule.
    pub no_expiry: Vec<(String, String)>,
    /// NSGs that could not be read and rules that could not be deleted: what, why.
    pub failures: Vec<(String, String)>,
}

impl SweepReport {
    /// Exit status: non-zero when an NSG could not be read or a deletion failed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line per action, then a summary line: what a person or a cron mail reads.
    pub fn lines(&self) -> Vec<String> {
        let when = |ms: i64| crate::messages::timestamp(ms);
        let mut out = Vec::new();
        for (nsg, rule, at) in &self.deleted {
            out.push(format!(
                "deleted {rule} in {} (expired {})",
                nsg_name(nsg),
                when(*at)
            ));
        }
        for (nsg, rule, at) in &self.would_delete {
            out.push(format!(
                "would delete {rule} in {} (expired {})",
                nsg_name(nsg),
                when(*at)
            ));
        }
        for (nsg, rule) in &self.no_expiry {
            out.push(format!(
                "left {rule} in {}: its description carries no expires=",
                nsg_name(nsg)
            ));
        }
        for (what, why) in &self.failures {
            out.push(format!("FAILED {what}: {why}"));
        }
        out.push(format!(
            "swept {} NSGs: {} rules in the namespace, {} deleted, {} would be deleted, {} still valid, {} baselines, {} without expiry, {} failures",
            self.nsgs,
            self.rules_in_namespace,
            self.deleted.len(),
            self.would_delete.len(),
            self.valid,
            self.baselines,
            self.no_expiry.len(),
            self.failures.len()
        ));
        out
    }
}

/// How to sweep.
pub struct Sweep<'a> {
    pub nsgs: &'a NsgManager,
    pub namespace: &'a RulePrefix,
    pub grace: Duration,
    /// List what would be deleted; delete nothing.
    pub dry_run: bool,
}

impl Sweep<'_> {
    /// Sweeps `nsg_ids` one after the other (deletions in one NSG are serialised by Azure
    /// anyway), at `now_ms`.
    pub async fn run(&self, nsg_ids: &[String], now_ms: i64) -> SweepReport {
        let mut report = SweepReport::default();
        for nsg in nsg_ids {
            report.nsgs += 1;
            if let Err(e) = self.sweep_nsg(nsg, now_ms, &mut report).await {
                report
                    .failures
                    .push((nsg_name(nsg).to_string(), e.to_string()));
            }
        }
        report
    }

    async fn sweep_nsg(
        &self,
        nsg: &str,
        now_ms: i64,
        report: &mut SweepReport,
    ) -> Result<(), AzureError> {
        let cutoff = now_ms - self.grace.as_millis() as i64;
        for rule in self.nsgs.list_rules(nsg).await? {
            if !self.namespace.owns(&rule.name) {
                continue;
            }
            report.rules_in_namespace += 1;
            if self.namespace.is_baseline(&rule.name) {
                report.baselines += 1;
                continue;
            }
            let expiry = rule
                .properties
                .description
                .as_deref()
                .and_then(description_expiry);
            let Some(expiry) = expiry else {
                report.no_expiry.push((nsg.to_string(), rule.name));
                continue;
            };
            if expiry > cutoff {
                report.valid += 1;
            } else if self.dry_run {
                report
                    .would_delete
                    .push((nsg.to_string(), rule.name, expiry));
            } else {
                match self.nsgs.remove_rule(nsg, &rule.name).await {
                    Ok(()) => report.deleted.push((nsg.to_string(), rule.name, expiry)),
                    Err(e) => report
                        .failures
                        .push((format!("{} in {}", rule.name, nsg_name(nsg)), e.to_string())),
                }
            }
        }
        Ok(())
    }
}
