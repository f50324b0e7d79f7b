#!/usr/bin/env bash
# Renders the kustomize manifests from the Helm chart, their one source: deploy/base's files
# from the chart's defaults, and the resources of the ha, namespaced, monitoring and
# network-policy components from the values that switch them on. The components' patches and
# deploy/base's kustomization, namespace and CRDs are kept by hand. tests/chart.rs renders
# into a scratch folder and fails when the committed files differ.
# Usage: hack/render-manifests.sh [HELM] [OUT_ROOT]   (defaults: target/tools/bin/helm, the repo)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
helm=${1:-$repo/target/tools/bin/helm}
out=${2:-$repo}
chart=charts/baseten-secrets-operator
cd "$repo"

# render FILE SETTINGS TEMPLATE... : the templates, rendered for the release deploy/base
# installs, with SETTINGS (helm's --set syntax; empty: the defaults).
render() {
  local file=$1 settings=$2
  shift 2
  local only=()
  for template in "$@"; do only+=(--show-only "templates/$template"); done
  mkdir -p "$(dirname "$out/$file")"
  {
    echo "# Rendered from $chart ($*) by \`make manifests\`: edit the chart, not this file."
    "$helm" template baseten-secrets-operator "$chart" --namespace baseten-secrets-operator \
      ${settings:+--set "$settings"} "${only[@]}" |
      sed -e '/^# Source: /d' | sed -e '1{/^---$/d}' |
      # Helm ends each template with blank lines: drop those before a document's end.
      awk '/^$/ { blank++; next } /^---$/ { blank = 0 } { while (blank) { print ""; blank-- } print }'
  } > "$out/$file"
}

render deploy/base/rbac.yaml "" serviceaccount.yaml rbac.yaml
render deploy/base/deployment.yaml "" deployment.yaml
render deploy/base/service.yaml "" service.yaml
render deploy/base/admission-policy.yaml "" admission-policy.yaml
render deploy/components/ha/lease-rbac.yaml replicas=2 leader-election-rbac.yaml
render deploy/components/ha/pdb.yaml replicas=2 pdb.yaml
render deploy/components/namespaced/roles.yaml "watchNamespaces={team-a,team-b}" rbac.yaml
render deploy/components/network-policy/networkpolicy.yaml networkPolicy.enabled=true networkpolicy.yaml
monitoring=metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true
monitoring+=,metrics.dashboard.enabled=true
render deploy/components/monitoring/servicemonitor.yaml $monitoring servicemonitor.yaml
render deploy/components/monitoring/prometheusrule.yaml $monitoring prometheusrule.yaml
render deploy/components/monitoring/dashboard.yaml $monitoring dashboard.yaml
