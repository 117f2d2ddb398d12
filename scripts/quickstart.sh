#!/usr/bin/env bash
# From a fresh machine to a mesh: installs helm and kubectl into .tools/, starts the local
# control plane (kept running afterwards; stop it with `scripts/cluster.sh down`), builds smm
# and installs every component with it. The local plane's nodes are fake (kwok): workloads are
# scheduled and reported Running and Ready, but no container runs, so istiod runs as a local
# process (scripts/istio/istiod.sh) to serve its webhooks; everything else (CRDs, RBAC, webhooks,
# services, releases) is real.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/tools.sh
# Istio's charts, which the build embeds.
scripts/istio/fetch.sh >/dev/null
kubeconfig="$(scripts/cluster.sh up | tail -n 1)"
cargo build --locked --release
# istiod's own server, run on loopback below: nothing runs the pods of the local plane, and the
# gateways' pods are admitted only through istiod's injector.
scripts/istio/build.sh >/dev/null
export KUBECONFIG="$kubeconfig" SMM_HELM="$root/.tools/helm"

target/release/smm version
target/release/smm install istiod
scripts/istio/istiod.sh start >/dev/null
target/release/smm install --all
target/release/smm status
echo
echo "The local cluster and istiod keep running (stop istiod with scripts/istio/istiod.sh stop)."
echo "To use the cluster from your shell:"
echo "  eval \"\$(scripts/cluster.sh env)\" && export SMM_HELM=$root/.tools/helm"
