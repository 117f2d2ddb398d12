#!/usr/bin/env bash
# Runs Argo CD against a local control plane as local processes, as argo-cd's own Procfile runs
# it for development: redis, argocd-repo-server, argocd-application-controller and
# argocd-applicationset-controller (no API server, UI or dex: tests drive Applications and
# ApplicationSets through the Kubernetes API).
#
#   scripts/argocd/argocd.sh start    applies Argo CD's CRDs and configuration (namespace argocd,
#                                     smm's ControlPlane health check from deploy/argocd merged
#                                     into argocd-cm, a default AppProject), starts the processes
#   scripts/argocd/argocd.sh stop     stops them and removes the namespace and CRDs
#
# start prints ARGOCD_NAMESPACE and ARGOCD_DIR (its state, with the processes' logs) as shell
# assignments on stdout, progress on stderr. The binaries come from build.sh. The controller
# talks to the plane through its admin kubeconfig (ARGOCD_FAKE_IN_CLUSTER: the in-cluster
# destination https://kubernetes.default.svc is that kubeconfig's server); the repo server runs
# the kustomize build.sh built and the helm of .tools.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=../cluster/dir.sh
source "$root/scripts/cluster/dir.sh"
plane="$plane_dir"
kubectl="${KUBECTL:-$root/.tools/kubectl}"
namespace=argocd
state="$plane/argocd"
processes=(redis repo-server application-controller applicationset-controller)

log() { echo "argocd: $*" >&2; }
die() {
	log "$*"
	exit 1
}

[[ -f "$plane/env" ]] || die "no control plane in $plane; start one with scripts/cluster.sh up"
# shellcheck source=/dev/null # written by cluster.sh up
source "$plane/env"
export KUBECONFIG

# The recorded PID of a process, if that process is still the one started here: the same
# executable, working in this state directory. stop never signals a stranger.
pid_of() {
	local name="$1" pid exe actual
	[[ -f "$state/$name.pid" ]] || return 1
	{ read -r pid && read -r exe; } <"$state/$name.pid" || return 1
	actual="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
	[[ "${actual% (deleted)}" == "$exe" ]] || return 1
	[[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$state" ]] || return 1
	echo "$pid"
}

# Starts BINARY ARGS... in the state directory under setsid (it outlives this script and the
# caller's process group, like the plane's processes), logging to $state/NAME.log; bash -c
# records the PID that exec keeps for it.
spawn() {
	local name="$1" binary="$2" i
	shift 2
	# shellcheck disable=SC2016 # expanded by the inner bash
	setsid bash -c 'cd "$2" && printf "%s\n%s\n" "$$" "$(readlink -f "$0")" >"$1.tmp" && mv "$1.tmp" "$1" &&
		shift 2 && exec "$0" "$@"' "$binary" "$state/$name.pid" "$state" "$@" \
		</dev/null >"$state/$name.log" 2>&1 &
	for ((i = 0; i < 50; i++)); do
		pid_of "$name" >/dev/null && return 0
		sleep 0.1
	done
	die "$name did not start; its log: $(tail -n 20 "$state/$name.log" 2>/dev/null)"
}

# Waits until something accepts connections on 127.0.0.1:PORT, or NAME has exited.
wait_port() {
	local name="$1" port="$2" i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		pid_of "$name" >/dev/null || die "$name exited; its log: $(tail -n 20 "$state/$name.log")"
		sleep 0.1
	done
	die "$name does not listen on $port; its log: $(tail -n 20 "$state/$name.log")"
}

cmd_stop() {
	local name pid
	for name in "${processes[@]}"; do
		if pid="$(pid_of "$name")"; then
			kill -TERM "$pid" 2>/dev/null || true
		fi
	done
	for name in "${processes[@]}"; do
		for ((i = 0; i < 50; i++)); do
			pid_of "$name" >/dev/null || break
			sleep 0.1
		done
		if pid="$(pid_of "$name")"; then kill -KILL "$pid" 2>/dev/null || true; fi
	done
	if [[ -d "$state" ]]; then
		"$kubectl" delete namespace "$namespace" --ignore-not-found --wait=false >/dev/null
		"$kubectl" delete crd applications.argoproj.io applicationsets.argoproj.io appprojects.argoproj.io \
			--ignore-not-found --wait=false >/dev/null
		log "stopped"
	fi
	rm -rf "$state"
}

cmd_start() {
	local dir redis repo metrics_repo metrics_controller metrics_appset probe_appset webhook_appset config name
	pid_of application-controller >/dev/null && die "Argo CD already runs (state in $state); stop it first"
	dir="$("$here/build.sh" | tail -n 1)"
	rm -rf "$state"
	mkdir -p "$state"/{tls,ssh,gpg/keys,gpg/source,cmp,tmp}

	# A previous stop deletes the namespace without waiting for it to go.
	"$kubectl" wait --for=delete "namespace/$namespace" --timeout=120s >/dev/null 2>&1 || true
	"$kubectl" create namespace "$namespace" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
	"$kubectl" apply --server-side -f "$dir/manifests/crds/application-crd.yaml" \
		-f "$dir/manifests/crds/appproject-crd.yaml" -f "$dir/manifests/crds/applicationset-crd.yaml" >/dev/null
	for config in argocd-cm argocd-cmd-params-cm argocd-rbac-cm argocd-secret argocd-ssh-known-hosts-cm \
		argocd-tls-certs-cm argocd-gpg-keys-cm; do
		"$kubectl" apply -n "$namespace" -f "$dir/manifests/config/$config.yaml" >/dev/null
	done
	"$kubectl" -n "$namespace" patch configmap argocd-cm --type merge \
		--patch-file "$root/deploy/argocd/argocd-cm-patch.yaml" >/dev/null
	"$kubectl" wait --for condition=established --timeout=60s crd/applications.argoproj.io crd/appprojects.argoproj.io \
		crd/applicationsets.argoproj.io >/dev/null
	# argocd-server creates the default project; without it, Applications of project default fail.
	"$kubectl" apply -f - >/dev/null <<PROJECT
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: default, namespace: $namespace}
spec:
  sourceRepos: ["*"]
  destinations: [{namespace: "*", server: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
PROJECT

	read -r redis repo metrics_repo metrics_controller metrics_appset probe_appset webhook_appset < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(7)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
	spawn redis "$(command -v redis-server)" --bind 127.0.0.1 --port "$redis" --save '' \
		--appendonly no --dir "$state"
	wait_port redis "$redis"
	# The environment both components share: their data paths in the state directory, the
	# plane's kubeconfig as the in-cluster one.
	local env=(ARGOCD_FAKE_IN_CLUSTER=true ARGOCD_TLS_DATA_PATH="$state/tls" ARGOCD_SSH_DATA_PATH="$state/ssh"
		ARGOCD_GPG_ENABLED=false ARGOCD_GNUPGHOME="$state/gpg/keys" ARGOCD_GPG_DATA_PATH="$state/gpg/source"
		ARGOCD_PLUGINSOCKFILEPATH="$state/cmp" TMPDIR="$state/tmp" KUBECONFIG="$KUBECONFIG"
		PATH="$dir/bin:$root/.tools:/usr/bin:/bin")
	# --client-ca-path "": the flag has a default path that --disable-tls refuses.
	(export "${env[@]}" && spawn repo-server "$dir/bin/argocd-repo-server" \
		--address 127.0.0.1 --port "$repo" --metrics-address 127.0.0.1 --metrics-port "$metrics_repo" \
		--redis "127.0.0.1:$redis" --disable-tls --client-ca-path '' --logformat text)
	wait_port repo-server "$repo"
	# --persist-resource-health keeps each resource's health in the Application's status, where
	# tests read the ControlPlane's; --app-resync 10: tests also ask for refreshes.
	(export "${env[@]}" && spawn application-controller "$dir/bin/argocd-application-controller" \
		--namespace "$namespace" --redis "127.0.0.1:$redis" --repo-server "127.0.0.1:$repo" \
		--repo-server-plaintext --metrics-port "$metrics_controller" --logformat text --app-resync 10 \
		--persist-resource-health)
	# It reads cluster Secrets and ApplicationSets in the namespace --namespace names (otherwise
	# the kubeconfig's), and listens on three ports of its own, each given a free one here. It
	# logs "failed to create webhook handler" (argocd-secret has no server.secretkey, which
	# argocd-server makes): only its Git webhook endpoint is off, which no test calls.
	(export "${env[@]}" && spawn applicationset-controller "$dir/bin/argocd-applicationset-controller" \
		--namespace "$namespace" --argocd-repo-server "127.0.0.1:$repo" --repo-server-plaintext \
		--metrics-addr "127.0.0.1:$metrics_appset" --probe-addr "127.0.0.1:$probe_appset" \
		--webhook-addr "127.0.0.1:$webhook_appset" --logformat text)
	log "running: redis :$redis, repo server :$repo, application and applicationset controllers (state in $state)"
	echo "ARGOCD_NAMESPACE=$namespace"
	echo "ARGOCD_DIR=$state"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
*) die "usage: $0 start|stop" ;;
esac
