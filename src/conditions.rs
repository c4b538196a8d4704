//! A target's conditions beyond who and what: a reason (required, or matching a pattern such as
//! a ticket number), more approvals for some ports (RDP needs 2), and the hours it may be
//! requested in, in the target's time zone. Each is checked at request time, shown on the card
//! and `/jit targets`, and recorded in the `requested` audit event.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use regex::Regex;

use crate::policy::Refusal;

/// The hours a target may be requested in: `from` until `to` (across midnight when `to` is
/// earlier), in `tz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    pub from: NaiveTime,
    pub to: NaiveTime,
    pub tz: Tz,
}

impl Hours {
    fn contains(&self, now: DateTime<Utc>) -> bool {
        let t = now.with_timezone(&self.tz).time();
        if self.from <= self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }
}

/// A target's conditions, parsed.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub require_reason: bool,
    pub reason_pattern: Option<Regex>,
    /// Approvals needed when the request includes the port (the highest applies).
    pub port_approvals: BTreeMap<u16, u32>,
    pub hours: Option<Hours>,
}

impl PartialEq for Conditions {
    fn eq(&self, other: &Conditions) -> bool {
        self.require_reason == other.require_reason
            && self.reason_pattern.as_ref().map(Regex::as_str)
                == other.reason_pattern.as_ref().map(Regex::as_str)
            && self.port_approvals == other.port_approvals
            && self.hours == other.hours
    }
}

impl Eq for Conditions {}

/// The file form, as written on a target.
pub struct ConditionsFile<'a> {
    pub require_reason: bool,
    pub reason_pattern: Option<&'a str>,
    pub port_approvals: &'a BTreeMap<String, u32>,
    pub allowed_hours: Option<&'a str>,
    pub time_zone: Option<&'a str>,
}

impl Conditions {
    /// Parses the file form; every problem goes to `errors` (`at` names the field).
    pub fn parse(
        f: &ConditionsFile<'_>,
        at: &dyn Fn(&str) -> String,
        errors: &mut Vec<String>,
    ) -> Conditions {
        let reason_pattern = f.reason_pattern.and_then(|p| match Regex::new(p) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(format!(
                    "{}: `{p}` is not a regular expression: {e}",
                    at("reason_pattern")
                ));
                None
            }
        });
        let mut port_approvals = BTreeMap::new();
        for (port, n) in f.port_approvals {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && *n >= 1 => {
                    port_approvals.insert(p, *n);
                }
                _ => errors.push(format!(
                    "{}: `{port} = {n}` must be a port and at least 1 approval",
                    at("port_approvals")
                )),
            }
        }
        let tz = match f.time_zone.map(str::parse::<Tz>) {
            None => Some(Tz::UTC),
            Some(Ok(tz)) => Some(tz),
            Some(Err(_)) => {
                errors.push(format!(
                    "{}: `{}` is not an IANA time zone (e.g. Europe/Berlin)",
                    at("time_zone"),
                    f.time_zone.unwrap_or_default()
                ));
                None
            }
        };
        let hours = f.allowed_hours.and_then(|h| match (parse_hours(h), tz) {
            (Some((from, to)), Some(tz)) => Some(Hours { from, to, tz }),
            (None, _) => {
                errors.push(format!(
                    "{}: `{h}` must look like \"08:00-18:00\"",
                    at("allowed_hours")
                ));
                None
            }
            _ => None,
        });
        Conditions {
            require_reason: f.require_reason || reason_pattern.is_some(),
            reason_pattern,
            port_approvals,
            hours,
        }
    }

    /// Refuses a request for `target` with this reason at `now` that the conditions do not allow.
    pub fn check(
        &self,
        target: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        match (reason, &self.reason_pattern) {
            (None, Some(p)) => {
                return Err(Refusal::new(
                    "reason_required",
                    format!(
                        "{target} needs a reason matching `{p}` (e.g. a ticket): add it after the duration"
                    ),
                ));
            }
            (None, None) if self.require_reason => {
                return Err(Refusal::new(
                    "reason_required",
                    format!(
                        "{target} needs a reason: add it after the duration, e.g. `/jit {target} 22 1h deploy hotfix`"
                    ),
                ));
            }
            (Some(r), Some(p)) if !p.is_match(r) => {
                return Err(Refusal::new(
                    "reason_pattern",
                    format!(
                        "the reason for {target} must match `{p}` (e.g. a ticket number); `{r}` does not"
                    ),
                ));
            }
            _ => {}
        }
        if let Some(h) = &self.hours
            && !h.contains(now)
        {
            return Err(Refusal::new(
                "outside_allowed_hours",
                format!(
                    "{target} may be requested {}–{} {}; it is {} there now",
                    h.from.format("%H:%M"),
                    h.to.format("%H:%M"),
                    h.tz,
                    now.with_timezone(&h.tz).format("%H:%M")
                ),
            ));
        }
        Ok(())
    }

    /// Approvals a request for `ports` needs: the target's, or more for some ports.
    pub fn approvals(&self, base: u32, ports: &[u16]) -> u32 {
        ports
            .iter()
            .filter_map(|p| self.port_approvals.get(p))
            .fold(base, |n, m| n.max(*m))
    }

    /// For people: `reason matching ^INC-\d+`, `port 3389 needs 2 approvals`, `08:00–18:00 Europe/Berlin`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.reason_pattern {
            Some(p) => out.push(format!("reason matching `{p}`")),
            None if self.require_reason => out.push("reason required".into()),
            None => {}
        }
        for (port, n) in &self.port_approvals {
            out.push(format!("port {port} needs {n} approvals"));
        }
        if let Some(h) = &self.hours {
            out.push(format!(
                "requests {}–{} {}",
                h.from.format("%H:%M"),
                h.to.format("%H:%M"),
                h.tz
            ));
        }
        out
    }
}

fn parse_hours(s: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (a, b) = s.split_once('-')?;
    let t = |x: &str| NaiveTime::parse_from_str(x.trim(), "%H:%M").ok();
    Some((t(a)?, t(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        require: bool,
        pattern: Option<&str>,
        ports: &[(&str, u32)],
        hours: Option<&str>,
        tz: Option<&str>,
    ) -> Result<Conditions, Vec<String>> {
        let port_approvals = ports.iter().map(|(p, n)| (p.to_string(), *n)).collect();
        let mut errors = Vec::new();
        let c = Conditions::parse(
            &ConditionsFile {
                require_reason: require,
                reason_pattern: pattern,
                port_approvals: &port_approvals,
                allowed_hours: hours,
                time_zone: tz,
            },
            &|f| format!("targets.web1.{f}"),
            &mut errors,
        );
        if errors.is_empty() {
            Ok(c)
        } else {
            Err(errors)
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reasons_are_required_or_must_match_the_pattern() {
        let now = at("2026-11-27T12:00:00Z");
        let c = parse(true, None, &[], None, None).unwrap();
        assert_eq!(
            c.check("web1", None, now).unwrap_err().rule,
            "reason_required"
        );
        assert_eq!(
            c.check("web1", Some("  "), now).unwrap_err().rule,
            "reason_required"
        );
        assert!(c.check("web1", Some("deploy"), now).is_ok());
        let c = parse(false, Some(r"^INC-\d+"), &[], None, None).unwrap();
        assert_eq!(
            c.check("web1", None, now).unwrap_err().rule,
            "reason_required"
        );
        let wrong = c.check("web1", Some("hotfix"), now).unwrap_err();
        assert_eq!(wrong.rule, "reason_pattern");
        assert!(wrong.message.contains(r"^INC-\d+"), "{}", wrong.message);
        assert!(c.check("web1", Some("INC-4711 disk full"), now).is_ok());
        assert_eq!(c.describe(), [r"reason matching `^INC-\d+`"]);
    }

    #[test]
    fn some_ports_need_more_approvals() {
        let c = parse(false, None, &[("3389", 2), ("5985", 3)], None, None).unwrap();
        assert_eq!(c.approvals(1, &[22]), 1);
        assert_eq!(c.approvals(1, &[22, 3389]), 2);
        assert_eq!(c.approvals(1, &[3389, 5985]), 3);
        assert_eq!(c.approvals(4, &[3389]), 4);
        assert_eq!(
            c.describe(),
            ["port 3389 needs 2 approvals", "port 5985 needs 3 approvals"]
        );
    }

    #[test]
    fn hours_are_checked_in_the_targets_time_zone_also_across_midnight() {
        let c = parse(false, None, &[], Some("08:00-18:00"), Some("Europe/Berlin")).unwrap();
        // 07:30 UTC is 08:30 in Berlin (CET, UTC+1) in November.
        assert!(c.check("web1", None, at("2026-11-27T07:30:00Z")).is_ok());
        let late = c
            .check("web1", None, at("2026-11-27T17:30:00Z"))
            .unwrap_err();
        assert_eq!(late.rule, "outside_allowed_hours");
        assert!(
            late.message
                .contains("08:00–18:00 Europe/Berlin; it is 18:30 there now"),
            "{}",
            late.message
        );
        let night = parse(false, None, &[], Some("22:00-06:00"), None).unwrap();
        assert!(
            night
                .check("web1", None, at("2026-11-27T23:00:00Z"))
                .is_ok()
        );
        assert!(
            night
                .check("web1", None, at("2026-11-27T05:59:00Z"))
                .is_ok()
        );
        assert!(
            night
                .check("web1", None, at("2026-11-27T12:00:00Z"))
                .is_err()
        );
    }

    #[test]
    fn bad_conditions_are_named() {
        let errors = parse(
            false,
            Some("(["),
            &[("ssh", 2), ("22", 0)],
            Some("8-18"),
            Some("Mars/Olympus"),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(
            errors[0].starts_with("targets.web1.reason_pattern"),
            "{errors:?}"
        );
    }
}
