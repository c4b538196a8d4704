//! The `/jit` grammar: text a person typed → a [`Command`], or a message telling them how to fix it.
//!
//! ```text
//! /jit <target> <ports> <duration> [from <ip|cidr|me>] [reason…]
//! /jit help | targets | list | status <id> | revoke <id> | extend <id> <duration>
//! ```

use crate::domain::{GrantDuration, Ports, RequestId, SourceSpec};

/// A parsed `/jit` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Targets,
    List,
    Status(RequestId),
    Revoke(RequestId),
    Extend(RequestId, GrantDuration),
    Request(AccessRequest),
}

/// `/jit web1 22,3389 90m from 203.0.113.7 deploy hotfix`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub target: String,
    pub ports: Ports,
    pub duration: GrantDuration,
    pub source: Option<SourceSpec>,
    pub reason: Option<String>,
    /// `/jit break-glass …`: open without approval where the target allows it (with a reason,
    /// for a shorter maximum, loudly).
    pub break_glass: bool,
}

/// The one-screen usage text, shown by `/jit help` and after every grammar error.
pub const USAGE: &str = "\
Usage:
  /jit <target> <ports> <duration> [from <ip|cidr|me>] [reason…]
      e.g. /jit web1 22 1h   ·   /jit web1 22,3389 90m from 203.0.113.7 deploy hotfix   ·   /jit web1 ssh 30s
      ports: 22, 22,3389, ssh (22), rdp (3389)   durations: 90s, 30m, 1h30m, PT1H
  /jit targets                  what you may request
  /jit list                     your pending and active requests
  /jit status <id>              one request in detail
  /jit revoke <id>              close a grant early (requester or approver)
  /jit extend <id> <duration>   keep a grant open longer (may need approval again)
  /jit break-glass <target> <ports> <duration> <reason…>
                                emergency, where a target allows it: opens without approval,
                                for a short time, and alerts every approver
  /jit help                     this text
  /jit                          (Slack) a form instead of typing";

impl Command {
    /// Parses the text after `/jit`. Errors are sentences to show the person, followed by usage.
    pub fn parse(text: &str) -> Result<Command, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let Some((first, rest)) = words.split_first() else {
            return Ok(Command::Help);
        };
        let verb = first.to_ascii_lowercase();
        let id_arg = |what: &str| -> Result<RequestId, String> {
            match rest.first() {
                Some(id) => RequestId::parse(id),
                None => Err(format!(
                    "`/jit {what}` needs a request id, e.g. `/jit {what} req_7f3a9c01`"
                )),
            }
        };
        let no_more = |n: usize, what: &str| -> Result<(), String> {
            if rest.len() > n {
                Err(format!(
                    "`/jit {what}` takes no more words after `{}`",
                    rest[n - 1].max(first)
                ))
            } else {
                Ok(())
            }
        };
        match verb.as_str() {
            "help" | "-h" | "--help" | "?" => Ok(Command::Help),
            "targets" => Ok(Command::Targets),
            "list" | "ls" => Ok(Command::List),
            "status" => {
                let id = id_arg("status")?;
                no_more(1, "status")?;
                Ok(Command::Status(id))
            }
            "revoke" | "close" => {
                let id = id_arg("revoke")?;
                no_more(1, "revoke")?;
                Ok(Command::Revoke(id))
            }
            "extend" => {
                let id = id_arg("extend")?;
                let Some(duration) = rest.get(1) else {
                    return Err(format!(
                        "`/jit extend` needs a duration too, e.g. `/jit extend {id} 30m`"
                    ));
                };
                let duration = GrantDuration::parse(duration)?;
                no_more(2, "extend")?;
                Ok(Command::Extend(id, duration))
            }
            "break-glass" | "breakglass" => {
                if rest.is_empty() {
                    return Err("`/jit break-glass` needs a request and a reason, e.g. `/jit break-glass web1 22 30m INC-42 outage`".into());
                }
                let mut r = Self::parse_request(rest)?;
                r.break_glass = true;
                Ok(Command::Request(r))
            }
            _ => Self::parse_request(&words).map(Command::Request),
        }
    }

    fn parse_request(words: &[&str]) -> Result<AccessRequest, String> {
        let target = words[0];
        if !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "`{target}` is not a target name; `/jit targets` lists yours"
            ));
        }
        let Some(ports) = words.get(1) else {
            return Err(format!(
                "which port on {target}? e.g. `/jit {target} 22 1h` (`/jit targets` shows what is allowed)"
            ));
        };
        let ports = Ports::parse(ports)?;
        let Some(duration) = words.get(2) else {
            return Err(format!(
                "for how long? e.g. `/jit {target} {ports} 1h` (durations: 90s, 30m, 1h30m, PT1H)"
            ));
        };
        let duration = GrantDuration::parse(duration)?;
        let mut rest = &words[3..];
        let mut source = None;
        if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("from")) {
            let Some(addr) = rest.get(1) else {
                return Err("`from` needs an address, e.g. `from 203.0.113.7`".into());
            };
            source = Some(SourceSpec::parse(addr)?);
            rest = &rest[2..];
        }
        let reason = (!rest.is_empty()).then(|| rest.join(" "));
        if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
            return Err("the reason is too long (500 characters at most)".into());
        }
        Ok(AccessRequest {
            target: target.to_string(),
            ports,
            duration,
            source,
            reason,
            break_glass: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SourceCidr;

    fn request(text: &str) -> AccessRequest {
        match Command::parse(text).unwrap() {
            Command::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_examples() {
        let r = request("web1 22 1h");
        assert_eq!(
            (r.target.as_str(), r.ports.as_slice(), r.duration.as_secs()),
            ("web1", &[22][..], 3600)
        );
        assert_eq!(r.source, None);
        assert_eq!(r.reason, None);

        let r = request("web1 22,3389 90m from 203.0.113.7 deploy hotfix");
        assert_eq!(r.ports.as_slice(), &[22, 3389]);
        assert_eq!(r.duration.as_secs(), 5400);
        assert_eq!(
            r.source,
            Some(SourceSpec::Cidr(SourceCidr::parse("203.0.113.7").unwrap()))
        );
        assert_eq!(r.reason.as_deref(), Some("deploy hotfix"));

        let r = request("web1 ssh 30s");
        assert_eq!(r.ports.as_slice(), &[22]);
        assert_eq!(r.duration.as_secs(), 30);

        let r = request("web1 22 PT1H because reasons");
        assert_eq!(r.reason.as_deref(), Some("because reasons"));
        assert_eq!(
            request("web1 22 1h from 0.0.0.0/0").source,
            Some(SourceSpec::Any)
        );
    }

    #[test]
    fn parses_the_verbs() {
        assert_eq!(Command::parse("").unwrap(), Command::Help);
        assert_eq!(Command::parse("help").unwrap(), Command::Help);
        assert_eq!(Command::parse("targets").unwrap(), Command::Targets);
        assert_eq!(Command::parse("list").unwrap(), Command::List);
        let id = RequestId::parse("req_abc12345").unwrap();
        assert_eq!(
            Command::parse("status req_abc12345").unwrap(),
            Command::Status(id.clone())
        );
        assert_eq!(
            Command::parse("revoke req_abc12345").unwrap(),
            Command::Revoke(id.clone())
        );
        assert_eq!(
            Command::parse("extend req_abc12345 30m").unwrap(),
            Command::Extend(id, GrantDuration::from_secs(1800))
        );
    }

    #[test]
    fn errors_say_what_to_type() {
        assert!(Command::parse("web1").unwrap_err().contains("which port"));
        assert!(Command::parse("web1 22").unwrap_err().contains("how long"));
        assert!(
            Command::parse("web1 telnet 1h")
                .unwrap_err()
                .contains("not a port")
        );
        assert!(
            Command::parse("web1 22 forever")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            Command::parse("web1 22 1h from")
                .unwrap_err()
                .contains("needs an address")
        );
        assert!(
            Command::parse("web1 22 1h from nowhere")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(
            Command::parse("status")
                .unwrap_err()
                .contains("needs a request id")
        );
        assert!(
            Command::parse("extend req_abc12345")
                .unwrap_err()
                .contains("duration")
        );
        assert!(
            Command::parse("we;b1 22 1h")
                .unwrap_err()
                .contains("not a target")
        );
    }
}
