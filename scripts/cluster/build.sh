#!/usr/bin/env bash
# Builds the local control plane's binaries once into the cache directory and prints that bin
# directory. A second run with the same inputs rebuilds nothing.
#
# Three groups, each with its own stamp (a digest of exactly the files that decide its binaries),
# so that adding or bumping one group leaves the others' binaries valid:
#   etcd, kube-apiserver, kube-controller-manager   .inputs-sha256
#   kube-scheduler (same kube wrapper module)        .kube-scheduler.inputs-sha256
#   kwok (its own wrapper module)                    .kwok.inputs-sha256
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local CGO_ENABLED=0

cache_root="${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/cluster"
bin_dir="$cache_root/${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}/bin"
mkdir -p "$bin_dir"
# Two test runs starting at once would otherwise both build into the same directory, each taking
# minutes of the same CPUs; the second waits and then finds everything stamped.
exec 8>"$bin_dir.build.lock"
flock 8

fresh() { # stamp-name digest
	[[ -f "$bin_dir/$1" && "$(cat "$bin_dir/$1")" == "$2" ]]
}

# versions.env without KWOK_VERSION: the kwok version decides nothing in these binaries, and
# the digest stays what it was before kwok was added, so existing builds stay valid.
core_digest="$(cd "$here" && { grep -v '^KWOK_VERSION=' versions.env; cat kube/go.mod kube/go.sum \
	kube/cmd/kube-apiserver/main.go kube/cmd/kube-controller-manager/main.go \
	etcd/go.mod etcd/go.sum etcd/main.go; } | sha256sum | cut -d' ' -f1)"
scheduler_digest="$(cd "$here" && { grep '^KUBERNETES_VERSION=' versions.env; cat kube/go.mod \
	kube/go.sum kube/cmd/kube-scheduler/main.go; } | sha256sum | cut -d' ' -f1)"
kwok_digest="$(cd "$here" && { grep '^KWOK_VERSION=' versions.env; cat kwok/go.mod \
	kwok/go.sum; } | sha256sum | cut -d' ' -f1)"

# kwok's PortForward CRD, from the kwok module itself: cluster.sh applies it so that a test can
# tell kwok where a pod's port leads. Kept beside the binary, under the same version.
kwok_crd="$bin_dir/kwok-${KWOK_VERSION}-portforwards.yaml"

if fresh .inputs-sha256 "$core_digest" && fresh .kube-scheduler.inputs-sha256 "$scheduler_digest" &&
	fresh .kwok.inputs-sha256 "$kwok_digest" && [[ -s "$kwok_crd" ]]; then
	echo "$bin_dir"
	exit 0
fi
started=$SECONDS

minor="${KUBERNETES_VERSION#v1.}"
minor="${minor%%.*}"
# Without the stamp the binaries report v0.0.0-master, which fails helm's kubeVersion checks.
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	version_flags+=" -X $pkg.gitVersion=${KUBERNETES_VERSION} -X $pkg.gitMajor=1"
	version_flags+=" -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean"
done
kube_build() { # packages...
	(cd "$here/kube" && go build -trimpath -tags selinux,notest,grpcnotrace \
		-ldflags "-s -w${version_flags}" -o "$bin_dir/" "$@")
}

if ! fresh .inputs-sha256 "$core_digest"; then
	rm -f "$bin_dir/.inputs-sha256"
	echo "building kube-apiserver and kube-controller-manager ${KUBERNETES_VERSION} (first build takes a while)" >&2
	kube_build ./cmd/kube-apiserver ./cmd/kube-controller-manager
	echo "building etcd ${ETCD_VERSION}" >&2
	(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd" .)
	echo "$core_digest" >"$bin_dir/.inputs-sha256"
fi
if ! fresh .kube-scheduler.inputs-sha256 "$scheduler_digest"; then
	rm -f "$bin_dir/.kube-scheduler.inputs-sha256"
	echo "building kube-scheduler ${KUBERNETES_VERSION}" >&2
	kube_build ./cmd/kube-scheduler
	echo "$scheduler_digest" >"$bin_dir/.kube-scheduler.inputs-sha256"
fi
if ! fresh .kwok.inputs-sha256 "$kwok_digest"; then
	rm -f "$bin_dir/.kwok.inputs-sha256"
	echo "building kwok ${KWOK_VERSION}" >&2
	# kwok's own main package, named through the `tool` line of the wrapper's go.mod, which pins
	# it and all its dependencies in go.sum. Its version constant has no leading v.
	(cd "$here/kwok" && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
		-o "$bin_dir/kwok" sigs.k8s.io/kwok/cmd/kwok)
	echo "$kwok_digest" >"$bin_dir/.kwok.inputs-sha256"
fi
if [[ ! -s "$kwok_crd" ]]; then
	kwok_module="$(cd "$here/kwok" && go mod download sigs.k8s.io/kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
	cp "$kwok_module/kustomize/crd/bases/kwok.x-k8s.io_portforwards.yaml" "$kwok_crd.tmp"
	mv "$kwok_crd.tmp" "$kwok_crd"
fi

echo "built in $((SECONDS - started))s" >&2
echo "$bin_dir"
