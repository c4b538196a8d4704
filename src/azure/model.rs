//! Serde model of the ARM resources jitbot reads and writes, following the official
//! `Microsoft.Network` swagger (api-version 2024-05-01, `shared/reference/arm-securityrules-swagger.json`).
//!
//! Field names are camelCase as on the wire; optional fields are skipped when `None` so a PUT body
//! carries exactly what jitbot means (in particular never both `destinationPortRange` and
//! `destinationPortRanges`). ARM answers with empty arrays for the plural fields it was not
//! given; [`SecurityRuleProperties::destination_ports`] and friends treat those as absent.

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
