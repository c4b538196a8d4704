//! In-process emulator of the Azure Resource Manager NSG API (`Microsoft.Network`, api-version
//! 2024-05-01), faithful in the ways jitbot depends on (`shared/reference/PROTOCOLS.md`):
//!
//! * GET NSG (rules, the six default rules, a weak etag that changes with every write),
//!   GET/PUT/DELETE of one rule, GET of the rule list paged by `nextLink`.
//! * PUT bodies validated against the swagger: required `protocol`/`access`/`priority`/`direction`,
//!   priority 100–4096 and unique per direction (`SecurityRuleConflict`), port syntax (a comma list
//!   in a singular field is `SecurityRuleInvalidPortRange`), `*` and service tags only in singular
//!   prefix fields, description ≤ 140, rule-name rules.
//! * Long-running operations: PUT answers 201/200 `Updating` with `Azure-AsyncOperation`, DELETE 202
//!   with `Location` too (204 when the rule is absent); the operation stays `InProgress` for the
//!   configured delay. Only one operation per NSG at a time: a write meanwhile gets 429
//!   `RetryableError` or 409 `AnotherOperationInProgress`.
//! * NSG-level PUT (`arm/nsg_put.rs`): replaces the rule list as one operation, `If-Match`/412,
//!   keeps `tags`, `flushConnection` and unknown fields; 403 when `nsg_writes_forbidden`.
//!   `ArmSimOptions::like_azure` sets real ARM's latency, `Retry-After` 3 on PUT / 10 on DELETE,
//!   buckets and Microsoft.Network's 1,000 writes per 5 minutes; `ArmSim::rule_events` says when
//!   each rule went live or away.
//! * Bearer tokens (401 `InvalidAuthenticationToken`/`ExpiredAuthenticationToken`), a token bucket
//!   per subscription with `x-ms-ratelimit-remaining-subscription-*` headers, injectable faults,
//!   and a log of every request received for tests to assert on.
//!
//! State lives behind a std `Mutex` that is never held across an `.await`; operations complete
//! lazily (whenever the state is next looked at), so there are no background timers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

mod inventory;
mod model;
mod nsg_put;

use nsg_put::{Credentials, nsg_put_done, rule_event};

pub use inventory::{IpConfigSpec, NicRef, NicSpec, PermissionSet, SubnetSpec, VmSpec, VnetSpec};
pub use model::{SecurityRule, SecurityRuleProperties};

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct ArmSimOptions {
    /// How long an asynchronous operation stays `InProgress`.
    pub operation_delay: Duration,
    /// Rules per page of `GET …/securityRules`.
    pub page_size: usize,
    /// Resources per page of the list endpoints (VMs, NICs, virtual networks, NSGs per
    /// subscription or resource group); small in tests to exercise `nextLink`.
    pub list_page_size: usize,
    /// `Retry-After` seconds on accepted writes, polls and busy answers (real ARM says 1–10;
    /// 0 keeps tests fast, and clients then poll at their own floor).
    pub retry_after_secs: u64,
    /// What a write gets while another operation on the same NSG is in progress.
    pub busy_response: BusyResponse,
    /// ARM's token bucket, or `None` for no throttling.
    pub throttling: Option<Throttling>,
    /// Create unknown NSGs on first use in this region instead of answering 404 (the simulated
    /// backend, where the configured targets' NSGs should simply exist).
    pub auto_create_nsgs: Option<String>,
    /// Log each completed rule change as a person would read it (`tracing` target `jitbot_sim::arm`).
    pub printer: bool,
    /// `Retry-After` on an accepted PUT (rule or NSG) and its polls, instead of
    /// `retry_after_secs` (real ARM: 3).
    pub put_retry_after_secs: Option<u64>,
    /// `Retry-After` on an accepted DELETE and its polls, instead of `retry_after_secs` (real
    /// ARM: 10).
    pub delete_retry_after_secs: Option<u64>,
    /// Microsoft.Network's own cap on PUT/DELETE per subscription (about 1,000 per 5 minutes),
    /// or `None` for none.
    pub network_write_cap: Option<WriteCap>,
    /// Answer NSG-level PUTs with 403 `AuthorizationFailed` (a role without
    /// `Microsoft.Network/networkSecurityGroups/write`).
    pub nsg_writes_forbidden: bool,
}

/// Microsoft.Network's sliding-window cap on writes (PUT and DELETE together) per subscription.
#[derive(Debug, Clone, Copy)]
pub struct WriteCap {
    /// Writes allowed per window.
    pub writes: usize,
    /// The window.
    pub window: Duration,
}

impl ArmSimOptions {
    /// The emulator configured like real ARM (PROTOCOLS.md, "Limits"): operations take
    /// `latency`, `Retry-After` 3 on PUT and 10 on DELETE, ARM's buckets (writes and deletes 200
    /// burst refilling 10/s, reads 250/25 s) and Microsoft.Network's 1,000 writes per 5 minutes.
    pub fn like_azure(latency: Duration) -> Self {
        ArmSimOptions {
            operation_delay: latency,
            retry_after_secs: 1,
            put_retry_after_secs: Some(3),
            delete_retry_after_secs: Some(10),
            throttling: Some(Throttling::default()),
            network_write_cap: Some(WriteCap {
                writes: 1000,
                window: Duration::from_secs(300),
            }),
            ..ArmSimOptions::default()
        }
    }
}

impl Default for ArmSimOptions {
    fn default() -> Self {
        ArmSimOptions {
            operation_delay: Duration::from_millis(300),
            page_size: 50,
            list_page_size: 100,
            retry_after_secs: 0,
            busy_response: BusyResponse::Alternate,
            throttling: Some(Throttling::default()),
            auto_create_nsgs: None,
            printer: false,
            put_retry_after_secs: None,
            delete_retry_after_secs: None,
            network_write_cap: None,
            nsg_writes_forbidden: false,
        }
    }
}

/// The answer to a write that arrives while another operation on the NSG is in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyResponse {
    /// Alternate between the two answers below, as real ARM is seen to.
    Alternate,
    /// 429 `RetryableError` with detail `RetryableErrorDueToAnotherOperation`.
    Throttle,
    /// 409 `AnotherOperationInProgress`.
    Conflict,
}

/// ARM's token bucket per subscription (one principal in the emulator).
#[derive(Debug, Clone, Copy)]
pub struct Throttling {
    /// Bucket size for PUT and DELETE.
    pub write_burst: f64,
    /// Refill per second for PUT and DELETE.
    pub write_refill_per_sec: f64,
    /// Bucket size for GET.
    pub read_burst: f64,
    /// Refill per second for GET.
    pub read_refill_per_sec: f64,
}

impl Default for Throttling {
    fn default() -> Self {
        Throttling {
            write_burst: 200.0,
            write_refill_per_sec: 10.0,
            read_burst: 250.0,
            read_refill_per_sec: 25.0,
        }
    }
}

/// A misbehaviour to inject; see [`ArmSim::inject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 `SubscriptionRequestsThrottled` with `Retry-After`.
    Throttle {
        /// Value of `Retry-After`.
        retry_after_secs: u64,
    },
    /// 409 `AnotherOperationInProgress`.
    AnotherOperationInProgress,
    /// 500 `InternalServerError`.
    ServerError,
    /// 503 `ServiceUnavailable` with `Retry-After`.
    Unavailable {
        /// Value of `Retry-After`.
        retry_after_secs: u64,
    },
    /// Process the request normally (state changes apply, like a real ARM that did the work) but
    /// hold the response this long, so the client times out.
    Delay(Duration),
    /// 401 `ExpiredAuthenticationToken`.
    ExpiredToken,
    /// 403 `AuthorizationFailed`.
    Forbidden,
    /// The next asynchronous operation started by a matching request ends `Failed` with this code.
    FailOperation {
        /// ARM error code, e.g. `AnotherOperationInProgress` or `InternalServerError`.
        code: String,
    },
}

impl Fault {
    /// Restrict the fault to matching requests.
    pub fn on(self, on: On) -> FaultRule {
        FaultRule { on, fault: self }
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct On {
    method: Option<Method>,
    path_contains: Option<String>,
}

impl On {
    /// Any request.
    pub fn any() -> On {
        On::default()
    }
    /// Requests with this method.
    pub fn method(method: Method) -> On {
        On {
            method: Some(method),
            path_contains: None,
        }
    }
    /// PUT requests.
    pub fn put() -> On {
        On::method(Method::PUT)
    }
    /// DELETE requests.
    pub fn delete() -> On {
        On::method(Method::DELETE)
    }
    /// GET requests.
    pub fn get() -> On {
        On::method(Method::GET)
    }
    /// GETs of asynchronous operation status (`…/operations/{id}`).
    pub fn poll() -> On {
        On::get().path_contains("/operations/")
    }
    /// Additionally require the path to contain `s` (case-insensitive).
    pub fn path_contains(mut self, s: &str) -> On {
        self.path_contains = Some(s.to_ascii_lowercase());
        self
    }
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| path.to_ascii_lowercase().contains(p.as_str()))
    }
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// Matcher.
    pub on: On,
    /// What happens.
    pub fault: Fault,
}

impl From<Fault> for FaultRule {
    fn from(fault: Fault) -> Self {
        FaultRule {
            on: On::any(),
            fault,
        }
    }
}

/// One request as the emulator received and answered it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `PUT`, `DELETE`, …
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// JSON body, if any (`Value::String` holding the raw text if it was not JSON).
    pub body: Option<Value>,
    /// Bearer token sent.
    pub bearer: Option<String>,
    /// Status answered.
    pub status: u16,
    /// `x-ms-error-code` answered, if any.
    pub error_code: Option<String>,
    /// When the request arrived.
    pub at: SystemTime,
}

/// Kind of asynchronous operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// Rule create or update.
    Put,
    /// Rule delete.
    Delete,
    /// NSG-level PUT (the whole rule list replaced); `rule` names the first rule it changed.
    NsgPut,
}

/// A rule becoming live (provisioned) or gone, at the logical time its operation finished.
#[derive(Debug, Clone)]
pub struct RuleEvent {
    /// NSG resource id.
    pub nsg_id: String,
    /// Rule name.
    pub rule: String,
    /// True when the rule became live, false when it was removed.
    pub live: bool,
    /// When (operation start + delay).
    pub at: SystemTime,
}

/// An asynchronous operation as the emulator ran it.
#[derive(Debug, Clone)]
pub struct OperationRecord {
    /// Operation id (last segment of the `Azure-AsyncOperation` URL).
    pub id: String,
    /// NSG resource id.
    pub nsg_id: String,
    /// Rule name.
    pub rule: String,
    /// PUT or DELETE.
    pub kind: OperationKind,
    /// `InProgress`, `Succeeded` or `Failed`.
    pub status: String,
    /// When the write was accepted.
    pub started: SystemTime,
    /// When it finished (logical time: start + delay).
    pub finished: Option<SystemTime>,
}

/// The running emulator. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct ArmSim {
    /// `http://127.0.0.1:<port>`: use as the ARM endpoint.
    pub base_url: String,
    state: Arc<Mutex<SimState>>,
    _server: Arc<ServerTask>,
}

struct ServerTask(tokio::task::JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ArmSim {
    /// Start on 127.0.0.1 with an ephemeral port.
    pub async fn start(opts: ArmSimOptions) -> anyhow::Result<ArmSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(SimState::new(base_url.clone(), opts)));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(target: "jitbot_sim::arm", error = %e, "ARM emulator stopped");
            }
        });
        Ok(ArmSim {
            base_url,
            state,
            _server: Arc::new(ServerTask(server)),
        })
    }

    /// Create an (empty) NSG, e.g.
    /// `/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/web1-nsg`.
    pub fn add_nsg(&self, nsg_id: &str, location: &str) {
        match parse_route(nsg_id) {
            Some(Route::Nsg(r)) => {
                lock(&self.state).create_nsg(&r, location);
            }
            _ => {
                tracing::error!(target: "jitbot_sim::arm", nsg_id, "add_nsg: not an NSG resource id")
            }
        }
    }

    /// Add or replace a rule as if a customer had created it earlier (provisioned, no operation,
    /// no validation).
    pub fn put_existing_rule(&self, nsg_id: &str, mut rule: SecurityRule) {
        let mut st = lock(&self.state);
        st.advance();
        let key = nsg_id.to_ascii_lowercase();
        let Some(nsg) = st.nsgs.get_mut(&key) else {
            tracing::error!(target: "jitbot_sim::arm", nsg_id, "put_existing_rule: unknown NSG");
            return;
        };
        rule.id = Some(format!("{}/securityRules/{}", nsg.id, rule.name));
        rule.resource_type = Some(RULE_TYPE.to_string());
        rule.properties.provisioning_state = Some("Succeeded".to_string());
        normalize_plurals(&mut rule.properties);
        nsg.upsert(rule);
        nsg.touch();
    }

    /// The NSG's rules as they stand now (default rules excluded).
    pub fn rules(&self, nsg_id: &str) -> Vec<SecurityRule> {
        let mut st = lock(&self.state);
        st.advance();
        st.nsgs
            .get(&nsg_id.to_ascii_lowercase())
            .map(|n| n.rules.clone())
            .unwrap_or_default()
    }

    /// One rule as it stands now.
    pub fn rule(&self, nsg_id: &str, name: &str) -> Option<SecurityRule> {
        self.rules(nsg_id)
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Every rule that became live or went away through an operation, in completion order.
    pub fn rule_events(&self) -> Vec<RuleEvent> {
        let mut st = lock(&self.state);
        st.advance();
        st.rule_events.clone()
    }

    /// Set what the NSG carries besides its rules, as someone else would have: `tags`, and
    /// properties jitbot does not manage (`flushConnection`, fields of newer API versions), and
    /// top-level fields. An NSG-level PUT must send them back unchanged.
    pub fn set_nsg_extras(&self, nsg_id: &str, tags: Value, properties: Value, top_level: Value) {
        let mut st = lock(&self.state);
        let Some(nsg) = st.nsgs.get_mut(&nsg_id.to_ascii_lowercase()) else {
            return;
        };
        nsg.tags = Some(tags);
        if let Value::Object(m) = properties {
            nsg.extra_props = m;
        }
        if let Value::Object(m) = top_level {
            nsg.extra = m;
        }
        nsg.touch();
    }

    /// The NSG as GET returns it (without attachments), for tests.
    pub fn nsg_json(&self, nsg_id: &str) -> Option<Value> {
        let mut st = lock(&self.state);
        st.advance();
        st.nsgs.get(&nsg_id.to_ascii_lowercase()).map(Nsg::to_json)
    }

    /// Answer NSG-level PUTs with 403 from now on (or stop).
    pub fn set_nsg_writes_forbidden(&self, forbidden: bool) {
        lock(&self.state).opts.nsg_writes_forbidden = forbidden;
    }

    /// Every asynchronous operation so far, in start order.
    pub fn operations(&self) -> Vec<OperationRecord> {
        let mut st = lock(&self.state);
        st.advance();
        st.ops.iter().map(Op::record).collect()
    }

    /// How many writes were refused because another operation on the NSG was in progress.
    pub fn busy_rejections(&self) -> usize {
        lock(&self.state).busy_rejections
    }

    /// Queue a fault (FIFO). Each is consumed by the first request it matches; a plain [`Fault`]
    /// matches any request, `fault.on(On::put())` only PUTs, and so on. `FailOperation` is consumed
    /// by the first matching request that starts an operation.
    pub fn inject(&self, fault: impl Into<FaultRule>) {
        lock(&self.state).faults.push_back(fault.into());
    }

    /// Answer every matching request with this fault until [`ArmSim::end_outage`] (queued
    /// faults still come first). Models ARM being down or throttling for a while.
    pub fn start_outage(&self, fault: impl Into<FaultRule>) {
        lock(&self.state).outage = Some(fault.into());
    }

    /// Ends the outage started by [`ArmSim::start_outage`].
    pub fn end_outage(&self) {
        lock(&self.state).outage = None;
    }

    /// Add a virtual network with its subnets (`(name, addressPrefix)`), no NSGs attached.
    /// Returns the subnets' ids in the order given.
    pub fn add_vnet(&self, vnet_id: &str, location: &str, subnets: &[(&str, &str)]) -> Vec<String> {
        let vnet = VnetSpec {
            id: vnet_id.to_string(),
            location: location.to_string(),
            subnets: subnets
                .iter()
                .map(|(name, prefix)| SubnetSpec {
                    name: name.to_string(),
                    address_prefix: prefix.to_string(),
                    nsg_id: None,
                })
                .collect(),
        };
        let ids = subnets
            .iter()
            .map(|(name, _)| format!("{vnet_id}/subnets/{name}"))
            .collect();
        lock(&self.state)
            .inv
            .vnets
            .insert(vnet_id.to_ascii_lowercase(), vnet);
        ids
    }

    /// Add a NIC with one primary IP configuration (`ipconfig1`) in `subnet_id`, no NSG.
    pub fn add_nic(&self, nic_id: &str, location: &str, subnet_id: &str, private_ip: &str) {
        self.put_nic(NicSpec {
            id: nic_id.to_string(),
            location: location.to_string(),
            nsg_id: None,
            ip_configurations: vec![IpConfigSpec {
                name: "ipconfig1".to_string(),
                private_ip: Some(private_ip.to_string()),
                primary: Some(true),
                subnet_id: Some(subnet_id.to_string()),
            }],
        });
    }

    /// Add or replace a NIC exactly as given (odd shapes: no primary configuration, no address).
    pub fn put_nic(&self, nic: NicSpec) {
        lock(&self.state)
            .inv
            .nics
            .insert(nic.id.to_ascii_lowercase(), nic);
    }

    /// Add or replace a VM with these NICs; the first is marked primary.
    pub fn add_vm(&self, vm_id: &str, location: &str, nic_ids: &[&str]) {
        self.put_vm(VmSpec {
            id: vm_id.to_string(),
            location: location.to_string(),
            nics: nic_ids
                .iter()
                .enumerate()
                .map(|(i, id)| NicRef {
                    id: id.to_string(),
                    primary: Some(i == 0),
                })
                .collect(),
        });
    }

    /// Add or replace a VM exactly as given.
    pub fn put_vm(&self, vm: VmSpec) {
        lock(&self.state)
            .inv
            .vms
            .insert(vm.id.to_ascii_lowercase(), vm);
    }

    /// A VM with one NIC (`<vm name>-nic`, in the VM's resource group) at `private_ip` in
    /// `subnet_id`. Returns the NIC's id.
    pub fn add_simple_vm(
        &self,
        vm_id: &str,
        location: &str,
        subnet_id: &str,
        private_ip: &str,
    ) -> String {
        let (rg_path, name) = match vm_id.split_once("/providers/") {
            Some((rg_path, rest)) => (rg_path, inventory::name_of(rest)),
            None => (vm_id, inventory::name_of(vm_id)),
        };
        let nic_id = format!("{rg_path}/providers/Microsoft.Network/networkInterfaces/{name}-nic");
        self.add_nic(&nic_id, location, subnet_id, private_ip);
        self.add_vm(vm_id, location, &[&nic_id]);
        nic_id
    }

    /// Attach an NSG to a NIC (`None` detaches). Returns whether the NIC exists.
    pub fn attach_nsg_to_nic(&self, nic_id: &str, nsg_id: Option<&str>) -> bool {
        let mut st = lock(&self.state);
        match st.inv.nics.get_mut(&nic_id.to_ascii_lowercase()) {
            Some(nic) => {
                nic.nsg_id = nsg_id.map(str::to_string);
                true
            }
            None => false,
        }
    }

    /// Attach an NSG to a subnet (`None` detaches). Returns whether the subnet exists.
    pub fn attach_nsg_to_subnet(&self, subnet_id: &str, nsg_id: Option<&str>) -> bool {
        let Some((vnet_id, name)) = subnet_id.rsplit_once("/subnets/") else {
            return false;
        };
        let mut st = lock(&self.state);
        let subnet = st
            .inv
            .vnets
            .get_mut(&vnet_id.to_ascii_lowercase())
            .and_then(|v| {
                v.subnets
                    .iter_mut()
                    .find(|s| s.name.eq_ignore_ascii_case(name))
            });
        match subnet {
            Some(s) => {
                s.nsg_id = nsg_id.map(str::to_string);
                true
            }
            None => false,
        }
    }

    /// What the permissions API answers at `scope` and below (a role assignment there), instead
    /// of the shipped bot role. Several scopes on one path all apply, as assignments do.
    pub fn set_permissions(&self, scope: &str, actions: &[&str], not_actions: &[&str]) {
        let set = PermissionSet {
            actions: actions.iter().map(|a| a.to_string()).collect(),
            not_actions: not_actions.iter().map(|a| a.to_string()).collect(),
        };
        lock(&self.state)
            .inv
            .permissions
            .insert(scope.trim_end_matches('/').to_ascii_lowercase(), set);
    }

    /// Delete a rule behind jitbot's back (as someone in the portal would; no operation).
    /// Returns whether it existed.
    pub fn delete_rule_directly(&self, nsg_id: &str, name: &str) -> bool {
        let mut st = lock(&self.state);
        st.advance();
        let Some(nsg) = st.nsgs.get_mut(&nsg_id.to_ascii_lowercase()) else {
            return false;
        };
        let Some(i) = nsg.find(name) else {
            return false;
        };
        nsg.rules.remove(i);
        nsg.touch();
        true
    }

    /// Faults not consumed yet.
    pub fn pending_faults(&self) -> usize {
        lock(&self.state).faults.len()
    }

    /// How long operations started from now on stay `InProgress`.
    pub fn set_operation_delay(&self, d: Duration) {
        lock(&self.state).opts.operation_delay = d;
    }

    /// Accept only bearer tokens starting with `prefix` (`None`: any non-empty token); others get
    /// 401 `InvalidAuthenticationToken`.
    pub fn set_accepted_token_prefix(&self, prefix: Option<&str>) {
        lock(&self.state).accepted_prefix = prefix.map(str::to_string);
    }

    /// From now on answer this exact token with 401 `ExpiredAuthenticationToken`.
    pub fn expire_token(&self, token: &str) {
        lock(&self.state).expired.insert(token.to_string());
    }
}

const NSG_TYPE: &str = "Microsoft.Network/networkSecurityGroups";
const RULE_TYPE: &str = "Microsoft.Network/networkSecurityGroups/securityRules";
const DEFAULT_RULE_TYPE: &str = "Microsoft.Network/networkSecurityGroups/defaultSecurityRules";
const MAX_RULES: usize = 1000;

/// Path of an NSG (original case).
#[derive(Debug, Clone)]
struct NsgPath {
    sub: String,
    rg: String,
    name: String,
}

impl NsgPath {
    fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkSecurityGroups/{}",
            self.sub, self.rg, self.name
        )
    }
    fn key(&self) -> String {
        self.id().to_ascii_lowercase()
    }
}

enum Route {
    Nsg(NsgPath),
    RuleList(NsgPath),
    Rule(NsgPath, String),
    Operation {
        sub: String,
        id: String,
    },
    OperationResult {
        sub: String,
        id: String,
    },
    /// VMs, NICs, virtual networks, subnets, the lists and the permissions API.
    Inventory(inventory::InvRoute),
}

impl Route {
    fn subscription(&self) -> &str {
        match self {
            Route::Nsg(p) | Route::RuleList(p) | Route::Rule(p, _) => &p.sub,
            Route::Operation { sub, .. } | Route::OperationResult { sub, .. } => sub,
            Route::Inventory(r) => r.subscription(),
        }
    }
}

fn parse_route(path: &str) -> Option<Route> {
    parse_nsg_route(path).or_else(|| inventory::parse(path).map(Route::Inventory))
}

fn parse_nsg_route(path: &str) -> Option<Route> {
    let seg: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let is = |i: usize, s: &str| seg.get(i).is_some_and(|x| x.eq_ignore_ascii_case(s));
    if seg.len() < 3 || !seg[0].is_empty() || !is(1, "subscriptions") || seg[2].is_empty() {
        return None;
    }
    let sub = seg[2].to_string();
    if seg.len() == 9
        && is(3, "providers")
        && is(4, "Microsoft.Network")
        && is(5, "locations")
        && !seg[8].is_empty()
    {
        let id = seg[8].to_string();
        if is(7, "operations") {
            return Some(Route::Operation { sub, id });
        }
        if is(7, "operationResults") {
            return Some(Route::OperationResult { sub, id });
        }
        return None;
    }
    if seg.len() >= 9
        && is(3, "resourceGroups")
        && is(5, "providers")
        && is(6, "Microsoft.Network")
        && is(7, "networkSecurityGroups")
        && !seg[4].is_empty()
        && !seg[8].is_empty()
    {
        let p = NsgPath {
            sub,
            rg: seg[4].to_string(),
            name: seg[8].to_string(),
        };
        return match seg.len() {
            9 => Some(Route::Nsg(p)),
            10 if is(9, "securityRules") => Some(Route::RuleList(p)),
            11 if is(9, "securityRules") && !seg[10].is_empty() => {
                Some(Route::Rule(p, seg[10].to_string()))
            }
            _ => None,
        };
    }
    None
}

struct Nsg {
    id: String,
    name: String,
    location: String,
    etag: String,
    guid: String,
    rules: Vec<SecurityRule>,
    /// `tags`, if any.
    tags: Option<Value>,
    /// Properties the emulator does not manage (`flushConnection`, newer fields), kept as sent.
    extra_props: serde_json::Map<String, Value>,
    /// Top-level fields the emulator does not manage, kept as sent.
    extra: serde_json::Map<String, Value>,
}

impl Nsg {
    /// New etag for the NSG and all its rules (they share it).
    fn touch(&mut self) {
        self.etag = format!("W/\"{}\"", guid());
        for r in &mut self.rules {
            r.etag = Some(self.etag.clone());
        }
    }
    fn find(&self, name: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))
    }
    fn upsert(&mut self, rule: SecurityRule) -> bool {
        match self.find(&rule.name) {
            Some(i) => {
                self.rules[i] = rule;
                false
            }
            None => {
                self.rules.push(rule);
                true
            }
        }
    }
    fn to_json(&self) -> Value {
        let mut props = self.extra_props.clone();
        props.insert("provisioningState".into(), json!("Succeeded"));
        props.insert("resourceGuid".into(), json!(self.guid));
        props.insert("securityRules".into(), json!(self.rules));
        props.insert(
            "defaultSecurityRules".into(),
            json!(default_rules(&self.id, &self.etag)),
        );
        let mut top = self.extra.clone();
        for (k, v) in [
            ("name", json!(self.name)),
            ("id", json!(self.id)),
            ("etag", json!(self.etag)),
            ("type", json!(NSG_TYPE)),
            ("location", json!(self.location)),
            ("properties", Value::Object(props)),
        ] {
            top.insert(k.into(), v);
        }
        if let Some(tags) = &self.tags {
            top.insert("tags".into(), tags.clone());
        }
        Value::Object(top)
    }
}

/// Azure's six default rules.
fn default_rules(nsg_id: &str, etag: &str) -> Vec<Value> {
    let rows = [
        (
            "AllowVnetInBound",
            "Allow inbound traffic from all VMs in VNET",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow",
            65000,
            "Inbound",
        ),
        (
            "AllowAzureLoadBalancerInBound",
            "Allow inbound traffic from azure load balancer",
            "AzureLoadBalancer",
            "*",
            "Allow",
            65001,
            "Inbound",
        ),
        (
            "DenyAllInBound",
            "Deny all inbound traffic",
            "*",
            "*",
            "Deny",
            65500,
            "Inbound",
        ),
        (
            "AllowVnetOutBound",
            "Allow outbound traffic from all VMs to all VMs in VNET",
            "VirtualNetwork",
            "VirtualNetwork",
            "Allow",
            65000,
            "Outbound",
        ),
        (
            "AllowInternetOutBound",
            "Allow outbound traffic from all VMs to Internet",
            "*",
            "Internet",
            "Allow",
            65001,
            "Outbound",
        ),
        (
            "DenyAllOutBound",
            "Deny all outbound traffic",
            "*",
            "*",
            "Deny",
            65500,
            "Outbound",
        ),
    ];
    rows.iter()
        .map(|(name, desc, src, dst, access, prio, dir)| {
            json!({
                "name": name,
                "id": format!("{nsg_id}/defaultSecurityRules/{name}"),
                "etag": etag,
                "type": DEFAULT_RULE_TYPE,
                "properties": {
                    "provisioningState": "Succeeded",
                    "description": desc,
                    "protocol": "*",
                    "sourcePortRange": "*",
                    "destinationPortRange": "*",
                    "sourceAddressPrefix": src,
                    "destinationAddressPrefix": dst,
                    "access": access,
                    "priority": prio,
                    "direction": dir,
                    "sourcePortRanges": [],
                    "destinationPortRanges": [],
                    "sourceAddressPrefixes": [],
                    "destinationAddressPrefixes": [],
                }
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpStatus {
    InProgress,
    Succeeded,
    Failed,
}

impl OpStatus {
    fn as_str(self) -> &'static str {
        match self {
            OpStatus::InProgress => "InProgress",
            OpStatus::Succeeded => "Succeeded",
            OpStatus::Failed => "Failed",
        }
    }
}

struct Op {
    id: String,
    sub: String,
    nsg_key: String,
    nsg_id: String,
    rule: String,
    kind: OperationKind,
    created: bool,
    started: Instant,
    started_at: SystemTime,
    delay: Duration,
    fail: Option<String>,
    status: OpStatus,
    /// NSG-level PUT: the rules it creates or changes, and the rules it removes.
    changed: Vec<String>,
    removed: Vec<String>,
}

impl Op {
    fn record(&self) -> OperationRecord {
        OperationRecord {
            id: self.id.clone(),
            nsg_id: self.nsg_id.clone(),
            rule: self.rule.clone(),
            kind: self.kind,
            status: self.status.as_str().to_string(),
            started: self.started_at,
            finished: (self.status != OpStatus::InProgress).then(|| self.started_at + self.delay),
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One reply, before it becomes an HTTP response.
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Option<Value>,
    error_code: Option<String>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Some(body),
            error_code: None,
        }
    }
    fn empty(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: None,
            error_code: None,
        }
    }
    fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
        Reply::error_with_details(status, code, message, Vec::new())
    }
    fn error_with_details(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        details: Vec<Value>,
    ) -> Reply {
        Reply {
            status,
            headers: vec![("x-ms-error-code", code.to_string())],
            body: Some(
                json!({"error": {"code": code, "message": message.into(), "details": details}}),
            ),
            error_code: Some(code.to_string()),
        }
    }
    fn bad_request(code: &str, message: impl Into<String>) -> Reply {
        Reply::error(StatusCode::BAD_REQUEST, code, message)
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut resp = match self.body {
            Some(b) => (self.status, axum::Json(b)).into_response(),
            None => self.status.into_response(),
        };
        let h = resp.headers_mut();
        let id = guid();
        for (name, value) in [
            ("x-ms-request-id", id.clone()),
            ("x-ms-correlation-request-id", id),
        ]
        .into_iter()
        .chain(self.headers)
        {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        resp
    }
}

struct SimState {
    base_url: String,
    opts: ArmSimOptions,
    nsgs: HashMap<String, Nsg>,
    /// VMs, NICs, virtual networks and role assignments.
    inv: inventory::Inventory,
    ops: Vec<Op>,
    requests: Vec<RecordedRequest>,
    faults: VecDeque<FaultRule>,
    /// A fault that answers every matching request until cleared (an outage).
    outage: Option<FaultRule>,
    accepted_prefix: Option<String>,
    expired: HashSet<String>,
    busy_flip: bool,
    busy_rejections: usize,
    buckets: HashMap<(String, &'static str), Bucket>,
    /// When each PUT/DELETE within the cap's window arrived, per subscription.
    network_writes: HashMap<String, VecDeque<Instant>>,
    rule_events: Vec<RuleEvent>,
}

async fn handle(
    State(state): State<Arc<Mutex<SimState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (reply, delay) = lock(&state).process(&method, &uri, &headers, &body);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    reply.into_response()
}

impl SimState {
    fn new(base_url: String, opts: ArmSimOptions) -> Self {
        SimState {
            base_url,
            opts,
            nsgs: HashMap::new(),
            inv: inventory::Inventory::default(),
            ops: Vec::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            outage: None,
            accepted_prefix: None,
            expired: HashSet::new(),
            busy_flip: false,
            busy_rejections: 0,
            buckets: HashMap::new(),
            network_writes: HashMap::new(),
            rule_events: Vec::new(),
        }
    }

    fn create_nsg(&mut self, p: &NsgPath, location: &str) {
        let mut nsg = Nsg {
            id: p.id(),
            name: p.name.clone(),
            location: location.to_string(),
            etag: String::new(),
            guid: guid(),
            rules: Vec::new(),
            tags: None,
            extra_props: serde_json::Map::new(),
            extra: serde_json::Map::new(),
        };
        nsg.touch();
        self.nsgs.insert(p.key(), nsg);
    }

    /// Complete every operation whose time has come.
    fn advance(&mut self) {
        let now = Instant::now();
        let printer = self.opts.printer;
        for op in self
            .ops
            .iter_mut()
            .filter(|o| o.status == OpStatus::InProgress && now >= o.started + o.delay)
        {
            op.status = if op.fail.is_some() {
                OpStatus::Failed
            } else {
                OpStatus::Succeeded
            };
            let Some(nsg) = self.nsgs.get_mut(&op.nsg_key) else {
                continue;
            };
            let at = op.started_at + op.delay;
            if op.kind == OperationKind::NsgPut {
                nsg_put_done(nsg, op, at, printer, &mut self.rule_events);
                nsg.touch();
                continue;
            }
            let Some(i) = nsg.find(&op.rule) else {
                continue;
            };
            match (op.kind, op.status) {
                (OperationKind::Put, OpStatus::Succeeded) => {
                    nsg.rules[i].properties.provisioning_state = Some("Succeeded".into());
                    self.rule_events
                        .push(rule_event(&nsg.id, &op.rule, true, at));
                    if printer {
                        print_put(&nsg.name, &nsg.rules[i], op.created);
                    }
                }
                (OperationKind::Delete, OpStatus::Succeeded) => {
                    let gone = nsg.rules.remove(i);
                    self.rule_events
                        .push(rule_event(&nsg.id, &gone.name, false, at));
                    if printer {
                        tracing::info!(target: "jitbot_sim::arm",
                            "[simulated Azure] {}: closed {} (priority {})",
                            nsg.name, gone.name, gone.properties.priority);
                    }
                }
                _ => {
                    nsg.rules[i].properties.provisioning_state = Some("Failed".into());
                    if printer {
                        tracing::info!(target: "jitbot_sim::arm",
                            "[simulated Azure] {}: {:?} of {} failed with {}",
                            nsg.name, op.kind, op.rule, op.fail.as_deref().unwrap_or(""));
                    }
                }
            }
            nsg.touch();
        }
    }

    fn process(
        &mut self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> (Reply, Option<Duration>) {
        self.advance();
        let at = SystemTime::now();
        let path = uri.path().to_string();
        let query = uri.query().map(str::to_string);
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string());
        let body_json = (!body.is_empty()).then(|| serde_json::from_slice::<Value>(body));
        let mut delay = None;
        let if_match = headers.get("if-match").and_then(|v| v.to_str().ok());
        let mut reply = self.dispatch(
            method,
            &path,
            query.as_deref(),
            Credentials {
                bearer: bearer.as_deref(),
                if_match,
            },
            body_json.as_ref(),
            &mut delay,
        );
        if reply.status.is_success() {
            reply.headers.push(("cache-control", "no-cache".into()));
        }
        self.requests.push(RecordedRequest {
            method: method.to_string(),
            path,
            query,
            body: body_json.map(|r| {
                r.unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
            }),
            bearer,
            status: reply.status.as_u16(),
            error_code: reply.error_code.clone(),
            at,
        });
        (reply, delay)
    }

    fn dispatch(
        &mut self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        creds: Credentials<'_>,
        body: Option<&Result<Value, serde_json::Error>>,
        delay: &mut Option<Duration>,
    ) -> Reply {
        // Authentication comes first, as in ARM.
        let token = match creds.bearer {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Reply::error(
                    StatusCode::UNAUTHORIZED,
                    "AuthenticationFailed",
                    "Authentication failed. The 'Authorization' header is missing.",
                )
                .header("www-authenticate", www_authenticate("invalid_token"));
            }
        };
        if self
            .accepted_prefix
            .as_deref()
            .is_some_and(|p| !token.starts_with(p))
        {
            return Reply::error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
            .header("www-authenticate", www_authenticate("invalid_token"));
        }
        if self.expired.contains(token) {
            return expired_token_reply();
        }
        let params: HashMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let Some(api_version) = params.get("api-version").cloned() else {
            return Reply::bad_request(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        };

        // Injected faults.
        if let Some(fault) = self.take_fault(method, path) {
            match fault {
                Fault::Throttle { retry_after_secs } => {
                    return throttled_reply("write", retry_after_secs);
                }
                Fault::AnotherOperationInProgress => {
                    return another_operation_reply(&format!("{}{}", self.base_url, path));
                }
                Fault::ServerError => {
                    return Reply::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalServerError",
                        "An error occurred.",
                    );
                }
                Fault::Unavailable { retry_after_secs } => {
                    return Reply::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "The service is temporarily unavailable. Please try again later.",
                    )
                    .header("retry-after", retry_after_secs.to_string());
                }
                Fault::ExpiredToken => return expired_token_reply(),
                Fault::Forbidden => {
                    let action = match *method {
                        Method::PUT => "write",
                        Method::DELETE => "delete",
                        _ => "read",
                    };
                    return Reply::error(
                        StatusCode::FORBIDDEN,
                        "AuthorizationFailed",
                        format!(
                            "The client 'jitbot' with object id '00000000-0000-0000-0000-000000000000' \
                             does not have authorization to perform action \
                             'Microsoft.Network/networkSecurityGroups/securityRules/{action}' over scope \
                             '{path}' or the scope is invalid. If access was recently granted, please \
                             refresh your credentials."
                        ),
                    );
                }
                Fault::Delay(d) => *delay = Some(d),
                Fault::FailOperation { .. } => {}
            }
        }

        let Some(route) = parse_route(path) else {
            return Reply::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("No HTTP resource was found that matches the request URI '{path}'."),
            );
        };

        // ARM's token bucket.
        let bucket_kind = match *method {
            Method::PUT => "writes",
            Method::DELETE => "deletes",
            _ => "reads",
        };
        let remaining = match self.take_token(route.subscription(), bucket_kind) {
            Ok(r) => r,
            Err(wait) => {
                return throttled_reply(bucket_kind.trim_end_matches('s'), wait)
                    .header(ratelimit_header(bucket_kind), "0");
            }
        };
        if bucket_kind != "reads"
            && let Err(wait) = self.take_network_write(route.subscription())
        {
            return throttled_reply("Microsoft.Network write", wait);
        }

        let reply = match (method.clone(), route) {
            (Method::GET, Route::Nsg(p)) => match self.nsg(&p).map(|n| n.to_json()) {
                Some(body) => Reply::json(StatusCode::OK, self.with_attachments(body)),
                None => nsg_not_found(&p),
            },
            (Method::GET, Route::Inventory(r)) => self.inventory(r, &params, &api_version),
            (Method::GET, Route::RuleList(p)) => self.list_rules(&p, &params, &api_version),
            (Method::GET, Route::Rule(p, name)) => match self.nsg(&p) {
                None => nsg_not_found(&p),
                Some(nsg) => match nsg.find(&name) {
                    Some(i) => Reply::json(StatusCode::OK, to_value(&nsg.rules[i])),
                    None => rule_not_found(&p, &name),
                },
            },
            (Method::PUT, Route::Rule(p, name)) => {
                self.put_rule(method, path, &p, &name, body, &api_version)
            }
            (Method::PUT, Route::Nsg(p)) => {
                self.put_nsg(method, path, &p, body, creds.if_match, &api_version)
            }
            (Method::DELETE, Route::Rule(p, name)) => {
                self.delete_rule(method, path, &p, &name, &api_version)
            }
            (Method::GET, Route::Operation { id, .. }) => self.operation_status(&id),
            (Method::GET, Route::OperationResult { id, .. }) => {
                self.operation_result(&id, &api_version)
            }
            (m, _) => Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("The requested resource does not support http method '{m}'."),
            ),
        };
        reply.header(ratelimit_header(bucket_kind), remaining.to_string())
    }

    /// Consume the first queued fault that matches (FailOperation is consumed elsewhere).
    fn take_fault(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let queued = self.faults.iter().position(|f| {
            !matches!(f.fault, Fault::FailOperation { .. }) && f.on.matches(method, path)
        });
        match queued {
            Some(i) => self.faults.remove(i).map(|f| f.fault),
            None => self
                .outage
                .as_ref()
                .filter(|o| {
                    !matches!(o.fault, Fault::FailOperation { .. }) && o.on.matches(method, path)
                })
                .map(|o| o.fault.clone()),
        }
    }

    fn take_fail_operation(&mut self, method: &Method, path: &str) -> Option<String> {
        let i = self.faults.iter().position(|f| {
            matches!(f.fault, Fault::FailOperation { .. }) && f.on.matches(method, path)
        })?;
        match self.faults.remove(i)?.fault {
            Fault::FailOperation { code } => Some(code),
            _ => None,
        }
    }

    fn take_token(&mut self, sub: &str, kind: &'static str) -> Result<u64, u64> {
        let Some(t) = self.opts.throttling else {
            return Ok(u64::MAX);
        };
        let (burst, rate) = if kind == "reads" {
            (t.read_burst, t.read_refill_per_sec)
        } else {
            (t.write_burst, t.write_refill_per_sec)
        };
        let now = Instant::now();
        let b = self
            .buckets
            .entry((sub.to_ascii_lowercase(), kind))
            .or_insert(Bucket {
                tokens: burst,
                last: now,
            });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(b.tokens.floor() as u64)
        } else {
            let wait = if rate > 0.0 {
                ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64
            } else {
                60
            };
            Err(wait)
        }
    }

    /// The NSG, created on first use when `auto_create_nsgs` is set.
    fn nsg(&mut self, p: &NsgPath) -> Option<&mut Nsg> {
        let key = p.key();
        if !self.nsgs.contains_key(&key)
            && let Some(loc) = self.opts.auto_create_nsgs.clone()
        {
            self.create_nsg(p, &loc);
        }
        self.nsgs.get_mut(&key)
    }

    fn busy(&self, key: &str) -> Option<&Op> {
        self.ops
            .iter()
            .find(|o| o.nsg_key == key && o.status == OpStatus::InProgress)
    }

    fn busy_reply(&mut self, key: &str) -> Reply {
        self.busy_rejections += 1;
        let (op_id, op_rule, sub, loc) = match self.busy(key) {
            Some(op) => (
                op.id.clone(),
                op.rule.clone(),
                op.sub.clone(),
                self.nsgs
                    .get(key)
                    .map(|n| n.location.clone())
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        let nsg_id = self.nsgs.get(key).map(|n| n.id.clone()).unwrap_or_default();
        let throttle = match self.opts.busy_response {
            BusyResponse::Throttle => true,
            BusyResponse::Conflict => false,
            BusyResponse::Alternate => {
                self.busy_flip = !self.busy_flip;
                self.busy_flip
            }
        };
        let secs = self.opts.retry_after_secs;
        if throttle {
            Reply::error_with_details(
                StatusCode::TOO_MANY_REQUESTS,
                "RetryableError",
                "A retryable error occurred.",
                vec![json!({
                    "code": "RetryableErrorDueToAnotherOperation",
                    "message": format!(
                        "Operation PutSecurityRuleOperation (rule {op_rule}) is updating resource \
                         {nsg_id}. The call can be retried in {secs} seconds."
                    )
                })],
            )
            .header("retry-after", secs.to_string())
        } else {
            another_operation_reply(&format!(
                "{}/subscriptions/{sub}/providers/Microsoft.Network/locations/{loc}/operations/{op_id}",
                self.base_url
            ))
            .header("retry-after", secs.to_string())
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_op(
        &mut self,
        method: &Method,
        path: &str,
        p: &NsgPath,
        nsg_id: &str,
        rule: &str,
        kind: OperationKind,
        created: bool,
    ) -> String {
        let fail = self.take_fail_operation(method, path);
        let id = guid();
        self.ops.push(Op {
            id: id.clone(),
            sub: p.sub.clone(),
            nsg_key: p.key(),
            nsg_id: nsg_id.to_string(),
            rule: rule.to_string(),
            kind,
            created,
            started: Instant::now(),
            started_at: SystemTime::now(),
            delay: self.opts.operation_delay,
            fail,
            status: OpStatus::InProgress,
            changed: Vec::new(),
            removed: Vec::new(),
        });
        id
    }

    fn op_urls(
        &self,
        p: &NsgPath,
        location: &str,
        id: &str,
        api_version: &str,
    ) -> (String, String) {
        let base = format!(
            "{}/subscriptions/{}/providers/Microsoft.Network/locations/{location}",
            self.base_url, p.sub
        );
        (
            format!("{base}/operations/{id}?api-version={api_version}"),
            format!("{base}/operationResults/{id}?api-version={api_version}"),
        )
    }

    fn put_rule(
        &mut self,
        method: &Method,
        path: &str,
        p: &NsgPath,
        name: &str,
        body: Option<&Result<Value, serde_json::Error>>,
        api_version: &str,
    ) -> Reply {
        let key = p.key();
        let Some(nsg) = self.nsg(p) else {
            return nsg_not_found(p);
        };
        if let Err(r) = validate_rule_name(name) {
            return r;
        }
        let value = match body {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return Reply::bad_request(
                    "InvalidRequestFormat",
                    format!("Cannot parse the request. {e}"),
                );
            }
            None => {
                return Reply::bad_request(
                    "InvalidRequestFormat",
                    "Cannot parse the request. The request body is missing.",
                );
            }
        };
        let rule_id = format!("{}/securityRules/{name}", nsg.id);
        let mut props = match validate_properties(&rule_id, value) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let existing = nsg.find(name);
        if existing.is_none() && nsg.rules.len() >= MAX_RULES {
            return Reply::bad_request(
                "SecurityRulesPerNetworkSecurityGroupLimitReached",
                format!(
                    "Network security group {} cannot have more than {MAX_RULES} security rules.",
                    nsg.id
                ),
            );
        }
        if let Some(other) = nsg.rules.iter().find(|r| {
            !r.name.eq_ignore_ascii_case(name)
                && r.properties.priority == props.priority
                && r.properties
                    .direction
                    .eq_ignore_ascii_case(&props.direction)
        }) {
            return Reply::bad_request(
                "SecurityRuleConflict",
                format!(
                    "Security rule {name} conflicts with rule {}. Rules cannot have the same \
                     Priority and Direction. To learn more, see aka.ms/nsgrules.",
                    other.name
                ),
            );
        }
        if self.busy(&key).is_some() {
            return self.busy_reply(&key);
        }
        let Some(nsg) = self.nsgs.get_mut(&key) else {
            return nsg_not_found(p);
        };
        let stored_name = existing
            .map(|i| nsg.rules[i].name.clone())
            .unwrap_or_else(|| name.to_string());
        props.provisioning_state = Some("Updating".into());
        normalize_plurals(&mut props);
        let rule = SecurityRule {
            name: stored_name.clone(),
            id: Some(format!("{}/securityRules/{stored_name}", nsg.id)),
            etag: None,
            resource_type: Some(RULE_TYPE.to_string()),
            properties: props,
        };
        let created = nsg.upsert(rule);
        nsg.touch();
        let location = nsg.location.clone();
        let nsg_id = nsg.id.clone();
        let body = nsg
            .find(&stored_name)
            .map(|i| to_value(&nsg.rules[i]))
            .unwrap_or(Value::Null);
        let op = self.start_op(
            method,
            path,
            p,
            &nsg_id,
            &stored_name,
            OperationKind::Put,
            created,
        );
        let (async_url, _) = self.op_urls(p, &location, &op, api_version);
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Reply::json(status, body)
            .header("azure-asyncoperation", async_url)
            .header(
                "retry-after",
                self.retry_after(OperationKind::Put).to_string(),
            )
    }

    fn delete_rule(
        &mut self,
        method: &Method,
        path: &str,
        p: &NsgPath,
        name: &str,
        api_version: &str,
    ) -> Reply {
        let key = p.key();
        let Some(nsg) = self.nsg(p) else {
            return nsg_not_found(p);
        };
        let Some(i) = nsg.find(name) else {
            return Reply::empty(StatusCode::NO_CONTENT);
        };
        let stored_name = nsg.rules[i].name.clone();
        if self.busy(&key).is_some() {
            return self.busy_reply(&key);
        }
        let Some(nsg) = self.nsgs.get_mut(&key) else {
            return nsg_not_found(p);
        };
        nsg.rules[i].properties.provisioning_state = Some("Deleting".into());
        nsg.touch();
        let location = nsg.location.clone();
        let nsg_id = nsg.id.clone();
        let op = self.start_op(
            method,
            path,
            p,
            &nsg_id,
            &stored_name,
            OperationKind::Delete,
            false,
        );
        let (async_url, location_url) = self.op_urls(p, &location, &op, api_version);
        Reply::empty(StatusCode::ACCEPTED)
            .header("azure-asyncoperation", async_url)
            .header("location", location_url)
            .header(
                "retry-after",
                self.retry_after(OperationKind::Delete).to_string(),
            )
    }

    fn operation_status(&self, id: &str) -> Reply {
        let Some(op) = self.ops.iter().find(|o| o.id.eq_ignore_ascii_case(id)) else {
            return Reply::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("Operation {id} was not found."),
            );
        };
        let mut body = json!({ "name": op.id, "status": op.status.as_str() });
        if op.status == OpStatus::Failed {
            let code = op.fail.clone().unwrap_or_default();
            body["error"] = json!({
                "code": code,
                "message": format!("Operation on rule {} failed with {code}.", op.rule),
                "details": []
            });
        }
        let mut reply = Reply::json(StatusCode::OK, body);
        if op.status == OpStatus::InProgress {
            reply = reply.header("retry-after", self.retry_after(op.kind).to_string());
        }
        reply
    }

    fn operation_result(&self, id: &str, api_version: &str) -> Reply {
        let Some(op) = self.ops.iter().find(|o| o.id.eq_ignore_ascii_case(id)) else {
            return Reply::error(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("Operation {id} was not found."),
            );
        };
        match op.status {
            OpStatus::InProgress => Reply::empty(StatusCode::ACCEPTED)
                .header(
                    "location",
                    format!(
                        "{}/subscriptions/{}/providers/Microsoft.Network/locations/{}/operationResults/{}?api-version={api_version}",
                        self.base_url,
                        op.sub,
                        self.nsgs.get(&op.nsg_key).map(|n| n.location.as_str()).unwrap_or(""),
                        op.id
                    ),
                )
                .header("retry-after", self.retry_after(op.kind).to_string()),
            OpStatus::Succeeded => match op.kind {
                OperationKind::Delete => Reply::empty(StatusCode::NO_CONTENT),
                OperationKind::Put | OperationKind::NsgPut => Reply::empty(StatusCode::OK),
            },
            OpStatus::Failed => {
                let code = op.fail.clone().unwrap_or_default();
                let status = if code == "AnotherOperationInProgress" {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::BAD_REQUEST
                };
                Reply::error(status, &code, format!("Operation on rule {} failed.", op.rule))
            }
        }
    }

    fn list_rules(
        &mut self,
        p: &NsgPath,
        params: &HashMap<String, String>,
        api_version: &str,
    ) -> Reply {
        let page_size = self.opts.page_size.max(1);
        let base_url = self.base_url.clone();
        let Some(nsg) = self.nsg(p) else {
            return nsg_not_found(p);
        };
        let skip: usize = params
            .get("$skiptoken")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let page: Vec<Value> = nsg
            .rules
            .iter()
            .skip(skip)
            .take(page_size)
            .map(to_value)
            .collect();
        let mut body = json!({ "value": page });
        if skip + page_size < nsg.rules.len() {
            body["nextLink"] = json!(format!(
                "{base_url}{}/securityRules?api-version={api_version}&$skiptoken={}",
                nsg.id,
                skip + page_size
            ));
        }
        Reply::json(StatusCode::OK, body)
    }
}

/// The inventory half of the emulator: lists, GETs of VMs, NICs, virtual networks and subnets,
/// and the permissions API.
impl SimState {
    /// Adds what the NSG is attached to (`networkInterfaces[]`, `subnets[]`), as ARM shows it.
    fn with_attachments(&self, mut nsg: Value) -> Value {
        let id = nsg["id"].as_str().unwrap_or_default().to_string();
        let (nics, subnets) = self.inv.attachments(&id);
        if !nics.is_empty() {
            nsg["properties"]["networkInterfaces"] = Value::Array(nics);
        }
        if !subnets.is_empty() {
            nsg["properties"]["subnets"] = Value::Array(subnets);
        }
        nsg
    }

    fn inventory(
        &mut self,
        route: inventory::InvRoute,
        params: &HashMap<String, String>,
        api_version: &str,
    ) -> Reply {
        use inventory::InvRoute;
        if let Err(r) = inventory::check_api_version(&route, api_version) {
            return r;
        }
        match route {
            InvRoute::List {
                prefix, kind, path, ..
            } => {
                let skip = params
                    .get("$skiptoken")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let items = self.list_items(kind, &prefix);
                let next_base = format!("{}{path}", self.base_url);
                inventory::page(
                    items,
                    skip,
                    self.opts.list_page_size,
                    &next_base,
                    api_version,
                )
            }
            InvRoute::Get { kind, id, .. } => self.inv.get(kind, &id),
            InvRoute::Subnet { vnet_id, name, .. } => self.inv.subnet(&vnet_id, &name),
            InvRoute::Permissions { scope, .. } => self.inv.permissions(&scope),
        }
    }

    /// Every resource of a kind under a lower-cased id prefix, sorted by id.
    fn list_items(&self, kind: inventory::Kind, prefix: &str) -> Vec<Value> {
        use inventory::{Kind, under};
        let inv = &self.inv;
        match kind {
            Kind::Vm => inv
                .vms
                .values()
                .filter(|v| under(&v.id, prefix))
                .map(|v| inv.vm_json(v))
                .collect(),
            Kind::Nic => inv
                .nics
                .values()
                .filter(|n| under(&n.id, prefix))
                .map(|n| inv.nic_json(n))
                .collect(),
            Kind::Vnet => inv
                .vnets
                .values()
                .filter(|v| under(&v.id, prefix))
                .map(|v| inv.vnet_json(v))
                .collect(),
            Kind::Nsg => {
                let mut keys: Vec<&String> =
                    self.nsgs.keys().filter(|k| k.starts_with(prefix)).collect();
                keys.sort();
                keys.into_iter()
                    .filter_map(|k| self.nsgs.get(k))
                    .map(|n| self.with_attachments(n.to_json()))
                    .collect()
            }
        }
    }
}

fn print_put(nsg: &str, rule: &SecurityRule, created: bool) {
    let p = &rule.properties;
    let verb = match (
        created,
        p.access.eq_ignore_ascii_case("Allow") && p.is_inbound(),
    ) {
        (true, true) => "opened",
        (true, false) => "added",
        (false, _) => "updated",
    };
    tracing::info!(target: "jitbot_sim::arm",
        "[simulated Azure] {nsg}: {verb} {} priority {} {} {} {} from {} to {}",
        rule.name,
        p.priority,
        p.access,
        p.protocol,
        p.destination_ports().join(","),
        p.source_prefixes().join(","),
        p.destination_prefixes().join(","));
}

fn to_value(rule: &SecurityRule) -> Value {
    serde_json::to_value(rule).unwrap_or(Value::Null)
}

/// ARM echoes empty arrays for the plural fields that were not given.
fn normalize_plurals(p: &mut SecurityRuleProperties) {
    for f in [
        &mut p.source_port_ranges,
        &mut p.destination_port_ranges,
        &mut p.source_address_prefixes,
        &mut p.destination_address_prefixes,
    ] {
        if f.is_none() {
            *f = Some(Vec::new());
        }
    }
}

fn www_authenticate(error: &str) -> String {
    format!(
        "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", \
         error=\"{error}\", error_description=\"The authentication failed\""
    )
}

fn expired_token_reply() -> Reply {
    let now = chrono::Utc::now();
    Reply::error(
        StatusCode::UNAUTHORIZED,
        "ExpiredAuthenticationToken",
        format!(
            "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
            (now - chrono::Duration::minutes(5)).format("%-m/%-d/%Y %-I:%M:%S %p"),
            now.format("%-m/%-d/%Y %-I:%M:%S %p")
        ),
    )
    .header("www-authenticate", www_authenticate("invalid_token"))
}

fn throttled_reply(kind: &str, retry_after_secs: u64) -> Reply {
    Reply::error(
        StatusCode::TOO_MANY_REQUESTS,
        "SubscriptionRequestsThrottled",
        format!(
            "Number of '{kind}' requests for subscription actor 'jitbot' exceeded. Please try \
             again after '{retry_after_secs}' seconds after additional tokens are available."
        ),
    )
    .header("retry-after", retry_after_secs.to_string())
}

fn another_operation_reply(op_url: &str) -> Reply {
    Reply::error(
        StatusCode::CONFLICT,
        "AnotherOperationInProgress",
        format!(
            "Another operation on this or dependent resource is in progress. To retrieve status \
             of the operation use uri: {op_url}."
        ),
    )
}

fn ratelimit_header(kind: &str) -> &'static str {
    match kind {
        "writes" => "x-ms-ratelimit-remaining-subscription-writes",
        "deletes" => "x-ms-ratelimit-remaining-subscription-deletes",
        _ => "x-ms-ratelimit-remaining-subscription-reads",
    }
}

fn nsg_not_found(p: &NsgPath) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.Network/networkSecurityGroups/{}' under resource group '{}' \
             was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            p.name, p.rg
        ),
    )
}

fn rule_not_found(p: &NsgPath, name: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("Resource {}/securityRules/{name} not found.", p.id()),
    )
}

/// Random GUID-shaped id.
fn guid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// ---------------------------------------------------------------------------------------------
// Validation of PUT bodies against the swagger and ARM's documented rules.

fn validate_rule_name(name: &str) -> Result<(), Reply> {
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let ok = !name.is_empty()
        && name.len() <= 80
        && chars_ok
        && name.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Reply::bad_request(
            "InvalidResourceName",
            format!(
                "Resource name {name} is invalid. The name can be up to 80 characters long. It \
                 must begin with a word character, and it must end with a word character or with \
                 '_'. The name may contain word characters or '.', '-', '_'."
            ),
        ))
    }
}

fn get_str(props: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, Reply> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Reply::bad_request(
            "InvalidRequestFormat",
            format!("Cannot parse the request. Property '{key}' must be a string, got {other}."),
        )),
    }
}

fn get_list(props: &serde_json::Map<String, Value>, key: &str) -> Result<Vec<String>, Reply> {
    match props.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(Reply::bad_request(
                    "InvalidRequestFormat",
                    format!(
                        "Cannot parse the request. Items of '{key}' must be strings, got {other}."
                    ),
                )),
            })
            .collect(),
        Some(other) => Err(Reply::bad_request(
            "InvalidRequestFormat",
            format!("Cannot parse the request. Property '{key}' must be an array, got {other}."),
        )),
    }
}

fn one_of(
    rule_id: &str,
    props: &serde_json::Map<String, Value>,
    key: &str,
    allowed: &[&str],
) -> Result<String, Reply> {
    let Some(v) = get_str(props, key)? else {
        return Err(Reply::bad_request(
            "InvalidRequestFormat",
            format!("Security rule {rule_id} is missing the required property '{key}'."),
        ));
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(&v)) {
        Ok(v)
    } else {
        Err(Reply::bad_request(
            "SecurityRuleParameterContainsUnsupportedValue",
            format!(
                "Security rule parameter {key} for rule with Id {rule_id} cannot be '{v}'. \
                 Supported values are: {}.",
                allowed.join(", ")
            ),
        ))
    }
}

fn validate_properties(rule_id: &str, body: &Value) -> Result<SecurityRuleProperties, Reply> {
    let Some(props) = body.get("properties").and_then(Value::as_object) else {
        return Err(Reply::bad_request(
            "InvalidRequestFormat",
            "Cannot parse the request. 'properties' is missing or is not an object.",
        ));
    };
    one_of(
        rule_id,
        props,
        "protocol",
        &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"],
    )?;
    one_of(rule_id, props, "access", &["Allow", "Deny"])?;
    one_of(rule_id, props, "direction", &["Inbound", "Outbound"])?;
    match props.get("priority") {
        None | Some(Value::Null) => {
            return Err(Reply::bad_request(
                "InvalidRequestFormat",
                format!("Security rule {rule_id} is missing the required property 'priority'."),
            ));
        }
        Some(v) => match v.as_i64() {
            Some(p) if (100..=4096).contains(&p) => {}
            Some(p) => {
                return Err(Reply::bad_request(
                    "SecurityRuleInvalidPriority",
                    format!(
                        "Security rule has invalid Priority. Value provided: {p} Allowed range 100-4096."
                    ),
                ));
            }
            None => {
                return Err(Reply::bad_request(
                    "InvalidRequestFormat",
                    format!("Cannot parse the request. 'priority' must be an integer, got {v}."),
                ));
            }
        },
    }
    if let Some(d) = get_str(props, "description")?
        && d.chars().count() > 140
    {
        return Err(Reply::bad_request(
            "SecurityRuleParameterContainsUnsupportedValue",
            format!(
                "Security rule {rule_id} has a description of {} characters; the limit is 140.",
                d.chars().count()
            ),
        ));
    }
    for side in ["source", "destination"] {
        validate_ports(rule_id, props, side)?;
        validate_prefixes(rule_id, props, side)?;
    }
    serde_json::from_value::<SecurityRuleProperties>(Value::Object(props.clone())).map_err(|e| {
        Reply::bad_request(
            "InvalidRequestFormat",
            format!("Cannot parse the request. {e}"),
        )
    })
}

fn validate_ports(
    rule_id: &str,
    props: &serde_json::Map<String, Value>,
    side: &str,
) -> Result<(), Reply> {
    let one_key = format!("{side}PortRange");
    let many_key = format!("{side}PortRanges");
    let one = get_str(props, &one_key)?;
    let many = get_list(props, &many_key)?;
    let bad = |v: &str| {
        Reply::bad_request(
            "SecurityRuleInvalidPortRange",
            format!(
                "Security rule has invalid Port range. Value provided: {v}. Value should be an \
                 integer OR integer range with '-' delimiter. Valid range 0-65535."
            ),
        )
    };
    match (one, many.is_empty()) {
        (Some(_), false) => Err(Reply::bad_request(
            "SecurityRuleInvalidPortRange",
            format!("Security rule {rule_id} cannot specify both {one_key} and {many_key}."),
        )),
        (None, true) => Err(Reply::bad_request(
            "SecurityRuleInvalidPortRange",
            format!("Security rule {rule_id} must specify {one_key} or {many_key}."),
        )),
        (Some(v), true) => {
            if v == "*" || valid_port_range(&v) {
                Ok(())
            } else {
                Err(bad(&v))
            }
        }
        (None, false) => match many.iter().find(|v| !valid_port_range(v)) {
            Some(v) => Err(bad(v)),
            None => Ok(()),
        },
    }
}

/// `N` or `N-M` with 0 ≤ N ≤ M ≤ 65535 (no `*`, no lists).
fn valid_port_range(v: &str) -> bool {
    let num = |s: &str| -> Option<u16> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match v.split_once('-') {
        None => num(v).is_some(),
        Some((a, b)) => matches!((num(a), num(b)), (Some(a), Some(b)) if a <= b),
    }
}

fn validate_prefixes(
    rule_id: &str,
    props: &serde_json::Map<String, Value>,
    side: &str,
) -> Result<(), Reply> {
    let one_key = format!("{side}AddressPrefix");
    let many_key = format!("{side}AddressPrefixes");
    let asg_key = format!("{side}ApplicationSecurityGroups");
    let one = get_str(props, &one_key)?;
    let many = get_list(props, &many_key)?;
    let has_asg = props
        .get(&asg_key)
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let bad = |v: &str, why: &str| {
        Reply::bad_request(
            "SecurityRuleInvalidAddressPrefix",
            format!("Security rule has invalid Address prefix. Value provided: {v}. {why}"),
        )
    };
    let given = usize::from(one.is_some()) + usize::from(!many.is_empty()) + usize::from(has_asg);
    if given == 0 {
        return Err(Reply::bad_request(
            "SecurityRuleInvalidAddressPrefix",
            format!("Security rule {rule_id} must specify {one_key}, {many_key} or {asg_key}."),
        ));
    }
    if given > 1 {
        return Err(Reply::bad_request(
            "SecurityRuleInvalidAddressPrefix",
            format!(
                "Security rule {rule_id} can specify only one of {one_key}, {many_key} and {asg_key}."
            ),
        ));
    }
    if let Some(v) = one
        && !(v == "*" || is_service_tag(&v) || is_ip_or_cidr(&v))
    {
        return Err(bad(
            &v,
            "Value should be an IP address, a CIDR, '*' or a service tag.",
        ));
    }
    for v in &many {
        if !is_ip_or_cidr(v) {
            return Err(bad(
                v,
                &format!(
                    "{many_key} accepts IP addresses and CIDRs only; '*' and service tags go in {one_key}."
                ),
            ));
        }
    }
    Ok(())
}

fn is_ip_or_cidr(v: &str) -> bool {
    v.parse::<std::net::IpAddr>().is_ok() || v.parse::<ipnet::IpNet>().is_ok()
}

/// `Internet`, `VirtualNetwork`, `AzureLoadBalancer`, `Storage.WestEurope`, …
fn is_service_tag(v: &str) -> bool {
    let mut parts = v.split('.');
    let first_ok = parts.next().is_some_and(|p| {
        p.starts_with(|c: char| c.is_ascii_alphabetic())
            && p.chars().all(|c| c.is_ascii_alphanumeric())
    });
    first_ok
        && parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && !v.eq_ignore_ascii_case("any")
}
