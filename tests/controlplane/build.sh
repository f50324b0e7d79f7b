#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from the pinned upstream
# Go modules into an ignored cache folder; with `node`, the node's kubelet, kube-scheduler and
# kube-proxy instead (for `make e2e`). Skips the build when a stamp shows that the pinned
# versions (go.mod, go.sum) and the Go version are unchanged.
# Usage: tests/controlplane/build.sh [node] [OUT_DIR]   (default: <repo>/target/controlplane/bin)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [ "${1:-}" = node ]; then
  shift
  node=1
fi
out=${1:-${CONTROLPLANE_BIN_DIR:-$repo/target/controlplane/bin}}
mkdir -p "$out"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

stamp_of() { cat "$here/go.mod" "$here/go.sum" "$here/build.sh"; go version; }
want=$( stamp_of | sha256sum | cut -d' ' -f1 )
if [ -n "${node:-}" ]; then
  binaries=(kubelet kube-scheduler kube-proxy)
  up_to_date=1
  for b in "${binaries[@]}"; do [ -x "$out/$b" ] || up_to_date=; done
  if [ -n "$up_to_date" ] && [ "$(cat "$out/.stamp-node" 2>/dev/null)" = "$want" ]; then
    echo "node binaries are up to date in $out"
    exit 0
  fi
fi
if [ -z "${node:-}" ] && [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$want" ] \
   && [ -x "$out/etcd" ] && [ -x "$out/kube-apiserver" ] && [ -x "$out/kube-controller-manager" ] && [ -x "$out/kubectl" ]; then
  echo "control plane binaries are up to date in $out"
  exit 0
fi

cd "$here"
k8s=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
major=${k8s#v}; major=${major%%.*}
minor=${k8s#v*.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s} -X k8s.io/component-base/version.gitMajor=${major} -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
start=$(date +%s)
if [ -n "${node:-}" ]; then
  echo "building the node's ${binaries[*]} ${k8s} into $out"
  for b in "${binaries[@]}"; do
    go build -trimpath -ldflags "$ldflags" -o "$out/$b" "k8s.io/kubernetes/cmd/$b"
  done
  echo "$want" > "$out/.stamp-node"
  echo "node binaries built in $(( $(date +%s) - start ))s"
  exit 0
fi
echo "building control plane ${k8s} into $out (a cold build takes many minutes)"
go build -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags "$ldflags" -o "$out/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
go build -trimpath -ldflags "$ldflags" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
echo "$want" > "$out/.stamp"
echo "control plane built in $(( $(date +%s) - start ))s"
