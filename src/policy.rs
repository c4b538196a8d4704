//! Who may ask for what, and who approves: the policy part of the configuration file,
//! resolved and checked once at start (and by `jitbot check`).
//!
//! Every refusal is a [`Refusal`]: the rule that refused and a sentence that says what is allowed.

use crate::command::AccessRequest;
use crate::domain::{GrantDuration, Ports, SourceCidr, SourceSpec};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Longest grant any target may allow, and longest approval wait.
pub const MAX_GRANT: u64 = 24 * 3600;

// ---------------------------------------------------------------------------------------------
// The file format (TOML). Unknown keys are errors so typos never silently weaken policy.

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PersonFile {
    pub slack: Option<String>,
    pub discord: Option<String>,
    /// Display name for messages; defaults to the key.
    pub display_name: Option<String>,
    /// The addresses this person usually connects from: a request without `from` uses the first
    /// one inside the target's allowed sources (before the target's `default_source`).
    #[serde(default)]
    pub sources: Vec<String>,
    /// The person's Microsoft Entra ID object id (a GUID): on `step_up` targets only a sign-in
    /// as this directory user makes their approval count.
    pub entra: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelsFile {
    pub slack: Option<String>,
    pub discord: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApproveFile {
    /// Principals whose requests are approved by policy (`"alice"`, `"group:oncall"`).
    pub requesters: Vec<String>,
    /// Ports eligible for auto-approval; empty means all of the target's ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Longest grant that is auto-approved.
    pub max_duration: String,
    /// At most this many auto-approvals of the target within `per`; past it, requests wait for
    /// approvers as usual. Unlimited when absent.
    pub max_uses: Option<u32>,
    /// The window `max_uses` counts in (e.g. `"1h"`); required with `max_uses`.
    pub per: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// Full ARM resource id of the NSG (with `destination`), or …
    pub nsg: Option<String>,
    /// The VM's private address (or prefix) the rule admits traffic to.
    pub destination: Option<String>,
    /// … full ARM resource id of the VM: its primary NIC's primary IP configuration is the
    /// destination and every NSG on its path (subnet's, NIC's) gets the rule, resolved at start
    /// and every `azure.resolve_interval`.
    pub vm: Option<String>,
    pub ports: Vec<u16>,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub max_duration: String,
    pub allowed_sources: Vec<String>,
    pub default_source: Option<String>,
    /// Allow `from *` / `0.0.0.0/0`. Off unless written here.
    #[serde(default)]
    pub allow_any_source: bool,
    /// Who may request this target (`"*"` = every person in `[people]`).
    pub requesters: Vec<String>,
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub approvals_required: u32,
    #[serde(default)]
    pub allow_self_approval: bool,
    #[serde(default)]
    pub approval_channel: ChannelsFile,
    pub priority_range: [u16; 2],
    /// Keep a Deny for the ports right after the band in every NSG on the path (`jitbot
    /// lockdown` writes it; the reconciler puts it back if it goes missing or is weakened).
    #[serde(default)]
    pub lockdown: bool,
    /// Requests must give a reason.
    #[serde(default)]
    pub require_reason: bool,
    /// The reason must match this regular expression (e.g. `^INC-\d+`); implies a reason.
    pub reason_pattern: Option<String>,
    /// More approvals when these ports are requested: `{ "3389" = 2 }`.
    #[serde(default)]
    pub port_approvals: BTreeMap<String, u32>,
    /// When requests are accepted, `"08:00-18:00"`, in `time_zone` (IANA, default UTC).
    pub allowed_hours: Option<String>,
    pub time_zone: Option<String>,
    /// `/jit break-glass` may open it without approval (with a reason, loudly).
    #[serde(default)]
    pub break_glass: bool,
    /// The longest break-glass grant (default 30m, never more than `max_duration`).
    pub break_glass_max: Option<String>,
    /// Remind the approvers who have not decided after this long (e.g. `"10m"`).
    pub remind_approvers_after: Option<String>,
    /// After this long undecided (e.g. `"30m"`), `escalation_approvers` get the card too.
    pub escalate_after: Option<String>,
    #[serde(default)]
    pub escalation_approvers: Vec<String>,
    #[serde(default = "default_pending_ttl")]
    pub pending_ttl: String,
    /// Extensions are applied without a new approval round.
    #[serde(default)]
    pub extend_without_approval: bool,
    pub auto_approve: Option<AutoApproveFile>,
    /// Approve counts only after the approver signs in with Entra ID and confirms on jitbot's
    /// page (`[entra]`, `server.public_url` and `people.<name>.entra` needed).
    #[serde(default)]
    pub step_up: bool,
    /// At most this many requests of the target open or waiting at once (pending, approved,
    /// open, closing). Unlimited when absent.
    pub max_concurrent_grants: Option<u32>,
}

/// `[limits]`: per-person abuse limits, counted from the database when a request is made.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PersonLimits {
    /// Requests of one person waiting for approval at once.
    #[serde(default = "default_max_pending")]
    pub max_pending_per_person: u32,
    /// Requests one person may make in any hour (refused ones do not count).
    #[serde(default = "default_max_per_hour")]
    pub max_requests_per_hour: u32,
}

impl Default for PersonLimits {
    fn default() -> Self {
        PersonLimits {
            max_pending_per_person: default_max_pending(),
            max_requests_per_hour: default_max_per_hour(),
        }
    }
}

fn default_max_pending() -> u32 {
    5
}
fn default_max_per_hour() -> u32 {
    20
}

fn default_protocol() -> String {
    "Tcp".into()
}
fn one() -> u32 {
    1
}
fn default_pending_ttl() -> String {
    "15m".into()
}

// ---------------------------------------------------------------------------------------------
// The resolved policy.

/// A person known to jitbot, with their chat identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub display_name: String,
    pub slack: Option<String>,
    pub discord: Option<String>,
    /// Usual source addresses (`people.<name>.sources`).
    pub sources: Vec<SourceCidr>,
    /// Entra ID object id (`people.<name>.entra`), lower case: who they are in the directory.
    pub entra: Option<String>,
}

/// Someone named in `requesters`, `approvers` or `auto_approve.requesters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Person(String),
    Group(String),
    /// `discord-role:<id>`: anyone holding the role in the interaction's guild.
    DiscordRole(String),
    /// `slack-group:<id>`: the members of a Slack user group, as the last refresh of the
    /// membership table found them ([`GroupMemberships`]).
    SlackGroup(String),
    /// `*`: every person in `[people]`.
    Everyone,
}

impl Principal {
    fn parse(s: &str) -> Principal {
        if s == "*" {
            Principal::Everyone
        } else if let Some(g) = s.strip_prefix("group:") {
            Principal::Group(g.to_string())
        } else if let Some(r) = s.strip_prefix("discord-role:") {
            Principal::DiscordRole(r.to_string())
        } else if let Some(g) = s.strip_prefix("slack-group:") {
            Principal::SlackGroup(g.to_string())
        } else {
            Principal::Person(s.to_string())
        }
    }

    /// How the policy file writes it (`group:ops`, `slack-group:S123`); `everyone` for `*`.
    pub fn describe(&self) -> String {
        match self {
            Principal::Person(p) => p.clone(),
            Principal::Group(g) => format!("group:{g}"),
            Principal::DiscordRole(r) => format!("discord-role:{r}"),
            Principal::SlackGroup(g) => format!("slack-group:{g}"),
            Principal::Everyone => "everyone".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoApprove {
    pub requesters: Vec<Principal>,
    pub ports: Vec<u16>,
    pub max_duration: GrantDuration,
    /// At most `.0` auto-approvals within `.1`.
    pub max_uses: Option<(u32, GrantDuration)>,
}

/// Where approval cards for a target go, per platform.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalChannels {
    pub slack: Option<String>,
    pub discord: Option<String>,
}

/// A VM (or prefix) behind an NSG that people may request access to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// Where its rules go: fixed, or wherever its VM is now ([`crate::paths::Paths`]).
    pub placement: Placement,
    pub ports: Vec<u16>,
    pub protocol: String,
    pub max_duration: GrantDuration,
    pub allowed_sources: Vec<SourceCidr>,
    pub default_source: Option<SourceCidr>,
    pub allow_any_source: bool,
    pub requesters: Vec<Principal>,
    pub approvers: Vec<Principal>,
    pub approvals_required: u32,
    pub allow_self_approval: bool,
    pub approval_channels: ApprovalChannels,
    pub priority_band: (u16, u16),
    /// jitbot keeps the target's lockdown baseline ([`crate::lockdown`]).
    pub lockdown: bool,
    /// Reason, per-port approvals, allowed hours.
    pub conditions: crate::conditions::Conditions,
    /// `/jit break-glass` allowed, for at most this long.
    pub break_glass: Option<GrantDuration>,
    /// Remind the approvers who have not decided after this long.
    pub remind_approvers_after: Option<GrantDuration>,
    /// After this long undecided, these approvers get the card and may decide too.
    pub escalation: Option<Escalation>,
    pub pending_ttl: GrantDuration,
    pub extend_without_approval: bool,
    pub auto_approve: Option<AutoApprove>,
    /// At most this many requests open or waiting at once.
    pub max_concurrent_grants: Option<u32>,
    /// Approvals need an Entra ID sign-in of the approver (`service/step_up.rs`).
    pub step_up: bool,
}

impl Target {
    /// Whether the port is closed to everyone else when no grant is open, for people.
    pub fn lockdown_text(&self) -> &'static str {
        if self.lockdown {
            "locked down: closed to everyone when no grant is open"
        } else {
            "not locked down by jitbot: other rules may open these ports"
        }
    }

    pub fn ports_text(&self) -> String {
        join(self.ports.iter())
    }

    pub fn sources_text(&self) -> String {
        let mut s = join(self.allowed_sources.iter());
        if self.allow_any_source {
            s.push_str(" (or anywhere)");
        }
        s
    }

    pub fn approvers_text(&self) -> String {
        join(self.approvers.iter().map(Principal::describe))
    }
}

/// The whole policy: people, groups and targets.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub people: BTreeMap<String, Person>,
    pub groups: BTreeMap<String, BTreeSet<String>>,
    pub targets: BTreeMap<String, Target>,
    /// jitbot's rule namespace in the NSGs (`azure.rule_prefix`).
    pub namespace: crate::domain::RulePrefix,
    /// `[limits]`: per-person abuse limits.
    pub limits: PersonLimits,
    /// How often the Slack group membership table is refreshed (`slack.group_refresh`).
    pub group_refresh: std::time::Duration,
}

/// The Slack user groups someone belongs to, as the membership table says at the moment of a
/// command or click. Read by the handler; nothing is fetched from Slack then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupMemberships {
    /// Groups whose membership is recent enough to rely on and that include the person.
    pub member_of: BTreeSet<String>,
    /// Groups whose membership is not known recently enough (never fetched, or older than
    /// [`Policy::group_max_age`]): they grant nothing, and a refusal that hinges on one says
    /// that membership could not be confirmed.
    pub unconfirmed: BTreeSet<String>,
}

impl GroupMemberships {
    /// Nobody's memberships (Discord, the web page): Slack groups grant nothing.
    pub const NONE: GroupMemberships = GroupMemberships {
        member_of: BTreeSet::new(),
        unconfirmed: BTreeSet::new(),
    };

    /// Judges the membership table for one person at `now` (Unix ms): each group in `named`
    /// refreshed within `max_age` counts if it lists them; any other is unconfirmed.
    pub fn judge(
        named: &BTreeSet<String>,
        refreshed_at: &BTreeMap<String, i64>,
        listed_in: &BTreeSet<String>,
        now: i64,
        max_age: std::time::Duration,
    ) -> GroupMemberships {
        let mut out = GroupMemberships::default();
        let max_age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        for group in named {
            let fresh = refreshed_at
                .get(group)
                .is_some_and(|at| now.saturating_sub(*at) <= max_age);
            if !fresh {
                out.unconfirmed.insert(group.clone());
            } else if listed_in.contains(group) {
                out.member_of.insert(group.clone());
            }
        }
        out
    }
}

/// A target's escalation: after `after` undecided, `approvers` get the card and may decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub after: GrantDuration,
    pub approvers: Vec<Principal>,
}

/// Where a target's rules go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// One NSG and a destination written in the policy.
    Nsg { nsg: String, destination: String },
    /// A VM, resolved through ARM to its private address and the NSGs on its path.
    Vm { id: String },
}

/// Why a request or a click was refused: which rule, and what a person can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable machine name of the rule, recorded in the audit trail (`port_not_allowed`).
    pub rule: &'static str,
    /// The sentence shown to the person.
    pub message: String,
}

impl Refusal {
    pub fn new(rule: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            rule,
            message: message.into(),
        }
    }
}

/// A request that passed policy: everything the store and the worker need.
#[derive(Debug, Clone)]
pub struct ApprovedShape {
    pub target: Target,
    pub ports: Ports,
    pub duration: GrantDuration,
    /// The rule's source prefix (`203.0.113.7/32`, or `*` where the target allows anywhere).
    pub source: String,
    pub reason: Option<String>,
    /// Policy approves it without a human (the target's `auto_approve`).
    pub auto_approved: bool,
    /// Distinct approvals needed: the target's, or more for some of the ports.
    pub approvals_required: u32,
    /// Opened by the requester alone (`/jit break-glass`).
    pub break_glass: bool,
}

/// Who is acting: a person, plus the Discord roles the interaction carried and the Slack groups
/// the membership table says they are in.
#[derive(Debug, Clone)]
pub struct Actor<'a> {
    pub person: &'a Person,
    pub discord_roles: &'a [String],
    pub slack_groups: &'a GroupMemberships,
}

/// The request a click would decide, as far as the policy cares.
#[derive(Debug, Clone, Copy)]
pub struct Decidable<'a> {
    /// The request's target, by name: it may have left the policy since the request.
    pub target: &'a str,
    pub requester: &'a str,
    /// Who asked for the extension being decided (extension rounds).
    pub extension_by: Option<&'a str>,
    /// The round the click decides: 0 is the request itself, later rounds are extensions.
    pub round: i64,
    /// The request has waited past the target's `escalate_after`: its escalation approvers
    /// decide too.
    pub escalated: bool,
}

impl Policy {
    /// Resolves and checks the file form. Every problem is reported, not just the first.
    pub fn from_file(
        people: &BTreeMap<String, PersonFile>,
        groups: &BTreeMap<String, Vec<String>>,
        targets: &BTreeMap<String, TargetFile>,
    ) -> Result<Policy, Vec<String>> {
        let mut errors = Vec::new();
        let mut policy = Policy::default();
        let mut seen_ids: BTreeMap<String, String> = BTreeMap::new();
        for (name, p) in people {
            if !valid_name(name) {
                errors.push(format!(
                    "people.{name}: names may use letters, digits, '-', '_' and '.'"
                ));
            }
            for (platform, id) in [("slack", &p.slack), ("discord", &p.discord)] {
                if let Some(id) = id {
                    if id.trim().is_empty() {
                        errors.push(format!("people.{name}.{platform}: empty id"));
                    } else if let Some(other) =
                        seen_ids.insert(format!("{platform}:{id}"), name.clone())
                    {
                        errors.push(format!(
                            "people.{name}.{platform}: id {id} is already used by people.{other}"
                        ));
                    }
                }
            }
            if platform_ids_missing(p) {
                errors.push(format!(
                    "people.{name}: give at least one of slack = \"U…\" or discord = \"…\""
                ));
            }
            policy.people.insert(
                name.clone(),
                Person {
                    name: name.clone(),
                    display_name: p.display_name.clone().unwrap_or_else(|| name.clone()),
                    slack: p.slack.clone(),
                    discord: p.discord.clone(),
                    sources: p
                        .sources
                        .iter()
                        .filter_map(|s| match SourceCidr::parse(s) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                errors.push(format!("people.{name}.sources: {e}"));
                                None
                            }
                        })
                        .collect(),
                    entra: entra_id(name, p.entra.as_deref(), &mut errors),
                },
            );
        }
        for (group, members) in groups {
            for m in members {
                if !policy.people.contains_key(m) {
                    errors.push(format!(
                        "groups.{group}: unknown person `{m}` (not in [people])"
                    ));
                }
            }
            policy
                .groups
                .insert(group.clone(), members.iter().cloned().collect());
        }
        for (name, t) in targets {
            match resolve_target(&policy, name, t) {
                Ok(target) => {
                    policy.targets.insert(name.clone(), target);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(errors)
        }
    }

    pub fn person_by_slack(&self, user_id: &str) -> Option<&Person> {
        self.people
            .values()
            .find(|p| p.slack.as_deref() == Some(user_id))
    }

    pub fn person_by_discord(&self, user_id: &str) -> Option<&Person> {
        self.people
            .values()
            .find(|p| p.discord.as_deref() == Some(user_id))
    }

    fn matches(&self, actor: &Actor<'_>, principals: &[Principal]) -> bool {
        self.matched(actor, principals).is_some()
    }

    /// The first of `principals` that names `actor`: through which name, group or role they act.
    pub fn matched<'p>(
        &self,
        actor: &Actor<'_>,
        principals: &'p [Principal],
    ) -> Option<&'p Principal> {
        principals.iter().find(|p| match p {
            Principal::Everyone => true,
            Principal::Person(name) => *name == actor.person.name,
            Principal::Group(g) => self
                .groups
                .get(g)
                .is_some_and(|members| members.contains(&actor.person.name)),
            Principal::DiscordRole(role) => actor.discord_roles.iter().any(|r| r == role),
            Principal::SlackGroup(g) => actor.slack_groups.member_of.contains(g),
        })
    }

    /// When `actor` is not among `principals`, but one of them is a Slack group whose membership
    /// cannot be confirmed now: the refusal that says so (fail closed, with the reason).
    fn unconfirmed(&self, actor: &Actor<'_>, principals: &[Principal]) -> Option<Refusal> {
        let group = principals.iter().find_map(|p| match p {
            Principal::SlackGroup(g) if actor.slack_groups.unconfirmed.contains(g) => Some(g),
            _ => None,
        })?;
        Some(Refusal::new(
            "group_membership_unconfirmed",
            format!(
                "I can't confirm your group membership right now (Slack group {group} has not been refreshed recently), so nothing was changed; try again in a few minutes"
            ),
        ))
    }

    /// How old the Slack group membership table may be before a command or click that depends
    /// on it fails closed: three refresh intervals (two refreshes may fail in a row).
    pub fn group_max_age(&self) -> std::time::Duration {
        self.group_refresh.saturating_mul(3)
    }

    /// Every Slack user group the policy names (requesters, approvers, escalation, auto-approve):
    /// what the membership refresh fetches.
    pub fn slack_groups(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in self.targets.values() {
            let lists = [
                Some(&t.requesters),
                Some(&t.approvers),
                t.escalation.as_ref().map(|e| &e.approvers),
                t.auto_approve.as_ref().map(|a| &a.requesters),
            ];
            for p in lists.into_iter().flatten().flatten() {
                if let Principal::SlackGroup(g) = p {
                    out.insert(g.clone());
                }
            }
        }
        out
    }

    pub fn may_request(&self, actor: &Actor<'_>, target: &Target) -> bool {
        self.matches(actor, &target.requesters)
    }

    pub fn is_approver(&self, actor: &Actor<'_>, target: &Target) -> bool {
        self.matches(actor, &target.approvers)
    }

    /// May `actor` decide (approve or deny) this round of a request? Every rule a click must pass
    /// before its vote counts, in the order they are checked; the caller audits the refusal.
    pub fn may_decide(&self, actor: &Actor<'_>, request: &Decidable<'_>) -> Result<(), Refusal> {
        // The target's *current* approvers decide: a target removed from the policy since the
        // request was made has nobody left who may.
        let Some(target) = self.targets.get(request.target) else {
            return Err(Refusal::new(
                "unknown_target",
                format!("target {} is no longer in the policy", request.target),
            ));
        };
        let escalated_to = request.escalated
            && target
                .escalation
                .as_ref()
                .is_some_and(|e| self.matches(actor, &e.approvers));
        if !self.is_approver(actor, target) && !escalated_to {
            if let Some(refusal) = self.unconfirmed(actor, &target.approvers) {
                return Err(refusal);
            }
            return Err(Refusal::new(
                "not_an_approver",
                format!(
                    "you are not an approver for {}; approvers: {}",
                    target.name,
                    target.approvers_text()
                ),
            ));
        }
        // Four eyes: whoever asked for the access, or in an extension round for more of it, must
        // not be the one who grants it, so one person alone can never open a rule. A target may
        // opt out explicitly (`allow_self_approval`), e.g. for a team of one.
        let name = actor.person.name.as_str();
        let own =
            request.requester == name || (request.round > 0 && request.extension_by == Some(name));
        if own && !target.allow_self_approval {
            return Err(Refusal::new(
                "self_approval",
                format!(
                    "you cannot decide your own request on {}; another approver must ({})",
                    target.name,
                    target.approvers_text()
                ),
            ));
        }
        Ok(())
    }

    /// May `actor` see a request (and so ask for its status, revoke or extend it)? Its requester
    /// and the target's approvers may; everyone else is told it does not exist, so request ids
    /// reveal nothing to strangers.
    pub fn may_see(&self, actor: &Actor<'_>, target: &str, requester: &str) -> bool {
        requester == actor.person.name
            || self
                .targets
                .get(target)
                .is_some_and(|t| self.is_approver(actor, t))
    }

    /// Targets this actor may request, in name order.
    pub fn requestable(&self, actor: &Actor<'_>) -> Vec<&Target> {
        self.targets
            .values()
            .filter(|t| self.may_request(actor, t))
            .collect()
    }

    /// Checks a request against the target's rules.
    pub fn evaluate(
        &self,
        actor: &Actor<'_>,
        req: &AccessRequest,
    ) -> Result<ApprovedShape, Refusal> {
        let Some(target) = self.targets.get(&req.target) else {
            let mine: Vec<&str> = self
                .requestable(actor)
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            return Err(Refusal::new(
                "unknown_target",
                if mine.is_empty() {
                    format!(
                        "there is no target `{}`, and you may not request any target",
                        req.target
                    )
                } else {
                    format!(
                        "there is no target `{}`; you may request: {}",
                        req.target,
                        mine.join(", ")
                    )
                },
            ));
        };
        if !self.may_request(actor, target) {
            if let Some(refusal) = self.unconfirmed(actor, &target.requesters) {
                return Err(refusal);
            }
            return Err(Refusal::new(
                "not_a_requester",
                format!(
                    "you may not request {}; requesters: {}",
                    target.name,
                    join(target.requesters.iter().map(Principal::describe))
                ),
            ));
        }
        let refused: Vec<u16> = req
            .ports
            .as_slice()
            .iter()
            .copied()
            .filter(|p| !target.ports.contains(p))
            .collect();
        if !refused.is_empty() {
            let (noun, verb) = if refused.len() == 1 {
                ("port", "is")
            } else {
                ("ports", "are")
            };
            return Err(Refusal::new(
                "port_not_allowed",
                format!(
                    "{noun} {} {verb} not allowed on {}; allowed: {}",
                    join(refused.iter()),
                    target.name,
                    target.ports_text()
                ),
            ));
        }
        if req.duration > target.max_duration {
            return Err(Refusal::new(
                "duration_over_max",
                format!(
                    "{} is longer than {} allows; maximum: {}",
                    req.duration, target.name, target.max_duration
                ),
            ));
        }
        target
            .conditions
            .check(&target.name, req.reason.as_deref(), chrono::Utc::now())?;
        if req.break_glass {
            break_glass_allowed(target, req)?;
        }
        let source = source_for(target, actor.person, req.source.as_ref())?;
        let auto_approved = target.auto_approve.as_ref().is_some_and(|a| {
            self.matches(actor, &a.requesters)
                && req.duration <= a.max_duration
                && (a.ports.is_empty() || req.ports.as_slice().iter().all(|p| a.ports.contains(p)))
        });
        Ok(ApprovedShape {
            target: target.clone(),
            ports: req.ports.clone(),
            duration: req.duration,
            source,
            reason: req.reason.clone(),
            auto_approved,
            approvals_required: target
                .conditions
                .approvals(target.approvals_required, req.ports.as_slice()),
            break_glass: req.break_glass,
        })
    }
}

/// Break-glass needs the target's consent, a reason, and a duration within its shorter maximum.
fn break_glass_allowed(target: &Target, req: &AccessRequest) -> Result<(), Refusal> {
    let Some(max) = target.break_glass else {
        return Err(Refusal::new(
            "break_glass_not_allowed",
            format!(
                "{} does not allow break-glass; ask for approval as usual",
                target.name
            ),
        ));
    };
    if req.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(Refusal::new(
            "break_glass_reason",
            format!(
                "break-glass needs a reason everyone will read: `/jit break-glass {} <ports> <duration> <reason>`",
                target.name
            ),
        ));
    }
    if req.duration > max {
        return Err(Refusal::new(
            "break_glass_too_long",
            format!("break-glass on {} lasts at most {max}", target.name),
        ));
    }
    Ok(())
}

impl Policy {
    /// The people who approve `target` (people and groups; Discord roles cannot be listed).
    pub fn approver_people(&self, target: &Target) -> Vec<&Person> {
        self.people_named(&target.approvers)
    }

    /// The people `principals` name (people and groups; Discord roles cannot be listed).
    pub fn people_named(&self, principals: &[Principal]) -> Vec<&Person> {
        let mut names = BTreeSet::new();
        for p in principals {
            match p {
                Principal::Person(n) => {
                    names.insert(n.clone());
                }
                Principal::Group(g) => {
                    names.extend(self.groups.get(g).cloned().unwrap_or_default())
                }
                _ => {}
            }
        }
        names.iter().filter_map(|n| self.people.get(n)).collect()
    }
}

fn platform_ids_missing(p: &PersonFile) -> bool {
    p.slack.is_none() && p.discord.is_none()
}

/// The source a request opens from: what was asked (within the target's allowed sources), else
/// the person's first usual address inside them, else the target's default.
fn source_for(
    target: &Target,
    person: &Person,
    asked: Option<&SourceSpec>,
) -> Result<String, Refusal> {
    let allowed = |cidr: &SourceCidr| target.allowed_sources.iter().any(|a| cidr.within(a));
    match asked {
        Some(SourceSpec::Any) if target.allow_any_source => Ok("*".to_string()),
        Some(SourceSpec::Any) => Err(Refusal::new(
            "source_anywhere_refused",
            format!(
                "{} may not be opened to the whole Internet (0.0.0.0/0); name your own address with `from <ip>`; allowed sources: {}",
                target.name,
                target.sources_text()
            ),
        )),
        Some(SourceSpec::Cidr(cidr)) if target.allow_any_source || allowed(cidr) => {
            Ok(cidr.to_string())
        }
        // Resolved by the one-time link before policy sees it (`service::links`).
        Some(SourceSpec::Me) => Err(Refusal::new(
            "source_required",
            format!("{} needs an address: add `from <your ip>`", target.name),
        )),
        Some(SourceSpec::Cidr(cidr)) => Err(Refusal::new(
            "source_not_allowed",
            format!(
                "{cidr} is outside {}'s allowed sources: {}",
                target.name,
                target.sources_text()
            ),
        )),
        None => person
            .sources
            .iter()
            .find(|c| allowed(c))
            .or(target.default_source.as_ref())
            .map(|c| c.to_string())
            .ok_or_else(|| {
                Refusal::new(
                    "source_required",
                    format!(
                        "{} has no default source and none of your usual addresses is allowed there: add `from <your ip>`; allowed sources: {}",
                        target.name,
                        target.sources_text()
                    ),
                )
            }),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Where a target's rules go, from `nsg` + `destination` or `vm` (exactly one of the two).
fn placement(t: &TargetFile, at: &dyn Fn(&str) -> String, errors: &mut Vec<String>) -> Placement {
    let fallback = Placement::Vm { id: String::new() };
    match (&t.vm, &t.nsg, &t.destination) {
        (Some(vm), None, None) => match crate::domain::VmId::parse(vm) {
            Ok(id) => Placement::Vm { id: id.into() },
            Err(e) => {
                errors.push(format!("{}: {e}", at("vm")));
                fallback
            }
        },
        (None, Some(nsg), Some(destination)) => {
            if let Err(e) = crate::domain::NsgId::parse(nsg) {
                errors.push(format!("{}: {e}", at("nsg")));
            }
            if SourceCidr::parse(destination).is_err() {
                errors.push(format!(
                    "{}: `{destination}` is not an IP address or CIDR",
                    at("destination")
                ));
            }
            Placement::Nsg {
                nsg: nsg.clone(),
                destination: destination.clone(),
            }
        }
        (Some(_), _, _) => {
            errors.push(format!(
                "{}: give either `vm` (jitbot finds the address and NSGs) or `nsg` and `destination`, not both",
                at("vm")
            ));
            fallback
        }
        _ => {
            errors.push(format!(
                "{}: say where the VM is: `vm = \"/subscriptions/…/virtualMachines/<name>\"`, or `nsg = \"<NSG id>\"` with `destination = \"<private IP>\"`",
                at("nsg")
            ));
            fallback
        }
    }
}

fn resolve_target(policy: &Policy, name: &str, t: &TargetFile) -> Result<Target, Vec<String>> {
    let mut errors = Vec::new();
    let at = |field: &str| format!("targets.{name}.{field}");
    if !valid_name(name) {
        errors.push(format!(
            "targets.{name}: names may use letters, digits, '-', '_' and '.' (at most 40)"
        ));
    }
    let placement = placement(t, &at, &mut errors);
    let conditions = crate::conditions::Conditions::parse(
        &crate::conditions::ConditionsFile {
            require_reason: t.require_reason,
            reason_pattern: t.reason_pattern.as_deref(),
            port_approvals: &t.port_approvals,
            allowed_hours: t.allowed_hours.as_deref(),
            time_zone: t.time_zone.as_deref(),
        },
        &at,
        &mut errors,
    );
    let break_glass = t.break_glass.then(|| {
        let max = match t.break_glass_max.as_deref().map(GrantDuration::parse) {
            None => GrantDuration::from_secs(1800),
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                errors.push(format!("{}: {e}", at("break_glass_max")));
                GrantDuration::from_secs(1800)
            }
        };
        match GrantDuration::parse(&t.max_duration) {
            Ok(m) if m < max => m,
            _ => max,
        }
    });
    if t.ports.is_empty() {
        errors.push(format!("{}: list at least one port", at("ports")));
    }
    if t.ports.contains(&0) {
        errors.push(format!("{}: 0 is not a port", at("ports")));
    }
    let protocol = match t.protocol.to_ascii_lowercase().as_str() {
        "tcp" => "Tcp",
        "udp" => "Udp",
        "*" | "any" => "*",
        _ => {
            errors.push(format!(
                "{}: `{}` must be Tcp, Udp or *",
                at("protocol"),
                t.protocol
            ));
            "Tcp"
        }
    };
    let duration = |field: &str, value: &str, errors: &mut Vec<String>| -> GrantDuration {
        match GrantDuration::parse(value) {
            Ok(d) if d.as_secs() > MAX_GRANT => {
                errors.push(format!(
                    "{}: {d} is over 24h, the longest jitbot allows",
                    at(field)
                ));
                d
            }
            Ok(d) => d,
            Err(e) => {
                errors.push(format!("{}: {e}", at(field)));
                GrantDuration::from_secs(1)
            }
        }
    };
    let max_duration = duration("max_duration", &t.max_duration, &mut errors);
    let pending_ttl = duration("pending_ttl", &t.pending_ttl, &mut errors);
    let mut allowed_sources = Vec::new();
    for s in &t.allowed_sources {
        match SourceCidr::parse(s) {
            Ok(c) if c.is_everything() && !t.allow_any_source => errors.push(format!(
                "{}: `{s}` is the whole Internet; write allow_any_source = true if you really mean it",
                at("allowed_sources")
            )),
            Ok(c) => allowed_sources.push(c),
            Err(e) => errors.push(format!("{}: {e}", at("allowed_sources"))),
        }
    }
    if t.allowed_sources.is_empty() && !t.allow_any_source {
        errors.push(format!(
            "{}: is empty, so nobody could ever be let in; list the addresses people connect from",
            at("allowed_sources")
        ));
    }
    let default_source = match &t.default_source {
        None => None,
        Some(s) => match SourceCidr::parse(s) {
            Ok(c) if c.is_everything() => {
                errors.push(format!(
                    "{}: may not be the whole Internet",
                    at("default_source")
                ));
                None
            }
            Ok(c) if !t.allow_any_source && !allowed_sources.iter().any(|a| c.within(a)) => {
                errors.push(format!(
                    "{}: {c} is outside allowed_sources",
                    at("default_source")
                ));
                None
            }
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(format!("{}: {e}", at("default_source")));
                None
            }
        },
    };
    let principals = |field: &str, list: &[String], errors: &mut Vec<String>| -> Vec<Principal> {
        let mut out = Vec::new();
        for raw in list {
            let p = Principal::parse(raw);
            match &p {
                Principal::Person(n) if !policy.people.contains_key(n) => errors.push(format!(
                    "{}: unknown person `{n}` (not in [people])",
                    at(field)
                )),
                Principal::Group(g) if !policy.groups.contains_key(g) => errors.push(format!(
                    "{}: unknown group `{g}` (not in [groups])",
                    at(field)
                )),
                Principal::DiscordRole(r)
                    if r.is_empty() || !r.chars().all(|c| c.is_ascii_digit()) =>
                {
                    errors.push(format!("{}: `{raw}` needs a numeric role id", at(field)))
                }
                Principal::SlackGroup(g)
                    if g.is_empty() || !g.chars().all(|c| c.is_ascii_alphanumeric()) =>
                {
                    errors.push(format!(
                        "{}: `{raw}` needs a Slack user group id such as S0614TZR7",
                        at(field)
                    ))
                }
                _ => {}
            }
            out.push(p);
        }
        out
    };
    let requesters = principals("requesters", &t.requesters, &mut errors);
    let approvers = principals("approvers", &t.approvers, &mut errors);
    let escalation_approvers =
        principals("escalation_approvers", &t.escalation_approvers, &mut errors);
    if approvers.is_empty() && t.auto_approve.is_none() {
        errors.push(format!("{}: name at least one approver", at("approvers")));
    }
    if approvers.contains(&Principal::Everyone) {
        errors.push(format!(
            "{}: `*` would let anyone approve; name people or groups",
            at("approvers")
        ));
    }
    if t.approvals_required == 0 {
        errors.push(format!("{}: must be at least 1", at("approvals_required")));
    }
    // Count the approvers we can enumerate; roles and Slack groups are unknown until a click,
    // so skip then.
    if !approvers
        .iter()
        .any(|p| matches!(p, Principal::DiscordRole(_) | Principal::SlackGroup(_)))
    {
        let mut people = BTreeSet::new();
        for p in &approvers {
            match p {
                Principal::Person(n) => {
                    people.insert(n.clone());
                }
                Principal::Group(g) => {
                    people.extend(policy.groups.get(g).cloned().unwrap_or_default())
                }
                _ => {}
            }
        }
        if !approvers.is_empty() && (people.len() as u32) < t.approvals_required {
            errors.push(format!(
                "{}: needs {} approvers but only {} people can approve",
                at("approvals_required"),
                t.approvals_required,
                people.len()
            ));
        }
    }
    let [lo, hi] = t.priority_range;
    if !(100..=4096).contains(&lo) || !(100..=4096).contains(&hi) || lo > hi {
        errors.push(format!(
            "{}: [{lo}, {hi}] must be a range inside 100–4096 (low first)",
            at("priority_range")
        ));
    }
    if t.approval_channel.slack.is_none() && t.approval_channel.discord.is_none() {
        errors.push(format!(
            "{}: set slack = \"C…\" and/or discord = \"…\" so approvers see the card",
            at("approval_channel")
        ));
    }
    let auto_approve = t.auto_approve.as_ref().map(|a| AutoApprove {
        requesters: principals("auto_approve.requesters", &a.requesters, &mut errors),
        ports: a.ports.clone(),
        max_duration: duration("auto_approve.max_duration", &a.max_duration, &mut errors),
        max_uses: auto_approve_uses(a, &at, &mut errors),
    });
    if t.max_concurrent_grants == Some(0) {
        errors.push(format!(
            "{}: 0 would refuse every request; remove it for no limit",
            at("max_concurrent_grants")
        ));
    }
    if let Some(a) = &auto_approve
        && a.ports.iter().any(|p| !t.ports.contains(p))
    {
        errors.push(format!(
            "{}: lists ports the target does not allow",
            at("auto_approve.ports")
        ));
    }
    let remind_approvers_after = t
        .remind_approvers_after
        .as_deref()
        .map(|s| duration("remind_approvers_after", s, &mut errors));
    let escalation = match (&t.escalate_after, escalation_approvers.is_empty()) {
        (None, true) => None,
        (Some(after), false) => Some(Escalation {
            after: duration("escalate_after", after, &mut errors),
            approvers: escalation_approvers,
        }),
        (None, false) => {
            errors.push(format!(
                "{}: say when, with escalate_after",
                at("escalation_approvers")
            ));
            None
        }
        (Some(_), true) => {
            errors.push(format!(
                "{}: say to whom, with escalation_approvers",
                at("escalate_after")
            ));
            None
        }
    };
    if t.step_up && (auto_approve.is_some() || t.extend_without_approval) {
        // Either would open or lengthen access with no one signed in: the opposite of step-up.
        errors.push(format!(
            "{}: a step-up target needs a signed-in approver for every grant and extension; remove auto_approve and extend_without_approval (break_glass stays possible, loudly)",
            at("step_up")
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Target {
        name: name.to_string(),
        placement,
        ports: Ports::from_vec(t.ports.clone()).as_slice().to_vec(),
        protocol: protocol.to_string(),
        max_duration,
        allowed_sources,
        default_source,
        allow_any_source: t.allow_any_source,
        requesters,
        approvers,
        approvals_required: t.approvals_required,
        allow_self_approval: t.allow_self_approval,
        approval_channels: ApprovalChannels {
            slack: t.approval_channel.slack.clone(),
            discord: t.approval_channel.discord.clone(),
        },
        priority_band: (lo, hi),
        lockdown: t.lockdown,
        conditions,
        break_glass,
        remind_approvers_after,
        escalation,
        pending_ttl,
        extend_without_approval: t.extend_without_approval,
        auto_approve,
        max_concurrent_grants: t.max_concurrent_grants,
        step_up: t.step_up,
    })
}

/// `auto_approve.max_uses` and `per`: both or neither, at least one use, a window of at most a day.
fn auto_approve_uses(
    a: &AutoApproveFile,
    at: &dyn Fn(&str) -> String,
    errors: &mut Vec<String>,
) -> Option<(u32, GrantDuration)> {
    match (a.max_uses, a.per.as_deref()) {
        (None, None) => None,
        (Some(n), Some(per)) => match GrantDuration::parse(per) {
            Ok(_) if n == 0 => {
                errors.push(format!(
                    "{}: 0 would never auto-approve; remove auto_approve instead",
                    at("auto_approve.max_uses")
                ));
                None
            }
            Ok(d) => Some((n, d)),
            Err(e) => {
                errors.push(format!("{}: {e}", at("auto_approve.per")));
                None
            }
        },
        (Some(_), None) => {
            errors.push(format!(
                "{}: say over how long, e.g. per = \"1h\"",
                at("auto_approve.max_uses")
            ));
            None
        }
        (None, Some(_)) => {
            errors.push(format!(
                "{}: say how many, e.g. max_uses = 3",
                at("auto_approve.per")
            ));
            None
        }
    }
}

/// `people.<name>.entra`: an object id is a GUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`);
/// kept in lower case, as compared with the ID token's `oid`.
fn entra_id(name: &str, id: Option<&str>, errors: &mut Vec<String>) -> Option<String> {
    let id = id?.trim();
    let groups: Vec<&str> = id.split('-').collect();
    let lengths_ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12]);
    if lengths_ok
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Some(id.to_ascii_lowercase())
    } else {
        errors.push(format!(
            "people.{name}.entra: `{id}` is not an Entra object id (a GUID such as 4f1c2b1e-8d0a-4c55-9a53-0b6f6f3c2a10: Entra admin center → Users → the user → Object ID)"
        ));
        None
    }
}

/// Policies and targets for unit tests elsewhere in the crate (`decision.rs`).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A target with every optional switch off: approvers are `carol`, `group:ops` and
    /// `discord-role:42`, one approval needed, 4h maximum, 15 minutes to decide.
    pub fn target(name: &str) -> Target {
        Target {
            name: name.to_string(),
            placement: Placement::Nsg {
                nsg: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkSecurityGroups/n".into(),
                destination: "10.0.0.4".into(),
            },
            ports: vec![22],
            protocol: "Tcp".into(),
            max_duration: GrantDuration::from_secs(4 * 3600),
            allowed_sources: vec![],
            default_source: None,
            allow_any_source: false,
            requesters: vec![Principal::Everyone],
            approvers: vec![
                Principal::Person("carol".into()),
                Principal::Group("ops".into()),
                Principal::DiscordRole("42".into()),
            ],
            approvals_required: 1,
            allow_self_approval: false,
            approval_channels: ApprovalChannels::default(),
            priority_band: (100, 199),
            lockdown: false,
            conditions: Default::default(),
            break_glass: None,
            remind_approvers_after: None,
            escalation: None,
            pending_ttl: GrantDuration::from_secs(900),
            extend_without_approval: false,
            auto_approve: None,
            max_concurrent_grants: None,
            step_up: false,
        }
    }

    pub fn person(name: &str) -> Person {
        Person {
            name: name.to_string(),
            display_name: name.to_string(),
            slack: Some(format!("U-{name}")),
            discord: None,
            sources: vec![],
            entra: None,
        }
    }

    /// People alice, bob (in group ops), carol and dave; target `web1` ([`target`]) and `solo`,
    /// which is `web1` with `allow_self_approval`.
    pub fn policy() -> Policy {
        let mut solo = target("solo");
        solo.allow_self_approval = true;
        Policy {
            people: ["alice", "bob", "carol", "dave"]
                .into_iter()
                .map(|n| (n.to_string(), person(n)))
                .collect(),
            groups: [("ops".to_string(), ["bob".to_string()].into())].into(),
            targets: [
                ("web1".to_string(), target("web1")),
                ("solo".to_string(), solo),
            ]
            .into(),
            namespace: Default::default(),
            limits: Default::default(),
            group_refresh: std::time::Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{person, policy};
    use super::*;

    struct Row {
        case: &'static str,
        actor: &'static str,
        roles: &'static [&'static str],
        target: &'static str,
        requester: &'static str,
        extension_by: Option<&'static str>,
        round: i64,
        /// `None`: allowed; otherwise the refusing rule.
        refused_by: Option<&'static str>,
    }

    const fn row(case: &'static str, actor: &'static str, refused_by: Option<&'static str>) -> Row {
        Row {
            case,
            actor,
            roles: &[],
            target: "web1",
            requester: "alice",
            extension_by: None,
            round: 0,
            refused_by,
        }
    }

    #[test]
    fn may_decide_table() {
        let rows = [
            Row {
                target: "gone",
                ..row("target left the policy", "carol", Some("unknown_target"))
            },
            Row {
                target: "gone",
                ..row(
                    "unknown target wins over self-approval",
                    "alice",
                    Some("unknown_target"),
                )
            },
            row("not an approver", "dave", Some("not_an_approver")),
            Row {
                roles: &["7"],
                ..row("another discord role", "dave", Some("not_an_approver"))
            },
            row("approver by name", "carol", None),
            row("approver by group", "bob", None),
            Row {
                roles: &["7", "42"],
                ..row("approver by discord role", "dave", None)
            },
            Row {
                requester: "carol",
                ..row("own request", "carol", Some("self_approval"))
            },
            Row {
                requester: "bob",
                ..row(
                    "own request, approver by group",
                    "bob",
                    Some("self_approval"),
                )
            },
            Row {
                requester: "carol",
                target: "solo",
                ..row("own request, self-approval allowed", "carol", None)
            },
            Row {
                requester: "carol",
                extension_by: Some("carol"),
                round: 1,
                ..row("own extension", "carol", Some("self_approval"))
            },
            Row {
                extension_by: Some("carol"),
                round: 1,
                ..row("extension asked by another", "bob", None)
            },
            Row {
                extension_by: Some("carol"),
                round: 2,
                ..row(
                    "extension asked by the clicker",
                    "carol",
                    Some("self_approval"),
                )
            },
            Row {
                extension_by: Some("carol"),
                round: 0,
                ..row(
                    "extension_by counts only in extension rounds",
                    "carol",
                    None,
                )
            },
            Row {
                extension_by: Some("carol"),
                round: 1,
                target: "solo",
                ..row("own extension, self-approval allowed", "carol", None)
            },
        ];
        let policy = policy();
        for r in rows {
            let person = person(r.actor);
            let roles: Vec<String> = r.roles.iter().map(|s| s.to_string()).collect();
            let actor = Actor {
                person: &person,
                discord_roles: &roles,
                slack_groups: &GroupMemberships::NONE,
            };
            let request = Decidable {
                target: r.target,
                requester: r.requester,
                extension_by: r.extension_by,
                round: r.round,
                escalated: false,
            };
            let got = policy.may_decide(&actor, &request).err().map(|e| e.rule);
            assert_eq!(got, r.refused_by, "{}", r.case);
        }
    }

    #[test]
    fn may_decide_refusals_say_who_may() {
        let policy = policy();
        let refusal = |actor: &str, target: &str, requester: &str| {
            let person = person(actor);
            let actor = Actor {
                person: &person,
                discord_roles: &[],
                slack_groups: &GroupMemberships::NONE,
            };
            let request = Decidable {
                target,
                requester,
                extension_by: None,
                round: 0,
                escalated: false,
            };
            policy.may_decide(&actor, &request).map_err(|e| e.message)
        };
        assert_eq!(
            refusal("carol", "gone", "alice"),
            Err("target gone is no longer in the policy".to_string())
        );
        assert_eq!(
            refusal("dave", "web1", "alice"),
            Err(
                "you are not an approver for web1; approvers: carol, group:ops, discord-role:42"
                    .to_string()
            )
        );
        assert_eq!(
            refusal("carol", "web1", "carol"),
            Err("you cannot decide your own request on web1; another approver must (carol, group:ops, discord-role:42)".to_string())
        );
    }

    #[test]
    fn may_see_table() {
        /// (case, actor, roles, target, requester, visible)
        type SeeRow = (
            &'static str,
            &'static str,
            &'static [&'static str],
            &'static str,
            &'static str,
            bool,
        );
        let rows: [SeeRow; 7] = [
            ("the requester", "alice", &[], "web1", "alice", true),
            ("an approver by name", "carol", &[], "web1", "alice", true),
            ("an approver by group", "bob", &[], "web1", "alice", true),
            (
                "an approver by discord role",
                "dave",
                &["42"],
                "web1",
                "alice",
                true,
            ),
            ("a stranger", "dave", &[], "web1", "alice", false),
            (
                "the requester of a removed target",
                "alice",
                &[],
                "gone",
                "alice",
                true,
            ),
            (
                "an approver of a removed target",
                "carol",
                &[],
                "gone",
                "alice",
                false,
            ),
        ];
        let policy = policy();
        for (case, actor, roles, target, requester, want) in rows {
            let person = person(actor);
            let roles: Vec<String> = roles.iter().map(|s| s.to_string()).collect();
            let actor = Actor {
                person: &person,
                discord_roles: &roles,
                slack_groups: &GroupMemberships::NONE,
            };
            assert_eq!(policy.may_see(&actor, target, requester), want, "{case}");
        }
    }

    #[test]
    fn a_request_without_from_uses_the_persons_first_allowed_address_then_the_default() {
        let cidr = |s: &str| SourceCidr::parse(s).unwrap();
        let mut t = super::fixtures::target("web1");
        t.allowed_sources = vec![cidr("203.0.113.0/24")];
        let mut p = person("alice");
        let pick = |t: &Target, p: &Person| source_for(t, p, None).map_err(|r| r.rule);
        assert_eq!(pick(&t, &p), Err("source_required"));
        t.default_source = Some(cidr("203.0.113.1"));
        assert_eq!(pick(&t, &p).as_deref(), Ok("203.0.113.1/32"));
        // Her home address is not allowed there; her office one is, and wins over the default.
        p.sources = vec![cidr("198.51.100.9"), cidr("203.0.113.44")];
        assert_eq!(pick(&t, &p).as_deref(), Ok("203.0.113.44/32"));
        // `from` always wins, and is still checked.
        let asked = SourceSpec::Cidr(cidr("203.0.113.5"));
        assert_eq!(source_for(&t, &p, Some(&asked)).unwrap(), "203.0.113.5/32");
        let outside = SourceSpec::Cidr(cidr("198.51.100.9"));
        assert_eq!(
            source_for(&t, &p, Some(&outside)).unwrap_err().rule,
            "source_not_allowed"
        );
    }

    #[test]
    fn a_slack_group_counts_only_while_its_membership_is_recent() {
        let named: BTreeSet<String> = ["S1".to_string(), "S2".to_string()].into();
        let refreshed: BTreeMap<String, i64> =
            [("S1".to_string(), 1_000), ("S2".to_string(), 0)].into();
        let listed: BTreeSet<String> = ["S1".to_string(), "S2".to_string()].into();
        let age = std::time::Duration::from_millis(500);
        let g = GroupMemberships::judge(&named, &refreshed, &listed, 1_400, age);
        assert_eq!(g.member_of, ["S1".to_string()].into());
        assert_eq!(g.unconfirmed, ["S2".to_string()].into());
        // Never fetched is unconfirmed too; fresh and not listed is neither.
        let g = GroupMemberships::judge(&named, &BTreeMap::new(), &listed, 1_400, age);
        assert_eq!(g.unconfirmed.len(), 2);
        let g = GroupMemberships::judge(&named, &refreshed, &BTreeSet::new(), 1_400, age);
        assert!(g.member_of.is_empty() && g.unconfirmed == ["S2".to_string()].into());
    }

    #[test]
    fn a_slack_group_approver_decides_and_an_unconfirmed_one_fails_closed() {
        let mut policy = policy();
        let t = policy.targets.get_mut("web1").unwrap();
        t.approvers = vec![Principal::SlackGroup("S1".into())];
        let dave = person("dave");
        let request = Decidable {
            target: "web1",
            requester: "alice",
            extension_by: None,
            round: 0,
            escalated: false,
        };
        let decide = |groups: &GroupMemberships| {
            let actor = Actor {
                person: &dave,
                discord_roles: &[],
                slack_groups: groups,
            };
            policy.may_decide(&actor, &request).map_err(|r| r.rule)
        };
        let member = GroupMemberships {
            member_of: ["S1".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(decide(&member), Ok(()));
        assert_eq!(decide(&GroupMemberships::default()), Err("not_an_approver"));
        let stale = GroupMemberships {
            unconfirmed: ["S1".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(decide(&stale), Err("group_membership_unconfirmed"));
        assert_eq!(policy.slack_groups(), ["S1".to_string()].into());
    }
}
