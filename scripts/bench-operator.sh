#!/usr/bin/env bash
# Operator steady state: the API requests per minute and the memory of `smm operator run` at
# idle, with 1 and with BENCH_CONTROL_PLANES (20) ControlPlanes, and with the dashboard open; on
# a private local control plane (scripts/cluster.sh, its own SMM_CLUSTER_DIR, stopped at the end).
#
#   scripts/bench-operator.sh      (BENCH_IDLE_SECONDS=300 BENCH_CONTROL_PLANES=20 BENCH_PODS=300,
#                                   BENCH_DIR, BENCH_SMM)
#
# Each ControlPlane has one component, prometheus, in a namespace of its own; the operator
# (release build, out of cluster, admin kubeconfig, default --resync 5m) installs them all, then
# every window starts once they are Ready and nothing happened for 20 s. A window of
# BENCH_IDLE_SECONDS (default 300 s: each ControlPlane's periodic resync falls in it once) is
# measured three ways:
#   - kube-apiserver's own count, `apiserver_request_total` by verb and resource, scraped before and
#     after the window, minus the same count over a window without the operator (what the
#     controller-manager, the scheduler and kwok ask meanwhile), per minute;
#   - the operator's own count: kube's client logs one `requesting` line per HTTP request
#     (RUST_LOG=kube_client=debug), counted by method and resource;
#   - VmRSS and VmHWM of the operator (/proc/PID/status) at the end, and the helm processes it
#     started (a wrapper set as SMM_HELM logs each).
# The dashboard window polls what the page polls every 2 s (/api/controlplanes and one
# ControlPlane's detail). The last window adds BENCH_PODS pods (one Deployment on kwok's fake
# nodes) with the dashboard still open: requests must not grow with the pods. Results are
# written under BENCH_DIR (default a fresh temporary directory); the table goes to stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
idle="${BENCH_IDLE_SECONDS:-300}"
many="${BENCH_CONTROL_PLANES:-20}"
pods="${BENCH_PODS:-300}"
work="${BENCH_DIR:-$(mktemp -d /tmp/smm-bench-operator.XXXXXX)}"
mkdir -p "$work"
kubectl="$root/.tools/kubectl"
# BENCH_SMM: the smm binary to measure (e.g. a copy of an earlier build); default: the release
# build of this checkout, built first.
smm="${BENCH_SMM:-$root/target/release/smm}"
log() { echo "bench-operator: $*" >&2; }

log "work directory $work"
"$root/scripts/tools.sh" >&2
[[ -d "$root/.upstream/istio" ]] || "$root/scripts/istio/fetch.sh" >&2
if [[ -z "${BENCH_SMM:-}" ]]; then (cd "$root" && cargo build --release --bin smm >&2); fi

export SMM_CLUSTER_DIR="$work/plane"
operator_pid=""
poller_pid=""
cleanup() {
	for pid in "$poller_pid" "$operator_pid"; do
		if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
	done
	"$root/scripts/cluster.sh" down >&2 || true
}
trap cleanup EXIT
KUBECONFIG="$("$root/scripts/cluster.sh" up | tail -n 1)"
export KUBECONFIG

helm_log="$work/helm.log"
: >"$helm_log"
: >"$work/operator.log"
cat >"$work/helm" <<WRAP
#!/usr/bin/env bash
printf '%s %s\n' "\$EPOCHREALTIME" "\$*" >>"$helm_log"
exec "$root/.tools/helm" "\$@"
WRAP
chmod +x "$work/helm"

# One ControlPlane: prometheus alone, in namespace bench-N.
control_plane() { # N
	local component enabled
	printf 'apiVersion: smm.dev/v1alpha1\nkind: ControlPlane\nmetadata:\n  name: bench-%s\n' "$1"
	printf 'spec:\n  namespace: bench-%s\n  components:\n' "$1"
	for component in base istiod ingress-gateway egress-gateway prometheus grafana tracing; do
		enabled=false
		[[ "$component" == prometheus ]] && enabled=true
		printf '    %s: {enabled: %s}\n' "$component" "$enabled"
	done
}
add_control_planes() { # FIRST LAST
	local n
	for ((n = $1; n <= $2; n++)); do control_plane "$n" && echo "---"; done >"$work/cps-$1-$2.yaml"
	"$smm" crd | "$kubectl" apply --server-side -f - >/dev/null
	"$kubectl" apply --server-side -f "$work/cps-$1-$2.yaml" >/dev/null
	log "waiting for ControlPlanes bench-$1..bench-$2 to be Ready"
	for ((n = $1; n <= $2; n++)); do
		"$kubectl" wait "controlplane/bench-$n" --for=condition=Ready --timeout=10m >/dev/null
	done
}

scrape() { "$kubectl" get --raw /metrics | grep '^apiserver_request_total{' >"$1"; }
rss() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$operator_pid/status"; }
# One window: apiserver's counts before and after, the operator's log lines in between.
window() { # NAME SECONDS
	local name="$1" seconds="$2" first helm_before
	log "window $name: ${seconds}s"
	first="$(($(wc -l <"$work/operator.log") + 1))"
	helm_before="$(wc -l <"$helm_log")"
	scrape "$work/$name.before.prom"
	sleep "$seconds"
	scrape "$work/$name.after.prom"
	tail -n "+$first" "$work/operator.log" | grep 'requesting' >"$work/$name.client.log" || true
	printf 'seconds\t%s\nrss_kib\t%s\nhwm_kib\t%s\nhelm\t%s\n' "$seconds" \
		"$(if [[ -n "$operator_pid" ]]; then rss VmRSS; else echo 0; fi)" \
		"$(if [[ -n "$operator_pid" ]]; then rss VmHWM; else echo 0; fi)" \
		"$(($(wc -l <"$helm_log") - helm_before))" >"$work/$name.meta"
}
settle() { sleep 20; }

# What the plane asks by itself, without the operator.
settle
window baseline "$idle"

"$kubectl" create namespace smm-system >/dev/null
dashboard_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
SMM_HELM="$work/helm" RUST_LOG="info,kube_client=debug" "$smm" operator run \
	--listen 127.0.0.1:0 --leader-namespace smm-system \
	--dashboard-listen "127.0.0.1:$dashboard_port" --no-color >"$work/operator.log" 2>&1 &
operator_pid=$!

add_control_planes 1 1
settle
window one "$idle"

add_control_planes 2 "$many"
settle
window many "$idle"

token="$("$kubectl" -n smm-system get secret smm-operator-dashboard -o jsonpath='{.data.token}' | base64 -d)"
poll() {
	local path
	while true; do
		for path in /api/controlplanes /api/controlplanes/bench-1; do
			curl -fsS -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$dashboard_port$path" ||
				echo "dashboard poll failed: $path" >>"$work/poller.log"
		done
		sleep 2
	done
}
poll &
poller_pid=$!
settle
window dashboard "$idle"

"$kubectl" create namespace bench-pods >/dev/null
"$kubectl" -n bench-pods create deployment filler --image=registry.local/filler:1 --replicas="$pods" >/dev/null
"$kubectl" -n bench-pods rollout status deployment/filler --timeout=10m >/dev/null
settle
window dashboard-pods "$idle"

kill "$poller_pid" && wait "$poller_pid" 2>/dev/null || true
poller_pid=""
python3 "$root/scripts/bench/operator_table.py" "$work" baseline one many dashboard dashboard-pods |
	tee "$work/table.md"
