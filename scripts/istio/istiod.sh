#!/usr/bin/env bash
# Runs istiod (pilot-discovery from build.sh) as a local process against a local control plane
# whose istiod chart is installed, so that its webhooks and xDS work without a kubelet:
#
#   scripts/istio/istiod.sh start [NAMESPACE [REVISION]]   (default istio-system, revision "")
#   scripts/istio/istiod.sh stop  [NAMESPACE [REVISION]]
#
# When the Secret cacerts exists in NAMESPACE (Istio's plug-in CA, which a pod mounts at
# /etc/cacerts), its keys are written to a private directory of the state (0700, files 0600)
# and istiod reads them from there (ROOT_CA_DIR): it signs with that CA instead of its own
# self-signed one. Like a pod, istiod reads them when it starts.
#
# istiod gets the literal env of the chart's Deployment (as in a pod) and POD_NAME, its
# leader-election identity, istiod[-REVISION]-local unless the caller sets POD_NAME: istiods of
# two revisions side by side must not share one identity, or both lead the locks they share.
#
# start prints shell assignments (ISTIOD_PID, ISTIOD_HTTPS_PORT, ISTIOD_GRPC_PORT, ISTIOD_XDS_PORT,
# ISTIOD_MONITORING_PORT, ISTIOD_HTTP_PORT, ISTIOD_DIR) on stdout, progress on stderr.
#
# It needs a plane from scripts/cluster.sh with the egress proxy (SMM_CLUSTER_DIR as for
# cluster.sh): kube-apiserver calls istiod's webhooks at the istiod Service's ClusterIP, and this
# script adds the route from that ClusterIP:443 to istiod's loopback webhook port. istiod runs
# with a token of the chart's own ServiceAccount, so with exactly the RBAC the chart grants.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../cluster/dir.sh
source "$root/scripts/cluster/dir.sh"
plane="$plane_dir"
kubectl="${KUBECTL:-$root/.tools/kubectl}"

log() { echo "istiod: $*" >&2; }
die() {
	log "$*"
	exit 1
}

cmd="${1:-}"
namespace="${2:-istio-system}"
revision="${3:-}"
# The chart names the Service istiod or istiod-<revision>; REVISION=default is the default one.
service="istiod${revision:+-$revision}"
state="$plane/istiod/$namespace.${revision:-default}"
route="$plane/egress/routes/istiod.$namespace.${revision:-default}"

[[ -f "$plane/env" ]] || die "no control plane in $plane; start one with scripts/cluster.sh up"
# shellcheck source=/dev/null # written by cluster.sh up
source "$plane/env"
[[ -n "${EGRESS_ROUTES_DIR:-}" ]] || die "the plane in $plane runs without the egress proxy; restart it with a cluster.sh that has it"
export KUBECONFIG

# The recorded PID, if that process is still this istiod (the same check as cluster.sh: the
# executable and a command line naming this state directory), so stop never signals a stranger.
pid_of() {
	local pid exe actual
	[[ -f "$state/pid" ]] || return 1
	{ read -r pid && read -r exe; } <"$state/pid" || return 1
	actual="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
	[[ "${actual% (deleted)}" == "$exe" ]] || return 1
	{ tr '\0' '\n' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$state/" || return 1
	echo "$pid"
}

cmd_stop() {
	local pid i
	rm -f "$route"
	if pid="$(pid_of)"; then
		kill -TERM "$pid" 2>/dev/null || true
		# istiod drains for --shutdownDuration (set to 1s below) before it exits.
		for ((i = 0; i < 50; i++)); do
			pid_of >/dev/null || break
			sleep 0.2
		done
		pid_of >/dev/null && kill -KILL "$pid" 2>/dev/null
		log "stopped $service in $namespace (pid $pid)"
	fi
	rm -rf "$state"
}

cmd_start() {
	local binary cluster_ip server token https grpc xds monitoring http pid deadline i tmp env_list chart_env
	pid_of >/dev/null && die "$service in $namespace already runs (pid $(pid_of)); stop it first"
	binary="$("$here/build.sh")"
	cluster_ip="$("$kubectl" -n "$namespace" get service "$service" -o jsonpath='{.spec.clusterIP}')" ||
		die "no Service $service in $namespace: install the istiod chart first"
	# The chart's literal env (profiles set features there); valueFrom entries come out as
	# comments and need a pod. KUBECONFIG is an in-pod path, REVISION is set below.
	env_list="$("$kubectl" -n "$namespace" set env "deployment/$service" -c discovery --list)" ||
		die "no Deployment $service in $namespace: install the istiod chart first"
	mapfile -t chart_env < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' <<<"$env_list" |
		grep -v -e '^KUBECONFIG=' -e '^REVISION=' || true)
	rm -rf "$state"
	mkdir -p "$plane/istiod"
	# The token in the kubeconfig is a credential.
	mkdir -m 700 "$state"

	# The plug-in CA, if any. An absent directory leaves istiod to its self-signed CA.
	"$kubectl" -n "$namespace" get secret cacerts --ignore-not-found -o json >"$state/cacerts.json" ||
		die "cannot read Secret cacerts in $namespace"
	if [[ -s "$state/cacerts.json" ]]; then
		python3 -c '
import base64, json, os, re, sys
directory, secret = sys.argv[1], sys.argv[2]
os.mkdir(directory, 0o700)
with open(secret) as f:
    data = json.load(f).get("data") or {}
for key, value in data.items():
    # Secret keys are file names already; anything else is not written anywhere.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", key):
        sys.exit(f"refusing the cacerts key {key!r}")
    fd = os.open(os.path.join(directory, key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64decode(value))
' "$state/cacerts" "$state/cacerts.json"
		log "$service signs with the plug-in CA of Secret $namespace/cacerts"
	fi
	rm -f "$state/cacerts.json"

	# The mesh config the chart rendered, so istiod behaves as the chart configured it.
	"$kubectl" -n "$namespace" get configmap "istio${revision:+-$revision}" -o jsonpath='{.data.mesh}' >"$state/mesh.yaml"
	# A single-network mesh; without the file istiod would look for its in-pod default path.
	echo 'networks: {}' >"$state/mesh-networks.yaml"
	token="$("$kubectl" -n "$namespace" create token "$service" --duration=24h)"
	server="$("$kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
	"$kubectl" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
		base64 -d >"$state/ca.crt"
	cat >"$state/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority: "$state/ca.crt"}
users:
- name: $service
  user: {token: "$token"}
contexts:
- name: local
  context: {cluster: local, user: $service}
current-context: local
KUBECONFIG

	# Every listener on 127.0.0.1 and a free port: several istiods (and test runs) side by side.
	read -r https grpc xds monitoring http < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
	# The route goes in before istiod starts: at start it checks its own webhooks through the
	# API server and only then flips the validators to failurePolicy Fail.
	# Written under a dot-name (which the proxy skips) and renamed, so it is never read half-written.
	tmp="$(dirname "$route")/.$(basename "$route").$$"
	printf '%s:443 127.0.0.1:%s\n' "$cluster_ip" "$https" >"$tmp"
	mv "$tmp" "$route"

	# setsid: istiod outlives this script and the caller's process group, like the plane's
	# processes; bash -c records the PID that exec keeps for istiod.
	# shellcheck disable=SC2016 # expanded by the inner bash
	env "${chart_env[@]}" POD_NAME="${POD_NAME:-$service-local}" POD_NAMESPACE="$namespace" \
		REVISION="${revision:-default}" ROOT_CA_DIR="$state/cacerts" setsid bash -c \
		'printf "%s\n%s\n" "$$" "$0" >"$1.tmp" && mv "$1.tmp" "$1" && shift && exec "$0" "$@"' \
		"$binary" "$state/pid" discovery \
		--kubeconfig "$state/kubeconfig" \
		--meshConfig "$state/mesh.yaml" \
		--networksConfig "$state/mesh-networks.yaml" \
		--httpsAddr "127.0.0.1:$https" \
		--grpcAddr "127.0.0.1:$grpc" \
		--secureGRPCAddr "127.0.0.1:$xds" \
		--monitoringAddr "127.0.0.1:$monitoring" \
		--httpAddr "127.0.0.1:$http" \
		--shutdownDuration 1s \
		--ctrlz_port 0 \
		</dev/null >"$state/istiod.log" 2>&1 &
	for ((i = 0; i < 50; i++)); do
		[[ -f "$state/pid" ]] && break
		sleep 0.1
	done
	deadline=$((SECONDS + 60))
	until curl -fsS --max-time 2 "http://127.0.0.1:$http/ready" >/dev/null 2>&1; do
		if ! pid_of >/dev/null; then
			tail -n 30 "$state/istiod.log" >&2
			rm -f "$route"
			die "$service exited; its log is $state/istiod.log"
		fi
		((SECONDS < deadline)) || {
			tail -n 30 "$state/istiod.log" >&2
			pid="$(pid_of)" && kill -KILL "$pid"
			rm -f "$route"
			die "$service not ready after 60s; its log is $state/istiod.log"
		}
		sleep 0.25
	done
	pid="$(pid_of)"
	log "$service in $namespace ready (pid $pid); webhooks at $cluster_ip:443 -> 127.0.0.1:$https"
	cat <<ENV
ISTIOD_PID=$pid
ISTIOD_HTTPS_PORT=$https
ISTIOD_GRPC_PORT=$grpc
ISTIOD_XDS_PORT=$xds
ISTIOD_MONITORING_PORT=$monitoring
ISTIOD_HTTP_PORT=$http
ISTIOD_DIR=$state
ENV
}

case "$cmd" in
start) cmd_start ;;
stop) cmd_stop ;;
*)
	echo "usage: scripts/istio/istiod.sh start|stop [NAMESPACE [REVISION]]" >&2
	exit 2
	;;
esac
