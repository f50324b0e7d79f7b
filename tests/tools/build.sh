#!/usr/bin/env bash
# Builds the project's other tools from their pinned Go modules (this folder's go.mod) into an
# ignored cache folder, and skips the build while go.mod, go.sum, this script and the Go
# version are unchanged. Today: actionlint, which lints .github/workflows; and the Prometheus
# Operator's ServiceMonitor and PrometheusRule CRDs (from its pinned module, into
# <OUT_DIR>/../crds), which the monitoring tests apply to the apiserver.
# Usage: tests/tools/build.sh [OUT_DIR]   (default: <repo>/target/tools/bin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/target/tools/bin}
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
tools=(github.com/rhysd/actionlint/cmd/actionlint)
prometheus_operator=github.com/prometheus-operator/prometheus-operator@v0.85.0

want=$( { cat "$here/go.mod" "$here/go.sum" "$here/build.sh"; go version; } | sha256sum | cut -d' ' -f1 )
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ]; then
  exit 0
fi
cd "$here"
for tool in "${tools[@]}"; do
  go build -trimpath -ldflags "-s -w" -o "$out/$(basename "$tool")" "$tool"
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
