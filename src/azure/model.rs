//! Serde model of the ARM resources jitbot reads and writes, following the official
//! `Microsoft.Network` swagger (api-version 2024-05-01, `shared/reference/arm-securityrules-swagger.json`).
//!
//! Field names are camelCase as on the wire; optional fields are skipped when `None` so a PUT body
//! carries exactly what jitbot means (in particular never both `destinationPortRange` and
//! `destinationPortRanges`). ARM answers with empty arrays for the plural fields it was not
//! given; [`SecurityRuleProperties::destination_ports`] and friends treat those as absent.

use crate::access::{AddressSet, Admission, PortSet, Protocol};
use serde::{Deserialize, Serialize};

/// Network security rule (`SecurityRule` in the swagger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRule {
    /// Rule name, unique within the NSG.
    #[serde(default)]
    pub name: String,
    /// Full resource id (read-only; ARM fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Weak etag shared with the NSG (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Resource type, `Microsoft.Network/networkSecurityGroups/securityRules` (read-only).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The rule itself.
    pub properties: SecurityRuleProperties,
}

/// `SecurityRulePropertiesFormat`: `protocol`, `access`, `priority` and `direction` are required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRuleProperties {
    /// At most 140 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `Tcp|Udp|Icmp|Esp|Ah|*`; ARM stores the case as sent, so compare case-insensitively.
    pub protocol: String,
    /// Single port, `N-M` range or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range: Option<String>,
    /// Several ports or ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_ranges: Option<Vec<String>>,
    /// Single port, `N-M` range or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port_range: Option<String>,
    /// Several ports or ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port_ranges: Option<Vec<String>>,
    /// CIDR, address, `*` or a service tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address_prefix: Option<String>,
    /// Several CIDRs or addresses (no `*`, no service tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address_prefixes: Option<Vec<String>>,
    /// Application security groups as source (kept opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_application_security_groups: Option<Vec<serde_json::Value>>,
    /// CIDR, address, `*` or a service tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_address_prefix: Option<String>,
    /// Several CIDRs or addresses (no `*`, no service tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_address_prefixes: Option<Vec<String>>,
    /// Application security groups as destination (kept opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_application_security_groups: Option<Vec<serde_json::Value>>,
    /// `Allow|Deny`.
    pub access: String,
    /// 100–4096 for user rules (default rules live at 65000+), unique per direction.
    pub priority: i32,
    /// `Inbound|Outbound`.
    pub direction: String,
    /// `Succeeded|Updating|Deleting|Failed` (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

impl SecurityRuleProperties {
    /// True for an inbound rule (case-insensitive, as ARM compares).
    pub fn is_inbound(&self) -> bool {
        self.direction.eq_ignore_ascii_case("Inbound")
    }

    /// Destination ports of the rule, from whichever of the singular or plural field is set.
    pub fn destination_ports(&self) -> Vec<String> {
        one_or_many(&self.destination_port_range, &self.destination_port_ranges)
    }

    /// Source address prefixes, from whichever of the singular or plural field is set.
    pub fn source_prefixes(&self) -> Vec<String> {
        one_or_many(&self.source_address_prefix, &self.source_address_prefixes)
    }

    /// Destination address prefixes, from whichever of the singular or plural field is set.
    pub fn destination_prefixes(&self) -> Vec<String> {
        one_or_many(
            &self.destination_address_prefix,
            &self.destination_address_prefixes,
        )
    }

    /// Source ports of the rule, from whichever of the singular or plural field is set.
    pub fn source_ports(&self) -> Vec<String> {
        one_or_many(&self.source_port_range, &self.source_port_ranges)
    }

    /// Every source the rule names: its prefixes, then its application security groups as
    /// `asg:<resource id>`.
    pub fn source_addresses(&self) -> Vec<String> {
        let mut all = self.source_prefixes();
        all.extend(group_tags(&self.source_application_security_groups));
        all
    }

    /// Every destination the rule names: its prefixes, then its application security groups as
    /// `asg:<resource id>`.
    pub fn destination_addresses(&self) -> Vec<String> {
        let mut all = self.destination_prefixes();
        all.extend(group_tags(&self.destination_application_security_groups));
        all
    }

    /// What the rule lets through, as sets, so the reconciler can tell an edit that widens a
    /// grant from one that narrows it.
    ///
    /// Read conservatively: an application security group is an opaque set of addresses (a tag);
    /// an access other than `Deny` counts as `Allow`, a direction other than `Inbound` as another
    /// direction, and an unknown protocol or an unreadable port list as "every one" (see
    /// [`crate::access`]), so nothing unreadable ever looks narrower than it is.
    pub fn admission(&self) -> Admission {
        Admission {
            inbound: self.is_inbound(),
            allow: !self.access.eq_ignore_ascii_case("Deny"),
            protocol: Protocol::parse(&self.protocol),
            sources: AddressSet::parse(&self.source_addresses()),
            destinations: AddressSet::parse(&self.destination_addresses()),
            ports: PortSet::parse(&self.destination_ports()),
            source_ports: PortSet::parse(&self.source_ports()),
            priority: self.priority,
        }
    }
}

/// Application security groups (`[{"id": "/subscriptions/…/applicationSecurityGroups/web"}]`) as
/// `asg:<id>`: never an address, `*` or a service tag, so [`AddressSet::parse`] keeps each as an
/// opaque tag. A group without an id is kept by its JSON text, so it still counts as a source.
fn group_tags(groups: &Option<Vec<serde_json::Value>>) -> Vec<String> {
    groups
        .iter()
        .flatten()
        .map(|g| match g.get("id").and_then(|id| id.as_str()) {
            Some(id) => format!("asg:{id}"),
            None => format!("asg:{g}"),
        })
        .collect()
}

fn one_or_many(one: &Option<String>, many: &Option<Vec<String>>) -> Vec<String> {
    match (one, many) {
        (_, Some(many)) if !many.is_empty() => many.clone(),
        (Some(one), _) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// `SecurityRuleListResult`: one page of `GET …/securityRules`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRuleListResult {
    /// Rules on this page.
    #[serde(default)]
    pub value: Vec<SecurityRule>,
    /// Absolute URL of the next page, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// The parts of a `NetworkSecurityGroup` jitbot needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSecurityGroup {
    /// Full resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// NSG name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Azure region, e.g. `westeurope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Weak etag that changes with every rule change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Rules and default rules.
    #[serde(default)]
    pub properties: NetworkSecurityGroupProperties,
}

/// `NetworkSecurityGroupPropertiesFormat` (subset).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSecurityGroupProperties {
    /// The customer's and jitbot's rules.
    #[serde(default)]
    pub security_rules: Vec<SecurityRule>,
    /// Azure's built-in rules at priority 65000 and above.
    #[serde(default)]
    pub default_security_rules: Vec<SecurityRule>,
    /// Provisioning state of the NSG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<String>,
}

/// `CloudError`: `{"error":{"code","message","details":[]}}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloudError {
    /// The error body.
    #[serde(default)]
    pub error: CloudErrorBody,
}

/// `CloudErrorBody`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CloudErrorBody {
    /// Invariant error code, e.g. `SecurityRuleConflict`.
    #[serde(default)]
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Property in error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Nested details, e.g. `RetryableErrorDueToAnotherOperation`.
    #[serde(default)]
    pub details: Vec<CloudErrorBody>,
}

/// Body of an `Azure-AsyncOperation` poll (`AzureAsyncOperationResult`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AsyncOperationResult {
    /// `InProgress|Succeeded|Failed|Canceled`.
    #[serde(default)]
    pub status: String,
    /// Why the operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CloudErrorBody>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Drift;
    use serde_json::json;

    /// A rule as ARM returns it, with the empty plural arrays it echoes.
    fn rule(body: serde_json::Value) -> SecurityRuleProperties {
        serde_json::from_value(body).unwrap()
    }

    fn approved() -> SecurityRuleProperties {
        rule(json!({
            "protocol": "Tcp",
            "sourcePortRange": "*",
            "sourcePortRanges": [],
            "destinationPortRange": "22",
            "destinationPortRanges": [],
            "sourceAddressPrefix": "203.0.113.7",
            "sourceAddressPrefixes": [],
            "destinationAddressPrefix": "10.0.1.4",
            "destinationAddressPrefixes": [],
            "access": "Allow",
            "priority": 100,
            "direction": "Inbound",
            "provisioningState": "Succeeded"
        }))
    }

    #[test]
    fn a_rule_reads_as_the_sets_it_admits() {
        let a = approved().admission();
        assert!(a.inbound && a.allow);
        assert_eq!(a.protocol, Protocol::Tcp);
        assert_eq!(a.sources, AddressSet::parse(&["203.0.113.7"]));
        assert_eq!(a.destinations, AddressSet::parse(&["10.0.1.4"]));
        assert_eq!(a.ports, PortSet::of(&[22]));
        assert_eq!(a.source_ports, PortSet::any());
        assert_eq!(a.priority, 100);
    }

    #[test]
    fn edits_compare_as_widened_or_narrowed() {
        type Edit = fn(&mut SecurityRuleProperties);
        let rows: &[(&str, Edit, Drift)] = &[
            ("unchanged", |_| {}, Drift::None),
            (
                "plural ports, same set",
                |p| {
                    p.destination_port_range = None;
                    p.destination_port_ranges = Some(vec!["22-22".into()]);
                },
                Drift::None,
            ),
            (
                "source in the plural field",
                |p| {
                    p.source_address_prefix = None;
                    p.source_address_prefixes = Some(vec!["203.0.113.0/24".into()]);
                },
                Drift::Widened(vec!["source"]),
            ),
            (
                "source application security group",
                |p| {
                    p.source_address_prefix = None;
                    p.source_application_security_groups = Some(vec![json!({
                        "id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/applicationSecurityGroups/web"
                    })]);
                },
                Drift::Widened(vec!["source"]),
            ),
            (
                "destination application security group",
                |p| {
                    p.destination_address_prefix = None;
                    p.destination_application_security_groups =
                        Some(vec![json!({ "id": "asg-1" })]);
                },
                Drift::Widened(vec!["destination"]),
            ),
            (
                "source port ranges narrowed",
                |p| {
                    p.source_port_range = None;
                    p.source_port_ranges = Some(vec!["1024-65535".into()]);
                },
                Drift::Narrowed(vec!["source ports"]),
            ),
            (
                "protocol * in lower case access",
                |p| {
                    p.protocol = "*".into();
                    p.access = "allow".into();
                },
                Drift::Widened(vec!["protocol"]),
            ),
            (
                "deny in any case",
                |p| p.access = "deny".into(),
                Drift::Narrowed(vec!["access"]),
            ),
            (
                "unknown access counts as Allow",
                |p| {
                    p.access = "Maybe".into();
                    p.source_address_prefix = Some("*".into());
                },
                Drift::Widened(vec!["source"]),
            ),
            (
                "outbound",
                |p| p.direction = "Outbound".into(),
                Drift::Widened(vec!["direction"]),
            ),
        ];
        let base = approved().admission();
        for (name, edit, want) in rows {
            let mut p = approved();
            edit(&mut p);
            assert_eq!(&p.admission().compare(&base), want, "{name}");
        }
    }

    #[test]
    fn groups_are_named_as_addresses() {
        let mut p = approved();
        p.source_address_prefix = None;
        p.source_application_security_groups = Some(vec![json!({ "id": "g1" }), json!({})]);
        assert_eq!(p.source_addresses(), vec!["asg:g1", "asg:{}"]);
        assert_eq!(p.destination_addresses(), vec!["10.0.1.4"]);
    }
}
