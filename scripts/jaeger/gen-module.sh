#!/usr/bin/env bash
# Regenerates this wrapper module's go.mod/go.sum for the Jaeger pinned in versions.env, with
# cmd/jaeger as the tool it builds (see scripts/lib/go-tool.sh). Run it only when bumping that
# version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../lib/go-tool.sh
source "$here/../lib/go-tool.sh"
go_tool_gen_module "$here" jaeger github.com/jaegertracing/jaeger \
	"$JAEGER_MODULE_VERSION" github.com/jaegertracing/jaeger/cmd/jaeger
