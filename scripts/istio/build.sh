#!/usr/bin/env bash
# Builds istiod's server, pilot-discovery, from the istio.io/istio version pinned in versions.env
# into the cache directory and prints the binary's path as the last line on stdout. A second run
# with the same inputs rebuilds nothing. Tests run it as a local process (see README, "Istio from
# upstream"); a cold build takes minutes, so CI should keep GOMODCACHE and GOCACHE.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# The committed go.sum must verify everything: -mod=readonly makes a missing or changed sum an
# error instead of a silent update. GOTOOLCHAIN=local: never fetch another Go toolchain.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

cache_root="${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/istio"
bin_dir="$cache_root/${ISTIO_MODULE_VERSION}/bin"
# Everything that decides the binary's content: a change to any of it means a rebuild.
inputs_digest="$( (cd "$here" && cat versions.env go.mod go.sum build.sh && go env GOVERSION) |
	sha256sum | cut -d' ' -f1)"
stamp="$bin_dir/.inputs-sha256"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_digest" && -x "$bin_dir/pilot-discovery" ]]; then
	echo "$bin_dir/pilot-discovery"
	exit 0
fi
mkdir -p "$bin_dir"
started=$SECONDS

# A pseudo-version ends in the commit's 12-digit short hash; the release line is the module's
# VERSION file. Upstream stamps the same variables (its release tooling fills them in); unstamped,
# istiod reports "unknown" in its logs, user agent and version endpoint.
revision="${ISTIO_MODULE_VERSION##*-}"
# Downloaded (and checked against go.sum) if the module cache does not have it yet.
module_dir="$(cd "$here" && go mod download -json istio.io/istio |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
line="$(tr -d '[:space:]' <"$module_dir/VERSION")"
pkg=istio.io/istio/pkg/version
ldflags="-s -w -X $pkg.buildVersion=${line}-alpha.${revision} -X $pkg.buildGitRevision=${revision}"
ldflags+=" -X $pkg.buildStatus=Clean -X $pkg.buildTag=${ISTIO_MODULE_VERSION}"
ldflags+=" -X $pkg.buildOS=$(go env GOOS) -X $pkg.buildArch=$(go env GOARCH)"

echo "building pilot-discovery from istio.io/istio@${ISTIO_MODULE_VERSION} (a cold build takes minutes)" >&2
# The tags upstream's Makefile uses for its standard binaries: vtprotobuf selects the faster
# generated marshalling code, disable_pgv leaves out protoc-gen-validate's validators.
(cd "$here" && go build -trimpath -tags vtprotobuf,disable_pgv -ldflags "$ldflags" \
	-o "$bin_dir/pilot-discovery.partial" istio.io/istio/pilot/cmd/pilot-discovery)
mv "$bin_dir/pilot-discovery.partial" "$bin_dir/pilot-discovery"

echo "$inputs_digest" >"$stamp"
echo "built in $((SECONDS - started))s" >&2
echo "$bin_dir/pilot-discovery"
