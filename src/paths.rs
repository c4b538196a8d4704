//! Where each target's traffic goes now: the NSGs a grant's rule must be opened in (in the order
//! Azure evaluates them: the subnet's, then the NIC's) and the destination address.
//!
//! A target written as `nsg` + `destination` is what the policy says. A `vm` target is resolved
//! through ARM ([`crate::azure::inventory::Inventory::resolve_vm`]) by the worker's singleton
//! `resolve_targets` job, at start and every `worker.resolve_interval`, and the result is stored
//! (`target_paths`) so every replica uses the same path; a VM that moved (new address, an NSG
//! attached or detached, gone) is reported once. New grants use the current path; grants already
//! open keep the NSGs they were opened in (recorded with the request), so they close where they
//! opened.

use serde::{Deserialize, Serialize};

use crate::azure::inventory::{Inventory, VmPath};
use crate::domain::nsg_name;
use crate::policy::{Placement, Policy};
use crate::store::{Result, Store, Tx, now_ms};

/// Where a target's rule goes now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Path {
    /// NSG ids, in evaluation order; never empty.
    pub nsgs: Vec<String>,
    /// The VM's private address (or the policy's prefix).
    pub destination: String,
}

impl Path {
    /// For people and the audit trail: `10.0.1.4 behind web1-subnet-nsg, web1-nic-nsg`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.nsgs.iter().map(|n| nsg_name(n)).collect();
        format!("{} behind {}", self.destination, names.join(", "))
    }
}

impl From<&VmPath> for Path {
    fn from(p: &VmPath) -> Path {
        Path {
            nsgs: p.nsgs.iter().map(|n| n.as_str().to_string()).collect(),
            destination: p.private_ip.to_string(),
        }
    }
}

/// A stored resolution: the path, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stored {
    Path(Path),
    Error(String),
}

impl Stored {
    fn into_result(self) -> std::result::Result<Path, String> {
        match self {
            Stored::Path(p) => Ok(p),
            Stored::Error(why) => Err(why),
        }
    }

    fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A `vm` target's path changed (or was found, or lost) since the last resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub target: String,
    /// `None` the first time the target is resolved.
    pub before: Option<std::result::Result<Path, String>>,
    pub after: std::result::Result<Path, String>,
    /// The stored texts, for the compare-and-swap.
    old_text: Option<String>,
    new_text: String,
}

impl Change {
    /// Stores the new path in `tx` unless another replica changed it since it was read; false
    /// then (that replica reports it).
    pub async fn record(&self, tx: &mut Tx) -> Result<bool> {
        tx.swap_target_path(
            &self.target,
            self.old_text.as_deref(),
            &self.new_text,
            now_ms(),
        )
        .await
    }

    /// Whether people should hear of it: a move or a loss, not a first successful resolution.
    pub fn worth_reporting(&self) -> bool {
        self.before.is_some() || self.after.is_err()
    }

    /// One sentence for the audit channel.
    pub fn sentence(&self) -> String {
        let side = |r: &std::result::Result<Path, String>| match r {
            Ok(p) => p.describe(),
            Err(why) => format!("not found ({why})"),
        };
        match &self.before {
            None => format!("Target {}: {}.", self.target, side(&self.after)),
            Some(before) => format!(
                "Target {} moved: was {}, now {}. New grants use the new path; open grants close where they opened.",
                self.target,
                side(before),
                side(&self.after)
            ),
        }
    }
}

/// Where `target`'s rule goes now, or why that is not known (a sentence for the requester).
pub async fn current(
    policy: &Policy,
    store: &Store,
    target: &str,
) -> Result<std::result::Result<Path, String>> {
    let Some(t) = policy.targets.get(target) else {
        return Ok(Err(format!("{target} is not a target")));
    };
    Ok(match &t.placement {
        Placement::Nsg { nsg, destination } => Ok(Path {
            nsgs: vec![nsg.clone()],
            destination: destination.clone(),
        }),
        Placement::Vm { .. } => match store.target_path(target).await? {
            None => Err("its VM has not been looked up in Azure yet".into()),
            Some(text) => parse(&text).into_result(),
        },
    })
}

/// Every NSG some target's rule goes into now (each once, case-insensitively), for the
/// reconciler.
pub async fn all_nsgs(policy: &Policy, store: &Store) -> Result<Vec<String>> {
    let mut nsgs: Vec<String> = Vec::new();
    for t in policy.targets.keys() {
        if let Ok(path) = current(policy, store, t).await? {
            for nsg in path.nsgs {
                if !nsgs.iter().any(|n| n.eq_ignore_ascii_case(&nsg)) {
                    nsgs.push(nsg);
                }
            }
        }
    }
    Ok(nsgs)
}

/// Resolves every `vm` target through ARM; returns how each differs from what is stored (the
/// caller records each with [`Change::record`] and reports it in the same transaction). A
/// target ARM could not be asked about right now (throttled, down) keeps what is known.
pub async fn resolve_all(
    policy: &Policy,
    store: &Store,
    inventory: &Inventory,
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for t in policy.targets.values() {
        let Placement::Vm { id } = &t.placement else {
            continue;
        };
        let after = match inventory.resolve_vm(id).await {
            Ok(path) => Stored::Path(Path::from(&path)),
            Err(crate::azure::ResolveError::Azure(e)) if e.is_retryable() => continue,
            Err(e) => Stored::Error(e.to_string()),
        };
        let before = store.target_path(&t.name).await?;
        let new_text = after.text();
        if before.as_deref() == Some(new_text.as_str()) {
            continue;
        }
        changes.push(Change {
            target: t.name.clone(),
            before: before.as_deref().map(|b| parse(b).into_result()),
            after: after.into_result(),
            old_text: before,
            new_text,
        });
    }
    Ok(changes)
}

fn parse(text: &str) -> Stored {
    serde_json::from_str(text)
        .unwrap_or_else(|e| Stored::Error(format!("unreadable stored path ({e})")))
}
