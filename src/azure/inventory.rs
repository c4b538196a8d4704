//! What is deployed: virtual machines, network interfaces, virtual networks (with their subnets)
//! and NSGs (with their rules), read through the same ARM client as every other call, so retries,
//! 429 handling, tokens and metrics apply. Read-only: nothing here writes.
//!
//! * [`Inventory::resolve_vm`] follows a VM to its primary NIC's primary IP configuration and
//!   returns the [`VmPath`]: private address, subnet, and the NSGs inbound traffic passes, in
//!   evaluation order (the subnet's, then the NIC's). A VM that jitbot cannot protect is a
//!   [`ResolveError::Unsupported`] with the reason ([`Unsupported`]).
//! * The `list_*` calls read a whole [`Scope`] (a subscription or a resource group), following
//!   `nextLink`; [`VmPath::assemble`] resolves VMs from those lists without further reads.
//! * [`Inventory::permissions`] asks ARM what the caller may do at a scope without trying it, and
//!   [`allows`] evaluates one action against the answer (wildcards, `notActions`).
//!
//! Only the fields jitbot needs are parsed; unknown fields are ignored.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AzureError;
use super::arm::ArmClient;
use super::model::SecurityRule;
use crate::domain::NsgId;

/// api-version for `Microsoft.Compute` (virtual machines).
pub const COMPUTE_API_VERSION: &str = "2024-07-01";
/// api-version for `Microsoft.Authorization/permissions`.
pub const AUTHORIZATION_API_VERSION: &str = "2022-04-01";
/// Safety stop for `nextLink` paging.
const MAX_PAGES: usize = 10_000;

/// A subscription (`/subscriptions/<id>`) or a resource group
/// (`/subscriptions/<id>/resourceGroups/<name>`): what a list reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

impl Scope {
    /// Parses a subscription or resource-group id (a trailing `/` is dropped).
    pub fn parse(s: &str) -> Result<Scope, String> {
        let s = s.trim().trim_end_matches('/');
        let parts: Vec<&str> = s.split('/').collect();
        let name_ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
        };
        let ok = parts.first() == Some(&"")
            && parts
                .get(1)
                .is_some_and(|p| p.eq_ignore_ascii_case("subscriptions"))
            && parts.get(2).is_some_and(|p| name_ok(p))
            && match parts.len() {
                3 => true,
                5 => parts[3].eq_ignore_ascii_case("resourceGroups") && name_ok(parts[4]),
                _ => false,
            };
        if ok {
            Ok(Scope(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is neither a subscription (/subscriptions/<id>) nor a resource group \
                 (/subscriptions/<id>/resourceGroups/<name>)"
            ))
        }
    }

    /// The subscription of any resource id (`/subscriptions/<id>`), if it has one.
    pub fn subscription_of(resource_id: &str) -> Option<Scope> {
        let mut parts = resource_id.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(""), Some(s), Some(id)) if s.eq_ignore_ascii_case("subscriptions") => {
                Scope::parse(&format!("/subscriptions/{id}")).ok()
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A virtual machine and the NICs it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub id: String,
    pub name: String,
    /// `networkProfile.networkInterfaces[]`.
    pub nics: Vec<VmNic>,
}

/// A VM's reference to a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNic {
    pub id: String,
    /// `properties.primary`; ARM leaves it out on many single-NIC VMs.
    pub primary: Option<bool>,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub id: String,
    pub name: String,
    /// `networkSecurityGroup.id`.
    pub nsg: Option<String>,
    pub ip_configurations: Vec<IpConfiguration>,
}

/// One IP configuration of a NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfiguration {
    pub name: String,
    /// `privateIPAddress` as ARM wrote it.
    pub private_ip: Option<String>,
    pub primary: Option<bool>,
    /// `subnet.id`.
    pub subnet: Option<String>,
}

/// A subnet of a virtual network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub name: String,
    /// `addressPrefix` or `addressPrefixes`.
    pub address_prefixes: Vec<String>,
    /// `networkSecurityGroup.id`.
    pub nsg: Option<String>,
}

/// A virtual network with its subnets (inline, as ARM lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vnet {
    pub id: String,
    pub name: String,
    pub subnets: Vec<Subnet>,
}

/// An NSG with its rules and what it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nsg {
    pub id: String,
    pub name: String,
    /// The customer's and jitbot's rules (default rules excluded).
    pub rules: Vec<SecurityRule>,
    /// `networkInterfaces[].id`.
    pub nics: Vec<String>,
    /// `subnets[].id`.
    pub subnets: Vec<String>,
}

/// Where a VM's inbound traffic goes: its primary NIC's primary IP configuration and the NSGs on
/// the way, in the order Azure evaluates them (the subnet's NSG first, then the NIC's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPath {
    pub vm_id: String,
    pub vm_name: String,
    pub nic_id: String,
    pub private_ip: IpAddr,
    pub subnet_id: String,
    /// Never empty: a VM without an NSG on its path is [`Unsupported::NoNsg`].
    pub nsgs: Vec<NsgId>,
}

/// Why jitbot cannot protect a VM. Each reads as the end of "unsupported: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("the VM has no network interface")]
    NoNic,
    #[error("the VM has {0} network interfaces and none is marked primary")]
    NoPrimaryNic(usize),
    #[error("network interface {0} does not exist")]
    NicMissing(String),
    #[error("network interface {0} has no IP configuration")]
    NoIpConfiguration(String),
    #[error("network interface {0} has several IP configurations and none is marked primary")]
    NoPrimaryIpConfiguration(String),
    #[error("the primary IP configuration of {0} has no private address")]
    NoPrivateIp(String),
    #[error("the primary IP configuration of {0} is in no subnet")]
    NoSubnet(String),
    #[error("subnet {0} does not exist")]
    SubnetMissing(String),
    #[error(
        "no NSG on its path (neither its subnet nor its network interface has one); attach one"
    )]
    NoNsg,
    #[error("`{0}` is not an NSG resource id")]
    BadNsgId(String),
}

/// Why [`Inventory::resolve_vm`] gave no path.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Azure(#[from] AzureError),
    #[error("virtual machine {0} not found; check the target's `vm` resource id")]
    VmNotFound(String),
    #[error("virtual machine {vm} is not supported: {why}")]
    Unsupported { vm: String, why: Unsupported },
}

impl VmPath {
    /// Resolves a VM from what has been read: `nic` finds a NIC by id, `subnet` a subnet by id
    /// (both case-insensitive, as ARM ids are). Pure, so a scan resolves thousands of VMs from
    /// a few list pages.
    pub fn assemble<'a>(
        vm: &Vm,
        nic: impl Fn(&str) -> Option<&'a Nic>,
        subnet: impl Fn(&str) -> Option<&'a Subnet>,
    ) -> Result<VmPath, Unsupported> {
        let nic_id = primary_nic(vm)?;
        let nic = nic(nic_id).ok_or_else(|| Unsupported::NicMissing(nic_id.to_string()))?;
        let (ip, subnet_id) = primary_address(nic)?;
        let subnet =
            subnet(subnet_id).ok_or_else(|| Unsupported::SubnetMissing(subnet_id.to_string()))?;
        let mut nsgs = Vec::new();
        for id in subnet.nsg.iter().chain(nic.nsg.iter()) {
            let id = NsgId::parse(id).map_err(|_| Unsupported::BadNsgId(id.clone()))?;
            if !nsgs
                .iter()
                .any(|n: &NsgId| n.as_str().eq_ignore_ascii_case(id.as_str()))
            {
                nsgs.push(id);
            }
        }
        if nsgs.is_empty() {
            return Err(Unsupported::NoNsg);
        }
        Ok(VmPath {
            vm_id: vm.id.clone(),
            vm_name: vm.name.clone(),
            nic_id: nic.id.clone(),
            private_ip: ip,
            subnet_id: subnet.id.clone(),
            nsgs,
        })
    }
}

/// The primary NIC: the one marked primary, or the only one.
pub fn primary_nic(vm: &Vm) -> Result<&str, Unsupported> {
    match vm.nics.as_slice() {
        [] => Err(Unsupported::NoNic),
        [only] if only.primary != Some(false) => Ok(&only.id),
        many => many
            .iter()
            .find(|n| n.primary == Some(true))
            .map(|n| n.id.as_str())
            .ok_or(Unsupported::NoPrimaryNic(many.len())),
    }
}

/// The primary IP configuration's private address and subnet id.
pub fn primary_address(nic: &Nic) -> Result<(IpAddr, &str), Unsupported> {
    let config = match nic.ip_configurations.as_slice() {
        [] => return Err(Unsupported::NoIpConfiguration(nic.name.clone())),
        [only] => only,
        many => many
            .iter()
            .find(|c| c.primary == Some(true))
            .ok_or_else(|| Unsupported::NoPrimaryIpConfiguration(nic.name.clone()))?,
    };
    let ip = config
        .private_ip
        .as_deref()
        .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        .ok_or_else(|| Unsupported::NoPrivateIp(nic.name.clone()))?;
    let subnet = config
        .subnet
        .as_deref()
        .ok_or_else(|| Unsupported::NoSubnet(nic.name.clone()))?;
    Ok((ip, subnet))
}

/// One entry of the permissions API's answer (one role assignment's permissions).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    #[serde(default)]
    pub actions: Vec<String>,
    #[serde(default)]
    pub not_actions: Vec<String>,
}

/// Whether the permissions allow `action`: some entry has an action matching it and no
/// `notAction` of that same entry matches it (Azure's rule: `notActions` subtract within their
/// role, another role may still grant the action). `*` matches any run of characters;
/// comparison ignores case, as Azure's does.
pub fn allows(perms: &[Permission], action: &str) -> bool {
    perms.iter().any(|p| {
        p.actions.iter().any(|a| glob(a, action)) && !p.not_actions.iter().any(|n| glob(n, action))
    })
}

/// Case-insensitive glob with `*` as the only wildcard.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Reads the inventory. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    arm: Arc<ArmClient>,
}

impl Inventory {
    pub(crate) fn new(arm: Arc<ArmClient>) -> Self {
        Inventory { arm }
    }

    /// GET a VM; `Ok(None)` when it does not exist.
    pub async fn get_vm(&self, vm_id: &str) -> Result<Option<Vm>, AzureError> {
        let wire: Option<wire::Vm> = self.get(vm_id, COMPUTE_API_VERSION, "the VM").await?;
        Ok(wire.map(Vm::from))
    }

    /// GET a NIC; `Ok(None)` when it does not exist.
    pub async fn get_nic(&self, nic_id: &str) -> Result<Option<Nic>, AzureError> {
        let wire: Option<wire::Nic> = self.get(nic_id, self.network(), "the NIC").await?;
        Ok(wire.map(Nic::from))
    }

    /// GET a subnet; `Ok(None)` when it does not exist.
    pub async fn get_subnet(&self, subnet_id: &str) -> Result<Option<Subnet>, AzureError> {
        let wire: Option<wire::Subnet> = self.get(subnet_id, self.network(), "the subnet").await?;
        Ok(wire.map(Subnet::from))
    }

    /// GET an NSG with its rules and attachments; `Ok(None)` when it does not exist.
    pub async fn get_nsg(&self, nsg_id: &NsgId) -> Result<Option<Nsg>, AzureError> {
        let wire: Option<wire::Nsg> = self
            .get(
                nsg_id.as_str(),
                self.network(),
                "the network security group",
            )
            .await?;
        Ok(wire.map(Nsg::from))
    }

    /// Follows a VM to its [`VmPath`]: GET the VM, its primary NIC and that configuration's
    /// subnet (three reads).
    pub async fn resolve_vm(&self, vm_id: &str) -> Result<VmPath, ResolveError> {
        let unsupported = |why| ResolveError::Unsupported {
            vm: vm_id.to_string(),
            why,
        };
        let vm = self
            .get_vm(vm_id)
            .await?
            .ok_or_else(|| ResolveError::VmNotFound(vm_id.to_string()))?;
        let nic_id = primary_nic(&vm).map_err(unsupported)?;
        let nic = self.get_nic(nic_id).await?;
        let subnet = match nic.as_ref().map(primary_address) {
            Some(Ok((_, subnet_id))) => self.get_subnet(subnet_id).await?,
            _ => None,
        };
        VmPath::assemble(&vm, |_| nic.as_ref(), |_| subnet.as_ref()).map_err(unsupported)
    }

    /// Every VM in the scope.
    pub async fn list_vms(&self, scope: &Scope) -> Result<Vec<Vm>, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Compute/virtualMachines");
        let all: Vec<wire::Vm> = self.list(&path, COMPUTE_API_VERSION).await?;
        Ok(all.into_iter().map(Vm::from).collect())
    }

    /// Every NIC in the scope.
    pub async fn list_nics(&self, scope: &Scope) -> Result<Vec<Nic>, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Network/networkInterfaces");
        let all: Vec<wire::Nic> = self.list(&path, self.network()).await?;
        Ok(all.into_iter().map(Nic::from).collect())
    }

    /// Every virtual network in the scope, with its subnets.
    pub async fn list_vnets(&self, scope: &Scope) -> Result<Vec<Vnet>, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Network/virtualNetworks");
        let all: Vec<wire::Vnet> = self.list(&path, self.network()).await?;
        Ok(all.into_iter().map(Vnet::from).collect())
    }

    /// Every NSG in the scope, with its rules and attachments.
    pub async fn list_nsgs(&self, scope: &Scope) -> Result<Vec<Nsg>, AzureError> {
        let path = format!("{scope}/providers/Microsoft.Network/networkSecurityGroups");
        let all: Vec<wire::Nsg> = self.list(&path, self.network()).await?;
        Ok(all.into_iter().map(Nsg::from).collect())
    }

    /// What the caller may do at `scope` (any resource id), without trying it.
    pub async fn permissions(&self, scope: &str) -> Result<Vec<Permission>, AzureError> {
        let path = format!(
            "{}/providers/Microsoft.Authorization/permissions",
            scope.trim_end_matches('/')
        );
        self.list(&path, AUTHORIZATION_API_VERSION).await
    }

    fn network(&self) -> &str {
        self.arm.api_version()
    }

    async fn get<T: DeserializeOwned>(
        &self,
        id: &str,
        api_version: &str,
        what: &str,
    ) -> Result<Option<T>, AzureError> {
        let url = self.arm.url_with_version(id, api_version)?;
        let resp = self.arm.send(Method::GET, &url, None).await?;
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        resp.json(what).map(Some)
    }

    /// Every item of a list, following `nextLink` (only to the configured ARM endpoint).
    async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        api_version: &str,
    ) -> Result<Vec<T>, AzureError> {
        let mut url = self.arm.url_with_version(path, api_version)?;
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let resp = self.arm.send(Method::GET, &url, None).await?;
            if resp.status == StatusCode::NOT_FOUND {
                return Err(AzureError::Invalid {
                    code: resp.error_code(),
                    message: format!("{path} does not exist; check the scope"),
                });
            }
            let page: wire::Page<T> = resp.json("a list page")?;
            all.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                None => return Ok(all),
                Some(link) => {
                    let next = url::Url::parse(&link).map_err(|e| AzureError::Invalid {
                        code: "InvalidNextLink".into(),
                        message: format!("ARM returned an unusable nextLink {link:?}: {e}"),
                    })?;
                    self.arm.check_same_origin(&next)?;
                    url = next;
                }
            }
        }
        Err(AzureError::Transient(format!(
            "listing {path} did not end after {MAX_PAGES} pages"
        )))
    }
}

/// Lookups by lower-cased id over what a scan listed.
pub fn by_id<T>(items: &[T], id: impl Fn(&T) -> &str) -> HashMap<String, &T> {
    items
        .iter()
        .map(|t| (id(t).to_ascii_lowercase(), t))
        .collect()
}

/// ARM's JSON, as far as jitbot reads it.
mod wire {
    use super::SecurityRule;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Page<T> {
        #[serde(default = "Vec::new")]
        pub value: Vec<T>,
        #[serde(default)]
        pub next_link: Option<String>,
    }

    #[derive(Deserialize, Default)]
    pub(super) struct IdRef {
        #[serde(default)]
        pub id: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Vm {
        pub id: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub properties: VmProperties,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct VmProperties {
        #[serde(default)]
        pub network_profile: NetworkProfile,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct NetworkProfile {
        #[serde(default)]
        pub network_interfaces: Vec<NicReference>,
    }

    #[derive(Deserialize)]
    pub(super) struct NicReference {
        pub id: String,
        #[serde(default)]
        pub properties: Option<Primary>,
    }

    #[derive(Deserialize, Default)]
    pub(super) struct Primary {
        #[serde(default)]
        pub primary: Option<bool>,
    }

    #[derive(Deserialize)]
    pub(super) struct Nic {
        pub id: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub properties: NicProperties,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct NicProperties {
        #[serde(default)]
        pub network_security_group: Option<IdRef>,
        #[serde(default)]
        pub ip_configurations: Vec<IpConfiguration>,
    }

    #[derive(Deserialize)]
    pub(super) struct IpConfiguration {
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub properties: IpConfigurationProperties,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct IpConfigurationProperties {
        #[serde(default, rename = "privateIPAddress")]
        pub private_ip_address: Option<String>,
        #[serde(default)]
        pub primary: Option<bool>,
        #[serde(default)]
        pub subnet: Option<IdRef>,
    }

    #[derive(Deserialize)]
    pub(super) struct Vnet {
        pub id: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub properties: VnetProperties,
    }

    #[derive(Deserialize, Default)]
    pub(super) struct VnetProperties {
        #[serde(default)]
        pub subnets: Vec<Subnet>,
    }

    #[derive(Deserialize)]
    pub(super) struct Subnet {
        pub id: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub properties: SubnetProperties,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct SubnetProperties {
        #[serde(default)]
        pub address_prefix: Option<String>,
        #[serde(default)]
        pub address_prefixes: Vec<String>,
        #[serde(default)]
        pub network_security_group: Option<IdRef>,
    }

    #[derive(Deserialize)]
    pub(super) struct Nsg {
        pub id: String,
        #[serde(default)]
        pub name: String,
        #[serde(default)]
        pub properties: NsgProperties,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct NsgProperties {
        #[serde(default)]
        pub security_rules: Vec<SecurityRule>,
        #[serde(default)]
        pub network_interfaces: Vec<IdRef>,
        #[serde(default)]
        pub subnets: Vec<IdRef>,
    }
}

fn id_of(r: Option<wire::IdRef>) -> Option<String> {
    r.map(|r| r.id).filter(|id| !id.is_empty())
}

impl From<wire::Vm> for Vm {
    fn from(w: wire::Vm) -> Vm {
        Vm {
            id: w.id,
            name: w.name,
            nics: w
                .properties
                .network_profile
                .network_interfaces
                .into_iter()
                .map(|n| VmNic {
                    id: n.id,
                    primary: n.properties.and_then(|p| p.primary),
                })
                .collect(),
        }
    }
}

impl From<wire::Nic> for Nic {
    fn from(w: wire::Nic) -> Nic {
        Nic {
            id: w.id,
            name: w.name,
            nsg: id_of(w.properties.network_security_group),
            ip_configurations: w
                .properties
                .ip_configurations
                .into_iter()
                .map(|c| IpConfiguration {
                    name: c.name,
                    private_ip: c.properties.private_ip_address,
                    primary: c.properties.primary,
                    subnet: id_of(c.properties.subnet),
                })
                .collect(),
        }
    }
}

impl From<wire::Subnet> for Subnet {
    fn from(w: wire::Subnet) -> Subnet {
        let mut prefixes = w.properties.address_prefixes;
        if let Some(p) = w.properties.address_prefix {
            prefixes.insert(0, p);
        }
        Subnet {
            id: w.id,
            name: w.name,
            address_prefixes: prefixes,
            nsg: id_of(w.properties.network_security_group),
        }
    }
}

impl From<wire::Vnet> for Vnet {
    fn from(w: wire::Vnet) -> Vnet {
        Vnet {
            id: w.id,
            name: w.name,
            subnets: w.properties.subnets.into_iter().map(Subnet::from).collect(),
        }
    }
}

impl From<wire::Nsg> for Nsg {
    fn from(w: wire::Nsg) -> Nsg {
        let ids = |v: Vec<wire::IdRef>| v.into_iter().map(|r| r.id).collect();
        Nsg {
            id: w.id,
            name: w.name,
            rules: w.properties.security_rules,
            nics: ids(w.properties.network_interfaces),
            subnets: ids(w.properties.subnets),
        }
    }
}

/// Which list [`decode_listing`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingKind {
    Vms,
    Nics,
    Vnets,
    Nsgs,
    Permissions,
}

/// One list page as the inventory turns it into its types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    Vms(Vec<Vm>),
    Nics(Vec<Nic>),
    Vnets(Vec<Vnet>),
    Nsgs(Vec<Nsg>),
    Permissions(Vec<Permission>),
}

/// Reads one list page exactly as the `list_*` calls do (same wire types, same conversions), so
/// the fuzz targets and property tests exercise the parsing of ARM's answers without a server.
pub fn decode_listing(kind: ListingKind, body: &[u8]) -> Result<Listing, serde_json::Error> {
    fn page<W: DeserializeOwned, T: From<W>>(body: &[u8]) -> Result<Vec<T>, serde_json::Error> {
        let page: wire::Page<W> = serde_json::from_slice(body)?;
        Ok(page.value.into_iter().map(T::from).collect())
    }
    Ok(match kind {
        ListingKind::Vms => Listing::Vms(page::<wire::Vm, Vm>(body)?),
        ListingKind::Nics => Listing::Nics(page::<wire::Nic, Nic>(body)?),
        ListingKind::Vnets => Listing::Vnets(page::<wire::Vnet, Vnet>(body)?),
        ListingKind::Nsgs => Listing::Nsgs(page::<wire::Nsg, Nsg>(body)?),
        ListingKind::Permissions => {
            let page: wire::Page<Permission> = serde_json::from_slice(body)?;
            Listing::Permissions(page.value)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(actions: &[&str], not_actions: &[&str]) -> Permission {
        Permission {
            actions: actions.iter().map(|s| s.to_string()).collect(),
            not_actions: not_actions.iter().map(|s| s.to_string()).collect(),
        }
    }

    const WRITE: &str = "Microsoft.Network/networkSecurityGroups/securityRules/write";

    #[test]
    fn allows_honours_wildcards_case_and_not_actions() {
        let rows: &[(&[Permission], &str, bool)] = &[
            (&[perm(&[WRITE], &[])], WRITE, true),
            (
                &[perm(
                    &["microsoft.network/NETWORKSECURITYGROUPS/securityrules/WRITE"],
                    &[],
                )],
                WRITE,
                true,
            ),
            (&[perm(&["*"], &[])], WRITE, true),
            (&[perm(&["Microsoft.Network/*"], &[])], WRITE, true),
            (
                &[perm(
                    &["Microsoft.Network/networkSecurityGroups/securityRules/*"],
                    &[],
                )],
                WRITE,
                true,
            ),
            (&[perm(&["*/read"], &[])], WRITE, false),
            (
                &[perm(&["*/read"], &[])],
                "Microsoft.Network/networkSecurityGroups/read",
                true,
            ),
            (&[perm(&["Microsoft.Compute/*"], &[])], WRITE, false),
            // A prefix is not a wildcard.
            (
                &[perm(
                    &["Microsoft.Network/networkSecurityGroups/securityRules"],
                    &[],
                )],
                WRITE,
                false,
            ),
            (&[perm(&["*"], &["*/write"])], WRITE, false),
            (
                &[perm(
                    &["Microsoft.Network/*"],
                    &["Microsoft.Network/networkSecurityGroups/*"],
                )],
                WRITE,
                false,
            ),
            // notActions subtract within their own entry only.
            (
                &[perm(&["*"], &["*/write"]), perm(&[WRITE], &[])],
                WRITE,
                true,
            ),
            (&[], WRITE, false),
            (&[perm(&[], &[])], WRITE, false),
            // `*` spans `/`, as `*/read` does in Azure's built-in Reader role.
            (
                &[perm(&["Microsoft.*/securityRules/write"], &[])],
                WRITE,
                true,
            ),
            (
                &[perm(&["Microsoft.*/securityRules/write"], &[])],
                "Microsoft.Network/securityRules/write",
                true,
            ),
        ];
        for (perms, action, want) in rows {
            assert_eq!(allows(perms, action), *want, "{perms:?} allows {action}");
        }
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("**", ""));
        assert!(!glob("", "a"));
        assert!(glob("*c", "abcbc"));
    }

    #[test]
    fn scopes_are_subscriptions_or_resource_groups() {
        assert!(Scope::parse("/subscriptions/s1").is_ok());
        assert!(Scope::parse("/subscriptions/s1/resourceGroups/rg-1/").is_ok());
        assert!(Scope::parse("/subscriptions/s1/resourcegroups/rg").is_ok());
        for bad in [
            "",
            "subscriptions/s1",
            "/subscriptions/",
            "/subscriptions/s1/resourceGroups",
            "/subscriptions/s1/providers/Microsoft.Network",
            "/subscriptions/s 1",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Scope::subscription_of(
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n"
            )
            .map(|s| s.0),
            Some("/subscriptions/s1".to_string())
        );
    }

    const SUB: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network";

    fn nic(nsg: Option<&str>, configs: Vec<IpConfiguration>) -> Nic {
        Nic {
            id: format!("{SUB}/networkInterfaces/n1"),
            name: "n1".into(),
            nsg: nsg.map(str::to_string),
            ip_configurations: configs,
        }
    }

    fn config(ip: Option<&str>, primary: Option<bool>) -> IpConfiguration {
        IpConfiguration {
            name: "ipconfig1".into(),
            private_ip: ip.map(str::to_string),
            primary,
            subnet: Some(format!("{SUB}/virtualNetworks/v/subnets/a")),
        }
    }

    fn vm(nics: &[(&str, Option<bool>)]) -> Vm {
        Vm {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web1"
                .into(),
            name: "web1".into(),
            nics: nics
                .iter()
                .map(|(id, primary)| VmNic {
                    id: id.to_string(),
                    primary: *primary,
                })
                .collect(),
        }
    }

    fn subnet(nsg: Option<&str>) -> Subnet {
        Subnet {
            id: format!("{SUB}/virtualNetworks/v/subnets/a"),
            name: "a".into(),
            address_prefixes: vec!["10.0.1.0/24".into()],
            nsg: nsg.map(str::to_string),
        }
    }

    #[test]
    fn a_path_lists_the_subnet_nsg_before_the_nic_nsg() {
        let nic_nsg = format!("{SUB}/networkSecurityGroups/nic-nsg");
        let subnet_nsg = format!("{SUB}/networkSecurityGroups/subnet-nsg");
        let n = nic(Some(&nic_nsg), vec![config(Some("10.0.1.4"), None)]);
        let s = subnet(Some(&subnet_nsg));
        let path = VmPath::assemble(&vm(&[(&n.id, None)]), |_| Some(&n), |_| Some(&s)).unwrap();
        let names: Vec<&str> = path.nsgs.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["subnet-nsg", "nic-nsg"]);
        assert_eq!(path.private_ip.to_string(), "10.0.1.4");
        // The same NSG on both is one step.
        let n = nic(Some(&subnet_nsg), vec![config(Some("10.0.1.4"), None)]);
        let path = VmPath::assemble(&vm(&[(&n.id, None)]), |_| Some(&n), |_| Some(&s)).unwrap();
        assert_eq!(path.nsgs.len(), 1);
    }

    #[test]
    fn unsupported_shapes_say_why() {
        let s = subnet(None);
        let ok_nic = nic(None, vec![config(Some("10.0.1.4"), Some(true))]);
        let n = |c: Vec<IpConfiguration>| nic(Some(&format!("{SUB}/networkSecurityGroups/x")), c);
        let cases: Vec<(Vm, Option<Nic>, Unsupported)> = vec![
            (vm(&[]), None, Unsupported::NoNic),
            (
                vm(&[("a", None), ("b", Some(false))]),
                None,
                Unsupported::NoPrimaryNic(2),
            ),
            (
                vm(&[("a", None)]),
                None,
                Unsupported::NicMissing("a".into()),
            ),
            (
                vm(&[("a", None)]),
                Some(n(vec![])),
                Unsupported::NoIpConfiguration("n1".into()),
            ),
            (
                vm(&[("a", None)]),
                Some(n(vec![
                    config(Some("10.0.1.4"), None),
                    config(Some("10.0.1.5"), None),
                ])),
                Unsupported::NoPrimaryIpConfiguration("n1".into()),
            ),
            (
                vm(&[("a", None)]),
                Some(n(vec![config(None, None)])),
                Unsupported::NoPrivateIp("n1".into()),
            ),
            (vm(&[("a", None)]), Some(ok_nic), Unsupported::NoNsg),
        ];
        for (v, nic, want) in cases {
            let got = VmPath::assemble(&v, |_| nic.as_ref(), |_| Some(&s));
            assert_eq!(got, Err(want));
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_absent_ones_default() {
        let w: wire::Nic = serde_json::from_value(serde_json::json!({
            "id": "nic1", "somethingNew": {"x": 1},
            "properties": {"ipConfigurations": [{"name": "c", "properties": {
                "privateIPAddress": "10.0.0.5", "subnet": {"id": "s1"}, "future": true}}]}
        }))
        .unwrap();
        let n = Nic::from(w);
        assert_eq!(n.nsg, None);
        assert_eq!(
            n.ip_configurations[0].private_ip.as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(n.ip_configurations[0].subnet.as_deref(), Some("s1"));
    }
}
