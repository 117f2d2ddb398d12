#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager once into the cache directory and
# prints that bin directory. A second run with the same inputs rebuilds nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local CGO_ENABLED=0

cache_root="${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/cluster"
bin_dir="$cache_root/${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}/bin"
# Everything that decides the binaries' content: a change to any of it means a rebuild.
inputs_digest="$(cd "$here" && cat versions.env kube/go.mod kube/go.sum kube/cmd/*/main.go \
	etcd/go.mod etcd/go.sum etcd/main.go | sha256sum | cut -d' ' -f1)"
stamp="$bin_dir/.inputs-sha256"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_digest" ]]; then
	echo "$bin_dir"
	exit 0
fi
mkdir -p "$bin_dir"
started=$SECONDS

minor="${KUBERNETES_VERSION#v1.}"
minor="${minor%%.*}"
# Without the stamp the binaries report v0.0.0-master, which fails helm's kubeVersion checks.
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	version_flags+=" -X $pkg.gitVersion=${KUBERNETES_VERSION} -X $pkg.gitMajor=1"
	version_flags+=" -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean"
done

echo "building kube-apiserver and kube-controller-manager ${KUBERNETES_VERSION} (first build takes a while)" >&2
(cd "$here/kube" && go build -trimpath -tags selinux,notest,grpcnotrace \
	-ldflags "-s -w${version_flags}" -o "$bin_dir/" ./cmd/...)
echo "building etcd ${ETCD_VERSION}" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd" .)

echo "$inputs_digest" >"$stamp"
echo "built in $((SECONDS - started))s" >&2
echo "$bin_dir"
