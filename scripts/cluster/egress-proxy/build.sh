#!/usr/bin/env bash
# Builds egress-proxy into the directory given (cluster.sh passes the plane's bin directory) and
# prints the binary's path. Separate from ../build.sh on purpose: the proxy is stdlib-only and
# builds in a second, so it gets its own stamp instead of joining the Kubernetes inputs digest,
# where any change to it would force a rebuild of kube-apiserver.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:?usage: build.sh DEST-DIR}"
export GOTOOLCHAIN=local CGO_ENABLED=0

inputs_digest="$( (cd "$here" && cat go.mod main.go build.sh && go env GOVERSION) | sha256sum | cut -d' ' -f1)"
stamp="$dest/.egress-proxy-sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_digest" && -x "$dest/egress-proxy" ]]; then
	echo "$dest/egress-proxy"
	exit 0
fi
mkdir -p "$dest"
# Built beside the target and renamed into place, so a plane starting meanwhile never runs a
# half-written binary.
(cd "$here" && go build -trimpath -ldflags "-s -w" -o "$dest/egress-proxy.partial" .)
mv "$dest/egress-proxy.partial" "$dest/egress-proxy"
echo "$inputs_digest" >"$stamp"
echo "$dest/egress-proxy"
