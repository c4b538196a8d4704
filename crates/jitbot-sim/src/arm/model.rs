//! The emulator's own model of the security rules it stores and serves, following the official
//! `Microsoft.Network` swagger (api-version 2024-05-01, `shared/reference/arm-securityrules-swagger.json`).
//!
//! It deliberately does not reuse jitbot's client types (`jitbot::azure::SecurityRule`): the
//! emulator stands for Azure, so a client that drifted from the swagger is caught by a server that
//! did not drift with it. Field names, order and skipping rules match the swagger and what real ARM
//! sends: camelCase, optional fields absent when `None`, and (see `normalize_plurals`) empty arrays
//! for the plural fields a PUT did not give.

use serde::{Deserialize, Serialize};

/// Network security rule (`SecurityRule` in the swagger), as stored by the emulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRule {
    /// Rule name, unique within the NSG.
    #[serde(default)]
    pub name: String,
    /// Full resource id (read-only; the emulator fills it in).
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
    /// `Tcp|Udp|Icmp|Esp|Ah|*`; stored with the case as sent.
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

/// The plural field when it holds something, else the singular one (the emulator stores empty
/// arrays for the plural fields a PUT did not give).
fn one_or_many(one: &Option<String>, many: &Option<Vec<String>>) -> Vec<String> {
    match (one, many) {
        (_, Some(many)) if !many.is_empty() => many.clone(),
        (Some(one), _) => vec![one.clone()],
        _ => Vec::new(),
    }
}
