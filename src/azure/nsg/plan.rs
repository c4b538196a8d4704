//! Planning a coalesced NSG write: from the NSG as read (JSON) and the queued changes, the body of
//! the NSG-level PUT and each change's answer.
//!
//! The NSG is edited as `serde_json::Value`, not rebuilt from jitbot's struct: only the rules the
//! changes name are touched inside `properties.securityRules`; every other rule, `tags`,
//! `flushConnection`, `location` and whatever fields a newer API version adds go back as they were
//! read (as JSON values; object keys may come back in another order). Removals are applied first,
//! then openings and relabels in queue order, each choosing its priority from the rules as they
//! stand after the changes before it, so two openings never pick the same number.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{Answer, AppliedRule, Change, Done, choose_priority, desired_rule};
use crate::azure::AzureError;
use crate::azure::model::SecurityRule;

/// What to write, and what each change gets once it is written.
pub(super) struct Plan {
    /// Each change's answer, in queue order.
    pub(super) answers: Vec<Answer>,
    /// The PUT body and the etag it was planned from; `None` when nothing needs writing.
    pub(super) write: Option<(Vec<u8>, String)>,
}

/// The NSG's security rules as jitbot's type (the default rules excluded).
pub(super) fn rules_of(nsg: &Value) -> Result<Vec<SecurityRule>, AzureError> {
    raw_rules(nsg)
        .into_iter()
        .map(|r| {
            serde_json::from_value(r).map_err(|e| {
                AzureError::Transient(format!("ARM answered with an unreadable rule: {e}"))
            })
        })
        .collect()
}

fn raw_rules(nsg: &Value) -> Vec<Value> {
    nsg.pointer("/properties/securityRules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The rules as read, edited by the changes.
struct Rules {
    raw: Vec<Value>,
    typed: Vec<SecurityRule>,
    modified: bool,
}

impl Rules {
    fn position(&self, name: &str) -> Option<usize> {
        self.typed
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))
    }

    fn remove(&mut self, name: &str) -> Answer {
        if let Some(k) = self.position(name) {
            self.raw.remove(k);
            self.typed.remove(k);
            self.modified = true;
        }
        Ok(Done::Removed)
    }

    fn put(&mut self, spec: &super::RuleSpec, preferred: Option<u16>) -> Answer {
        let (priority, in_place) = choose_priority(&self.typed, spec, preferred, &BTreeSet::new())?;
        let applied = Done::Applied(AppliedRule {
            name: spec.name.clone(),
            priority,
        });
        if in_place {
            return Ok(applied);
        }
        let desired = desired_rule(spec, priority);
        let mut value = json!({
            "name": desired.name,
            "properties": serde_json::to_value(&desired.properties).map_err(|e| {
                AzureError::Transient(format!("internal: cannot serialise a rule: {e}"))
            })?,
        });
        match self.position(&spec.name) {
            Some(k) => {
                if let Some(id) = self.raw[k].get("id") {
                    value["id"] = id.clone();
                }
                self.raw[k] = value;
                self.typed[k] = desired;
            }
            None => {
                self.raw.push(value);
                self.typed.push(desired);
            }
        }
        self.modified = true;
        Ok(applied)
    }

    fn relabel(&mut self, name: &str, description: &str) -> Answer {
        let Some(k) = self.position(name) else {
            return Ok(Done::Relabeled(false));
        };
        if self.typed[k].properties.description.as_deref() != Some(description) {
            self.raw[k]["properties"]["description"] = json!(description);
            self.typed[k].properties.description = Some(description.to_string());
            self.modified = true;
        }
        Ok(Done::Relabeled(true))
    }
}

/// Applies `changes` (removals first) to the NSG as read.
pub(super) fn plan(nsg: &Value, changes: &[Change]) -> Result<Plan, AzureError> {
    let etag = nsg
        .get("etag")
        .and_then(Value::as_str)
        .ok_or_else(|| AzureError::Transient("ARM answered an NSG without an etag".into()))?
        .to_string();
    let mut rules = Rules {
        raw: raw_rules(nsg),
        typed: rules_of(nsg)?,
        modified: false,
    };
    let mut order: Vec<usize> = (0..changes.len()).collect();
    order.sort_by_key(|&i| !changes[i].is_removal());
    let mut answers: Vec<Option<Answer>> = changes.iter().map(|_| None).collect();
    for i in order {
        answers[i] = Some(match &changes[i] {
            Change::Remove { name } => rules.remove(name),
            Change::Put { spec, preferred } => rules.put(spec, *preferred),
            Change::Relabel { name, description } => rules.relabel(name, description),
        });
    }
    let answers = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(AzureError::Transient("internal: unplanned".into()))))
        .collect();
    if !rules.modified {
        return Ok(Plan {
            answers,
            write: None,
        });
    }
    let mut body = nsg.clone();
    match body.get_mut("properties").and_then(Value::as_object_mut) {
        Some(props) => {
            props.insert("securityRules".into(), Value::Array(rules.raw));
        }
        None => body["properties"] = json!({ "securityRules": rules.raw }),
    }
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| AzureError::Transient(format!("internal: cannot serialise the NSG: {e}")))?;
    Ok(Plan {
        answers,
        write: Some((bytes, etag)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::azure::nsg::{Access, RuleSpec};

    fn spec(name: &str) -> RuleSpec {
        RuleSpec {
            access: Access::Allow,
            name: name.into(),
            description: "d".into(),
            protocol: "Tcp".into(),
            source: "203.0.113.7".into(),
            destination: "10.0.0.4".into(),
            ports: vec![22],
            band: (100, 110),
        }
    }

    fn nsg() -> Value {
        json!({
            "name": "n", "etag": "W/\"1\"", "location": "westeurope",
            "tags": {"owner": "net-team"},
            "futureField": {"x": 1},
            "properties": {
                "flushConnection": true,
                "someNewerProperty": [1, 2],
                "securityRules": [
                    {"name": "theirs", "id": "/x/theirs", "etag": "W/\"1\"",
                     "properties": {"protocol": "*", "access": "Allow", "priority": 100,
                                    "direction": "Inbound", "sourceAddressPrefix": "10.1.0.0/16",
                                    "destinationAddressPrefix": "*", "destinationPortRange": "443",
                                    "sourcePortRange": "*", "provisioningState": "Succeeded",
                                    "someRuleField": "kept"}},
                    {"name": "jitbot-old", "properties": {"protocol": "Tcp", "access": "Allow",
                     "priority": 101, "direction": "Inbound", "description": "old",
                     "sourceAddressPrefix": "203.0.113.9", "destinationAddressPrefix": "10.0.0.4",
                     "destinationPortRange": "22", "sourcePortRange": "*",
                     "provisioningState": "Succeeded"}}
                ]
            }
        })
    }

    fn written(plan: &Plan) -> Value {
        serde_json::from_slice(&plan.write.as_ref().unwrap().0).unwrap()
    }

    #[test]
    fn only_the_named_rules_change_and_everything_else_goes_back_as_read() {
        let changes = [
            Change::Put {
                spec: spec("jitbot-a"),
                preferred: None,
            },
            Change::Remove {
                name: "jitbot-old".into(),
            },
            Change::Put {
                spec: spec("jitbot-b"),
                preferred: None,
            },
        ];
        let plan = plan(&nsg(), &changes).unwrap();
        let body = written(&plan);
        assert_eq!(plan.write.as_ref().unwrap().1, "W/\"1\"");
        let mut expected = nsg();
        let rules = body["properties"]["securityRules"].as_array().unwrap();
        assert_eq!(rules[0], expected["properties"]["securityRules"][0]);
        let names: Vec<&str> = rules.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["theirs", "jitbot-a", "jitbot-b"]);
        // The removal went first, so its priority 101 was free for the first opening.
        let prio: Vec<i64> = rules[1..]
            .iter()
            .map(|r| r["properties"]["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(prio, [101, 102]);
        let answers: Vec<String> = plan.answers.iter().map(|a| format!("{a:?}")).collect();
        assert!(answers[0].contains("priority: 101"), "{answers:?}");
        assert!(answers[1].contains("Removed"));
        assert!(answers[2].contains("priority: 102"));
        // Everything but the rule list is as read.
        expected["properties"]["securityRules"] = Value::Null;
        let mut got = body.clone();
        got["properties"]["securityRules"] = Value::Null;
        assert_eq!(got, expected);
    }

    #[test]
    fn nothing_is_written_when_every_change_is_already_true() {
        let changes = [
            Change::Remove {
                name: "jitbot-gone".into(),
            },
            Change::Relabel {
                name: "jitbot-old".into(),
                description: "old".into(),
            },
            Change::Relabel {
                name: "jitbot-missing".into(),
                description: "x".into(),
            },
        ];
        let plan = plan(&nsg(), &changes).unwrap();
        assert!(plan.write.is_none());
        let answers: Vec<String> = plan.answers.iter().map(|a| format!("{a:?}")).collect();
        assert_eq!(
            answers,
            ["Ok(Removed)", "Ok(Relabeled(true))", "Ok(Relabeled(false))"]
        );
    }

    #[test]
    fn a_full_band_fails_that_change_only() {
        let mut narrow = spec("jitbot-a");
        narrow.band = (100, 101);
        let changes = [
            Change::Put {
                spec: narrow,
                preferred: None,
            },
            Change::Relabel {
                name: "jitbot-old".into(),
                description: "new".into(),
            },
        ];
        let plan = plan(&nsg(), &changes).unwrap();
        assert!(matches!(plan.answers[0], Err(AzureError::BandFull { .. })));
        let body = written(&plan);
        assert_eq!(
            body["properties"]["securityRules"][1]["properties"]["description"],
            "new"
        );
        assert_eq!(
            body["properties"]["securityRules"][1]["properties"]["provisioningState"],
            "Succeeded"
        );
    }
}
