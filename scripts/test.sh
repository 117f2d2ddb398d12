#!/usr/bin/env bash
# The project's test command: installs the tools, starts a private local control plane, runs
# formatting and lint checks, builds and checks the operator image, runs the unit tests and the
# end-to-end tests, and stops the plane again, also when something fails. Extra arguments go to
# `cargo test` (e.g. a test name filter).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/tools.sh
# Istio's charts, which the build embeds (a clean clone has none; a no-op when they are there).
scripts/istio/fetch.sh >/dev/null

# A state directory of its own, so a developer's running plane is neither reused nor stopped.
state_parent="$(mktemp -d)"
export SMM_CLUSTER_DIR="$state_parent/cluster"
image_pid=""
stop_cluster() {
	# The image build runs in a process group of its own (below): end it with its cargo.
	if [[ -n "$image_pid" ]]; then kill -- "-$image_pid" 2>/dev/null || true; fi
	scripts/cluster.sh down || true
	rm -rf "$state_parent"
}
trap stop_cluster EXIT

# Compile while the plane starts: they take a while and none needs the others. The e2e tests run
# Istio's istiod (pilot-discovery) as a local process, the GitOps test Argo CD's repo server
# and application controller, the chart tests promtool and Jaeger; their build scripts cache them by
# version, so only the first run (or a version bump) pays for a build. The fault campaign is not among --all-targets
# (`test = false`), so it is named.
cargo build --locked --all-targets --test faults &
build_pid=$!
scripts/istio/build.sh >/dev/null &
istiod_pid=$!
scripts/argocd/build.sh >/dev/null &
argocd_pid=$!
scripts/prometheus/build.sh >/dev/null &
promtool_pid=$!
scripts/jaeger/build.sh >/dev/null &
jaeger_pid=$!
kubeconfig="$(scripts/cluster.sh up | tail -n 1)"
wait "$build_pid"
wait "$istiod_pid"
wait "$argocd_pid"
wait "$promtool_pid"
wait "$jaeger_pid"
export KUBECONFIG="$kubeconfig"
export PATH="$root/.tools:$PATH"

# The operator image needs a release build of smm: run it while fmt and clippy run (the release
# profile has its own build directory and lock), and check the image before the tests, so that
# cargo test's summary stays the last thing printed. setsid gives it a process group to stop.
setsid scripts/image.sh >"$state_parent/image.log" 2>&1 &
image_pid=$!

cargo fmt --check
# --all-targets leaves out test = false targets: name the fault campaign too.
cargo clippy --locked --all-targets --test faults -- -D warnings

if ! wait "$image_pid"; then
	image_pid=""
	cat "$state_parent/image.log" >&2
	echo "test: scripts/image.sh failed" >&2
	exit 1
fi
image_pid=""
grep '^image: ' "$state_parent/image.log" >&2
scripts/image-check.sh

cargo test --locked "$@"

# The fault campaign (tests/faults/, `test = false`) last and alone: it kills smm processes,
# restarts the API server and counts helm processes. --nocapture so that every fault's line
# reaches the log; it ends with `N passed, N failed`, then cargo's summary. Skipped when
# arguments narrow the run to some tests.
if [[ $# -eq 0 ]]; then
	# A fresh plane: the operator faults reconcile every ControlPlane in the cluster, and Istio
	# keeps some objects cluster-wide, so nothing the suite above left may be there.
	scripts/cluster.sh down
	kubeconfig="$(scripts/cluster.sh up | tail -n 1)"
	export KUBECONFIG="$kubeconfig"
	SMM_FAULTS="${SMM_FAULTS:-24}" cargo test --locked --test faults -- --nocapture
fi
