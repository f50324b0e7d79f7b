#!/usr/bin/env bash
# `make e2e`: the operator as users run it, on a real one-node cluster (hack/e2e/node.sh)
# in a private network namespace, with the Baseten emulator on the node's address; the
# checks are hack/e2e/checks.sh. Everything is stopped and cleaned up however it ends.
# Needs root. E2E_DIR (default target/e2e) keeps the PKI, the pause image and the logs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export E2E_DIR=${E2E_DIR:-$repo/target/e2e}
export NETNS=${NETNS:-bso-e2e}
VERSION=${VERSION:?the tag of the image}
IMAGE_TAR=${IMAGE_TAR:-target/image/baseten-secrets-operator.tar}
node=hack/e2e/node.sh
started=$(date +%s)

cargo build --quiet --release -p baseten-emulator --bin baseten-emulator
emulator_pid=
finish() {
  local status=$?
  [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null
  if [ "$status" != 0 ]; then
    echo "e2e: failed; the last lines of each log ($E2E_DIR/logs):" >&2
    for log in "$E2E_DIR"/logs/*.log; do
      echo "--- $log" >&2
      tail -n 15 "$log" >&2
    done
  fi
  "$node" down "$E2E_DIR" || true
  exit "$status"
}
trap finish EXIT INT TERM

"$node" up "$E2E_DIR"
"$node" load "$E2E_DIR" "$IMAGE_TAR"
echo "e2e: node up in $(( $(date +%s) - started ))s"

"$node" exec target/release/baseten-emulator --listen 10.200.0.1:18080 --api-key e2e-key \
  >"$E2E_DIR/logs/emulator.log" 2>&1 &
emulator_pid=$!

KUBECONFIG=$E2E_DIR/kubeconfig BASETEN_URL=http://10.200.0.1:18080 VERSION=$VERSION \
  "$node" exec hack/e2e/checks.sh
echo "e2e: passed in $(( $(date +%s) - started ))s"
