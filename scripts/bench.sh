#!/usr/bin/env bash
# Measures smm side by side with its peers on a private local control plane (scripts/cluster.sh,
# its own SMM_CLUSTER_DIR, stopped at the end), every comparison in the same run, A and B
# alternating, BENCH_RUNS (default 5) runs each; prints one table of medians and ratios.
#
#   scripts/bench.sh                   (BENCH_RUNS=5 BENCH_GROWTH="7 50 200" BENCH_IDLE_SECONDS=30)
#   BENCH_ONLY=cold BENCH_RUNS=1 scripts/bench.sh   only the cold install (a quick check of the mesh)
#   BENCH_ONLY=cold-ambient scripts/bench.sh   only the ambient profile's cold install, to check it
#   BENCH_PROFILE=dev ...              the debug build, to check the script quickly (no figures)
#
# The mesh measured is every component of smm's catalog of the sidecar profile but the gateways
# (base, istiod and the add-ons: prometheus, grafana, tracing, kiali, and any added since), read
# from `smm components`, so the cold install and the no-op follow the add-ons as they are; the
# ambient profile's cold install is measured on its own mesh (base, istiod, istio-cni, ztunnel).
# The ingress and egress gateways are left out: their pods are admitted only through istiod's
# injection webhook, which on this plane needs a local istiod process started mid-install
# (scripts/istio/istiod.sh); the dump comparison covers every component. The peers get exactly smm's charts and merged
# values (examples/bench_peer_inputs.rs writes them) and apply smm's native objects (namespace,
# Istio's CRDs) with kubectl before the chart. Everything is written under BENCH_DIR (default a
# fresh temporary directory), results in BENCH_DIR/results.tsv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${BENCH_RUNS:-5}"
growth="${BENCH_GROWTH:-7 50 200}"
idle_seconds="${BENCH_IDLE_SECONDS:-30}"
work="${BENCH_DIR:-$(mktemp -d /tmp/smm-bench.XXXXXX)}"
mkdir -p "$work"
results="$work/results.tsv"
: >"$results"
helm_real="$root/.tools/helm"
kubectl="$root/.tools/kubectl"
# Figures come from the release build; the dev build only saves building it to check the script.
profile="${BENCH_PROFILE:-release}"
case "$profile" in release) build_dir=release ;; dev) build_dir=debug ;; *) echo "bench: BENCH_PROFILE is release or dev" >&2 && exit 2 ;; esac
smm="$root/target/$build_dir/smm"
log() { echo "bench: $*" >&2; }

log "work directory $work"
# The machine's load when the run starts and ends (other work on shared cores makes runs noisy).
load_at() { echo "$1: $(cat /proc/loadavg)" >>"$work/loadavg.txt"; }
: >"$work/loadavg.txt"
load_at start
"$root/scripts/tools.sh" >&2
[[ -d "$root/.upstream/istio" ]] || "$root/scripts/istio/fetch.sh" >&2
(cd "$root" && cargo build --profile "$profile" --bin smm --example bench_peer_inputs --example bench_growth >&2)
# BENCH_HELMFILE=0 leaves helmfile out (reported as not measured).
HELMFILE=""
if [[ "${BENCH_HELMFILE:-1}" != 0 ]]; then
	peers="$("$root/scripts/bench/peers.sh")" || true
	eval "$peers"
	export HELM_PLUGINS
fi

export SMM_CLUSTER_DIR="$work/plane"
operator_pid=""
cleanup() {
	if [[ -n "$operator_pid" ]]; then kill "$operator_pid" 2>/dev/null || true; fi
	"$root/scripts/cluster.sh" down >&2 || true
}
trap cleanup EXIT
KUBECONFIG="$("$root/scripts/cluster.sh" up | tail -n 1)"
export KUBECONFIG

# Every helm process smm starts goes through this wrapper, which logs it with a timestamp.
helm_log="$work/helm.log"
: >"$helm_log"
cat >"$work/helm" <<WRAP
#!/usr/bin/env bash
printf '%s %s\n' "\$EPOCHREALTIME" "\$*" >>"\${BENCH_HELM_LOG:-$helm_log}"
exec "$helm_real" "\$@"
WRAP
chmod +x "$work/helm"
export SMM_HELM="$work/helm"
helm_count() { wc -l <"$helm_log"; }

now_ns() { date +%s%N; }
record() { printf '%s\t%s\n' "$1" "$2" >>"$results"; } # metric value
# Runs a command, records its wall time in seconds under the metric; output goes to the log.
timed() { # metric command...
	local metric="$1" start end
	shift
	start="$(now_ns)"
	"$@" >>"$work/commands.log" 2>&1 || {
		log "failed: $* (see $work/commands.log)"
		tail -n 20 "$work/commands.log" >&2
		return 1
	}
	end="$(now_ns)"
	record "$metric" "$(awk -v s="$start" -v e="$end" 'BEGIN{printf "%.4f", (e-s)/1e9}')"
}

# The mesh's spec: every component on but the gateways; and every component on, for the dump.
# The ambient node agents (on by default only under that profile) are left to the ambient case.
mapfile -t catalog < <("$smm" components -o json | python3 -c 'import json, sys; print("\n".join(c["name"] for c in json.load(sys.stdin) if "enabledInProfile" not in c))')
# A process substitution's failure does not stop the script: an empty list is that failure.
((${#catalog[@]} > 0)) || { log "smm components listed no component"; exit 1; }
mesh=()
for component in "${catalog[@]}"; do
	[[ "$component" == *-gateway ]] || mesh+=("$component")
done
{
	cat <<YAML
apiVersion: smm.dev/v1alpha1
kind: ControlPlane
metadata:
  name: smm
spec:
  components:
YAML
	for component in "${catalog[@]}"; do
		if [[ "$component" == *-gateway ]]; then on=false; else on=true; fi
		echo "    $component: {enabled: $on}"
	done
} >"$work/cp.yaml"
record mesh.components "${#mesh[@]}"
record catalog.components "${#catalog[@]}"
sed -e 's/enabled: false/enabled: true/' "$work/cp.yaml" >"$work/cp-all.yaml"
# The ambient profile's mesh: what `smm install --profile ambient` of these components enables
# on a new ControlPlane, where every other component is off (the gateways and prometheus, on by
# default, too).
ambient=(base istiod istio-cni ztunnel)
cat >"$work/cp-ambient.yaml" <<YAML
apiVersion: smm.dev/v1alpha1
kind: ControlPlane
metadata:
  name: smm
spec:
  profile: ambient
  components:
$(printf '    %s: {enabled: true}\n' "${ambient[@]}")
$(printf '    %s: {enabled: false}\n' ingress-gateway egress-gateway prometheus grafana tracing kiali)
YAML
example() { "$root/target/$build_dir/examples/$1" "${@:2}"; }
example bench_peer_inputs "$work/cp.yaml" "$work/peer"
example bench_peer_inputs "$work/cp-all.yaml" "$work/peer-all"
example bench_peer_inputs "$work/cp-ambient.yaml" "$work/peer-ambient"

# --- the peers -------------------------------------------------------------------------------
helm_sequential() { # inputs-dir [helm flags...]
	local dir="$1" name release namespace deps
	shift
	while read -r name release namespace deps; do
		if [[ -s "$dir/$name/native.yaml" ]]; then
			"$kubectl" apply --server-side --force-conflicts --field-manager bench -f "$dir/$name/native.yaml" >/dev/null
		fi
		"$helm_real" upgrade --install "$release" "$dir/$name/chart" -n "$namespace" \
			-f "$dir/$name/values.yaml" "$@" >/dev/null
	done <"$dir/components.tsv"
}
helm_sequential_noop() { # only helm: the natives are in place already
	local dir="$1" name release namespace deps
	while read -r name release namespace deps; do
		"$helm_real" upgrade --install "$release" "$dir/$name/chart" -n "$namespace" \
			-f "$dir/$name/values.yaml" >/dev/null
	done <"$dir/components.tsv"
}
helm_template_all() {
	local dir="$1" name release namespace deps
	while read -r name release namespace deps; do
		"$helm_real" template "$release" "$dir/$name/chart" -n "$namespace" \
			-f "$dir/$name/values.yaml" >"$work/template-$name.yaml"
	done <"$dir/components.tsv"
}
{
	echo "releases:"
	while read -r name release namespace deps; do
		echo "  - name: $release"
		echo "    namespace: $namespace"
		echo "    chart: $work/peer/$name/chart"
		echo "    values: [$work/peer/$name/values.yaml]"
		if [[ "$deps" != - ]]; then
			echo "    needs:"
			for dep in ${deps//,/ }; do
				echo "      - $(awk -v d="$dep" '$1==d{print $3"/"$2}' "$work/peer/components.tsv")"
			done
		fi
	done <"$work/peer/components.tsv"
} >"$work/helmfile.yaml"
# helmfile 1.1 asks `helm version --client`, which helm 4 no longer takes: it drives helm 3.
helmfile_run() { "$HELMFILE" --file "$work/helmfile.yaml" --helm-binary "$root/.tools/helm3" "$@"; }

# Back to no release of the mesh whose peer inputs are in the directory (default the sidecar
# mesh's); CRDs and other cluster-scoped natives stay, as smm leaves them.
teardown() { # [inputs-dir]
	local dir="${1:-$work/peer}" name release namespace deps
	tac "$dir/components.tsv" | while read -r name release namespace deps; do
		"$helm_real" uninstall "$release" -n "$namespace" --wait --ignore-not-found >/dev/null 2>&1 || true
	done
	"$kubectl" delete controlplanes.smm.dev --all --wait >/dev/null 2>&1 || true
	for namespace in $(awk '{print $3}' "$dir/components.tsv" | sort -u); do
		case "$namespace" in default | kube-*) continue ;; esac
		"$kubectl" delete namespace "$namespace" --wait --ignore-not-found >/dev/null
	done
}

# --- cold install of the ambient profile, with waits -------------------------------------------
# istiod in ambient mode and the node agents' DaemonSets ready on every node, beside the same
# charts and values installed one after the other by helm. Nothing else is installed around it.
log "cold install (ambient): smm install --profile ambient ${ambient[*]} vs sequential helm ($runs runs each)"
for ((i = 1; i <= runs; i++)); do
	timed cold-ambient.smm "$smm" install --profile ambient "${ambient[@]}" --no-color
	teardown "$work/peer-ambient"
	timed cold-ambient.helm helm_sequential "$work/peer-ambient" --wait --timeout 5m
	teardown "$work/peer-ambient"
done
if [[ "${BENCH_ONLY:-}" == cold-ambient ]]; then
	python3 "$root/scripts/bench/table.py" "$results" "$runs" | tee "$work/table.md"
	exit 0
fi

# --- cold install with waits ------------------------------------------------------------------
log "cold install: smm install ${mesh[*]} vs sequential helm upgrade --install --wait ($runs runs each)"
for ((i = 1; i <= runs; i++)); do
	timed cold.smm "$smm" install "${mesh[@]}" --no-color
	teardown
	timed cold.helm helm_sequential "$work/peer" --wait --timeout 5m
	teardown
done
timed cold.smm.final "$smm" install "${mesh[@]}" --no-color
if [[ "${BENCH_ONLY:-}" == cold ]]; then
	python3 "$root/scripts/bench/table.py" "$results" "$runs" | tee "$work/table.md"
	exit 0
fi

# --- no-op ------------------------------------------------------------------------------------
# A peer's `helm upgrade` writes a revision smm did not record: smm's next run takes the release
# back (an upgrade, as for any change made by hand). So after the peers, an untimed
# `smm reconcile` settles the releases, and only then are smm's no-ops timed; the helm processes
# smm starts during them are counted on every run to prove they are no-ops.
helmfile_ok=""
if [[ -n "$HELMFILE" ]] && helmfile_run sync --skip-deps >>"$work/commands.log" 2>&1; then
	helmfile_ok=sync
	if helmfile_run apply --skip-deps >>"$work/commands.log" 2>&1; then helmfile_ok="sync apply"; fi
fi
settle() { "$smm" reconcile -f "$work/cp.yaml" --no-color >>"$work/commands.log" 2>&1; }
log "no-op: smm install, smm reconcile -f vs sequential helm upgrade --install, helmfile ($helmfile_ok)"
for ((i = 1; i <= runs; i++)); do
	timed noop.helm helm_sequential_noop "$work/peer"
	if [[ " $helmfile_ok " == *" sync "* ]]; then timed noop.helmfile-sync helmfile_run sync --skip-deps; fi
	if [[ " $helmfile_ok " == *" apply "* ]]; then timed noop.helmfile-apply helmfile_run apply --skip-deps; fi
	settle
	before="$(helm_count)"
	timed noop.smm-install "$smm" install "${mesh[@]}" --no-color
	timed noop.smm-reconcile "$smm" reconcile -f "$work/cp.yaml" --no-color
	record noop.smm.helm-processes "$(($(helm_count) - before))"
done
# API requests of a no-op, counted from kube's client log (one "requesting" line per request).
for cmd in install reconcile; do
	if [[ "$cmd" == install ]]; then args=(install "${mesh[@]}"); else args=(reconcile -f "$work/cp.yaml"); fi
	RUST_LOG=warn,kube_client=debug "$smm" "${args[@]}" --no-color 2>"$work/api-$cmd.log" >/dev/null
	all="$(grep -c 'requesting' "$work/api-$cmd.log" || true)"
	lease="$(grep 'requesting' "$work/api-$cmd.log" | grep -c '/leases' || true)"
	# The drift check's metadata lists, one per kind (selector app.kubernetes.io/managed-by in ...).
	kinds="$(grep 'requesting' "$work/api-$cmd.log" | grep -c 'managed-by+in' || true)"
	record "noop.smm-$cmd.api-requests" "$((all - lease))"
	record "noop.smm-$cmd.lease-requests" "$lease"
	record "noop.smm-$cmd.kind-lists" "$kinds"
done
for ((i = 1; i <= runs; i++)); do timed helm.version "$helm_real" version --short; done

# --- one component changed: what it costs in API requests (issue 26) -------------------------
# One more change of grafana, untimed, with kube's client log on (one "requesting" line per HTTP
# request, its method and URL in the line): every request, the status patches
# (PATCH .../controlplanes/NAME/status), the lease's requests, the watches of the wait, and
# the helm processes.
count_change_requests() {
	local log="$work/api-change.log" before
	before="$(helm_count)"
	RUST_LOG=warn,kube_client=debug "$smm" install grafana --set "podAnnotations.bench=counted" \
		--no-color 2>"$log" >/dev/null
	record change.smm.helm-processes-counted "$(($(helm_count) - before))"
	requests() { grep 'requesting' "$log" | { grep -E "$1" || true; } | wc -l; }
	record change.smm.api-requests "$(requests .)"
	record change.smm.lease-requests "$(requests '/leases')"
	record change.smm.status-patches "$(requests 'http.method=PATCH.*/controlplanes/[^/ ]*/status')"
	record change.smm.watches "$(requests 'watch=true')"
}

# --- one component changed --------------------------------------------------------------------
log "one component changed: grafana's pod annotation"
for ((i = 1; i <= runs; i++)); do
	before="$(helm_count)"
	timed change.smm "$smm" install grafana --set "podAnnotations.bench=smm-$i" --no-color
	record change.smm.helm-processes "$(($(helm_count) - before))"
	timed change.helm "$helm_real" upgrade --install grafana "$work/peer/grafana/chart" \
		-n "$(awk '$1=="grafana"{print $3}' "$work/peer/components.tsv")" \
		-f "$work/peer/grafana/values.yaml" --set "podAnnotations.bench=helm-$i" --wait --timeout 5m
done

count_change_requests

# --- dump -------------------------------------------------------------------------------------
log "dump: smm install -a --dump-resources vs helm template of each component"
for ((i = 1; i <= runs; i++)); do
	rm -rf "$work/dump"
	timed dump.smm "$smm" install -a --dump-resources --output-dir "$work/dump"
	timed dump.helm helm_template_all "$work/peer-all"
done

# --- operator -------------------------------------------------------------------------------
log "operator: idle ${idle_seconds}s, then ControlPlane changes"
"$kubectl" create namespace smm-system >/dev/null 2>&1 || true
op_helm_log="$work/operator-helm.log"
: >"$op_helm_log"
BENCH_HELM_LOG="$op_helm_log" "$smm" operator run --listen 127.0.0.1:0 --leader-namespace smm-system \
	--no-color >"$work/operator.log" 2>&1 &
operator_pid=$!
# Settled: leader, first reconcile done (the spec is reconciled already; it may upgrade grafana
# once, whose release the helm peer changed last).
sleep 20
ticks="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$operator_pid/stat"; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$operator_pid/status"; }
helm_before="$(wc -l <"$op_helm_log")"
t0="$(cpu_ticks)"
sleep "$idle_seconds"
t1="$(cpu_ticks)"
record operator.idle-rss-mib "$(awk -v k="$(rss_kib)" 'BEGIN{printf "%.1f", k/1024}')"
record operator.idle-cpu-percent "$(awk -v a="$t0" -v b="$t1" -v hz="$ticks" -v s="$idle_seconds" 'BEGIN{printf "%.2f", 100*(b-a)/hz/s}')"
record operator.idle-helm-processes "$(($(wc -l <"$op_helm_log") - helm_before))"
ready_generation() {
	"$kubectl" get controlplane smm -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.status.conditions[?(@.type=="Ready")].status}'
}
for ((i = 1; i <= runs; i++)); do
	lines="$(wc -l <"$op_helm_log")"
	start="$EPOCHREALTIME"
	"$kubectl" patch controlplane smm --type merge \
		-p "{\"spec\":{\"components\":{\"grafana\":{\"valuesOverride\":{\"podAnnotations\":{\"bench\":\"operator-$i\"}}}}}}" >/dev/null
	patched="$EPOCHREALTIME"
	first=""
	while [[ -z "$first" ]]; do
		if (($(wc -l <"$op_helm_log") > lines)); then first="$(sed -n "$((lines + 1))p" "$op_helm_log" | cut -d' ' -f1)"; fi
		[[ -n "$first" ]] || sleep 0.01
	done
	while true; do
		read -r gen observed ready <<<"$(ready_generation)" || true
		if [[ "$gen" == "$observed" && "$ready" == True ]]; then break; fi
		sleep 0.05
	done
	done_at="$EPOCHREALTIME"
	record operator.patch-to-first-helm "$(awk -v a="$start" -v b="$first" 'BEGIN{printf "%.4f", b-a}')"
	record operator.kubectl-patch "$(awk -v a="$start" -v b="$patched" 'BEGIN{printf "%.4f", b-a}')"
	record operator.patch-to-ready "$(awk -v a="$start" -v b="$done_at" 'BEGIN{printf "%.4f", b-a}')"
done
record operator.change-helm-processes "$(($(wc -l <"$op_helm_log") - lines))"
kill "$operator_pid"
wait "$operator_pid" 2>/dev/null || true
operator_pid=""

# --- growth -----------------------------------------------------------------------------------
for n in $growth; do
	log "growth: $n components"
	line="$(SMM_HELM="$helm_real" example bench_growth "$n" "$runs")"
	echo "$line" >>"$work/growth.txt"
	for kv in $line; do record "growth.$n.${kv%%=*}" "${kv#*=}"; done
done

# --- cold install of many tiny components beside sequential helm (issue 26) ------------------
# bench_growth's cold install (one session, parallelism as smm's default) was timed above; the
# peer installs the same chart with the same values (smm's values layer of the tiny component)
# as N sequential `helm upgrade --install --wait`, in a namespace of its own.
cold_growth_helm() { # n
	local n="$1" namespace="bench-helm-$1" i
	printf 'greeting: from-the-benchmark\n' >"$work/tiny-values.yaml"
	"$kubectl" create namespace "$namespace" >/dev/null
	for ((i = 0; i < n; i++)); do
		"$helm_real" upgrade --install "$(printf 'tiny%03d' "$i")" "$root/tests/fixtures/charts/tiny" \
			-n "$namespace" -f "$work/tiny-values.yaml" --wait --timeout 5m >/dev/null
	done
}
for n in ${BENCH_COLD_GROWTH:-50 200}; do
	log "cold install: $n tiny components, sequential helm upgrade --install --wait"
	timed "growth.$n.cold_helm_s" cold_growth_helm "$n"
	"$kubectl" delete namespace "bench-helm-$n" --wait=false >/dev/null
done

# --- revision-based upgrade -------------------------------------------------------------------
# From the spec change to the new revision Ready and the tags moved: `smm reconcile -f` of the
# mesh's spec switched to RevisionBased with a new patch version each run (a new revision beside
# the others; the grace period is long, so none is removed in between), beside a cold
# `helm upgrade --install --wait` of one istiod revision, the chart's own part of that work.
log "revision-based upgrade: smm reconcile -f (new revision, tags) vs helm install of one istiod revision"
istiod_namespace="$(awk '$1=="istiod"{print $3}' "$work/peer/components.tsv")"
line="$(sed -n 's/.*"tag": "\([0-9]*\.[0-9]*\)\..*/\1/p' "$work/peer/istiod/values.yaml" | head -n 1)"
revision_spec() { # patch
	sed -e "s/^spec:/spec:\n  version: \"$line.$1\"\n  updateStrategy: {type: RevisionBased, inactiveRevisionDeletionGracePeriodSeconds: 3600}/" \
		"$work/cp.yaml" >"$work/cp-rev.yaml"
}
# Untimed: the spec as the bench wrote it (the operator section changed grafana), then the switch
# to RevisionBased, which also upgrades base (its validator goes to the default tag).
settle
revision_spec 10
"$smm" reconcile -f "$work/cp-rev.yaml" --no-color >>"$work/commands.log" 2>&1
for ((i = 1; i <= runs; i++)); do
	revision_spec $((10 + i))
	before="$(helm_count)"
	timed rev.smm "$smm" reconcile -f "$work/cp-rev.yaml" --no-color
	record rev.smm.helm-processes "$(($(helm_count) - before))"
	timed rev.helm "$helm_real" upgrade --install "istiod-bench-$i" "$work/peer/istiod/chart" \
		-n "$istiod_namespace" -f "$work/peer/istiod/values.yaml" --set "revision=bench-$i" --wait --timeout 5m
	"$helm_real" uninstall "istiod-bench-$i" -n "$istiod_namespace" --wait >/dev/null
done
"$kubectl" get controlplane smm -o jsonpath='{.status.revisionNames}{"\n"}' >"$work/revisions.txt"

load_at end
python3 "$root/scripts/bench/table.py" "$results" "$runs" | tee "$work/table.md"
sed -e 's/^/load average (1, 5, 15 min) at /' "$work/loadavg.txt" | tee -a "$work/table.md"
