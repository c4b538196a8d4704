//! What an NSG rule admits, as sets, and whether one rule admits no more than another.
//!
//! The reconciler must only ever *reduce* access: a grant's rule that someone edited is put back
//! only if the edit lets in traffic the approved rule did not. Deciding that needs real set logic,
//! not string comparison: `10.0.0.0/24` admits no more than `10.0.0.0/16`, `22,80-90` no more than
//! `20-100`, and `203.0.113.0/25` plus `203.0.113.128/25` exactly as much as `203.0.113.0/24`.
//!
//! The model is deliberately conservative. A service tag (`VirtualNetwork`, `AzureCloud`, …) or an
//! application security group stands for addresses jitbot cannot enumerate, so it is contained only
//! in "any address" or in the same tag; anything that cannot be parsed counts as "everything" when it
//! is the widened side, so an unreadable edit is never mistaken for a narrowing.
//!
//! Pure: no I/O, no ARM types. `azure/` turns a `SecurityRule` into an [`Admission`].

use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;

/// Inclusive intervals over one number line, kept sorted, disjoint and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Intervals(Vec<(u128, u128)>);

impl Intervals {
    fn from_ranges(ranges: impl IntoIterator<Item = (u128, u128)>) -> Intervals {
        let mut v: Vec<(u128, u128)> = ranges.into_iter().collect();
        v.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match merged.last_mut() {
                // Adjacent intervals merge too: 0-9 and 10-19 cover 0-19.
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Intervals(merged)
    }

    /// Every point of `other` lies in `self`. Merged intervals make this one lookup each.
    fn contains(&self, other: &Intervals) -> bool {
        other
            .0
            .iter()
            .all(|(lo, hi)| self.0.iter().any(|(a, b)| a <= lo && hi <= b))
    }

    /// Some point lies in both.
    fn overlaps(&self, other: &Intervals) -> bool {
        self.0
            .iter()
            .any(|(a, b)| other.0.iter().any(|(lo, hi)| a <= hi && lo <= b))
    }

    fn intersection(&self, other: &Intervals) -> Intervals {
        Intervals::from_ranges(self.0.iter().flat_map(|(a, b)| {
            other
                .0
                .iter()
                .filter(move |(lo, hi)| a <= hi && lo <= b)
                .map(move |(lo, hi)| (*a.max(lo), *b.min(hi)))
        }))
    }

    /// The points of `self` not in `other`.
    fn difference(&self, other: &Intervals) -> Intervals {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            // The first point of [a, b] not yet known to be removed; None once b is removed.
            let mut start = Some(a);
            for &(lo, hi) in other.0.iter().filter(|(lo, hi)| *lo <= b && a <= *hi) {
                let Some(s) = start else { break };
                if lo > s {
                    out.push((s, lo - 1));
                }
                start = if hi >= b { None } else { Some(s.max(hi + 1)) };
            }
            if let Some(s) = start {
                out.push((s, b));
            }
        }
        Intervals::from_ranges(out)
    }
}

/// A set of addresses as NSG rules write them: prefixes, `*`, and service tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSet {
    /// `*` (or `Any`, `0.0.0.0/0` together with `::/0`): every address.
    any: bool,
    v4: Intervals,
    v6: Intervals,
    /// Service tags and application security groups, upper-cased: opaque sets of addresses.
    tags: BTreeSet<String>,
}

impl AddressSet {
    /// Parses the prefixes of one side of a rule (`sourceAddressPrefix(es)`): addresses, CIDRs,
    /// `*`, service tags. An empty list is every address, as ARM reads a rule without prefixes.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> AddressSet {
        let mut set = AddressSet {
            any: items.is_empty(),
            v4: Intervals::default(),
            v6: Intervals::default(),
            tags: BTreeSet::new(),
        };
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for item in items {
            let s = item.as_ref().trim();
            if s == "*" || s.eq_ignore_ascii_case("any") {
                set.any = true;
            } else if let Some(net) = parse_net(s) {
                let (lo, hi) = net_range(&net);
                match net {
                    IpNet::V4(_) => v4.push((lo, hi)),
                    IpNet::V6(_) => v6.push((lo, hi)),
                }
            } else {
                set.tags.insert(s.to_ascii_uppercase());
            }
        }
        set.v4 = Intervals::from_ranges(v4);
        set.v6 = Intervals::from_ranges(v6);
        // Both whole families are every address.
        if set.v4 == Intervals(vec![(0, u32::MAX as u128)])
            && set.v6 == Intervals(vec![(0, u128::MAX)])
        {
            set.any = true;
        }
        set
    }

    /// Every address of `other` is in `self`. Tags are opaque: a tag is contained only in "any"
    /// or in the same tag.
    pub fn contains(&self, other: &AddressSet) -> bool {
        if self.any {
            return true;
        }
        if other.any {
            return false;
        }
        self.v4.contains(&other.v4)
            && self.v6.contains(&other.v6)
            && other.tags.is_subset(&self.tags)
    }
}

impl AddressSet {
    /// Some address lies in both, or may: a tag (a service tag, an application security group)
    /// is opaque, so it may hold any address. Used to decide whether a rule *reaches* a VM, where
    /// "maybe" must count as yes.
    pub fn may_overlap(&self, other: &AddressSet) -> bool {
        self.any
            || other.any
            || !self.tags.is_empty()
            || !other.tags.is_empty()
            || self.v4.overlaps(&other.v4)
            || self.v6.overlaps(&other.v6)
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        IpNet::from_str(s).ok().map(|n| n.trunc())
    } else {
        IpAddr::from_str(s).ok().map(IpNet::from)
    }
}

fn ip_value(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn net_range(net: &IpNet) -> (u128, u128) {
    (ip_value(net.network()), ip_value(net.broadcast()))
}

/// A set of ports: single ports, `N-M` ranges, lists and `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSet(Intervals);

impl PortSet {
    /// Every port.
    pub fn any() -> PortSet {
        PortSet(Intervals(vec![(0, 65535)]))
    }

    /// Parses `destinationPortRange(s)`. An empty list, `*` or anything unreadable is every port:
    /// what cannot be read must not look narrower than it is.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> PortSet {
        let mut ranges = Vec::new();
        for item in items {
            for part in item.as_ref().split(',') {
                let part = part.trim();
                match parse_port_range(part) {
                    Some(r) => ranges.push(r),
                    None => return PortSet::any(),
                }
            }
        }
        if ranges.is_empty() {
            return PortSet::any();
        }
        PortSet(Intervals::from_ranges(ranges))
    }

    /// The given ports.
    pub fn of(ports: &[u16]) -> PortSet {
        PortSet(Intervals::from_ranges(
            ports.iter().map(|p| (*p as u128, *p as u128)),
        ))
    }

    pub fn contains(&self, other: &PortSet) -> bool {
        self.0.contains(&other.0)
    }

    /// Like [`PortSet::parse`], but `None` for anything unreadable or an empty list: for a Deny,
    /// reading an unreadable port list as "every port" would hide what it fails to block.
    pub fn parse_strict<S: AsRef<str>>(items: &[S]) -> Option<PortSet> {
        let mut ranges = Vec::new();
        for item in items {
            for part in item.as_ref().split(',') {
                ranges.push(parse_port_range(part.trim())?);
            }
        }
        (!ranges.is_empty()).then(|| PortSet(Intervals::from_ranges(ranges)))
    }

    /// No port at all.
    pub fn empty() -> PortSet {
        PortSet(Intervals::default())
    }

    pub fn is_empty(&self) -> bool {
        self.0.0.is_empty()
    }

    pub fn intersection(&self, other: &PortSet) -> PortSet {
        PortSet(self.0.intersection(&other.0))
    }

    /// The ports of `self` not in `other`.
    pub fn difference(&self, other: &PortSet) -> PortSet {
        PortSet(self.0.difference(&other.0))
    }

    pub fn union(&self, other: &PortSet) -> PortSet {
        PortSet(Intervals::from_ranges(
            self.0.0.iter().chain(other.0.0.iter()).copied(),
        ))
    }

    /// The ports as merged inclusive ranges, lowest first.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        self.0
            .0
            .iter()
            .map(|(lo, hi)| (*lo as u16, *hi as u16))
            .collect()
    }
}

/// `22, 3389, 8000-8100`; `*` for every port; empty for none.
impl std::fmt::Display for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == PortSet::any() {
            return f.write_str("*");
        }
        let parts: Vec<String> = self
            .ranges()
            .into_iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

fn parse_port_range(s: &str) -> Option<(u128, u128)> {
    if s == "*" {
        return Some((0, 65535));
    }
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (
            lo.trim().parse::<u16>().ok()?,
            hi.trim().parse::<u16>().ok()?,
        ),
        None => {
            let p = s.parse::<u16>().ok()?;
            (p, p)
        }
    };
    (lo <= hi).then_some((lo as u128, hi as u128))
}

/// A rule's protocol. `*` admits every protocol; the others only themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Esp,
    Ah,
    Any,
}

impl Protocol {
    /// Case-insensitive, as ARM compares. Unknown values read as `*` (conservative).
    pub fn parse(s: &str) -> Protocol {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "icmp" => Protocol::Icmp,
            "esp" => Protocol::Esp,
            "ah" => Protocol::Ah,
            _ => Protocol::Any,
        }
    }

    pub fn contains(self, other: Protocol) -> bool {
        self == Protocol::Any || self == other
    }
}

/// What one inbound/outbound Allow or Deny rule lets through, as sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub inbound: bool,
    pub allow: bool,
    pub protocol: Protocol,
    pub sources: AddressSet,
    pub destinations: AddressSet,
    pub ports: PortSet,
    pub source_ports: PortSet,
    pub priority: i32,
}

/// How an observed rule compares with the rule that was approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Exactly as approved (as sets: `22` and `22-22` are the same).
    None,
    /// It admits no more than approved (narrowed, turned into a Deny, or moved to a lower
    /// precedence): left as the person made it.
    Narrowed(Vec<&'static str>),
    /// It admits something that was not approved: these aspects were widened.
    Widened(Vec<&'static str>),
}

impl Admission {
    /// Compares `self` (what the NSG holds) with `approved`. Each aspect that admits more than
    /// approved is named, so a drift alert can say what had been widened.
    ///
    /// Rules of the comparison, each for a reason:
    /// - A Deny admits nothing, so any Deny is no wider than an Allow (whatever its other fields).
    /// - A changed direction admits traffic of another direction that nobody approved: widened.
    /// - A lower priority *number* takes precedence over more rules (a Deny that used to win may
    ///   now lose): widened. A higher number can only lose precedence: narrowed.
    pub fn compare(&self, approved: &Admission) -> Drift {
        if !self.allow {
            return if approved.allow {
                Drift::Narrowed(vec!["access"])
            } else {
                Drift::None
            };
        }
        let mut wider = Vec::new();
        let mut narrower = Vec::new();
        let mut check = |name: &'static str, contained: bool, equal: bool| {
            if !contained {
                wider.push(name);
            } else if !equal {
                narrower.push(name);
            }
        };
        check("access", approved.allow, approved.allow);
        check(
            "direction",
            self.inbound == approved.inbound,
            self.inbound == approved.inbound,
        );
        check(
            "protocol",
            approved.protocol.contains(self.protocol),
            approved.protocol == self.protocol,
        );
        check(
            "source",
            approved.sources.contains(&self.sources),
            self.sources == approved.sources,
        );
        check(
            "destination",
            approved.destinations.contains(&self.destinations),
            self.destinations == approved.destinations,
        );
        check(
            "ports",
            approved.ports.contains(&self.ports),
            self.ports == approved.ports,
        );
        check(
            "source ports",
            approved.source_ports.contains(&self.source_ports),
            self.source_ports == approved.source_ports,
        );
        check(
            "priority",
            self.priority >= approved.priority,
            self.priority == approved.priority,
        );
        if !wider.is_empty() {
            Drift::Widened(wider)
        } else if !narrower.is_empty() {
            Drift::Narrowed(narrower)
        } else {
            Drift::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(items: &[&str]) -> AddressSet {
        AddressSet::parse(items)
    }

    fn p(items: &[&str]) -> PortSet {
        PortSet::parse(items)
    }

    #[test]
    fn address_containment_table() {
        // (outer, inner, inner ⊆ outer)
        let rows: &[(&[&str], &[&str], bool)] = &[
            (&["203.0.113.7"], &["203.0.113.7/32"], true),
            (&["203.0.113.0/24"], &["203.0.113.7"], true),
            (&["203.0.113.7"], &["203.0.113.0/24"], false),
            (
                &["203.0.113.0/24"],
                &["203.0.113.0/25", "203.0.113.128/25"],
                true,
            ),
            (
                &["203.0.113.0/25", "203.0.113.128/25"],
                &["203.0.113.0/24"],
                true,
            ),
            (&["203.0.113.0/25"], &["203.0.113.0/24"], false),
            // Adjacent prefixes cover what spans them.
            (
                &["10.0.0.0/24", "10.0.1.0/24"],
                &["10.0.0.128/25", "10.0.1.0/25"],
                true,
            ),
            (&["10.0.0.0/24", "10.0.2.0/24"], &["10.0.0.0/22"], false),
            // Host bits are ignored, as ARM normalises them.
            (&["10.1.2.3/16"], &["10.1.200.1"], true),
            (&["*"], &["0.0.0.0/0"], true),
            (&["*"], &["Internet"], true),
            (&["*"], &["2001:db8::1"], true),
            (&["Any"], &["10.0.0.1"], true),
            (&["0.0.0.0/0"], &["*"], false),
            (&["0.0.0.0/0", "::/0"], &["*"], true),
            (&["0.0.0.0/0"], &["2001:db8::1"], false),
            (&["203.0.113.7"], &["*"], false),
            (&["203.0.113.7"], &["Internet"], false),
            (&["203.0.113.7"], &["VirtualNetwork"], false),
            (&["VirtualNetwork"], &["virtualnetwork"], true),
            (&["VirtualNetwork"], &["10.0.0.1"], false),
            (&["2001:db8::/32"], &["2001:db8:1::/48"], true),
            (&["2001:db8:1::/48"], &["2001:db8::/32"], false),
            (&["2001:db8::/32"], &["203.0.113.7"], false),
            (
                &["203.0.113.7", "2001:db8::/32"],
                &["2001:db8::5", "203.0.113.7"],
                true,
            ),
            // An empty prefix list is every address.
            (&["203.0.113.7"], &[], false),
            (&[], &["203.0.113.7"], true),
        ];
        for (outer, inner, want) in rows {
            assert_eq!(
                a(outer).contains(&a(inner)),
                *want,
                "{inner:?} ⊆ {outer:?} should be {want}"
            );
        }
    }

    #[test]
    fn port_containment_table() {
        let rows: &[(&[&str], &[&str], bool)] = &[
            (&["22"], &["22"], true),
            (&["22"], &["22-22"], true),
            (&["22"], &["23"], false),
            (&["20-100"], &["22", "80-90"], true),
            (&["22", "80-90"], &["20-100"], false),
            (&["22", "3389"], &["22,3389"], true),
            (&["22"], &["22", "3389"], false),
            (&["*"], &["1-65535"], true),
            (&["1-65535"], &["*"], false),
            (&["0-65535"], &["*"], true),
            (&["22"], &["*"], false),
            (&["22"], &[], false),
            // Unreadable reads as every port (never as narrower).
            (&["22"], &["ssh"], false),
            (&["22"], &["30-20"], false),
            (&["10-19", "20-29"], &["15-25"], true),
        ];
        for (outer, inner, want) in rows {
            assert_eq!(
                p(outer).contains(&p(inner)),
                *want,
                "{inner:?} ⊆ {outer:?} should be {want}"
            );
        }
    }

    #[test]
    fn port_set_algebra() {
        // (a, b, a ∩ b, a − b)
        let rows: &[(&[&str], &[&str], &str, &str)] = &[
            (&["22"], &["22"], "22", ""),
            (
                &["*"],
                &["22", "3389"],
                "22, 3389",
                "0-21, 23-3388, 3390-65535",
            ),
            (
                &["20-30"],
                &["22", "25-26"],
                "22, 25-26",
                "20-21, 23-24, 27-30",
            ),
            (&["22", "3389"], &["3000-4000"], "3389", "22"),
            (&["0-10"], &["0"], "0", "1-10"),
            (&["65530-65535"], &["65535"], "65535", "65530-65534"),
            (&["22"], &["80"], "", "22"),
            (&["0-65535"], &["*"], "*", ""),
            (
                &["10-20", "30-40"],
                &["15-35"],
                "15-20, 30-35",
                "10-14, 36-40",
            ),
        ];
        for (a, b, inter, diff) in rows {
            assert_eq!(
                p(a).intersection(&p(b)).to_string(),
                *inter,
                "{a:?} ∩ {b:?}"
            );
            assert_eq!(p(a).difference(&p(b)).to_string(), *diff, "{a:?} − {b:?}");
        }
        assert!(p(&["22"]).difference(&p(&["*"])).is_empty());
        assert_eq!(p(&["22"]).union(&p(&["23"])).to_string(), "22-23");
        assert_eq!(
            PortSet::parse_strict(&["22", "80-90"]),
            Some(p(&["22", "80-90"]))
        );
        assert_eq!(PortSet::parse_strict(&["ssh"]), None);
        assert_eq!(PortSet::parse_strict::<&str>(&[]), None);
        assert_eq!(PortSet::parse_strict(&["*"]), Some(PortSet::any()));
    }

    #[test]
    fn addresses_may_overlap() {
        let rows: &[(&[&str], &[&str], bool)] = &[
            (&["10.0.1.0/24"], &["10.0.1.4"], true),
            (&["10.0.2.0/24"], &["10.0.1.4"], false),
            (&["*"], &["10.0.1.4"], true),
            (&["VirtualNetwork"], &["10.0.1.4"], true),
            (&["asg:/x"], &["10.0.1.4"], true),
            (&["10.0.0.0/16"], &["10.0.255.0/24", "192.0.2.1"], true),
            (&["2001:db8::/32"], &["10.0.1.4"], false),
        ];
        for (x, y, want) in rows {
            assert_eq!(a(x).may_overlap(&a(y)), *want, "{x:?} ∩ {y:?}");
        }
    }

    #[test]
    fn protocols() {
        assert!(Protocol::parse("*").contains(Protocol::Tcp));
        assert!(Protocol::parse("TCP").contains(Protocol::parse("tcp")));
        assert!(!Protocol::parse("Tcp").contains(Protocol::Any));
        assert!(!Protocol::parse("Tcp").contains(Protocol::Udp));
        assert_eq!(Protocol::parse("gre"), Protocol::Any);
    }

    fn approved() -> Admission {
        Admission {
            inbound: true,
            allow: true,
            protocol: Protocol::Tcp,
            sources: a(&["203.0.113.7"]),
            destinations: a(&["10.0.1.4"]),
            ports: p(&["22"]),
            source_ports: PortSet::any(),
            priority: 150,
        }
    }

    #[test]
    fn drift_table() {
        type Edit = fn(&mut Admission);
        let rows: &[(&str, Edit, Drift)] = &[
            ("unchanged", |_| {}, Drift::None),
            (
                "same ports written as a range",
                |r| r.ports = p(&["22-22"]),
                Drift::None,
            ),
            (
                "wider source",
                |r| r.sources = a(&["203.0.113.0/24"]),
                Drift::Widened(vec!["source"]),
            ),
            (
                "source *",
                |r| r.sources = a(&["*"]),
                Drift::Widened(vec!["source"]),
            ),
            (
                "service tag source",
                |r| r.sources = a(&["Internet"]),
                Drift::Widened(vec!["source"]),
            ),
            (
                "more ports",
                |r| r.ports = p(&["22", "3389"]),
                Drift::Widened(vec!["ports"]),
            ),
            (
                "another destination",
                |r| r.destinations = a(&["10.0.1.5"]),
                Drift::Widened(vec!["destination"]),
            ),
            (
                "protocol *",
                |r| r.protocol = Protocol::Any,
                Drift::Widened(vec!["protocol"]),
            ),
            (
                "other protocol",
                |r| r.protocol = Protocol::Udp,
                Drift::Widened(vec!["protocol"]),
            ),
            (
                "direction",
                |r| r.inbound = false,
                Drift::Widened(vec!["direction"]),
            ),
            (
                "higher precedence",
                |r| r.priority = 120,
                Drift::Widened(vec!["priority"]),
            ),
            (
                "lower precedence",
                |r| r.priority = 300,
                Drift::Narrowed(vec!["priority"]),
            ),
            (
                "turned into a Deny, even with a wide source",
                |r| {
                    r.allow = false;
                    r.sources = a(&["*"]);
                },
                Drift::Narrowed(vec!["access"]),
            ),
            (
                "narrower source port",
                |r| r.source_ports = p(&["1024-65535"]),
                Drift::Narrowed(vec!["source ports"]),
            ),
            (
                "two widenings are both named",
                |r| {
                    r.sources = a(&["*"]);
                    r.ports = p(&["*"]);
                },
                Drift::Widened(vec!["source", "ports"]),
            ),
            (
                "one widening outweighs a narrowing",
                |r| {
                    r.ports = p(&["*"]);
                    r.priority = 300;
                },
                Drift::Widened(vec!["ports"]),
            ),
        ];
        let base = approved();
        for (name, edit, want) in rows {
            let mut seen = base.clone();
            edit(&mut seen);
            assert_eq!(&seen.compare(&base), want, "{name}");
        }
    }
}
