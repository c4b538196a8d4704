//! The emulator's inventory: virtual machines (`Microsoft.Compute`), network interfaces, virtual
//! networks with their subnets, the list endpoints per subscription and per resource group (paged
//! by `nextLink`), and the permissions API (`Microsoft.Authorization/permissions`).
//!
//! Shapes follow PROTOCOLS.md ("Azure — VMs, NICs, subnets"): a VM names its NICs in
//! `properties.networkProfile.networkInterfaces[]` (`id`, `properties.primary`); a NIC has
//! `ipConfigurations[]` (`privateIPAddress`, `primary`, `subnet.id`) and an optional
//! `networkSecurityGroup.id`; a virtual network carries its subnets inline, each with
//! `addressPrefix` and an optional `networkSecurityGroup.id`. The NSG's own GET (in `arm.rs`) shows
//! what it is attached to, computed from these.
//!
//! Tests build a world with the `ArmSim` builders (`add_vnet`, `add_nic`, `add_vm`,
//! `attach_nsg_to_nic`, `set_permissions`, …); nothing here is reachable by a PUT.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Reply;

/// api-versions the emulator serves for `Microsoft.Compute` (real ARM refuses others with 400
/// `NoRegisteredProviderFound`; a client that sends the Network version to Compute is caught).
const COMPUTE_API_VERSIONS: &[&str] = &[
    "2023-03-01",
    "2023-07-01",
    "2023-09-01",
    "2024-03-01",
    "2024-07-01",
    "2024-11-01",
];
/// api-versions of `Microsoft.Authorization/permissions`.
const AUTHORIZATION_API_VERSIONS: &[&str] = &["2015-07-01", "2018-01-01-preview", "2022-04-01"];

/// The bot's role as shipped, served by the permissions API unless a test configures a scope.
const BOT_ROLE: &str = include_str!("../../../../manifests/azure/bot-role.json");

/// A VM's reference to one of its NICs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicRef {
    /// NIC resource id.
    pub id: String,
    /// `properties.primary`; absent on a VM with a single NIC, as ARM often leaves it.
    pub primary: Option<bool>,
}

/// A virtual machine as the emulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Resource id (original case).
    pub id: String,
    /// Azure region.
    pub location: String,
    /// `networkProfile.networkInterfaces[]`.
    pub nics: Vec<NicRef>,
}

/// One IP configuration of a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfigSpec {
    /// Name, e.g. `ipconfig1`.
    pub name: String,
    /// `privateIPAddress` (absent while a dynamic address is being allocated).
    pub private_ip: Option<String>,
    /// `primary`.
    pub primary: Option<bool>,
    /// `subnet.id`.
    pub subnet_id: Option<String>,
}

/// A network interface as the emulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// Resource id (original case).
    pub id: String,
    /// Azure region.
    pub location: String,
    /// `networkSecurityGroup.id`.
    pub nsg_id: Option<String>,
    /// `ipConfigurations[]`.
    pub ip_configurations: Vec<IpConfigSpec>,
}

/// A subnet, inline in its virtual network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetSpec {
    /// Subnet name.
    pub name: String,
    /// `addressPrefix`, e.g. `10.0.1.0/24`.
    pub address_prefix: String,
    /// `networkSecurityGroup.id`.
    pub nsg_id: Option<String>,
}

/// A virtual network as the emulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnetSpec {
    /// Resource id (original case).
    pub id: String,
    /// Azure region.
    pub location: String,
    /// Its subnets.
    pub subnets: Vec<SubnetSpec>,
}

/// What the permissions API answers for one scope: `{"actions": […], "notActions": […]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PermissionSet {
    /// Allowed actions (wildcards as written in the role).
    pub actions: Vec<String>,
    /// Actions taken out again.
    pub not_actions: Vec<String>,
}

impl PermissionSet {
    /// The shipped bot role (`manifests/azure/bot-role.json`).
    pub fn bot_role() -> PermissionSet {
        let role: Value = serde_json::from_str(BOT_ROLE).unwrap_or(Value::Null);
        let list = |key: &str| -> Vec<String> {
            role[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        PermissionSet {
            actions: list("Actions"),
            not_actions: list("NotActions"),
        }
    }
}

/// Everything beyond NSGs, keyed by lower-cased resource id (sorted, so paging is stable).
#[derive(Debug, Default)]
pub(super) struct Inventory {
    pub(super) vms: BTreeMap<String, VmSpec>,
    pub(super) nics: BTreeMap<String, NicSpec>,
    pub(super) vnets: BTreeMap<String, VnetSpec>,
    /// Role assignments by lower-cased scope; a request is answered with every assignment at or
    /// above its scope, or the bot role when there is none.
    pub(super) permissions: BTreeMap<String, PermissionSet>,
}

/// Which kind of resource a list or GET is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Vm,
    Nic,
    Vnet,
    Nsg,
}

impl Kind {
    fn from_segments(provider: &str, kind: &str) -> Option<Kind> {
        let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match () {
            _ if is(provider, "Microsoft.Compute") && is(kind, "virtualMachines") => Some(Kind::Vm),
            _ if is(provider, "Microsoft.Network") && is(kind, "networkInterfaces") => {
                Some(Kind::Nic)
            }
            _ if is(provider, "Microsoft.Network") && is(kind, "virtualNetworks") => {
                Some(Kind::Vnet)
            }
            _ if is(provider, "Microsoft.Network") && is(kind, "networkSecurityGroups") => {
                Some(Kind::Nsg)
            }
            _ => None,
        }
    }
}

/// An inventory request.
#[derive(Debug, Clone)]
pub(super) enum InvRoute {
    /// `GET /subscriptions/{s}[/resourceGroups/{rg}]/providers/{p}/{kind}`.
    List {
        sub: String,
        /// Lower-cased id prefix every listed resource starts with.
        prefix: String,
        kind: Kind,
        /// The path, for `nextLink`.
        path: String,
    },
    /// `GET …/virtualMachines/{vm}`, `…/networkInterfaces/{nic}`, `…/virtualNetworks/{vnet}`.
    Get { sub: String, kind: Kind, id: String },
    /// `GET …/virtualNetworks/{vnet}/subnets/{subnet}`.
    Subnet {
        sub: String,
        vnet_id: String,
        name: String,
    },
    /// `GET {scope}/providers/Microsoft.Authorization/permissions`.
    Permissions { sub: String, scope: String },
}

impl InvRoute {
    pub(super) fn subscription(&self) -> &str {
        match self {
            InvRoute::List { sub, .. }
            | InvRoute::Get { sub, .. }
            | InvRoute::Subnet { sub, .. }
            | InvRoute::Permissions { sub, .. } => sub,
        }
    }
}

/// Parses the inventory paths; `None` for anything else (NSG routes are parsed in `arm.rs`).
pub(super) fn parse(path: &str) -> Option<InvRoute> {
    let path = path.trim_end_matches('/');
    let seg: Vec<&str> = path.split('/').collect();
    let is = |i: usize, s: &str| seg.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    if seg.len() < 3 || !seg[0].is_empty() || !is(1, "subscriptions") || seg[2].is_empty() {
        return None;
    }
    let sub = seg[2].to_string();
    let n = seg.len();
    if n >= 5 && is(n - 3, "providers") && is(n - 2, "Microsoft.Authorization") {
        return is(n - 1, "permissions").then(|| InvRoute::Permissions {
            sub,
            scope: seg[..n - 3].join("/"),
        });
    }
    // Lists: /subscriptions/s/providers/P/K or /subscriptions/s/resourceGroups/rg/providers/P/K.
    let (provider_at, prefix) = if is(3, "providers") {
        (3, format!("/subscriptions/{}/", seg[2]))
    } else if is(3, "resourceGroups") && is(5, "providers") && !seg[4].is_empty() {
        (
            5,
            format!("/subscriptions/{}/resourcegroups/{}/", seg[2], seg[4]),
        )
    } else {
        return None;
    };
    let kind = Kind::from_segments(seg.get(provider_at + 1)?, seg.get(provider_at + 2)?)?;
    match n - provider_at {
        3 => Some(InvRoute::List {
            sub,
            prefix: prefix.to_ascii_lowercase(),
            kind,
            path: path.to_string(),
        }),
        4 if provider_at == 5 && kind != Kind::Nsg && !seg[n - 1].is_empty() => {
            Some(InvRoute::Get {
                sub,
                kind,
                id: path.to_string(),
            })
        }
        6 if provider_at == 5 && kind == Kind::Vnet && is(n - 2, "subnets") => {
            Some(InvRoute::Subnet {
                sub,
                vnet_id: seg[..n - 2].join("/"),
                name: seg[n - 1].to_string(),
            })
        }
        _ => None,
    }
}

/// Whether `api_version` suits the route's resource provider.
pub(super) fn check_api_version(route: &InvRoute, api_version: &str) -> Result<(), Reply> {
    let (namespace, allowed) = match route {
        InvRoute::List { kind: Kind::Vm, .. } | InvRoute::Get { kind: Kind::Vm, .. } => {
            ("Microsoft.Compute", COMPUTE_API_VERSIONS)
        }
        InvRoute::Permissions { .. } => ("Microsoft.Authorization", AUTHORIZATION_API_VERSIONS),
        _ => return Ok(()),
    };
    if allowed.contains(&api_version) {
        Ok(())
    } else {
        Err(Reply::bad_request(
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'westeurope' and API version \
                 '{api_version}' for type of {namespace}. The supported api-versions are '{}'.",
                allowed.join(", ")
            ),
        ))
    }
}

/// The last path segment of a resource id.
pub(super) fn name_of(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

fn id_ref(id: &Option<String>) -> Option<Value> {
    id.as_ref().map(|id| json!({ "id": id }))
}

impl Inventory {
    pub(super) fn vm_json(&self, vm: &VmSpec) -> Value {
        let nics: Vec<Value> = vm
            .nics
            .iter()
            .map(|n| match n.primary {
                Some(p) => json!({ "id": n.id, "properties": { "primary": p } }),
                None => json!({ "id": n.id }),
            })
            .collect();
        json!({
            "id": vm.id,
            "name": name_of(&vm.id),
            "type": "Microsoft.Compute/virtualMachines",
            "location": vm.location,
            "properties": {
                "vmId": stable_guid(&vm.id),
                "hardwareProfile": { "vmSize": "Standard_B2s" },
                "provisioningState": "Succeeded",
                "networkProfile": { "networkInterfaces": nics },
            }
        })
    }

    /// The VM a NIC belongs to (`properties.virtualMachine.id`).
    fn vm_of_nic(&self, nic_id: &str) -> Option<&VmSpec> {
        self.vms
            .values()
            .find(|vm| vm.nics.iter().any(|n| n.id.eq_ignore_ascii_case(nic_id)))
    }

    pub(super) fn nic_json(&self, nic: &NicSpec) -> Value {
        let configs: Vec<Value> = nic
            .ip_configurations
            .iter()
            .map(|c| {
                let mut props = json!({
                    "provisioningState": "Succeeded",
                    "privateIPAllocationMethod": "Dynamic",
                    "privateIPAddressVersion": "IPv4",
                });
                if let Some(ip) = &c.private_ip {
                    props["privateIPAddress"] = json!(ip);
                }
                if let Some(p) = c.primary {
                    props["primary"] = json!(p);
                }
                if let Some(s) = id_ref(&c.subnet_id) {
                    props["subnet"] = s;
                }
                json!({
                    "id": format!("{}/ipConfigurations/{}", nic.id, c.name),
                    "name": c.name,
                    "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                    "properties": props,
                })
            })
            .collect();
        let mut props = json!({
            "provisioningState": "Succeeded",
            "resourceGuid": stable_guid(&nic.id),
            "ipConfigurations": configs,
            "enableAcceleratedNetworking": false,
            "enableIPForwarding": false,
        });
        if let Some(nsg) = id_ref(&nic.nsg_id) {
            props["networkSecurityGroup"] = nsg;
        }
        if let Some(vm) = self.vm_of_nic(&nic.id) {
            props["virtualMachine"] = json!({ "id": vm.id });
            props["primary"] = json!(
                vm.nics.len() == 1
                    || vm
                        .nics
                        .iter()
                        .any(|n| n.id.eq_ignore_ascii_case(&nic.id) && n.primary == Some(true))
            );
        }
        json!({
            "id": nic.id,
            "name": name_of(&nic.id),
            "type": "Microsoft.Network/networkInterfaces",
            "location": nic.location,
            "etag": format!("W/\"{}\"", stable_guid(&format!("{}/etag", nic.id))),
            "properties": props,
        })
    }

    /// IP configurations (by id) that sit in a subnet.
    fn configs_in_subnet(&self, subnet_id: &str) -> Vec<Value> {
        self.nics
            .values()
            .flat_map(|nic| {
                nic.ip_configurations
                    .iter()
                    .filter(|c| {
                        c.subnet_id
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case(subnet_id))
                    })
                    .map(|c| json!({ "id": format!("{}/ipConfigurations/{}", nic.id, c.name) }))
            })
            .collect()
    }

    pub(super) fn subnet_json(&self, vnet: &VnetSpec, s: &SubnetSpec) -> Value {
        let id = format!("{}/subnets/{}", vnet.id, s.name);
        let mut props = json!({
            "provisioningState": "Succeeded",
            "addressPrefix": s.address_prefix,
            "privateEndpointNetworkPolicies": "Disabled",
        });
        if let Some(nsg) = id_ref(&s.nsg_id) {
            props["networkSecurityGroup"] = nsg;
        }
        let configs = self.configs_in_subnet(&id);
        if !configs.is_empty() {
            props["ipConfigurations"] = json!(configs);
        }
        json!({
            "id": id,
            "name": s.name,
            "type": "Microsoft.Network/virtualNetworks/subnets",
            "etag": format!("W/\"{}\"", stable_guid(&format!("{id}/etag"))),
            "properties": props,
        })
    }

    pub(super) fn vnet_json(&self, vnet: &VnetSpec) -> Value {
        let subnets: Vec<Value> = vnet
            .subnets
            .iter()
            .map(|s| self.subnet_json(vnet, s))
            .collect();
        let prefixes: Vec<&str> = vnet
            .subnets
            .iter()
            .map(|s| s.address_prefix.as_str())
            .collect();
        json!({
            "id": vnet.id,
            "name": name_of(&vnet.id),
            "type": "Microsoft.Network/virtualNetworks",
            "location": vnet.location,
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": stable_guid(&vnet.id),
                "addressSpace": { "addressPrefixes": prefixes },
                "subnets": subnets,
            }
        })
    }

    /// What an NSG is attached to: `(networkInterfaces[], subnets[])` as `{"id"}` references.
    pub(super) fn attachments(&self, nsg_id: &str) -> (Vec<Value>, Vec<Value>) {
        let same =
            |o: &Option<String>| o.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(nsg_id));
        let nics = self
            .nics
            .values()
            .filter(|n| same(&n.nsg_id))
            .map(|n| json!({ "id": n.id }))
            .collect();
        let subnets = self
            .vnets
            .values()
            .flat_map(|v| {
                v.subnets
                    .iter()
                    .filter(|s| same(&s.nsg_id))
                    .map(move |s| json!({ "id": format!("{}/subnets/{}", v.id, s.name) }))
            })
            .collect();
        (nics, subnets)
    }

    /// `GET` of one VM, NIC or virtual network.
    pub(super) fn get(&self, kind: Kind, id: &str) -> Reply {
        let key = id.to_ascii_lowercase();
        let body = match kind {
            Kind::Vm => self.vms.get(&key).map(|v| self.vm_json(v)),
            Kind::Nic => self.nics.get(&key).map(|n| self.nic_json(n)),
            Kind::Vnet => self.vnets.get(&key).map(|v| self.vnet_json(v)),
            Kind::Nsg => None,
        };
        match body {
            Some(b) => Reply::json(StatusCode::OK, b),
            None => not_found(kind, id),
        }
    }

    /// `GET` of one subnet.
    pub(super) fn subnet(&self, vnet_id: &str, name: &str) -> Reply {
        let found = self.vnets.get(&vnet_id.to_ascii_lowercase()).and_then(|v| {
            v.subnets
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(name))
                .map(|s| self.subnet_json(v, s))
        });
        match found {
            Some(b) => Reply::json(StatusCode::OK, b),
            None => Reply::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("Resource {vnet_id}/subnets/{name} not found."),
            ),
        }
    }

    /// The permissions API: every assignment at or above `scope`, else the bot role.
    pub(super) fn permissions(&self, scope: &str) -> Reply {
        let scope = scope.to_ascii_lowercase();
        let mut value: Vec<Value> = self
            .permissions
            .iter()
            .filter(|(s, _)| scope == **s || scope.starts_with(&format!("{s}/")))
            .map(|(_, p)| permission_json(p))
            .collect();
        if value.is_empty() {
            value.push(permission_json(&PermissionSet::bot_role()));
        }
        Reply::json(StatusCode::OK, json!({ "value": value }))
    }
}

fn permission_json(p: &PermissionSet) -> Value {
    json!({
        "actions": p.actions,
        "notActions": p.not_actions,
        "dataActions": [],
        "notDataActions": [],
    })
}

fn not_found(kind: Kind, id: &str) -> Reply {
    let type_name = match kind {
        Kind::Vm => "Microsoft.Compute/virtualMachines",
        Kind::Nic => "Microsoft.Network/networkInterfaces",
        Kind::Vnet => "Microsoft.Network/virtualNetworks",
        Kind::Nsg => "Microsoft.Network/networkSecurityGroups",
    };
    Reply::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{type_name}/{}' was not found. For more details please go to \
             https://aka.ms/ARMResourceNotFoundFix",
            name_of(id)
        ),
    )
}

/// One page of a list: `{"value": [...], "nextLink": "…&$skiptoken=N"}` when more follow.
pub(super) fn page(
    items: Vec<Value>,
    skip: usize,
    page_size: usize,
    next_base: &str,
    api_version: &str,
) -> Reply {
    let page_size = page_size.max(1);
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(page_size).collect();
    let mut body = json!({ "value": value });
    if skip + page_size < total {
        body["nextLink"] = json!(format!(
            "{next_base}?api-version={api_version}&$skiptoken={}",
            skip + page_size
        ));
    }
    Reply::json(StatusCode::OK, body)
}

/// Whether a resource id lies under a lower-cased list prefix.
pub(super) fn under(id: &str, prefix: &str) -> bool {
    id.to_ascii_lowercase().starts_with(prefix)
}

/// A GUID-shaped id derived from a name, so GETs answer the same `vmId`/`resourceGuid` each time.
fn stable_guid(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(seed.to_ascii_lowercase().as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_recognised() {
        let sub = "/subscriptions/s1";
        assert!(matches!(
            parse(&format!(
                "{sub}/providers/Microsoft.Compute/virtualMachines"
            )),
            Some(InvRoute::List { kind: Kind::Vm, .. })
        ));
        assert!(matches!(
            parse(&format!("{sub}/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups")),
            Some(InvRoute::List { kind: Kind::Nsg, prefix, .. }) if prefix == "/subscriptions/s1/resourcegroups/rg/"
        ));
        assert!(matches!(
            parse(&format!(
                "{sub}/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/n1"
            )),
            Some(InvRoute::Get {
                kind: Kind::Nic,
                ..
            })
        ));
        assert!(matches!(
            parse(&format!("{sub}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/a")),
            Some(InvRoute::Subnet { name, .. }) if name == "a"
        ));
        assert!(matches!(
            parse(&format!("{sub}/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n/providers/Microsoft.Authorization/permissions")),
            Some(InvRoute::Permissions { scope, .. }) if scope.ends_with("networkSecurityGroups/n")
        ));
        // NSG GETs stay with arm.rs.
        assert!(
            parse(&format!(
                "{sub}/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n"
            ))
            .is_none()
        );
        assert!(parse(&format!("{sub}/providers/Microsoft.Web/sites")).is_none());
    }

    #[test]
    fn the_default_permissions_are_the_shipped_role() {
        let role = PermissionSet::bot_role();
        assert!(
            role.actions
                .contains(&"Microsoft.Network/networkSecurityGroups/securityRules/write".into())
        );
    }
}
