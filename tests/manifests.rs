//! The deployment files under `manifests/` against what jitbot is and does: the Azure roles are
//! least privilege, the dashboard and the alert rules only query series jitbot exports (and the
//! dashboard shows every one), and the policy shipped in the Kubernetes ConfigMap passes
//! `jitbot check`. (`scripts/validate-manifests.sh` validates the files' formats with the
//! external tools: Kubernetes schemas, promtool, hadolint, systemd-analyze.)

use jitbot::metrics::{DatabaseGauges, Metrics};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The role definitions, by file name.
fn roles() -> Vec<(String, serde_json::Value)> {
    let mut roles: Vec<_> = std::fs::read_dir(repo("manifests/azure"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, json)
        })
        .collect();
    roles.sort_by(|a, b| a.0.cmp(&b.0));
    roles
}

fn actions(role: &serde_json::Value, key: &str) -> Vec<String> {
    role[key]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn role(file: &str) -> serde_json::Value {
    roles()
        .into_iter()
        .find(|(name, _)| name == file)
        .unwrap_or_else(|| panic!("manifests/azure/{file} is missing"))
        .1
}

#[test]
fn no_role_grants_a_wildcard_or_data_action() {
    let roles = roles();
    let names: Vec<&str> = roles.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["bot-role.json", "scanner-role.json", "sweeper-role.json"]
    );
    for (name, role) in &roles {
        let all = actions(role, "Actions");
        assert!(!all.is_empty(), "{name} grants nothing");
        for a in &all {
            assert!(!a.contains('*'), "{name}: wildcard action {a}");
            assert!(
                a.starts_with("Microsoft.Network/")
                    || a == "Microsoft.Compute/virtualMachines/read",
                "{name}: {a} is outside what jitbot calls"
            );
        }
        for key in ["DataActions", "NotDataActions"] {
            assert!(actions(role, key).is_empty(), "{name}: {key} must be empty");
        }
        assert_eq!(role["IsCustom"], true, "{name}");
    }
}

#[test]
fn the_scanner_only_reads() {
    for a in actions(&role("scanner-role.json"), "Actions") {
        assert!(a.ends_with("/read"), "scanner role: {a} is not a read");
    }
}

#[test]
fn the_sweeper_can_only_take_access_away() {
    let all = actions(&role("sweeper-role.json"), "Actions");
    for a in &all {
        assert!(
            a.ends_with("/read")
                || a == "Microsoft.Network/networkSecurityGroups/securityRules/delete",
            "sweeper role: {a} could open or change access"
        );
    }
    assert!(all.contains(&"Microsoft.Network/networkSecurityGroups/securityRules/delete".into()));
}

#[test]
fn the_bot_writes_rules_and_nothing_else() {
    let all = actions(&role("bot-role.json"), "Actions");
    let writes: Vec<&String> = all.iter().filter(|a| !a.ends_with("/read")).collect();
    // The NSG write is for coalesced writes (`azure.nsg_writes = "auto"`): one PUT of the NSG for
    // several rule changes. Not `…/join/action`: jitbot never associates an NSG.
    assert_eq!(
        writes,
        [
            "Microsoft.Network/networkSecurityGroups/write",
            "Microsoft.Network/networkSecurityGroups/securityRules/write",
            "Microsoft.Network/networkSecurityGroups/securityRules/delete"
        ]
    );
    for needed in [
        "Microsoft.Network/networkSecurityGroups/read",
        "Microsoft.Network/networkSecurityGroups/securityRules/read",
        "Microsoft.Network/locations/operations/read",
        "Microsoft.Network/locations/operationResults/read",
    ] {
        assert!(all.contains(&needed.to_string()), "bot role lacks {needed}");
    }
}

/// Every series name jitbot's `/metrics` can show, from a registry with each series recorded
/// once (a family without samples is not rendered at all).
fn exported_series() -> BTreeSet<String> {
    let m = Metrics::new();
    m.request("submitted");
    m.arm_call("PUT", Some(201));
    m.chat_error("slack", "transient");
    m.revocation_lateness(100);
    let text = m.render(DatabaseGauges {
        grants: vec![("active".into(), 1)],
        jobs: vec![("apply".into(), "done".into(), 1)],
        overdue: vec![("web1".into(), 1)],
        worker_heartbeat_ms: 1,
    });
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Every `jitbot_…` word in a text (metric names in PromQL, wherever they stand).
fn series_used(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("jitbot_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn dashboards_and_alerts_query_only_series_jitbot_exports() {
    let exported = exported_series();
    assert!(exported.contains("jitbot_grants"), "{exported:?}");
    assert!(
        exported.contains("jitbot_revocation_lateness_seconds_bucket"),
        "{exported:?}"
    );
    for file in [
        "manifests/grafana/jitbot.json",
        "manifests/prometheus/rules.yml",
    ] {
        let used = series_used(&read(file));
        assert!(used.len() >= 5, "{file} uses only {used:?}");
        for name in &used {
            assert!(
                exported.contains(name),
                "{file} uses {name}, which jitbot does not export (it exports {exported:?})"
            );
        }
    }
    // The dashboard covers every series jitbot exports.
    let dashboard = series_used(&read("manifests/grafana/jitbot.json"));
    for name in &exported {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            dashboard.iter().any(|d| d.starts_with(base)),
            "the dashboard does not show {name}"
        );
    }
}

#[test]
fn the_kubernetes_policy_passes_jitbot_check() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .arg("check")
        .arg(repo("manifests/kubernetes/base/jitbot.toml"))
        .env_remove("JITBOT_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_sweeper_runs_every_five_minutes_everywhere() {
    let cron = read("manifests/kubernetes/base/sweeper-cronjob.yaml");
    assert!(cron.contains("schedule: \"*/5 * * * *\""), "{cron}");
    let timer = read("manifests/systemd/jitbot-sweep.timer");
    assert!(timer.contains("OnCalendar=*:0/5"), "{timer}");
    let unit = read("manifests/systemd/jitbot-sweep.service");
    assert!(
        unit.contains("jitbot sweep --config /etc/jitbot/jitbot.toml --grace 5m"),
        "{unit}"
    );
}

/// A Slack manifest's lines with their comments and trailing blanks cut (no YAML parser here).
fn yaml_lines(path: &str) -> Vec<String> {
    read(path)
        .lines()
        .map(|l| l.split(" #").next().unwrap_or(l).trim_end().to_string())
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect()
}

#[test]
fn the_socket_mode_slack_manifest_is_the_http_one_without_request_urls() {
    let http = yaml_lines("manifests/slack-app.yaml");
    let socket = yaml_lines("manifests/slack-app-socket.yaml");
    let has = |lines: &[String], needle: &str| lines.iter().any(|l| l.trim() == needle);
    assert!(has(&http, "socket_mode_enabled: false"));
    assert!(has(&socket, "socket_mode_enabled: true"));
    assert!(http.iter().any(|l| l.trim().starts_with("url: https://")));
    assert!(
        http.iter()
            .any(|l| l.trim().starts_with("request_url: https://"))
    );
    // Over Socket Mode Slack calls nothing: no URL anywhere.
    assert!(!socket.iter().any(|l| l.contains("url:")), "{socket:?}");
    // Otherwise the same app: same command, scopes and settings.
    let without_urls = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| !l.contains("url:") && !l.contains("socket_mode_enabled"))
            .cloned()
            .collect()
    };
    assert_eq!(without_urls(&http), without_urls(&socket));
}
