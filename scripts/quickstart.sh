#!/usr/bin/env bash
# From a fresh machine to a mesh: installs helm and kubectl into .tools/, starts the local
# control plane (kept running afterwards; stop it with `scripts/cluster.sh down`), builds smm
# and installs every component with it. The local plane's nodes are fake (kwok): workloads are
# scheduled and reported Running and Ready, but no container runs; everything else (CRDs, RBAC,
# webhooks, services, releases) is real.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/tools.sh
# Istio's charts, which the build embeds.
scripts/istio/fetch.sh >/dev/null
kubeconfig="$(scripts/cluster.sh up | tail -n 1)"
cargo build --locked --release
export KUBECONFIG="$kubeconfig" SMM_HELM="$root/.tools/helm"

target/release/smm version
target/release/smm install --all
target/release/smm status
echo
echo "The local cluster keeps running. To use it from your shell:"
echo "  eval \"\$(scripts/cluster.sh env)\" && export SMM_HELM=$root/.tools/helm"
