#!/usr/bin/env bash
# Regenerates this wrapper module's go.mod/go.sum for the Prometheus pinned in versions.env, with
# promtool as the tool it builds (see scripts/lib/go-tool.sh). Run it only when bumping that
# version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../lib/go-tool.sh
source "$here/../lib/go-tool.sh"
go_tool_gen_module "$here" prometheus github.com/prometheus/prometheus \
	"$PROMETHEUS_MODULE_VERSION" github.com/prometheus/prometheus/cmd/promtool
