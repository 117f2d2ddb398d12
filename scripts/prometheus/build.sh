#!/usr/bin/env bash
# Builds promtool from the Prometheus pinned in versions.env into the cache directory and prints
# the binary's path as the last line on stdout; a second run with the same inputs rebuilds
# nothing. The test of the prometheus chart runs `promtool check config` on what it renders.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# Everything verified against our go.sum; never another Go toolchain.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

bin_dir="${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/prometheus/$PROMETHEUS_MODULE_VERSION"
inputs_digest="$( (cd "$here" && cat versions.env go.mod go.sum build.sh && go env GOVERSION) |
	sha256sum | cut -d' ' -f1)"
if [[ -x "$bin_dir/promtool" && "$(cat "$bin_dir/.inputs-sha256" 2>/dev/null)" == "$inputs_digest" ]]; then
	echo "$bin_dir/promtool"
	exit 0
fi
mkdir -p "$bin_dir"
started=$SECONDS
echo "building promtool from github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION" >&2
# Prometheus 3 publishes v3.M.P as the module version v0.3MM.P; its release builds stamp the
# release version (promtool --version), as here.
number="${PROMETHEUS_MODULE_VERSION#v0.}"
release="$((${number%%.*} / 100)).$((${number%%.*} % 100)).${number#*.}"
(cd "$here" && go build -trimpath \
	-ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
	-o "$bin_dir/promtool.partial" github.com/prometheus/prometheus/cmd/promtool)
mv "$bin_dir/promtool.partial" "$bin_dir/promtool"
echo "$inputs_digest" >"$bin_dir/.inputs-sha256"
echo "built in $((SECONDS - started))s" >&2
echo "$bin_dir/promtool"
