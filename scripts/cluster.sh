#!/usr/bin/env bash
# Runs a real, local Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler, built from source by scripts/cluster/build.sh, plus
# kwok, which stands in for the kubelets of a few fake nodes. Everything smm installs through the
# API, scheduling, namespace deletion and garbage collection behave as on a real cluster; pods
# are simulated: no container ever runs, kwok only writes their status (stages in
# scripts/cluster/kwok/stages.yaml): a scheduled pod is Running and Ready at once, a Job's pod
# then Succeeded, a deleted pod disappears. A pod that fits no node stays Pending, as it would.
# kube-apiserver's calls to webhooks go through egress-proxy (scripts/cluster/egress-proxy), which
# lets tests serve a webhook Service from a local process, as scripts/istio/istiod.sh does.
#
#   scripts/cluster.sh up      start the plane (idempotent); the admin kubeconfig path is the last
#                              line on stdout, progress goes to stderr
#   scripts/cluster.sh env     print `export KUBECONFIG=...` for a running plane
#   scripts/cluster.sh status  report each process and the apiserver's /readyz; 0 only if all is well
#   scripts/cluster.sh down    stop the recorded processes and remove the state directory
#   scripts/cluster.sh restart-apiserver [SECONDS]  stop kube-apiserver, wait (10s), start it again
#
# State (certificates, kubeconfigs, etcd data, logs, PID files, ports) lives in
# $SMM_CLUSTER_DIR, by default ~/.cache/smm/cluster/run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# KUBERNETES_VERSION and KWOK_VERSION, which the fake nodes report as their versions.
# shellcheck source=cluster/versions.env
source "$here/cluster/versions.env"
# shellcheck source=cluster/dir.sh
source "$here/cluster/dir.sh"
dir="$plane_dir"
# Marks a directory as ours: `up` wipes and `down` deletes the state directory, which must never
# happen to an unrelated directory that SMM_CLUSTER_DIR happens to point at.
marker="$dir/.smm-cluster"
# Start order; `down` stops them in reverse so no component outlives what it depends on.
# egress-proxy comes before kube-apiserver, which sends its calls to webhooks through it.
components=(egress-proxy etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# The first address of --service-cluster-ip-range, which the apiserver gives the `kubernetes`
# service: in-cluster clients reach the apiserver by it, so the serving certificate must name it.
service_cidr=10.0.0.0/24
first_service_ip=10.0.0.1
# The fake nodes kwok manages: kwok-node-1..N, each with its own podCIDR 10.244.N.0/24 (kwok's
# default pod range is 10.0.0.0/24, the service range). Their InternalIPs are from 192.0.2.0/24
# (TEST-NET-1, never routed). Nothing listens at any of these addresses.
fake_nodes=3

log() { echo "cluster: $*" >&2; }
die() {
	log "$*"
	exit 1
}

usage() {
	cat >&2 <<EOF
usage: scripts/cluster.sh up|env|status|down
  up      start egress-proxy, etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
          127.0.0.1 with $fake_nodes fake nodes (idempotent); prints the admin kubeconfig path as
          the last line
  env     print 'export KUBECONFIG=...' for the running plane
  status  report each process and the apiserver's /readyz; exit 0 only if all is well
  down    stop the plane and remove its state directory (safe when nothing is up)
  restart-apiserver [SECONDS]
          stop kube-apiserver for SECONDS (default 10), then start it again
state directory: $dir (set SMM_CLUSTER_DIR to change it)
EOF
}

# Serialises `up` and `down`, so two test runs starting the plane at once do not both start one
# in the same directory. The lock file sits beside the state directory because `down` removes it.
lock() {
	mkdir -p "$(dirname "$dir")"
	exec 9>"$dir.lock"
	flock 9
}

# Prints the PID recorded for a component if that process is still alive and still ours. The PID
# file holds the PID and the executable it was started from. A PID is only trusted when
# /proc/PID/exe is that executable and its command line names this state directory: after a
# reboot or a crash the number may belong to an unrelated process, or to the same binary serving
# another state directory, and neither may be signalled.
pid_of() { # component
	local pidfile="$dir/$1.pid" pid exe actual
	[[ -f "$pidfile" ]] || return 1
	{ read -r pid && read -r exe; } <"$pidfile" || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	# readlink fails for a zombie as well as for a process that is gone: both count as dead.
	actual="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
	# A binary rebuilt while the process runs shows up as "PATH (deleted)"; it is still ours.
	[[ "${actual% (deleted)}" == "$exe" ]] || return 1
	{ tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$dir/" || return 1
	echo "$pid"
}

all_running() {
	local c
	for c in "${components[@]}"; do
		pid_of "$c" >/dev/null || return 1
	done
}

# TERM, then KILL after ~10s (at once with `now`); returns once the process is gone. Nothing
# recorded is a no-op.
stop() { # component [now]
	local pid i grace=50
	[[ "${2:-}" == now ]] && grace=0
	if pid="$(pid_of "$1")"; then
		log "stopping $1 (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace; i++)); do
			pid_of "$1" >/dev/null || break
			sleep 0.2
		done
		if pid_of "$1" >/dev/null; then
			((grace == 0)) || log "$1 (pid $pid) ignored TERM for 10s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 25; i++)); do
				pid_of "$1" >/dev/null || break
				sleep 0.2
			done
		fi
	fi
	rm -f "$dir/$1.pid"
}

stop_all() {
	local i
	for ((i = ${#components[@]} - 1; i >= 0; i--)); do
		stop "${components[i]}"
	done
}

# Starts a component detached from this script: setsid puts it in its own session, so it survives
# the script, the caller's terminal and the process group a test harness kills; stdin/stdout/stderr
# are redirected so that `$(scripts/cluster.sh up)` in a caller does not wait for the server's
# output pipe to close. bash -c records its own PID and exec keeps that PID for the server, so the
# PID file names the server itself whether or not setsid had to fork. fd 9 (the lock) is closed, or
# the server would hold the lock for its whole life.
start() { # component args...
	local name="$1" exe="$bin_dir/$1" pidfile="$dir/$1.pid" i
	shift
	rm -f "$pidfile"
	log "starting $name"
	# shellcheck disable=SC2016 # expanded by the inner bash
	setsid bash -c 'printf "%s\n%s\n" "$$" "$0" >"$1.tmp" && mv "$1.tmp" "$1" && shift && exec "$0" "$@"' \
		"$exe" "$pidfile" "$@" </dev/null >>"$dir/logs/$name.log" 2>&1 9>&- &
	for ((i = 0; i < 50; i++)); do
		[[ -f "$pidfile" ]] && return 0
		sleep 0.1
	done
	die "$name did not start (see $dir/logs/$name.log)"
}

# Polls a readiness check until it passes; fails early if the component died, and on timeout or
# death prints the end of its log (the reason is almost always there).
wait_for() { # component timeout-seconds what check-command...
	local name="$1" timeout="$2" what="$3" deadline
	shift 3
	deadline=$((SECONDS + timeout))
	while ! "$@" >/dev/null 2>&1; do
		if ! pid_of "$name" >/dev/null; then
			log "$name exited before $what; last lines of $dir/logs/$name.log:"
			tail -n 40 "$dir/logs/$name.log" >&2 || true
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			log "$name: no $what after ${timeout}s; last lines of $dir/logs/$name.log:"
			tail -n 40 "$dir/logs/$name.log" >&2 || true
			exit 1
		fi
		sleep 0.25
	done
}

# Distinct free ports on 127.0.0.1. All sockets are held open together so the kernel cannot
# hand out the same port twice; the window between closing them and the servers binding is tiny.
free_ports() { # count
	python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
' "$1"
}

# P-256 keys: generated instantly, unlike RSA, and accepted by every component for TLS.
new_ec_key() { # path
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# Signs a certificate for a new key with the cluster CA. Kubernetes' x509 authenticator takes the
# user name from CN and the groups from O.
issue() { # name subject extensions-section
	local pki="$dir/pki"
	new_ec_key "$pki/$1.key"
	openssl req -new -key "$pki/$1.key" -subj "$2" -out "$pki/$1.csr" 2>/dev/null
	openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
		-CAcreateserial -CAserial "$pki/ca.srl" -days 3650 \
		-extfile "$pki/openssl.cnf" -extensions "$3" -out "$pki/$1.crt" 2>/dev/null
	rm -f "$pki/$1.csr"
}

make_pki() {
	local pki="$dir/pki"
	mkdir -p "$pki"
	cat >"$pki/openssl.cnf" <<EOF
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost,IP:$first_service_ip,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[kwok-serving]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1$(for ((i = 1; i <= fake_nodes; i++)); do printf ',IP:%s' "$(node_ip "$i")"; done)
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
	# One CA both signs the serving certificate and is the --client-ca-file: a throwaway local
	# cluster gains nothing from separate ones, and one CA keeps the kubeconfigs simple.
	new_ec_key "$pki/ca.key"
	openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=smm-local-ca" -days 3650 \
		-config "$pki/openssl.cnf" -extensions ca -out "$pki/ca.crt" 2>/dev/null
	issue apiserver "/CN=kube-apiserver" server
	# system:masters is bound to cluster-admin by the bootstrap RBAC policy.
	issue admin "/O=system:masters/CN=smm-admin" client
	# The bootstrap RBAC policy grants this user exactly what the controller-manager needs.
	issue controller-manager "/CN=system:kube-controller-manager" client
	# Likewise for the scheduler (its ClusterRole, and reading the authentication ConfigMap).
	issue scheduler "/CN=system:kube-scheduler" client
	# kwok acts as the kubelet of every fake node and carries out whatever its stages say, on
	# nodes, node status, leases, pods, pod status and events: system:masters rather than a role
	# of our own, which would have to track what the stages touch, and whose missing verb would
	# show up only as pods silently stuck in Pending. Its own CN keeps its requests apart from
	# the admin's.
	issue kwok "/O=system:masters/CN=smm-kwok" client
	# kwok also serves what a kubelet serves (port-forward, logs, exec) to the apiserver, which
	# checks this certificate against the CA (--kubelet-certificate-authority).
	issue kwok-serving "/CN=smm-kwok-kubelet" kwok-serving
	# Service-account tokens are signed with RSA (RS256) by the apiserver, and by the
	# controller-manager for legacy token Secrets.
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
	openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

write_kubeconfig() { # path cert-name
	local pki="$dir/pki"
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smm-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: smm-local
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$2.crt")
    client-key-data: $(base64 -w0 <"$pki/$2.key")
contexts:
- name: smm-local
  context:
    cluster: smm-local
    user: smm-local
current-context: smm-local
EOF
}

# A request to the apiserver as the admin: the path, then curl's own arguments.
api() { # path curl-args...
	local path="$1"
	shift
	curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
		--key "$dir/pki/admin.key" "$@" "https://127.0.0.1:$api_port$path"
}

api_get() { api "$1"; }

api_delete() { api "$1" -X DELETE >/dev/null; }

api_post() { # path json-body
	api "$1" -H 'Content-Type: application/json' --data-binary "$2" >/dev/null
}

# The InternalIP of fake node N.
node_ip() { echo "192.0.2.$((10 + $1))"; }

# The port every fake node's kubelet is published on (daemonEndpoints). The apiserver connects to
# NODE_IP:PORT for a pod's port-forward, logs or exec, through egress-proxy, whose route sends
# every node's to kwok's server.
kubelet_port=10250

# Prints how many of the fake nodes (label type=kwok) have the Ready condition True.
ready_nodes() {
	api_get '/api/v1/nodes?labelSelector=type%3Dkwok' | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["items"]
print(sum(any(c["type"] == "Ready" and c["status"] == "True"
              for c in n.get("status", {}).get("conditions", [])) for n in nodes))
'
}

all_nodes_ready() {
	local ready
	ready="$(ready_nodes)" && ((ready >= fake_nodes))
}

# Registers the fake nodes, shaped like a mid-sized cloud VM with kubelet defaults (110 pods,
# some CPU and memory held back from allocatable). A Node's status may be set on creation, so
# capacity, addresses and nodeInfo are given here; kwok, which manages nodes labelled type=kwok,
# adds the conditions and renews their Leases.
create_fake_nodes() {
	local i name
	for ((i = 1; i <= fake_nodes; i++)); do
		name="kwok-node-$i"
		api_post /api/v1/nodes "$(
			cat <<EOF
{
  "apiVersion": "v1",
  "kind": "Node",
  "metadata": {
    "name": "$name",
    "labels": {
      "type": "kwok",
      "kubernetes.io/hostname": "$name",
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": "amd64"
    },
    "annotations": {"kwok.x-k8s.io/node": "fake"}
  },
  "spec": {"podCIDR": "10.244.$i.0/24", "podCIDRs": ["10.244.$i.0/24"]},
  "status": {
    "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "200Gi"},
    "allocatable": {"cpu": "15800m", "memory": "62Gi", "pods": "110", "ephemeral-storage": "180Gi"},
    "daemonEndpoints": {"kubeletEndpoint": {"Port": $kubelet_port}},
    "addresses": [
      {"type": "InternalIP", "address": "$(node_ip "$i")"},
      {"type": "Hostname", "address": "$name"}
    ],
    "nodeInfo": {
      "architecture": "amd64",
      "operatingSystem": "linux",
      "osImage": "fake node (kwok)",
      "kernelVersion": "fake",
      "containerRuntimeVersion": "fake://kwok-$KWOK_VERSION",
      "kubeletVersion": "$KUBERNETES_VERSION",
      "kubeProxyVersion": "$KUBERNETES_VERSION",
      "machineID": "", "systemUUID": "", "bootID": ""
    }
  }
}
EOF
		)"
	done
}

# Starts kube-apiserver against the running etcd and waits until it is ready; `up` and
# `restart-apiserver` share it so a restarted apiserver is the same apiserver.
start_apiserver() {
	local pki="$dir/pki"
	# --endpoint-reconciler-type=none: the default (lease) reconciler publishes the advertise
	# address in the `default/kubernetes` Endpoints, and endpoint validation rejects loopback
	# addresses, so it would only log errors every few seconds; no in-cluster client exists here.
	start kube-apiserver \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="$api_port" \
		--cert-dir="$pki" \
		--tls-cert-file="$pki/apiserver.crt" \
		--tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--service-account-issuer="https://127.0.0.1:$api_port" \
		--service-account-key-file="$pki/sa.pub" \
		--service-account-signing-key-file="$pki/sa.key" \
		--service-cluster-ip-range="$service_cidr" \
		--allow-privileged=true \
		--authorization-mode=RBAC \
		--endpoint-reconciler-type=none \
		--kubelet-preferred-address-types=InternalIP \
		--kubelet-certificate-authority="$pki/ca.crt" \
		--egress-selector-config-file="$dir/egress-selector.yaml"
	wait_for kube-apiserver 60 "/readyz" api_get /readyz
}

# Starts kube-controller-manager, kube-scheduler and kwok against the running apiserver and waits
# until each is healthy; `up` and `restart-apiserver` share it.
start_controllers() {
	local pki="$dir/pki"
	# --use-service-account-credentials=true: each controller then runs as its own kube-system
	# ServiceAccount, which the bootstrap RBAC policy grants what that controller needs. With
	# false every controller runs as system:kube-controller-manager, whose role covers only the
	# manager itself: namespace deletion, the root-CA ConfigMap publisher and ClusterRole
	# aggregation are then all forbidden and a deleted namespace hangs in Terminating.
	# The raised client QPS: at start-up every controller fetches discovery and a token for its
	# ServiceAccount, and the default limit (20/s) throttles that into ~5s before the namespaces
	# get their `default` ServiceAccount; a lone local apiserver takes the burst easily.
	start kube-controller-manager \
		--kubeconfig="$dir/controller-manager.kubeconfig" \
		--leader-elect=false \
		--bind-address=127.0.0.1 \
		--secure-port="$kcm_port" \
		--root-ca-file="$pki/ca.crt" \
		--service-account-private-key-file="$pki/sa.key" \
		--use-service-account-credentials=true \
		--cluster-signing-cert-file="$pki/ca.crt" \
		--cluster-signing-key-file="$pki/ca.key" \
		--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
		--controllers='*' \
		--kube-api-qps=200 \
		--kube-api-burst=400
	wait_for kube-controller-manager 30 "/healthz" \
		curl -fsSk --max-time 2 "https://127.0.0.1:$kcm_port/healthz"
	# The ServiceAccount admission plugin rejects pods in a namespace until the controller-manager
	# has created its `default` ServiceAccount; wait for it so a test can create pods right away.
	wait_for kube-controller-manager 30 "default ServiceAccount" \
		api_get /api/v1/namespaces/default/serviceaccounts/default

	# Leader election only matters with replicas; the same always-allowed health paths as the
	# controller-manager, so /healthz answers without delegated authentication.
	start kube-scheduler \
		--kubeconfig="$dir/scheduler.kubeconfig" \
		--leader-elect=false \
		--bind-address=127.0.0.1 \
		--secure-port="$sched_port" \
		--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics
	wait_for kube-scheduler 30 "/healthz" \
		curl -fsSk --max-time 2 "https://127.0.0.1:$sched_port/healthz"

	# KWOK_WORKDIR: kwok also loads ~/.kwok/kwok.yaml if it exists; a work directory inside the
	# state directory keeps a user's own kwok setup out of this plane. --cidr serves only a node
	# without a podCIDR (one a test adds); it must not be kwok's default, the service range.
	# --node-lease-duration-seconds: the kwok command's default is 0, no Leases at all; then
	# nothing would renew a heartbeat and the node lifecycle controller would mark every node
	# NotReady after its grace period and later evict the pods. With 40 (a kubelet's default)
	# kwok renews each node's Lease every 10s, as a kubelet does.
	# The serving certificate: its server is every node's kubelet endpoint for the apiserver (a
	# route of egress-proxy's), which speaks only TLS to kubelets. --enable-crds=PortForward:
	# where a pod's ports lead is read from PortForward objects (named as the pod), which a test
	# creates for a pod whose port it serves from a local process; a pod without one has none.
	KWOK_WORKDIR="$dir/kwok" start kwok \
		--kubeconfig="$dir/kwok.kubeconfig" \
		--config="$here/cluster/kwok/stages.yaml" \
		--manage-all-nodes=false \
		--manage-nodes-with-label-selector=type=kwok \
		--cidr=10.244.0.0/24 \
		--node-lease-duration-seconds=40 \
		--server-address="127.0.0.1:$kwok_port" \
		--tls-cert-file="$pki/kwok-serving.crt" \
		--tls-private-key-file="$pki/kwok-serving.key" \
		--enable-crds=PortForward
	wait_for kwok 30 "/healthz" curl -fsS --max-time 2 "http://127.0.0.1:$kwok_port/healthz"
}

cmd_up() {
	local started=$SECONDS
	bin_dir="$("$here/cluster/build.sh")"
	"$here/cluster/egress-proxy/build.sh" "$bin_dir" >/dev/null
	lock
	if all_running; then
		log "a control plane is already running in $dir"
		echo "$dir/kubeconfig"
		return 0
	fi
	if [[ -e "$dir" ]]; then
		if [[ ! -f "$marker" ]] && [[ -n "$(ls -A "$dir")" ]]; then
			die "refusing to use $dir: it is not empty and was not made by scripts/cluster.sh"
		fi
		# A plane that is partly up, or was left by a crash or a reboot, is started afresh: its
		# etcd data and certificates are not worth the doubt about what state they are in.
		log "clearing a stopped or partly running plane in $dir"
		stop_all
		rm -rf "$dir"
	fi
	# etcd warns about a data directory others can read; the keys under pki/ are private too.
	mkdir -m 700 "$dir"
	mkdir -m 700 "$dir/etcd"
	mkdir "$dir/logs"
	touch "$marker"
	# From here on a failure stops whatever was started; the logs stay for reading.
	trap 'log "start failed; stopping what was started (logs kept in $dir/logs)"; stop_all' EXIT

	read -r etcd_port peer_port api_port kcm_port sched_port kwok_port < <(free_ports 6)
	[[ "$kwok_port" =~ ^[0-9]+$ ]] || die "could not pick free ports"
	cat >"$dir/env" <<EOF
SMM_CLUSTER_BIN_DIR=$(printf %q "$bin_dir")
ETCD_CLIENT_PORT=$etcd_port
ETCD_PEER_PORT=$peer_port
APISERVER_PORT=$api_port
CONTROLLER_MANAGER_PORT=$kcm_port
SCHEDULER_PORT=$sched_port
KWOK_PORT=$kwok_port
KUBECONFIG=$(printf %q "$dir/kubeconfig")
EGRESS_ROUTES_DIR=$(printf %q "$dir/egress/routes")
EOF
	make_pki

	# kube-apiserver calls a webhook at its Service's ClusterIP, which nothing routes here (and
	# nothing may be sent to). Its "cluster" egress (webhooks, aggregated APIs, services, and
	# kubelets) goes instead through egress-proxy, which connects only the IP:port pairs listed in
	# egress/routes/ to loopback ports (a test writes a file there for each istiod it runs;
	# kwok-kubelets sends every fake node's kubelet port to kwok's server) and refuses the rest. A Unix socket, because the tcp transport requires client TLS files (without
	# them kube-apiserver 1.35 panics at start); its path must stay under 108 bytes.
	mkdir -p "$dir/egress/routes"
	cat >"$dir/egress-selector.yaml" <<EOF
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: $dir/egress/proxy.sock
EOF
	local i
	for ((i = 1; i <= fake_nodes; i++)); do
		echo "$(node_ip "$i"):$kubelet_port 127.0.0.1:$kwok_port"
	done >"$dir/egress/routes/kwok-kubelets"
	start egress-proxy -socket "$dir/egress/proxy.sock" -routes "$dir/egress/routes"
	wait_for egress-proxy 10 "its socket" test -S "$dir/egress/proxy.sock"
	write_kubeconfig "$dir/kubeconfig" admin
	write_kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
	write_kubeconfig "$dir/scheduler.kubeconfig" scheduler
	write_kubeconfig "$dir/kwok.kubeconfig" kwok

	# fsync buys nothing for a throwaway cluster and costs seconds on slow disks; the quota keeps
	# a runaway test from filling the disk (etcd's default is 2 GiB).
	start etcd \
		--name=default \
		--data-dir="$dir/etcd" \
		--listen-client-urls="http://127.0.0.1:$etcd_port" \
		--advertise-client-urls="http://127.0.0.1:$etcd_port" \
		--listen-peer-urls="http://127.0.0.1:$peer_port" \
		--initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
		--initial-cluster="default=http://127.0.0.1:$peer_port" \
		--unsafe-no-fsync \
		--quota-backend-bytes=$((512 * 1024 * 1024))
	wait_for etcd 30 "health" \
		sh -c "curl -fsS --max-time 2 http://127.0.0.1:$etcd_port/health | grep -q '\"health\":\"true\"'"

	start_apiserver
	# Before kwok starts: it watches PortForward objects from the start.
	api /apis/apiextensions.k8s.io/v1/customresourcedefinitions -H 'Content-Type: application/yaml' \
		--data-binary "@$bin_dir/kwok-${KWOK_VERSION}-portforwards.yaml" >/dev/null
	wait_for kube-apiserver 30 "kwok's PortForward CRD" api_get /apis/kwok.x-k8s.io/v1alpha1/portforwards

	start_controllers
	create_fake_nodes
	wait_for kwok 30 "$fake_nodes Ready nodes" all_nodes_ready

	trap - EXIT
	log "control plane up in $((SECONDS - started))s: apiserver https://127.0.0.1:$api_port"
	echo "$dir/kubeconfig"
}

# Stops the apiserver at once (as a crash would, without its graceful drain), waits, starts it
# again: for tests of how clients survive an outage of a known length.
#
# The controllers are restarted with it, as they would be in a real control plane: there they run
# with leader election, an outage longer than its renew deadline (10s by default) makes them exit,
# and the kubelet starts them again. Here they run without leader election and would stay up,
# waiting out client-go's watch backoff instead (up to a minute with jitter; a restarted apiserver
# also answers 403 until its RBAC cache is filled, which counts as one more failure), so a
# Deployment created just after the outage would get its pods only a minute later. That is the
# plane's recovery, not what a test of smm measures.
cmd_restart_apiserver() { # [seconds-down]
	local down="${1:-10}"
	lock
	all_running || die "no control plane is running in $dir; start it with scripts/cluster.sh up"
	# shellcheck source=/dev/null
	source "$dir/env"
	bin_dir="$SMM_CLUSTER_BIN_DIR" etcd_port="$ETCD_CLIENT_PORT" api_port="$APISERVER_PORT"
	kcm_port="$CONTROLLER_MANAGER_PORT" sched_port="$SCHEDULER_PORT" kwok_port="$KWOK_PORT"
	stop kube-apiserver now
	stop kwok now
	stop kube-scheduler now
	stop kube-controller-manager now
	log "kube-apiserver down for ${down}s"
	sleep "$down"
	start_apiserver
	# kwok holds each node's Lease under an identity of its own per process, and manages a node's
	# pods only once it holds its Lease: a new kwok would wait for the old one's to expire (40s),
	# where a restarted kubelet (whose identity is its node) goes on at once.
	local i
	for ((i = 1; i <= fake_nodes; i++)); do
		api_delete "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/kwok-node-$i" || true
	done
	start_controllers
	wait_for kwok 30 "$fake_nodes Ready nodes" all_nodes_ready
	log "kube-apiserver back"
}

cmd_env() {
	all_running || die "no control plane is running in $dir; start it with scripts/cluster.sh up"
	echo "export KUBECONFIG=$(printf %q "$dir/kubeconfig")"
}

cmd_status() {
	local c pid ok=0
	if [[ ! -f "$marker" ]]; then
		echo "not up: no control plane state in $dir"
		return 1
	fi
	for c in "${components[@]}"; do
		if pid="$(pid_of "$c")"; then
			echo "$c: running (pid $pid)"
		else
			echo "$c: not running"
			ok=1
		fi
	done
	if [[ -f "$dir/env" ]]; then
		# shellcheck source=/dev/null # written by cmd_up
		api_port="$(source "$dir/env" && echo "$APISERVER_PORT")"
		if api_get /readyz >/dev/null 2>&1; then
			echo "kube-apiserver /readyz: ok (https://127.0.0.1:$api_port)"
			if all_nodes_ready 2>/dev/null; then
				echo "fake nodes: $(ready_nodes) Ready"
			else
				echo "fake nodes: $(ready_nodes 2>/dev/null || echo ?) of $fake_nodes Ready"
				ok=1
			fi
		else
			echo "kube-apiserver /readyz: not answering (https://127.0.0.1:$api_port)"
			ok=1
		fi
	else
		echo "kube-apiserver /readyz: unknown (no $dir/env)"
		ok=1
	fi
	((ok == 0)) && echo "kubeconfig: $dir/kubeconfig"
	return "$ok"
}

cmd_down() {
	lock
	if [[ ! -e "$dir" ]]; then
		log "nothing to stop: $dir does not exist"
		return 0
	fi
	[[ -f "$marker" ]] || die "refusing to touch $dir: it was not made by scripts/cluster.sh"
	# Argo CD's processes, if a test left them running (their state lives in the plane's
	# directory, about to go): stopped while the API server still answers.
	if [[ -d "$dir/argocd" ]]; then
		SMM_CLUSTER_DIR="$dir" "$here/argocd/argocd.sh" stop || true
	fi
	stop_all
	rm -rf "$dir"
	log "control plane stopped; removed $dir"
}

case "${1:-}" in
up) cmd_up ;;
env) cmd_env ;;
status) cmd_status ;;
down) cmd_down ;;
restart-apiserver) cmd_restart_apiserver "${2:-}" ;;
-h | --help | help) usage ;;
*)
	usage
	exit 2
	;;
esac
