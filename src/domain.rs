//! Domain newtypes and the request lifecycle.
//!
//! Parse, don't validate: once a value has one of these types, nothing downstream re-checks it.
//! Parsing errors are sentences a person can act on, shown to them as is.

use ipnet::IpNet;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// A request's identity: `req_` followed by 8 lowercase letters or digits (`req_7f3a9c01`).
/// It names the NSG rule too, so it is short and made only of characters ARM accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(String);

impl RequestId {
    const ALPHABET: &'static [u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

    /// A fresh random id (40 bits of entropy; collisions are caught by the primary key).
    pub fn generate() -> RequestId {
        let mut rng = rand::rng();
        let suffix: String = (0..8)
            .map(|_| Self::ALPHABET[rng.random_range(0..Self::ALPHABET.len())] as char)
            .collect();
        RequestId(format!("req_{suffix}"))
    }

    pub fn parse(s: &str) -> Result<RequestId, String> {
        let s = s.trim().trim_matches('`');
        let ok = s.len() > 4
            && s.len() <= 40
            && s.starts_with("req_")
            && s[4..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(RequestId(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a request id (they look like `req_7f3a9c01`)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The start of every rule name jitbot writes (`azure.rule_prefix`, default `jitbot-`): its
/// namespace in the NSGs. A grant's rule is `<prefix><request id>`, a target's lockdown baseline
/// `<prefix>lockdown-<target>`. Every other rule under the prefix is a stray the reconciler
/// removes; rules outside it are never touched. Two deployments sharing an NSG need prefixes
/// neither of which starts the other (`jitbot check` refuses overlaps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RulePrefix(String);

impl RulePrefix {
    /// Longest prefix: leaves room for `lockdown-` and a target name within ARM's 80 characters.
    const MAX: usize = 32;
    /// What follows the prefix in a lockdown baseline's name.
    pub const BASELINE: &'static str = "lockdown-";

    pub fn parse(s: &str) -> Result<RulePrefix, String> {
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if s.is_empty() {
            Err("the rule prefix is empty: every rule in the NSG would look like jitbot's".into())
        } else if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !ok_chars {
            Err(format!(
                "rule prefix `{s}` must start with a letter or digit and use only letters, digits, `-`, `_` and `.` (ARM's rule-name characters)"
            ))
        } else if s.len() > Self::MAX {
            Err(format!(
                "rule prefix `{s}` is longer than {} characters",
                Self::MAX
            ))
        } else {
            Ok(RulePrefix(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `rule_name` is in this namespace (ARM compares rule names case-insensitively).
    pub fn owns(&self, rule_name: &str) -> bool {
        rule_name
            .get(..self.0.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(&self.0))
    }

    /// Whether either prefix starts the other: the two namespaces would overlap.
    pub fn overlaps(&self, other: &RulePrefix) -> bool {
        self.owns(&other.0) || other.owns(&self.0)
    }

    /// The name of the NSG rule that carries a request's grant.
    pub fn grant_rule(&self, id: &RequestId) -> String {
        format!("{}{id}", self.0)
    }

    /// The request id a rule name carries when it is a grant's rule (`jitbot-req_…`), else `None`.
    pub fn grant_id(&self, rule_name: &str) -> Option<RequestId> {
        let rest = rule_name
            .get(self.0.len()..)
            .filter(|_| self.owns(rule_name))?;
        RequestId::parse(rest).ok().filter(|id| id.as_str() == rest)
    }

    /// The name of a target's lockdown (baseline Deny) rule.
    pub fn baseline_rule(&self, target: &str) -> String {
        format!("{}{}{target}", self.0, Self::BASELINE)
    }

    /// Whether `rule_name` has the form of a lockdown baseline (`<prefix>lockdown-…`).
    pub fn is_baseline(&self, rule_name: &str) -> bool {
        self.owns(rule_name)
            && rule_name[self.0.len()..]
                .get(..Self::BASELINE.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(Self::BASELINE))
    }
}

impl Default for RulePrefix {
    fn default() -> RulePrefix {
        RulePrefix("jitbot-".into())
    }
}

impl TryFrom<String> for RulePrefix {
    type Error = String;
    fn try_from(s: String) -> Result<RulePrefix, String> {
        RulePrefix::parse(&s)
    }
}

impl From<RulePrefix> for String {
    fn from(p: RulePrefix) -> String {
        p.0
    }
}

impl fmt::Display for RulePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The machine-readable expiry every grant rule's description carries (`expires=<RFC 3339>`), so
/// `jitbot sweep` can close expired rules with nothing but ARM. It comes first so truncation to
/// ARM's 140 characters never cuts it.
pub fn grant_description(id: &str, requester: &str, expires_ms: i64) -> String {
    let mut d = format!(
        "expires={} jitbot grant {id} for {requester}",
        expiry_stamp(expires_ms)
    );
    if d.len() > 140 {
        let mut end = 140;
        while !d.is_char_boundary(end) {
            end -= 1;
        }
        d.truncate(end);
    }
    d
}

/// `2026-11-27T10:00:00Z` (seconds, rounded up so a sweep never reads a grant as expired early).
fn expiry_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The expiry (Unix ms) a rule description carries, if it has a well-formed `expires=` token.
pub fn description_expiry(description: &str) -> Option<i64> {
    let stamp = description
        .split_whitespace()
        .find_map(|w| w.strip_prefix("expires="))?;
    chrono::DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Port names people type instead of numbers.
const PORT_NAMES: &[(&str, u16)] = &[
    ("ssh", 22),
    ("rdp", 3389),
    ("https", 443),
    ("http", 80),
    ("winrm", 5986),
];

/// One or more destination ports, sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports(Vec<u16>);

impl Ports {
    /// Parses `22`, `22,3389`, `ssh`, `rdp`, `ssh,3389`.
    pub fn parse(s: &str) -> Result<Ports, String> {
        let mut ports = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let lower = part.to_ascii_lowercase();
            let port = match PORT_NAMES.iter().find(|(name, _)| *name == lower) {
                Some((_, port)) => *port,
                None => match part.parse::<u32>() {
                    Ok(n) if (1..=65535).contains(&n) => n as u16,
                    Ok(_) => return Err(format!("port {part} is out of range (1–65535)")),
                    Err(_) => {
                        return Err(format!(
                            "`{part}` is not a port: use a number (22), a list (22,3389) or ssh / rdp"
                        ));
                    }
                },
            };
            ports.push(port);
        }
        if ports.is_empty() {
            return Err("no port given: use a number (22), a list (22,3389) or ssh / rdp".into());
        }
        Ok(Ports::from_vec(ports))
    }

    pub fn from_vec(mut ports: Vec<u16>) -> Ports {
        ports.sort_unstable();
        ports.dedup();
        Ports(ports)
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.0
    }

    /// Storage form: `22,3389`.
    pub fn to_csv(&self) -> String {
        self.0
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_csv())
    }
}

/// How long a grant stays open (or a policy limit). Whole seconds, at least one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrantDuration(Duration);

impl GrantDuration {
    /// Parses `90s`, `30m`, `1h30m`, `2h`, `1d`, and ISO 8601 `PT1H`, `PT1H30M`, `PT90S`.
    pub fn parse(s: &str) -> Result<GrantDuration, String> {
        let hint = "use e.g. 90s, 30m, 1h30m or PT1H";
        let trimmed = s.trim();
        let upper = trimmed.to_ascii_uppercase();
        let body = upper.strip_prefix("PT").unwrap_or(&upper);
        if body.is_empty() {
            return Err(format!("`{trimmed}` is not a duration: {hint}"));
        }
        let mut total: u64 = 0;
        let mut number = String::new();
        let mut units_seen = String::new();
        for c in body.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit_secs = match c {
                'D' => 86_400,
                'H' => 3_600,
                'M' => 60,
                'S' => 1,
                _ => return Err(format!("`{trimmed}` is not a duration: {hint}")),
            };
            if number.is_empty() || units_seen.contains(c) {
                return Err(format!("`{trimmed}` is not a duration: {hint}"));
            }
            units_seen.push(c);
            let n: u64 = number
                .parse()
                .map_err(|_| format!("`{trimmed}` is too long a duration"))?;
            total = n
                .checked_mul(unit_secs)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("`{trimmed}` is too long a duration"))?;
            number.clear();
        }
        if !number.is_empty() {
            return Err(format!(
                "`{trimmed}` has no unit: {hint} (s = seconds, m = minutes, h = hours)"
            ));
        }
        if total == 0 {
            return Err(format!(
                "`{trimmed}` is zero: a grant must last at least 1s"
            ));
        }
        Ok(GrantDuration(Duration::from_secs(total)))
    }

    pub fn from_secs(secs: u64) -> GrantDuration {
        GrantDuration(Duration::from_secs(secs.max(1)))
    }

    pub fn from_millis(ms: i64) -> GrantDuration {
        GrantDuration::from_secs((ms.max(0) as u64) / 1000)
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn as_millis(self) -> i64 {
        self.0.as_millis() as i64
    }

    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for GrantDuration {
    /// Compact human form: `1h30m`, `90s` → `1m30s`, `2h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        let mut out = String::new();
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= size {
                out.push_str(&format!("{}{unit}", secs / size));
                secs %= size;
            }
        }
        if out.is_empty() {
            out.push_str("0s");
        }
        f.write_str(&out)
    }
}

impl FromStr for GrantDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GrantDuration::parse(s)
    }
}

impl<'de> Deserialize<'de> for GrantDurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GrantDuration::parse(&s)
            .map(GrantDurationSetting)
            .map_err(serde::de::Error::custom)
    }
}

/// A duration read from configuration (`"4h"`), deserialised through [`GrantDuration::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantDurationSetting(pub GrantDuration);

/// A source address range a rule admits, normalised (`203.0.113.7` → `203.0.113.7/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceCidr(IpNet);

/// What a person wrote after `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A concrete address or prefix.
    Cidr(SourceCidr),
    /// "Anywhere": `*`, `any`, `internet`, `0.0.0.0/0`, `::/0`. Refused unless a target allows it.
    Any,
    /// `me`: the address of the computer the person confirms from, through a one-time link
    /// (`server.public_url`).
    Me,
}

impl SourceCidr {
    pub fn parse(s: &str) -> Result<SourceCidr, String> {
        let s = s.trim();
        let net = if s.contains('/') {
            IpNet::from_str(s)
                .map_err(|_| {
                    format!(
                        "`{s}` is not an IP address or CIDR (e.g. 203.0.113.7 or 203.0.113.0/24)"
                    )
                })?
                .trunc()
        } else {
            let ip = IpAddr::from_str(s).map_err(|_| {
                format!("`{s}` is not an IP address or CIDR (e.g. 203.0.113.7 or 203.0.113.0/24)")
            })?;
            IpNet::from(ip)
        };
        Ok(SourceCidr(net))
    }

    pub fn net(&self) -> IpNet {
        self.0
    }

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_everything(&self) -> bool {
        self.0.prefix_len() == 0
    }

    /// True when every address of `self` lies inside `outer`.
    pub fn within(&self, outer: &SourceCidr) -> bool {
        outer.0.contains(&self.0)
    }
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<SourceSpec, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "*" | "any" | "internet" | "anywhere" => Ok(SourceSpec::Any),
            "me" => Ok(SourceSpec::Me),
            _ => {
                let cidr = SourceCidr::parse(s)?;
                if cidr.is_everything() {
                    Ok(SourceSpec::Any)
                } else {
                    Ok(SourceSpec::Cidr(cidr))
                }
            }
        }
    }
}

impl fmt::Display for SourceCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a request is in its life. Every change is a compare-and-swap in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for approvals.
    Pending,
    /// Enough approvals; the apply job is queued.
    Approved,
    /// The rule PUT is in flight.
    Applying,
    /// The rule is live until `expires_at`.
    Active,
    /// The rule DELETE is in flight.
    Revoking,
    Revoked,
    Denied,
    /// The approval TTL passed before enough approvals.
    Expired,
    Cancelled,
    Failed,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Pending,
        Status::Approved,
        Status::Applying,
        Status::Active,
        Status::Revoking,
        Status::Revoked,
        Status::Denied,
        Status::Expired,
        Status::Cancelled,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Applying => "applying",
            Status::Active => "active",
            Status::Revoking => "revoking",
            Status::Revoked => "revoked",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Revoked | Status::Denied | Status::Expired | Status::Cancelled | Status::Failed
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nsg_ids_are_checked_once_and_the_same_everywhere() {
        let good = "/subscriptions/0000/resourceGroups/prod-rg/providers/Microsoft.Network/networkSecurityGroups/web1-nsg";
        assert_eq!(NsgId::parse(good).unwrap().name(), "web1-nsg");
        let lower = good.replace("resourceGroups", "resourcegroups");
        assert!(
            NsgId::parse(&lower).is_ok(),
            "ARM's fixed words are case-insensitive"
        );
        for bad in [
            // Passed the old `jitbot check` but was refused by every apply:
            "/subscriptions/0000/resourceGroups/prod rg/providers/Microsoft.Network/networkSecurityGroups/web1",
            "/subscriptions/0000/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1?x",
            "/subscriptions/0000/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/",
            "/subscriptions/0000/resourceGroups/prod/providers/Microsoft.Compute/virtualMachines/web1",
            "subscriptions/0000/resourceGroups/prod/providers/Microsoft.Network/networkSecurityGroups/web1",
        ] {
            assert!(NsgId::parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn durations_parse_in_every_documented_form() {
        for (text, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("1h30m", 5400),
            ("PT1H", 3600),
            ("pt1h30m", 5400),
            ("PT90S", 90),
            ("2h", 7200),
            ("1d", 86400),
            ("1H", 3600),
        ] {
            assert_eq!(
                GrantDuration::parse(text).unwrap().as_secs(),
                secs,
                "{text}"
            );
        }
        for bad in ["", "0s", "10", "1x", "h", "1h1h", "PT", "-5m"] {
            assert!(
                GrantDuration::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
        assert_eq!(GrantDuration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(GrantDuration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn ports_accept_numbers_lists_and_names() {
        assert_eq!(Ports::parse("22").unwrap().as_slice(), &[22]);
        assert_eq!(Ports::parse("3389,22,22").unwrap().as_slice(), &[22, 3389]);
        assert_eq!(Ports::parse("ssh").unwrap().as_slice(), &[22]);
        assert_eq!(Ports::parse("RDP").unwrap().as_slice(), &[3389]);
        assert!(Ports::parse("0").is_err());
        assert!(Ports::parse("65536").is_err());
        assert!(Ports::parse("telnet").is_err());
    }

    #[test]
    fn sources_normalise_and_recognise_anywhere() {
        assert_eq!(
            SourceSpec::parse("203.0.113.7").unwrap(),
            SourceSpec::Cidr(SourceCidr::parse("203.0.113.7/32").unwrap())
        );
        assert_eq!(
            SourceCidr::parse("203.0.113.9/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        for any in ["*", "0.0.0.0/0", "Internet", "any", "::/0"] {
            assert_eq!(SourceSpec::parse(any).unwrap(), SourceSpec::Any, "{any}");
        }
        assert!(SourceSpec::parse("300.1.1.1").is_err());
        let inner = SourceCidr::parse("203.0.113.7").unwrap();
        let outer = SourceCidr::parse("203.0.113.0/24").unwrap();
        assert!(inner.within(&outer));
        assert!(!outer.within(&inner));
    }

    #[test]
    fn request_ids_round_trip() {
        let id = RequestId::generate();
        assert_eq!(RequestId::parse(id.as_str()).unwrap(), id);
        assert!(RequestId::parse("web1").is_err());
        assert!(RequestId::parse("req_AB").is_err());
    }

    #[test]
    fn a_rule_prefix_is_a_namespace() {
        let p = RulePrefix::default();
        let id = RequestId::parse("req_7f3a9c01").unwrap();
        assert_eq!(p.grant_rule(&id), "jitbot-req_7f3a9c01");
        assert_eq!(p.grant_id("jitbot-req_7f3a9c01"), Some(id.clone()));
        assert_eq!(p.grant_id("JITBOT-req_7f3a9c01"), Some(id));
        for stray in [
            "jitbot-rogue",
            "jitbot-req_",
            "jitbot-req_ABC",
            "jitbot-lockdown-web1",
            "other-req_7f3a9c01",
            "jit",
        ] {
            assert_eq!(p.grant_id(stray), None, "{stray}");
        }
        assert!(
            p.owns("jitbot-rogue")
                && p.owns("Jitbot-X")
                && !p.owns("jitbo")
                && !p.owns("x-jitbot-")
        );
        assert_eq!(p.baseline_rule("web1"), "jitbot-lockdown-web1");
        assert!(p.is_baseline("JITBOT-LOCKDOWN-web1") && !p.is_baseline("jitbot-lockdow"));
        assert!(!p.is_baseline("jitbot-req_7f3a9c01") && !p.is_baseline("x-lockdown-web1"));
        let staging = RulePrefix::parse("jitbot-staging-").unwrap();
        assert!(p.overlaps(&staging) && staging.overlaps(&p));
        let prod = RulePrefix::parse("jitbot-prod-").unwrap();
        assert!(!prod.overlaps(&staging));
        assert!(!staging.owns("jitbot-prod-req_7f3a9c01"));
        for bad in ["", "-x", "a b", "jit/bot-", "ü-", &"x".repeat(33)] {
            assert!(RulePrefix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_grant_description_carries_its_expiry_within_140_characters() {
        let id = "req_7f3a9c01";
        let at = 1_795_773_600_000; // 2026-11-27T10:00:00Z
        let d = grant_description(id, "alice", at);
        assert_eq!(
            d,
            "expires=2026-11-27T10:00:00Z jitbot grant req_7f3a9c01 for alice"
        );
        assert_eq!(description_expiry(&d), Some(at));
        // Rounded up to the second: never earlier than the grant's real expiry.
        assert_eq!(
            description_expiry(&grant_description(id, "a", at + 1)),
            Some(at + 1000)
        );
        let long = grant_description(id, &"ü".repeat(200), at);
        assert!(long.len() <= 140 && long.chars().count() <= 140);
        assert_eq!(description_expiry(&long), Some(at));
        for none in [
            "",
            "jitbot req_x until 10:00 (approx.)",
            "expires=tomorrow",
            "expires=",
        ] {
            assert_eq!(description_expiry(none), None, "{none}");
        }
    }
}

/// Durations written as humantime strings (`"30s"`, `"5m"`, `"1h30m"`).
pub mod duration_str {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write it like \"30s\", \"5m\" or \"1h30m\""
            ))
        })
    }
}

/// How many characters of text someone else wrote go into one log field or audit field.
pub const LOGGED_TEXT_MAX: usize = 512;

/// `text` cut to [`LOGGED_TEXT_MAX`] characters on a character boundary and marked with its
/// full length, so what a sender controls (slash-command text, a reason, a user name, an excerpt
/// of a refused body) costs a bounded line in the logs and the audit trail, whatever was sent.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(LOGGED_TEXT_MAX) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => std::borrow::Cow::Owned(format!(
            "{}… [truncated: {} bytes in all]",
            &text[..cut],
            text.len()
        )),
    }
}

/// A secret value: never printed, never logged.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A chat platform jitbot talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Slack,
    Discord,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Slack => "slack",
            Platform::Discord => "discord",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "slack" => Some(Platform::Slack),
            "discord" => Some(Platform::Discord),
            _ => None,
        }
    }
}

/// A network security group's full ARM resource id,
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/{name}`.
/// The one validator for NSG ids: `jitbot check` and every ARM call accept exactly the same ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NsgId(String);

/// Whether `s` is `/subscriptions/<sub>/resourceGroups/<rg>/providers/<provider>/<kind>/<name>`.
/// Segments are ARM names: letters, digits and `-_.()`; the fixed words are case-insensitive.
fn is_resource_id(s: &str, provider: &str, kind: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 9
        && parts[0].is_empty()
        && parts[1].eq_ignore_ascii_case("subscriptions")
        && parts[3].eq_ignore_ascii_case("resourceGroups")
        && parts[5].eq_ignore_ascii_case("providers")
        && parts[6].eq_ignore_ascii_case(provider)
        && parts[7].eq_ignore_ascii_case(kind)
        && [2, 4, 8].iter().all(|&i| {
            !parts[i].is_empty()
                && parts[i]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
        })
}

impl NsgId {
    pub fn parse(s: &str) -> Result<NsgId, String> {
        if is_resource_id(s, "Microsoft.Network", "networkSecurityGroups") {
            Ok(NsgId(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not an NSG resource id (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/networkSecurityGroups/<name>)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The NSG's own name, the last segment (for people and logs).
    pub fn name(&self) -> &str {
        nsg_name(&self.0)
    }
}

/// A virtual machine's full ARM resource id,
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmId(String);

impl VmId {
    pub fn parse(s: &str) -> Result<VmId, String> {
        if is_resource_id(s, "Microsoft.Compute", "virtualMachines") {
            Ok(VmId(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a VM resource id (/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<name>)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<VmId> for String {
    fn from(id: VmId) -> String {
        id.0
    }
}

impl fmt::Display for NsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The last segment of an NSG id as stored (rows keep the id as text), for people and logs.
pub fn nsg_name(nsg_id: &str) -> &str {
    nsg_id.rsplit('/').next().unwrap_or(nsg_id)
}
