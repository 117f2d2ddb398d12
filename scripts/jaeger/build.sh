#!/usr/bin/env bash
# Builds the Jaeger 2 binary (cmd/jaeger) from the Jaeger pinned in versions.env into the cache
# directory and prints the binary's path as the last line on stdout; a second run with the same
# inputs rebuilds nothing. The test of the tracing chart runs it with the configuration the chart
# renders. A cold build takes 10-20 minutes on two cores; the test script starts it beside cargo's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# Everything verified against our go.sum; never another Go toolchain.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

bin_dir="${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/jaeger/$JAEGER_MODULE_VERSION"
inputs_digest="$( (cd "$here" && cat versions.env go.mod go.sum build.sh && go env GOVERSION) |
	sha256sum | cut -d' ' -f1)"
if [[ -x "$bin_dir/jaeger" && "$(cat "$bin_dir/.inputs-sha256" 2>/dev/null)" == "$inputs_digest" ]]; then
	echo "$bin_dir/jaeger"
	exit 0
fi
mkdir -p "$bin_dir"
started=$SECONDS
echo "building jaeger from github.com/jaegertracing/jaeger@$JAEGER_MODULE_VERSION ($JAEGER_RELEASE)" >&2
# Jaeger's release builds stamp the v2 release (`jaeger version`, the build_info metric) as here;
# the commit and date they also stamp come from git, which a module has not.
(cd "$here" && go build -trimpath \
	-ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_RELEASE" \
	-o "$bin_dir/jaeger.partial" github.com/jaegertracing/jaeger/cmd/jaeger)
mv "$bin_dir/jaeger.partial" "$bin_dir/jaeger"
echo "$inputs_digest" >"$bin_dir/.inputs-sha256"
echo "built in $((SECONDS - started))s" >&2
echo "$bin_dir/jaeger"
