//! The NSG as a whole (PROTOCOLS.md, "The NSG as a whole"): `PUT …/networkSecurityGroups/{nsg}`
//! replaces the complete `properties.securityRules` list — a rule missing from the body is
//! deleted — honours `If-Match: <etag>` (412 `PreconditionFailed` when the NSG changed since the
//! read), needs `Microsoft.Network/networkSecurityGroups/write`, keeps `tags`, `flushConnection`
//! and fields the emulator does not know as sent, and runs as one asynchronous operation (one
//! write at a time per NSG, like rule writes). Also Microsoft.Network's own write cap and the
//! per-kind `Retry-After`.

use std::collections::HashSet;
use std::time::{Instant, SystemTime};

use axum::http::{Method, StatusCode};
use serde_json::Value;

use super::{
    MAX_RULES, Nsg, NsgPath, Op, OpStatus, OperationKind, RULE_TYPE, Reply, RuleEvent,
    SecurityRule, SimState, normalize_plurals, nsg_not_found, print_put, validate_properties,
    validate_rule_name,
};

/// Top-level fields of an NSG the emulator manages itself (everything else is kept as sent).
const MANAGED_TOP: &[&str] = &[
    "name",
    "id",
    "etag",
    "type",
    "location",
    "properties",
    "tags",
];
/// Properties the emulator manages itself or computes on GET.
const MANAGED_PROPS: &[&str] = &[
    "securityRules",
    "defaultSecurityRules",
    "provisioningState",
    "resourceGuid",
    "networkInterfaces",
    "subnets",
];

/// What a request carried besides its body: the bearer token and `If-Match`.
pub(super) struct Credentials<'a> {
    pub(super) bearer: Option<&'a str>,
    pub(super) if_match: Option<&'a str>,
}

pub(super) fn rule_event(nsg_id: &str, rule: &str, live: bool, at: SystemTime) -> RuleEvent {
    RuleEvent {
        nsg_id: nsg_id.to_string(),
        rule: rule.to_string(),
        live,
        at,
    }
}

/// Completes an NSG-level PUT: changed rules become `Succeeded`, removed rules go (or, if the
/// operation failed, changed rules become `Failed` and removed rules stay).
pub(super) fn nsg_put_done(
    nsg: &mut Nsg,
    op: &Op,
    at: SystemTime,
    printer: bool,
    events: &mut Vec<RuleEvent>,
) {
    let removed: HashSet<String> = op.removed.iter().map(|n| n.to_ascii_lowercase()).collect();
    if op.status == OpStatus::Succeeded {
        for name in &op.changed {
            if let Some(i) = nsg.find(name) {
                nsg.rules[i].properties.provisioning_state = Some("Succeeded".into());
                events.push(rule_event(&nsg.id, name, true, at));
                if printer {
                    print_put(&nsg.name, &nsg.rules[i], true);
                }
            }
        }
        nsg.rules
            .retain(|r| !removed.contains(&r.name.to_ascii_lowercase()));
        for name in &op.removed {
            events.push(rule_event(&nsg.id, name, false, at));
        }
        return;
    }
    for r in &mut nsg.rules {
        let state = if removed.contains(&r.name.to_ascii_lowercase()) {
            "Succeeded"
        } else if op.changed.iter().any(|c| c.eq_ignore_ascii_case(&r.name)) {
            "Failed"
        } else {
            continue;
        };
        r.properties.provisioning_state = Some(state.into());
    }
}

impl SimState {
    /// `Retry-After` for an accepted write of this kind and its polls.
    pub(super) fn retry_after(&self, kind: OperationKind) -> u64 {
        let specific = match kind {
            OperationKind::Put | OperationKind::NsgPut => self.opts.put_retry_after_secs,
            OperationKind::Delete => self.opts.delete_retry_after_secs,
        };
        specific.unwrap_or(self.opts.retry_after_secs)
    }

    /// Counts a PUT/DELETE against Microsoft.Network's cap; `Err(seconds)` to wait when full.
    pub(super) fn take_network_write(&mut self, sub: &str) -> Result<(), u64> {
        let Some(cap) = self.opts.network_write_cap else {
            return Ok(());
        };
        let now = Instant::now();
        let log = self
            .network_writes
            .entry(sub.to_ascii_lowercase())
            .or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= cap.window)
        {
            log.pop_front();
        }
        if log.len() >= cap.writes {
            let oldest = log.front().copied().unwrap_or(now);
            let wait = cap.window.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        log.push_back(now);
        Ok(())
    }

    /// `PUT …/networkSecurityGroups/{nsg}`: replace the rule list as one operation.
    pub(super) fn put_nsg(
        &mut self,
        method: &Method,
        path: &str,
        p: &NsgPath,
        body: Option<&Result<Value, serde_json::Error>>,
        if_match: Option<&str>,
        api_version: &str,
    ) -> Reply {
        let key = p.key();
        if self.opts.nsg_writes_forbidden {
            return forbidden(path);
        }
        let value = match body {
            Some(Ok(v)) => v,
            _ => {
                return Reply::bad_request(
                    "InvalidRequestFormat",
                    "Cannot parse the request. The request body is missing or is not JSON.",
                );
            }
        };
        let Some(nsg) = self.nsg(p) else {
            return nsg_not_found(p);
        };
        if let Some(tag) = if_match
            && tag != "*"
            && tag != nsg.etag
        {
            return Reply::error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                format!(
                    "The condition specified using HTTP conditional header(s) is not met: \
                     If-Match {tag} does not match the current etag {}.",
                    nsg.etag
                ),
            );
        }
        let nsg_id = nsg.id.clone();
        let wanted = match desired_rules(&nsg_id, value) {
            Ok(w) => w,
            Err(r) => return r,
        };
        if self.busy(&key).is_some() {
            return self.busy_reply(&key);
        }
        let Some(nsg) = self.nsgs.get_mut(&key) else {
            return nsg_not_found(p);
        };
        let (changed, removed) = replace_rules(nsg, wanted);
        keep_extras(nsg, value);
        nsg.touch();
        let location = nsg.location.clone();
        let first = changed.first().or(removed.first()).cloned();
        let op = self.start_op(
            method,
            path,
            p,
            &nsg_id,
            &first.unwrap_or_default(),
            OperationKind::NsgPut,
            false,
        );
        if let Some(o) = self.ops.last_mut() {
            o.changed = changed;
            o.removed = removed;
        }
        let (async_url, _) = self.op_urls(p, &location, &op, api_version);
        let body = self
            .nsgs
            .get(&key)
            .map(|n| self.with_attachments(n.to_json()))
            .unwrap_or(Value::Null);
        Reply::json(StatusCode::OK, body)
            .header("azure-asyncoperation", async_url)
            .header(
                "retry-after",
                self.retry_after(OperationKind::NsgPut).to_string(),
            )
    }
}

fn forbidden(path: &str) -> Reply {
    Reply::error(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The client 'jitbot' with object id '00000000-0000-0000-0000-000000000000' does not \
             have authorization to perform action \
             'Microsoft.Network/networkSecurityGroups/write' over scope '{path}' or the scope is \
             invalid. If access was recently granted, please refresh your credentials."
        ),
    )
}

/// The rules of the body, validated like rule PUTs: names, properties, unique priorities per
/// direction, at most 1,000.
fn desired_rules(nsg_id: &str, value: &Value) -> Result<Vec<SecurityRule>, Reply> {
    let list = value
        .pointer("/properties/securityRules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.len() > MAX_RULES {
        return Err(Reply::bad_request(
            "SecurityRulesPerNetworkSecurityGroupLimitReached",
            format!(
                "Network security group {nsg_id} cannot have more than {MAX_RULES} security rules."
            ),
        ));
    }
    let mut rules: Vec<SecurityRule> = Vec::with_capacity(list.len());
    for item in &list {
        let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
        validate_rule_name(name)?;
        let rule_id = format!("{nsg_id}/securityRules/{name}");
        let mut props = validate_properties(&rule_id, item)?;
        props.provisioning_state = None;
        normalize_plurals(&mut props);
        if let Some(other) = rules.iter().find(|r| {
            r.name.eq_ignore_ascii_case(name)
                || (r.properties.priority == props.priority
                    && r.properties
                        .direction
                        .eq_ignore_ascii_case(&props.direction))
        }) {
            return Err(Reply::bad_request(
                "SecurityRuleConflict",
                format!(
                    "Security rule {name} conflicts with rule {}. Rules cannot have the same \
                     Priority and Direction (or the same name). To learn more, see aka.ms/nsgrules.",
                    other.name
                ),
            ));
        }
        rules.push(SecurityRule {
            name: name.to_string(),
            id: Some(rule_id),
            etag: None,
            resource_type: Some(RULE_TYPE.to_string()),
            properties: props,
        });
    }
    Ok(rules)
}

/// Puts the wanted list in place: unchanged rules keep their state, new or changed ones are
/// `Updating`, missing ones stay as `Deleting` until the operation ends. Returns (changed,
/// removed) names.
fn replace_rules(nsg: &mut Nsg, wanted: Vec<SecurityRule>) -> (Vec<String>, Vec<String>) {
    let mut changed = Vec::new();
    let mut next = Vec::with_capacity(wanted.len());
    for mut rule in wanted {
        let same = nsg.find(&rule.name).map(|i| &nsg.rules[i]).filter(|old| {
            let mut was = old.properties.clone();
            was.provisioning_state = None;
            was == rule.properties
                && old.properties.provisioning_state.as_deref() == Some("Succeeded")
        });
        match same {
            Some(old) => next.push(old.clone()),
            None => {
                rule.properties.provisioning_state = Some("Updating".into());
                changed.push(rule.name.clone());
                next.push(rule);
            }
        }
    }
    let mut removed = Vec::new();
    for mut old in std::mem::take(&mut nsg.rules) {
        if !next.iter().any(|r| r.name.eq_ignore_ascii_case(&old.name)) {
            old.properties.provisioning_state = Some("Deleting".into());
            removed.push(old.name.clone());
            next.push(old);
        }
    }
    nsg.rules = next;
    (changed, removed)
}

/// Keeps `tags`, unknown properties (`flushConnection`, newer fields) and unknown top-level
/// fields as sent.
fn keep_extras(nsg: &mut Nsg, value: &Value) {
    nsg.tags = value.get("tags").cloned();
    let unmanaged = |m: Option<&serde_json::Map<String, Value>>, managed: &[&str]| {
        m.map(|m| {
            m.iter()
                .filter(|(k, _)| !managed.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
    };
    nsg.extra_props = unmanaged(
        value.get("properties").and_then(Value::as_object),
        MANAGED_PROPS,
    );
    nsg.extra = unmanaged(value.as_object(), MANAGED_TOP);
}
