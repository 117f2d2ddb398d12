# shellcheck shell=bash
# The plane's state directory, which cluster.sh and istio/istiod.sh must agree on (both source
# this file): $SMM_CLUSTER_DIR, by default ~/.cache/smm/cluster/run.
plane_dir="${SMM_CLUSTER_DIR:-${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/cluster/run}"
