#!/usr/bin/env bash
# `make demo`: the operator end to end on a local control plane and the Baseten emulator,
# then everything is stopped. `make dev` (this script with "dev") leaves it all running.
set -euo pipefail
mode=${1:-demo}
cd "$(dirname "$0")/.."
dev=target/dev
ns=ml

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building the operator and the local environment"
cargo build --quiet --bin baseten-secrets-operator -p baseten-secrets-operator
cargo build --quiet -p testenv
target/debug/testenv up --dir "$dev"
# shellcheck disable=SC1091
source "$dev/env"

operator_pid=
cleanup() {
  [ -n "$operator_pid" ] && kill "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null
  target/debug/testenv down --dir "$dev" >/dev/null
}
if [ "$mode" = demo ]; then trap cleanup EXIT; fi

step "Installing the CRD (kubectl apply -k crds/)"
kubectl apply -k crds/
kubectl wait --for=condition=Established crd/basetensecrets.baseten.co --timeout=60s

step "Starting the operator against the Baseten emulator at $BASETEN_URL"
RUST_LOG=info target/debug/baseten-secrets-operator --baseten-url "$BASETEN_URL" \
  >"$dev/operator.log" 2>&1 &
operator_pid=$!
echo "operator pid $operator_pid, log in $dev/operator.log"

step "Applying a Secret and a BasetenSecret (deploy/samples/)"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$ns" apply -k deploy/samples/
kubectl -n "$ns" wait --for=condition=Ready basetensecret/hf-access-token --timeout=60s
kubectl -n "$ns" get basetensecrets -o wide

step "What Baseten (the emulator) received"
python3 hack/show-baseten.py "$BASETEN_URL" 1 hf_access_token

step "Rotating the token in the Secret"
kubectl -n "$ns" create secret generic hf-credentials --from-literal=token=hf_demo_token_rotated_2 \
  --dry-run=client -o yaml | kubectl apply -f -
python3 hack/show-baseten.py "$BASETEN_URL" 2 hf_access_token
kubectl -n "$ns" get basetensecrets -o wide

step "Operator log"
tail -n 5 "$dev/operator.log"

if [ "$mode" = dev ]; then
  step "Everything is running"
  cat <<TXT
  source $dev/env                      # KUBECONFIG, BASETEN_URL, BASETEN_API_KEY, kubectl on PATH
  kubectl -n $ns get basetensecrets -o wide
  kubectl explain basetensecret.spec
  python3 hack/show-baseten.py \$BASETEN_URL
  tail -f $dev/operator.log
  kill $operator_pid && make env-down  # stop it all
TXT
else
  step "Demo finished; stopping everything"
fi
