#!/usr/bin/env bash
# Builds the project's other tools from their pinned Go modules into an ignored cache folder,
# and skips the build while the go.mod and go.sum files, this script and the Go version are
# unchanged. Each tool has its own module (this folder's go.mod for actionlint, helm/ and
# prometheus/), so that one tool's dependencies never move another's. Today: actionlint, which lints .github/workflows; helm, which lints,
# renders and installs the chart; promtool, which checks and unit-tests the alerting rules and
# parses the dashboard's queries; and the Prometheus
# Operator's ServiceMonitor and PrometheusRule CRDs (from its pinned module, into
# <OUT_DIR>/../crds), which the monitoring tests apply to the apiserver.
# Usage: tests/tools/build.sh [OUT_DIR]   (default: <repo>/target/tools/bin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/target/tools/bin}
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
# module folder (relative to this one) and package of each tool
tools=(
  ".:github.com/rhysd/actionlint/cmd/actionlint"
  "helm:helm.sh/helm/v4/cmd/helm"
  "prometheus:github.com/prometheus/prometheus/cmd/promtool"
)
prometheus_operator=github.com/prometheus-operator/prometheus-operator@v0.85.0

want=$( { cat "$here"/go.mod "$here"/go.sum "$here"/*/go.mod "$here"/*/go.sum "$here/build.sh"; go version; } |
  sha256sum | cut -d' ' -f1 )
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ]; then
  exit 0
fi
for entry in "${tools[@]}"; do
  module=${entry%%:*} tool=${entry#*:}
  (cd "$here/$module" && go build -trimpath -ldflags "-s -w" -o "$out/$(basename "$tool")" "$tool")
done
crds="$out/../crds"
mkdir -p "$crds"
module=$(cd / && GOFLAGS= go mod download -json "$prometheus_operator" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
for kind in servicemonitors prometheusrules; do
  cp "$module/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$crds/"
done
echo "$want" > "$out/.stamp"
echo "tools built into $out: ${tools[*]##*/}; CRDs of $prometheus_operator in $crds"
