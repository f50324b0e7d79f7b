#!/usr/bin/env bash
# Re-pins the control-plane tools module to one Kubernetes release and one etcd release.
# Usage: tests/controlplane/pin.sh v1.37.2 v3.7.3
# The staging-module replaces are derived from that release's own go.mod, never typed by hand.
set -euo pipefail
cd "$(dirname "$0")"
k8s=${1:?kubernetes version, e.g. v1.37.2}
etcd=${2:?etcd version, e.g. v3.7.3}
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
staging_version="v0.${k8s#v1.}"
gomod=$(go mod download -json "k8s.io/kubernetes@${k8s}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
rm -f go.mod go.sum
go mod init baseten-secrets-operator/tests/controlplane
for m in $(awk '$2 == "v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$gomod"); do
  go mod edit -replace "${m}=${m}@${staging_version}"
done
go mod edit -require "k8s.io/kubernetes@${k8s}" -require "go.etcd.io/etcd/server/v3@${etcd}"
go mod edit -tool k8s.io/kubernetes/cmd/kube-apiserver \
            -tool k8s.io/kubernetes/cmd/kube-controller-manager \
            -tool k8s.io/kubernetes/cmd/kubectl \
            -tool go.etcd.io/etcd/server/v3
go mod edit -go=1.26.0
go mod tidy
