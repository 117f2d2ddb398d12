#!/usr/bin/env bash
# Builds promtool from the Prometheus pinned in versions.env into the cache directory and prints
# the binary's path as the last line on stdout; a second run with the same inputs rebuilds
# nothing (see scripts/lib/go-tool.sh). The test of the prometheus chart runs `promtool check
# config` and `check rules` on what it renders.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../lib/go-tool.sh
source "$here/../lib/go-tool.sh"
# Prometheus 3 publishes v3.M.P as the module version v0.3MM.P; its release builds stamp the
# release version (promtool --version), as here.
number="${PROMETHEUS_MODULE_VERSION#v0.}"
release="$((${number%%.*} / 100)).$((${number%%.*} % 100)).${number#*.}"
go_tool_build "$here" promtool "$PROMETHEUS_MODULE_VERSION" \
	github.com/prometheus/prometheus/cmd/promtool \
	"-X github.com/prometheus/common/version.Version=$release"
