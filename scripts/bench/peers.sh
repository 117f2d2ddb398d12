#!/usr/bin/env bash
# Builds the benchmark's peers that are not part of smm's toolset, with `go install` from the Go
# module proxy, into ~/.cache/smm/bench/ (SMM_CACHE_DIR as elsewhere): helmfile, and the helm-diff
# plugin that `helmfile apply` needs (installed as a helm plugin in a private HELM_PLUGINS
# directory). Idempotent. Prints shell assignments on stdout:
#   HELMFILE=path-or-empty  HELM_PLUGINS=dir  HELM_DIFF=path-or-empty
# A peer that does not build is left empty (the benchmark then reports it as not measured) and
# the reason goes to stderr and $cache/<peer>.log.
set -uo pipefail
cache="${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/bench"
# Pinned, so a recorded run can be reproduced.
HELMFILE_VERSION="${HELMFILE_VERSION:-v1.1.7}"
HELM_DIFF_VERSION="${HELM_DIFF_VERSION:-v3.13.1}"
mkdir -p "$cache/bin" "$cache/helm-plugins"
log() { echo "bench-peers: $*" >&2; }

build() { # name module version
	local name="$1" module="$2" version="$3" stamp="$cache/bin/.$1.$3"
	if [[ -x "$cache/bin/$name" && -f "$stamp" ]]; then
		return 0
	fi
	log "go install $module@$version (log: $cache/$name.log)"
	if GOBIN="$cache/bin" GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
		go install "$module@$version" >"$cache/$name.log" 2>&1; then
		touch "$stamp"
	else
		log "$name did not build: $(tail -n 3 "$cache/$name.log" | tr '\n' ' ')"
		return 1
	fi
}

helmfile=""
if build helmfile github.com/helmfile/helmfile "$HELMFILE_VERSION"; then
	helmfile="$cache/bin/helmfile"
fi
helm_diff=""
if build helm-diff github.com/databus23/helm-diff/v3 "$HELM_DIFF_VERSION"; then
	# A helm plugin is a directory with plugin.yaml and the binary it names.
	plugin="$cache/helm-plugins/diff"
	mkdir -p "$plugin/bin"
	cp "$cache/bin/helm-diff" "$plugin/bin/diff"
	cat >"$plugin/plugin.yaml" <<YAML
name: "diff"
version: "${HELM_DIFF_VERSION#v}"
usage: "Preview helm upgrade changes as a diff"
description: "Preview helm upgrade changes as a diff"
useTunnel: true
command: "\$HELM_PLUGIN_DIR/bin/diff"
YAML
	helm_diff="$plugin/bin/diff"
fi
echo "HELMFILE=$helmfile"
echo "HELM_PLUGINS=$cache/helm-plugins"
echo "HELM_DIFF=$helm_diff"
