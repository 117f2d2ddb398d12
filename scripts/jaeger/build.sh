#!/usr/bin/env bash
# Builds the Jaeger 2 binary (cmd/jaeger) from the Jaeger pinned in versions.env into the cache
# directory and prints the binary's path as the last line on stdout; a second run with the same
# inputs rebuilds nothing (see scripts/lib/go-tool.sh). The test of the tracing chart runs it with
# the configuration the chart renders. A cold build takes 10-20 minutes on two cores; the test
# script starts it beside cargo's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../lib/go-tool.sh
source "$here/../lib/go-tool.sh"
# Jaeger's release builds stamp the v2 release (`jaeger version`, the build_info metric) as here;
# the commit and date they also stamp come from git, which a module has not.
go_tool_build "$here" jaeger "$JAEGER_MODULE_VERSION" \
	github.com/jaegertracing/jaeger/cmd/jaeger \
	"-X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_RELEASE"
