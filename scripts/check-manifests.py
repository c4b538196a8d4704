#!/usr/bin/env python3
"""What jitbot's deployment promises, checked on the rendered Kubernetes manifests and the
Grafana dashboard (the schemas say the YAML is valid Kubernetes; this says it is jitbot's).

    check-manifests.py kubernetes <overlay name> <rendered.yaml>
    check-manifests.py dashboard <dashboard.json> <out-rules.yml>

`kubernetes` checks one rendered overlay: hardened pods, probes, grace period, identities,
network policy, the init container and the sweeper CronJob, and per overlay the replica count,
update strategy, volume and disruption budget. `dashboard` checks that every panel queries the
dashboard's Prometheus data source and writes every query as a recording rule into
<out-rules.yml>, so that `promtool check rules` parses each PromQL expression.
Exits 1 and lists every problem; needs PyYAML (installed with kubernetes-validate).
"""

import json
import sys

import yaml

PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)


def by_kind(docs, kind):
    return [d for d in docs if d and d.get("kind") == kind]


def one(docs, kind, name):
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    if len(found) != 1:
        problem(f"expected one {kind} {name}, found {len(found)}")
        return None
    return found[0]


def check_container(where, c):
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(f"{where}: readOnlyRootFilesystem must be true")
    if sc.get("runAsNonRoot") is not True:
        problem(f"{where}: runAsNonRoot must be true")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problem(f"{where}: capabilities must drop ALL")
    if sc.get("privileged") or sc.get("capabilities", {}).get("add"):
        problem(f"{where}: no privileged mode and no added capability")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for key in ("cpu", "memory"):
            if key not in res.get(part, {}):
                problem(f"{where}: resources.{part}.{key} is missing")
    if c.get("command"):
        problem(f"{where}: use args with the image's entrypoint (the image has no shell)")


def check_pod(where, spec, labels, service_account):
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
        problem(f"{where}: the pod must run as a non-root user")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(f"{where}: seccompProfile RuntimeDefault")
    if spec.get("serviceAccountName") != service_account:
        problem(f"{where}: serviceAccountName must be {service_account}")
    if spec.get("automountServiceAccountToken") is not False:
        problem(f"{where}: the Kubernetes API token must not be mounted")
    if labels.get("azure.workload.identity/use") != "true":
        problem(f'{where}: label azure.workload.identity/use: "true" is missing')
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problem(f"{where}: no host namespaces")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        check_container(f"{where} container {c['name']}", c)
        for m in c.get("volumeMounts", []):
            if m["mountPath"] in ("/etc/jitbot", "/var/run/secrets/jitbot") and not m.get("readOnly"):
                problem(f"{where} container {c['name']}: {m['mountPath']} must be read-only")


def check_server(docs, overlay):
    d = one(docs, "Deployment", "jitbot")
    if d is None:
        return
    tpl = d["spec"]["template"]
    spec = tpl["spec"]
    check_pod("Deployment jitbot", spec, tpl["metadata"].get("labels", {}), "jitbot")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if not 12 <= grace <= 30:
        problem(f"terminationGracePeriodSeconds {grace}: jitbot needs 9 s to stop (+3 s preStop)")
    server = [c for c in spec["containers"] if c["name"] == "jitbot"]
    if len(server) != 1:
        problem("Deployment jitbot: no container named jitbot")
        return
    c = server[0]
    if c.get("args", [])[:1] != ["serve"]:
        problem("the jitbot container must run `serve`")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if c.get(probe, {}).get("httpGet", {}).get("path") != path:
            problem(f"the jitbot container's {probe} must GET {path}")
    init = spec.get("initContainers", [])
    if not any(i.get("args", [])[:1] == ["check"] and "/etc/jitbot/jitbot.toml" in i["args"] for i in init):
        problem("an init container must run `jitbot check /etc/jitbot/jitbot.toml`")
    env = {e["name"]: e for e in c.get("env", [])}
    if any("value" in e and "SECRET" in n and not n.endswith("_FILE") for n, e in env.items()):
        problem("secrets must be files (NAME_FILE), never values in the pod spec")
    check_overlay(docs, overlay, d, c, env)


def check_overlay(docs, overlay, d, c, env):
    spec = d["spec"]
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if overlay == "sqlite":
        if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
            problem("sqlite: exactly 1 replica with the Recreate strategy (SQLite has one writer)")
        if "/var/lib/jitbot" not in mounts or not by_kind(docs, "PersistentVolumeClaim"):
            problem("sqlite: /var/lib/jitbot must be a PersistentVolumeClaim")
        if pdbs:
            problem("sqlite: a PodDisruptionBudget on one replica only blocks node drains")
    elif overlay == "postgres":
        if spec.get("replicas", 1) < 2:
            problem("postgres: at least 2 replicas")
        if spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") != 0:
            problem("postgres: rolling updates with maxUnavailable 0")
        if len(pdbs) != 1 or pdbs[0]["spec"].get("minAvailable") != 1:
            problem("postgres: one PodDisruptionBudget with minAvailable 1")
        if "secretKeyRef" not in env.get("JITBOT_DATABASE_URL", {}).get("valueFrom", {}):
            problem("postgres: JITBOT_DATABASE_URL must come from the Secret")
    else:
        problem(f"unknown overlay {overlay}")


def check_sweeper(docs):
    cj = one(docs, "CronJob", "jitbot-sweeper")
    if cj is None:
        return
    if cj["spec"].get("schedule") != "*/5 * * * *":
        problem("the sweeper runs every 5 minutes")
    if cj["spec"].get("concurrencyPolicy") != "Forbid":
        problem("sweeper runs must not overlap (concurrencyPolicy: Forbid)")
    tpl = cj["spec"]["jobTemplate"]["spec"]["template"]
    check_pod("CronJob jitbot-sweeper", tpl["spec"], tpl["metadata"].get("labels", {}), "jitbot-sweeper")
    args = tpl["spec"]["containers"][0].get("args", [])
    if args != ["sweep", "--config", "/etc/jitbot/jitbot.toml", "--grace", "5m"]:
        problem(f"the sweeper must run `sweep --config /etc/jitbot/jitbot.toml --grace 5m`, not {args}")
    if any(v.get("secret") for v in tpl["spec"].get("volumes", [])):
        problem("the sweeper needs no chat or database secret")


def check_identities(docs):
    ids = {}
    for name in ("jitbot", "jitbot-sweeper"):
        sa = one(docs, "ServiceAccount", name)
        if sa is None:
            continue
        cid = sa["metadata"].get("annotations", {}).get("azure.workload.identity/client-id")
        if not cid:
            problem(f"ServiceAccount {name}: annotation azure.workload.identity/client-id is missing")
        ids[name] = cid
    if len(set(ids.values())) != len(ids):
        problem("the bot and the sweeper must have different identities (client ids)")


def check_network(docs, overlay):
    allowed_egress = {53, 443} | ({5432} if overlay == "postgres" else set())
    pols = by_kind(docs, "NetworkPolicy")
    if not any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in pols):
        problem("a default-deny NetworkPolicy for the namespace is missing")
    for p in pols:
        name = p["metadata"]["name"]
        for rule in p["spec"].get("egress", []):
            ports = {x.get("port") for x in rule.get("ports", [])}
            if not rule.get("ports") or not ports <= allowed_egress:
                problem(f"NetworkPolicy {name}: egress only to ports {sorted(allowed_egress)}")
        for rule in p["spec"].get("ingress", []):
            ports = {x.get("port") for x in rule.get("ports", [])}
            if ports != {8080}:
                problem(f"NetworkPolicy {name}: ingress only to the HTTP port 8080")
    server = [p for p in pols if p["metadata"]["name"] == "jitbot-server"]
    if not server or not server[0]["spec"].get("ingress"):
        problem("NetworkPolicy jitbot-server must let HTTP in")


def kubernetes(overlay, path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    ns = one(docs, "Namespace", "jitbot")
    if ns and ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        problem("the namespace must enforce the restricted Pod Security Standard")
    if by_kind(docs, "Secret"):
        problem("the kustomization must not create the Secret (it would overwrite the real one)")
    check_server(docs, overlay)
    check_sweeper(docs)
    check_identities(docs)
    check_network(docs, overlay)


def dashboard(path, out):
    with open(path) as f:
        dash = json.load(f)
    rules = []
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problem(f"panel {p['title']!r}: use the dashboard's data source variable")
        if not p.get("targets"):
            problem(f"panel {p['title']!r} has no query")
        for t in p.get("targets", []):
            expr = (t["expr"].replace("$__rate_interval", "5m").replace("$job", "jitbot")
                    .replace("$instance", ".*"))
            rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": expr})
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    print(f"{path}: {len(rules)} queries in {len(dash['panels'])} panels")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "kubernetes":
        kubernetes(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "dashboard":
        dashboard(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
    for p in PROBLEMS:
        print(f"  - {p}", file=sys.stderr)
    if PROBLEMS:
        print(f"{sys.argv[2]}: {len(PROBLEMS)} problem(s)", file=sys.stderr)
        sys.exit(1)
    if sys.argv[1] == "kubernetes":
        print(f"{sys.argv[3]}: jitbot's {sys.argv[2]} overlay keeps its promises")


if __name__ == "__main__":
    main()
