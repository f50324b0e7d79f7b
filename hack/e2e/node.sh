#!/usr/bin/env bash
# A one-node Kubernetes cluster in a private network namespace, for `make e2e` (needs root):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and kubelet from the
# pinned module (tests/controlplane), containerd, runc and the CNI plugins from Debian packages.
# Nothing touches the machine's own network: every process runs in the namespace $NETNS, whose
# only link is a veth pair of its own. The kubelet's global sysctls are saved before the start
# and restored by `down`.
#
#   hack/e2e/node.sh up DIR     start it; DIR/kubeconfig reaches it from inside the namespace
#   hack/e2e/node.sh down DIR   stop everything it started, containers included, and clean up
#   hack/e2e/node.sh exec CMD   run CMD inside the namespace
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CONTROLPLANE_BIN_DIR:-$repo/target/controlplane/bin}
NETNS=${NETNS:-bso-e2e}
NODE_IP=10.200.0.1
NODE=e2e-node
RUN=/run/$NETNS
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)

# nsenter, not `ip netns exec`: that one remounts /sys, which hides the cgroup mounts the
# kubelet and runc need.
in_ns() { nsenter --net="/run/netns/$NETNS" "$@"; }

# start NAME CMD...: a daemon in the namespace, its log in DIR/logs/NAME.log.
start() {
  local name=$1
  shift
  # nsenter itself, not a function: $! must be the pid that becomes the daemon.
  nsenter --net="/run/netns/$NETNS" "$@" >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name"
}

wait_for() { # wait_for WHAT SECONDS CMD...
  local what=$1 limit=$2
  shift 2
  for _ in $(seq $((limit * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  echo "e2e: $what not up within ${limit}s; logs in $dir/logs" >&2
  return 1
}

packages() {
  local missing=()
  for package in containerd runc containernetworking-plugins iptables openssl gcc; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "e2e: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

pki() {
  local p=$dir/pki
  mkdir -p "$p"
  [ -f "$p/token" ] && return 0
  (
    cd "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3 -subj /CN=e2e-ca 2>/dev/null
    sign() { # sign NAME SUBJECT [EXTENSIONS]
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "${3:-basicConstraints=CA:FALSE}" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" \
        -days 3 -extfile "$1.ext" 2>/dev/null
    }
    sign apiserver /CN=kube-apiserver \
      "subjectAltName=IP:$NODE_IP,IP:10.0.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >token
    printf '%s,e2e-admin,e2e-admin,system:masters\n' "$(cat token)" >tokens.csv
  )
}

kubeconfig() {
  cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster: {server: "https://$NODE_IP:6443", certificate-authority: "$dir/pki/ca.crt"}
users:
  - name: e2e-admin
    user: {token: "$(cat "$dir/pki/token")"}
contexts:
  - name: e2e
    context: {cluster: e2e, user: e2e-admin}
current-context: e2e
EOF
}

network() {
  ip netns add "$NETNS"
  in_ns ip link set lo up
  in_ns ip link add e2e0 type veth peer name e2e1
  in_ns ip addr add "$NODE_IP/24" dev e2e0
  in_ns ip link set e2e0 up
  in_ns ip link set e2e1 up
  in_ns ip route add default dev e2e0
  in_ns sysctl -qw net.ipv4.ip_forward=1
}

# The pause image, built from the kubernetes module's source: none can be pulled here.
pause_image() {
  local out=$dir/images/pause.tar
  [ -f "$out" ] && return 0
  local source
  source=$(cd "$repo/tests/controlplane" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  gcc -Os -static -o "$dir/images/pause" "$source/build/pause/linux/pause.c"
  python3 "$repo/hack/oci-image.py" "$dir/images/pause" 1 amd64 "$out" pause 65535:65535 >/dev/null
}

containerd_up() {
  mkdir -p "$dir/containerd" "$dir/cni" "$RUN"
  cat >"$dir/cni/10-e2e.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "e2e", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "pause:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
EOF
  start containerd containerd --config "$dir/containerd.toml"
  wait_for containerd 30 ctr --address "$RUN/containerd.sock" version
}

# load TAR: an image archive into the cluster's containerd, under the name the kubelet asks
# for. Only the archive's Docker part is given to ctr: it names images by their RepoTags,
# normalised as the kubelet normalises an image reference, where an OCI index's name
# annotation would be taken as it is.
load() {
  local docker=$dir/images/docker-$(basename "$1")
  python3 - "$1" "$docker" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1]) as source, tarfile.open(sys.argv[2], "w") as out:
    for member in source.getmembers():
        if member.name not in ("index.json", "oci-layout"):
            out.addfile(member, source.extractfile(member))
PY
  ctr --address "$RUN/containerd.sock" -n k8s.io images import "$docker" >/dev/null
  rm -f "$docker"
}

control_plane_up() {
  local p=$dir/pki
  start etcd "$bin/etcd" --data-dir "$dir/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --unsafe-no-fsync=true --log-level=warn
  start kube-apiserver "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" \
    --cert-dir="$dir/apiserver" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --token-auth-file="$p/tokens.csv" \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --authorization-mode=Node,RBAC --service-cluster-ip-range=10.0.0.0/24 \
    --allow-privileged=true --profiling=false
  wait_for kube-apiserver 90 in_ns "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz
  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$dir/kubeconfig" \
    --controllers='*' --leader-elect=false --bind-address=127.0.0.1 \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --use-service-account-credentials=false --profiling=false
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$dir/kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --profiling=false
}

node_up() {
  mkdir -p "$dir/kubelet" "$dir/pod-logs"
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
oomScoreAdj: 0
failSwapOn: false
containerRuntimeEndpoint: unix://$RUN/containerd.sock
address: $NODE_IP
readOnlyPort: 0
podLogsDir: $dir/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: Webhook}
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: 10.88.0.0/16
hostnameOverride: $NODE
clientConnection: {kubeconfig: $dir/kubeconfig}
conntrack: {maxPerCore: 0}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  start kubelet "$bin/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubeconfig" \
    --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" --hostname-override="$NODE" \
    --node-ip="$NODE_IP"
  start kube-proxy "$bin/kube-proxy" --config="$dir/kube-proxy.yaml"
  wait_for "node $NODE Ready" 90 in_ns "$bin/kubectl" --kubeconfig "$dir/kubeconfig" wait \
    --for=condition=Ready "node/$NODE" --timeout=1s
}

up() {
  [ "$(id -u)" = 0 ] || { echo "e2e: needs root" >&2; exit 1; }
  packages
  down >/dev/null 2>&1 || true
  mkdir -p "$dir/logs" "$dir/pids" "$dir/images"
  for s in "${SYSCTLS[@]}"; do printf '%s=%s\n' "$s" "$(sysctl -n "$s")"; done >"$dir/sysctls"
  pki
  kubeconfig
  network
  pause_image
  containerd_up
  load "$dir/images/pause.tar"
  control_plane_up
  node_up
  echo "e2e: node $NODE Ready; KUBECONFIG=$dir/kubeconfig, inside: hack/e2e/node.sh exec ..."
}

down() {
  # The kubelet first, so it restarts nothing; then every container of every pod.
  for name in kubelet kube-proxy; do stop "$name"; done
  if [ -S "$RUN/containerd.sock" ]; then
    local c=(ctr --address "$RUN/containerd.sock" -n k8s.io)
    for task in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks kill -s SIGKILL "$task" 2>/dev/null || true; done
    sleep 1
    for task in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks delete -f "$task" 2>/dev/null || true; done
  fi
  pkill -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" 2>/dev/null || true
  for name in kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop "$name"; done
  # Anything of an earlier run whose pid file is lost: every daemon names a file of $dir.
  pkill -9 -f -- "--?(config|kubeconfig|data-dir)[= ]$dir/" 2>/dev/null || true
  # What is left mounted under the node's folders (pod volumes, container roots, netns files).
  grep -E " ($dir|$RUN)/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
  for netns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
    ip netns delete "$netns" 2>/dev/null || true
  done
  ip netns delete "$NETNS" 2>/dev/null || true
  # The pods' cgroups.
  for hierarchy in /sys/fs/cgroup/*/; do
    [ -d "$hierarchy/kubepods" ] && find "$hierarchy/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [ -f "$dir/sysctls" ]; then
    while IFS= read -r setting; do sysctl -qw "$setting" || true; done <"$dir/sysctls"
    rm -f "$dir/sysctls"
  fi
  rm -rf "$RUN" "$dir/containerd" "$dir/kubelet" "$dir/etcd" "$dir/pids"
}

stop() {
  local file=$dir/pids/$1
  [ -f "$file" ] || return 0
  local pid
  pid=$(cat "$file")
  # The pid is ip-netns-exec's, which became the daemon (exec).
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

command=${1:?usage: node.sh up|down DIR, or node.sh exec CMD...}
shift
case $command in
  up) dir=$(mkdir -p "$1" && cd "$1" && pwd); up ;;
  down) dir=$(mkdir -p "$1" && cd "$1" && pwd); down ;;
  exec) in_ns "$@" ;;
  load) dir=$(cd "$1" && pwd); load "$2" ;;
  *) echo "usage: node.sh up|down DIR, node.sh load DIR TAR, or node.sh exec CMD..." >&2; exit 2 ;;
esac
