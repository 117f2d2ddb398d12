#!/usr/bin/env bash
# From a fresh machine to a running smm: installs helm and kubectl into .tools/, starts the local
# control plane (kept running afterwards; stop it with `scripts/cluster.sh down`), builds smm
# and runs it against that cluster.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/tools.sh
kubeconfig="$(scripts/cluster.sh up | tail -n 1)"
cargo build --locked --release
export KUBECONFIG="$kubeconfig" SMM_HELM="$root/.tools/helm"

target/release/smm --help
target/release/smm version
echo
echo "The local cluster keeps running. To use it from your shell:"
echo "  eval \"\$(scripts/cluster.sh env)\" && export SMM_HELM=$root/.tools/helm"
