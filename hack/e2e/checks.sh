#!/usr/bin/env bash
# The checks of `make e2e`, run inside the node's network namespace by hack/e2e/run.sh: the
# operator installed the way users install it, from the image `make image` built, running as
# a Pod that the kubelet started. Needs KUBECONFIG, BASETEN_URL (the emulator, on the node's
# address), VERSION (the image's tag) and E2E_DIR.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export PATH=$repo/target/controlplane/bin:$repo/target/tools/bin:$PATH
OPERATOR_NS=baseten-secrets-operator
passed=0
timings=()

say() { printf 'e2e: %s\n' "$*"; }
fail() { echo "e2e: FAILED: $*" >&2; exit 1; }
check() { passed=$((passed + 1)); say "ok: $*"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# The value Baseten (the emulator) holds under NAME, or nothing.
baseten_value() {
  python3 - "$BASETEN_URL" "$1" <<'EOF'
import json, sys, urllib.request
for secret in json.load(urllib.request.urlopen(sys.argv[1] + "/_admin/secrets")):
    if secret["name"] == sys.argv[2]:
        print(secret["value"])
EOF
}

wait_value() { # wait_value NAME VALUE SECONDS
  for _ in $(seq $(($3 * 4))); do
    [ "$(baseten_value "$1")" = "$2" ] && return 0
    sleep 0.25
  done
  fail "Baseten never got the value expected for $1 (has: '$(baseten_value "$1")')"
}

# The operator processes the kubelet started (in a pod's cgroup).
operator_pids() {
  for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/exe" 2>/dev/null)" = /baseten-secrets-operator ] || continue
    grep -q kubepods "$proc/cgroup" 2>/dev/null && basename "$proc"
  done
}

# The process's hardening, as the kernel sees it.
hardened() {
  local pid=$1 status
  status=$(cat "/proc/$pid/status")
  grep -Eq $'^Uid:\t65532\t65532\t65532\t65532$' <<<"$status" || fail "pid $pid does not run as 65532: $(grep ^Uid <<<"$status")"
  for cap in CapEff CapPrm CapBnd; do
    grep -Eq "^$cap:[[:space:]]+0+$" <<<"$status" || fail "pid $pid has capabilities: $(grep "^$cap" <<<"$status")"
  done
  grep -Eq $'^NoNewPrivs:\t1$' <<<"$status" || fail "pid $pid may gain privileges"
  grep -Eq $'^Seccomp:\t2$' <<<"$status" || fail "pid $pid has no seccomp filter"
  awk '$5 == "/" { split($6, o, ","); for (i in o) if (o[i] == "ro") found = 1 } END { exit !found }' \
    "/proc/$pid/mountinfo" || fail "pid $pid has a writable root"
}

# A Secret and a BasetenSecret in NAMESPACE; Synced, then a rotation reaches Baseten.
sync_and_rotate() {
  local ns=$1 name=$2
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$ns" create secret generic "$name" --from-literal=token="first-$name" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: baseten.co/v1alpha1
kind: BasetenSecret
metadata: {name: $name}
spec:
  secretRef: {name: $name, key: token}
EOF
  kubectl -n "$ns" wait --for=condition=Ready "basetensecret/$name" --timeout=60s >/dev/null ||
    fail "$ns/$name never Ready: $(kubectl -n "$ns" get basetensecret "$name" -o jsonpath='{.status.conditions}')"
  wait_value "$name" "first-$name" 10
  kubectl -n "$ns" create secret generic "$name" --from-literal=token="second-$name" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  wait_value "$name" "second-$name" 10
}

# pods DEPLOYMENT_NAMESPACE: the operator's pod names.
pods() { kubectl -n "$1" get pods -l "app.kubernetes.io/name=$2" -o jsonpath='{.items[*].metadata.name}'; }

available() { # available NAMESPACE DEPLOYMENT REPLICAS
  kubectl -n "$1" rollout status "deployment/$2" --timeout=120s >/dev/null ||
    fail "deployment $1/$2 not Available: $(kubectl -n "$1" get pods -o wide 2>&1)"
  local ready
  ready=$(kubectl -n "$1" get deployment "$2" -o jsonpath='{.status.readyReplicas}')
  [ "$ready" = "$3" ] || fail "$1/$2: $ready ready replicas, want $3"
  # Probes: every container Ready, never restarted by its liveness probe.
  local restarts
  restarts=$(kubectl -n "$1" get pods -l "app.kubernetes.io/name=$2" \
    -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort -u)
  [ "$restarts" = 0 ] || fail "$1/$2 restarted: $restarts; $(kubectl -n "$1" describe pods 2>&1 | tail -30)"

}

# The pod the operator's Lease names, with leader election.
leader() { kubectl -n "$1" get lease "$2" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }

wait_leader() { # wait_leader NAMESPACE LEASE NOT_THIS SECONDS
  local holder
  for _ in $(seq $(($4 * 4))); do
    holder=$(leader "$1" "$2")
    if [ -n "$holder" ] && [ "$holder" != "$3" ] && kubectl -n "$1" get pod "$holder" >/dev/null 2>&1; then
      echo "$holder"
      return 0
    fi
    sleep 0.25
  done
  fail "no new leader of $1/$2 within $4 s (holder: '$(leader "$1" "$2")')"
}

drain() { # drain NAMESPACE POD: deleted within the grace period, by its own clean exit
  local started elapsed
  started=$(now)
  kubectl -n "$1" delete pod "$2" --wait=true --timeout=60s >/dev/null
  elapsed=$(since "$started")
  python3 -c "import sys; sys.exit(float(sys.argv[1]) >= 10)" "$elapsed" ||
    fail "deleting pod $2 took ${elapsed}s: it did not drain within the 10 s the operator allows"
  timings+=("pod drained in ${elapsed}s")
}

# overlay PATH: a kustomization over deploy/PATH with the image's tag and the emulator's URL.
overlay() {
  local work=$E2E_DIR/overlays/${1//\//-}
  mkdir -p "$work"
  cat >"$work/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$work" "$repo/deploy/$1")
images:
  - name: baseten-secrets-operator
    newTag: "$VERSION"
patches:
  - target: {kind: Deployment, name: baseten-secrets-operator}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --baseten-url=$BASETEN_URL
EOF
  echo "$work"
}

api_key() { # api_key NAMESPACE
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$1" create secret generic baseten-api-key --from-literal=api-key=e2e-key \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

one_overlay() { # one_overlay PATH APPS_NAMESPACE
  local path=$1 apps=$2 work started pod
  say "$path"
  work=$(overlay "$path")
  started=$(now)
  api_key "$OPERATOR_NS"
  # The namespaced overlay's Roles live in namespaces that must exist first.
  if [ "$path" = overlays/namespaced ]; then
    for team in team-a team-b; do
      kubectl create namespace "$team" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
    done
  fi
  kubectl apply --server-side -k "$work" >/dev/null
  available "$OPERATOR_NS" baseten-secrets-operator 1
  timings+=("$path: Available in $(since "$started")s")
  check "$path: Deployment Available, probes passing as the kubelet runs them"
  pod=$(pods "$OPERATOR_NS" baseten-secrets-operator)
  for pid in $(operator_pids); do hardened "$pid"; done
  [ -n "$(operator_pids)" ] || fail "no operator process found"
  check "$path: runs as 65532, no capabilities, no new privileges, seccomp, read-only root"
  sync_and_rotate "$apps" "${path//\//-}-sync"
  check "$path: a BasetenSecret Synced through the emulator and a rotation propagated"
  drain "$OPERATOR_NS" "$pod"
  available "$OPERATOR_NS" baseten-secrets-operator 1
  check "$path: kubectl delete pod drained within the grace period; the new pod is Available"
  kubectl delete -k "$work" --wait=true --timeout=120s >/dev/null
  kubectl delete namespace "$apps" --wait=false >/dev/null 2>&1 || true
}

ha() {
  local work first second
  say "overlays/ha"
  work=$(overlay overlays/ha)
  api_key "$OPERATOR_NS"
  kubectl apply --server-side -k "$work" >/dev/null
  # The anti-affinity is preferred, not required: on one node both pods run.
  available "$OPERATOR_NS" baseten-secrets-operator 2
  first=$(wait_leader "$OPERATOR_NS" baseten-secrets-operator "" 30)
  check "overlays/ha: two pods Ready on one node, one leader ($first)"
  sync_and_rotate e2e-ha ha-before
  local started
  started=$(now)
  kubectl -n "$OPERATOR_NS" delete pod "$first" --wait=false >/dev/null
  second=$(wait_leader "$OPERATOR_NS" baseten-secrets-operator "$first" 45)
  timings+=("ha: the standby took over in $(since "$started")s")
  sync_and_rotate e2e-ha ha-after
  check "overlays/ha: the leader's pod deleted, $second leads and syncs"
  kubectl delete -k "$work" --wait=true --timeout=120s >/dev/null
  kubectl delete namespace e2e-ha --wait=false >/dev/null
}

chart() {
  local ns=bso-helm release=e2e name started
  say "the Helm chart"
  name=$release-baseten-secrets-operator
  api_key "$ns"
  started=$(now)
  helm install "$release" charts/baseten-secrets-operator --namespace "$ns" \
    --set image.tag="$VERSION" --set baseten.url="$BASETEN_URL" --wait --timeout 120s >/dev/null
  available "$ns" "$name" 1
  timings+=("helm install: Available in $(since "$started")s")
  sync_and_rotate e2e-helm helm-sync
  check "helm install: Available; a BasetenSecret Synced and rotated"
  helm upgrade "$release" charts/baseten-secrets-operator --namespace "$ns" --reuse-values \
    --set replicas=2 --wait --timeout 120s >/dev/null
  available "$ns" "$name" 2
  wait_leader "$ns" "$name" "" 30 >/dev/null
  sync_and_rotate e2e-helm helm-upgraded
  check "helm upgrade to two replicas: both Ready, one leads, and it syncs"
  helm uninstall "$release" --namespace "$ns" --wait --timeout 120s >/dev/null
  for _ in $(seq 120); do [ -z "$(pods "$ns" "$name")" ] && break; sleep 0.5; done
  [ -z "$(pods "$ns" "$name")" ] || fail "pods left after helm uninstall"
  kubectl get crd basetensecrets.baseten.co >/dev/null || fail "helm uninstall removed the CRD"
  check "helm uninstall: every pod gone, the CRDs kept"
}

kubectl apply --server-side -f target/tools/crds/ >/dev/null
one_overlay base e2e-base
one_overlay overlays/namespaced team-a
one_overlay overlays/no-admission-policy e2e-noadm
one_overlay overlays/monitoring e2e-monitoring
ha
chart
say "$passed checks passed"
printf 'e2e: %s\n' "${timings[@]}"
