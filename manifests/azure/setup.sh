#!/usr/bin/env bash
# Creates jitbot's Azure identities and least-privilege roles, and assigns them.
#
# Read it before you run it: it is the documentation of what jitbot needs in Azure, written as
# the `az` commands that do it (CI only checks its syntax). It is safe to run again: existing
# identities, roles, credentials and assignments are kept and updated.
#
#   manifests/azure/setup.sh aks      identities federated with jitbot's Kubernetes service accounts
#   manifests/azure/setup.sh vm       identities attached to the VM that runs jitbot under systemd
#
# Settings (environment variables):
#   SUBSCRIPTION_ID   subscription of the identities and the role definitions    (required)
#   IDENTITY_RG       resource group that holds the two managed identities        (required)
#   LOCATION          Azure region for the identities                             (required)
#   RULE_SCOPES       space-separated NSG ids or resource-group ids whose NSGs jitbot manages;
#                     the bot and the sweeper get their roles here                (required)
#   VM_SCOPES         resource groups (or VMs, NICs, VNets) of the VMs targeted with `vm = …`;
#                     the bot needs read there too (default: none, for `nsg = …` targets)
#   SCAN_SCOPES       subscriptions or resource groups for `jitbot scan` (default: none)
#   aks:  AKS_RG, AKS_NAME (the cluster; OIDC issuer and workload identity are enabled),
#         NAMESPACE (default jitbot)
#   vm:   VM_RG, VM_NAME (the VM that runs jitbot and the sweeper timer)
#
# What it creates:
#   identity jitbot-bot      role "jitbot bot"      (rules read/write/delete) at RULE_SCOPES,
#                                                   VM/NIC/VNet read at VM_SCOPES
#   identity jitbot-sweeper  role "jitbot sweeper"  (rules read/delete only) at RULE_SCOPES
#   role "jitbot scanner" (reads only) for jitbot-bot at SCAN_SCOPES, if given
# Two identities, so one compromised or misconfigured credential cannot both open a rule and keep
# it open: the sweeper closes expired rules even if the bot's identity is disabled.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mode="${1:-}"
case "$mode" in
aks | vm) ;;
*)
    echo "usage: $0 aks|vm   (settings in environment variables; see the top of this file)" >&2
    exit 2
    ;;
esac

: "${SUBSCRIPTION_ID:?set SUBSCRIPTION_ID}" "${IDENTITY_RG:?set IDENTITY_RG}"
: "${LOCATION:?set LOCATION}" "${RULE_SCOPES:?set RULE_SCOPES (NSG or resource group ids)}"
VM_SCOPES="${VM_SCOPES:-}"
SCAN_SCOPES="${SCAN_SCOPES:-}"
NAMESPACE="${NAMESPACE:-jitbot}"

az account set --subscription "$SUBSCRIPTION_ID"

# A role definition from one of the JSON files beside this script, assignable anywhere in the
# subscription. Created, or updated when it exists (role names are unique per tenant).
ensure_role() {
    local file=$1 name body
    name="$(sed -n 's/^ *"Name": "\(.*\)",$/\1/p' "$file")"
    body="$(sed "s#/subscriptions/00000000-0000-0000-0000-000000000000#/subscriptions/$SUBSCRIPTION_ID#" "$file")"
    if [ -n "$(az role definition list --custom-role-only true --name "$name" --query '[0].name' -o tsv)" ]; then
        az role definition update --role-definition "$body" --output none
    else
        az role definition create --role-definition "$body" --output none
    fi
    echo "role: $name"
}

# A user-assigned managed identity; prints its principal id and client id.
ensure_identity() {
    local name=$1
    az identity show -g "$IDENTITY_RG" -n "$name" --output none 2>/dev/null ||
        az identity create -g "$IDENTITY_RG" -n "$name" -l "$LOCATION" --output none
    az identity show -g "$IDENTITY_RG" -n "$name" --query '[principalId, clientId]' -o tsv
}

# Assigns a role to a managed identity at one scope. A new role or identity takes a little while
# to replicate in Entra ID, so the first assignment is retried for up to two minutes.
assign() {
    local principal=$1 role=$2 scope=$3 try
    for try in $(seq 1 12); do
        if az role assignment create --assignee-object-id "$principal" \
            --assignee-principal-type ServicePrincipal --role "$role" --scope "$scope" \
            --output none 2>/dev/null; then
            echo "assigned: $role at $scope"
            return 0
        fi
        echo "waiting for Entra ID to replicate ($try/12)..." >&2
        sleep 10
    done
    echo "could not assign $role at $scope" >&2
    return 1
}

ensure_role "$here/bot-role.json"
ensure_role "$here/sweeper-role.json"
ensure_role "$here/scanner-role.json"

read -r bot_principal bot_client < <(ensure_identity jitbot-bot)
read -r sweeper_principal sweeper_client < <(ensure_identity jitbot-sweeper)

for scope in $RULE_SCOPES; do
    assign "$bot_principal" "jitbot bot" "$scope"
    assign "$sweeper_principal" "jitbot sweeper" "$scope"
done
# VM targets: the bot reads the VM, its NIC and its subnet wherever they are; the scanner role
# is exactly those reads (plus NSG reads), so it serves here too.
for scope in $VM_SCOPES $SCAN_SCOPES; do
    assign "$bot_principal" "jitbot scanner" "$scope"
done

if [ "$mode" = aks ]; then
    : "${AKS_RG:?set AKS_RG}" "${AKS_NAME:?set AKS_NAME}"
    az aks update -g "$AKS_RG" -n "$AKS_NAME" --enable-oidc-issuer --enable-workload-identity --output none
    issuer="$(az aks show -g "$AKS_RG" -n "$AKS_NAME" --query oidcIssuerProfile.issuerUrl -o tsv)"
    # One federated credential per identity, each bound to exactly one service account.
    az identity federated-credential create -g "$IDENTITY_RG" --identity-name jitbot-bot \
        --name jitbot-aks --issuer "$issuer" --audiences api://AzureADTokenExchange \
        --subject "system:serviceaccount:$NAMESPACE:jitbot" --output none
    az identity federated-credential create -g "$IDENTITY_RG" --identity-name jitbot-sweeper \
        --name jitbot-sweeper-aks --issuer "$issuer" --audiences api://AzureADTokenExchange \
        --subject "system:serviceaccount:$NAMESPACE:jitbot-sweeper" --output none
    cat <<EOF

Put the client ids on the service accounts (manifests/kubernetes/base/serviceaccounts.yaml):
  jitbot          azure.workload.identity/client-id: "$bot_client"
  jitbot-sweeper  azure.workload.identity/client-id: "$sweeper_client"
EOF
else
    : "${VM_RG:?set VM_RG}" "${VM_NAME:?set VM_NAME}"
    bot_id="$(az identity show -g "$IDENTITY_RG" -n jitbot-bot --query id -o tsv)"
    sweeper_id="$(az identity show -g "$IDENTITY_RG" -n jitbot-sweeper --query id -o tsv)"
    az vm identity assign -g "$VM_RG" -n "$VM_NAME" --identities "$bot_id" "$sweeper_id" --output none
    cat <<EOF

Select each identity by client id in the systemd units (manifests/systemd/):
  jitbot.service        Environment=AZURE_CLIENT_ID=$bot_client
  jitbot-sweep.service  Environment=AZURE_CLIENT_ID=$sweeper_client
EOF
fi
