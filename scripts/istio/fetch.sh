#!/usr/bin/env bash
# Fetches Istio's own Helm charts (those charts.txt lists: base, istiod, gateway, istio-cni,
# ztunnel) from the istio.io/istio module version pinned in versions.env, and the Gateway API CRDs
# of the version Istio requires, into the git-ignored .upstream/istio/ of the repository, where
# the Rust build embeds them. Prints that directory as the last line on stdout.
#
#   .upstream/istio/charts/<name>   each chart of charts.txt (base with files/crd-all.gen.yaml)
#   .upstream/istio/addons/<name>.yaml  Istio's sample add-ons (prometheus, grafana, jaeger,
#                                   kiali), whose image tags smm's own add-on charts install
#   .upstream/istio/dashboards/<name>.json  Istio's Grafana dashboards (manifests/addons/dashboards,
#                                   named as Istio's own Grafana sample names them), which the
#                                   build compacts into the grafana chart
#   .upstream/istio/gateway-api/<name>.yaml  the Gateway API's standard channel CRDs, from the
#                                   sigs.k8s.io/gateway-api version go.mod requires (Istio's own
#                                   requirement), which smm applies for ambient meshes' waypoints
#   .upstream/istio/min-kubernetes  the oldest Kubernetes minor version Istio supports, as
#                                   istioctl's precheck reads it (MinK8SVersion), for `smm check`
#   .upstream/istio/stamp           what was fetched (version, module checksum, chart names)
#
# The charts are copied unchanged: nothing of upstream is committed or edited; the values smm
# sets (global.hub, global.tag, ...) are passed at install time. Idempotent: when the stamp
# matches versions.env and go.sum, nothing is downloaded or copied.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# -mod=readonly: a download that go.sum does not vouch for is an error, never a go.sum update.
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly

dest="$root/.upstream/istio"
# "chart name in smm   path inside the module", one per chart (build.rs reads the same file).
mapfile -t charts < <(grep -Ev '^[[:space:]]*(#|$)' "$here/charts.txt")

# The module's checksum as our go.sum records it: the stamp names exactly what was verified, and
# a go.sum change (a re-pinned hash) invalidates the fetched copy even at the same version.
module_sum="$(awk -v v="$ISTIO_MODULE_VERSION" '$1 == "istio.io/istio" && $2 == v { print $3 }' "$here/go.sum")"
[[ -n "$module_sum" ]] || {
	echo "fetch: scripts/istio/go.sum has no istio.io/istio $ISTIO_MODULE_VERSION; run scripts/istio/gen-module.sh" >&2
	exit 1
}
# The Gateway API's CRDs come from the version Istio itself requires (go.mod, go.sum-checked): the
# one istiod's waypoint and gateway controllers are built against. Never pinned apart from Istio.
gateway_api_version="$(awk '$1 == "sigs.k8s.io/gateway-api" { print $2 }' "$here/go.mod")"
gateway_api_sum="$(awk -v v="$gateway_api_version" '$1 == "sigs.k8s.io/gateway-api" && $2 == v { print $3 }' "$here/go.sum")"
[[ -n "$gateway_api_version" && -n "$gateway_api_sum" ]] || {
	echo "fetch: scripts/istio/go.mod/go.sum name no sigs.k8s.io/gateway-api; run scripts/istio/gen-module.sh" >&2
	exit 1
}
stamp_text="$(printf 'module istio.io/istio\nversion %s\nsum %s\ncharts %s\ngateway-api %s %s\n' \
	"$ISTIO_MODULE_VERSION" "$module_sum" "$(printf '%s\n' "${charts[@]}" | awk '{ print $1 }' | paste -sd' ')" \
	"$gateway_api_version" "$gateway_api_sum")"

up_to_date() {
	local spec
	[[ -f "$dest/stamp" && "$(cat "$dest/stamp")" == "$stamp_text" ]] || return 1
	for spec in "${charts[@]}"; do
		[[ -f "$dest/charts/${spec%% *}/Chart.yaml" ]] || return 1
	done
	[[ -s "$dest/min-kubernetes" && -f "$dest/addons/prometheus.yaml" && -d "$dest/dashboards" &&
		-f "$dest/gateway-api/gateway.networking.k8s.io_gateways.yaml" ]]
}

if up_to_date; then
	echo "$dest"
	exit 0
fi

# The version go resolves MODULE to and its directory in the module cache, on one line. Run
# inside our module, without a version: go resolves it from our go.mod and checks the download
# against our go.sum (and the checksum database on first download).
resolve_module() {
	(cd "$here" && go mod download -json "$1") | python3 -c '
import json, sys
m = json.load(sys.stdin)
if m.get("Error"):
    sys.exit("fetch: " + m["Error"])
print(m["Version"], m["Dir"])
'
}

read -r version module_dir < <(resolve_module istio.io/istio)
if [[ "$version" != "$ISTIO_MODULE_VERSION" ]]; then
	echo "fetch: go.mod requires istio.io/istio $version but versions.env pins $ISTIO_MODULE_VERSION; run scripts/istio/gen-module.sh" >&2
	exit 1
fi

# Built beside the destination and swapped in by rename, so an interrupted fetch never leaves a
# half-copied chart that the stamp would vouch for.
mkdir -p "$root/.upstream"
staging="$(mktemp -d "$root/.upstream/.istio.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
mkdir "$staging/charts"
for spec in "${charts[@]}"; do
	read -r name path <<<"$spec"
	[[ -f "$module_dir/$path/Chart.yaml" ]] || {
		echo "fetch: istio.io/istio@$version has no chart at $path" >&2
		exit 1
	}
	# The module cache is read-only; the copy must be writable so the next fetch can remove it.
	cp -R --no-preserve=mode,ownership "$module_dir/$path" "$staging/charts/$name"
done
# The one number of istioctl's code smm needs: istioctl refuses clusters older than it, and so
# does `smm check --pre`. Read from the module, never written down by hand.
k8sversion="$module_dir/istioctl/pkg/install/k8sversion/version.go"
min_minor="$(sed -nE 's/^[[:space:]]*MinK8SVersion[[:space:]]*=[[:space:]]*([0-9]+).*/\1/p' "$k8sversion")"
[[ -n "$min_minor" ]] || {
	echo "fetch: no MinK8SVersion in $k8sversion" >&2
	exit 1
}
printf '%s\n' "$min_minor" >"$staging/min-kubernetes"
# The add-ons Istio tests its release with: smm installs the same images (build.rs reads them).
mkdir "$staging/addons"
for addon in prometheus grafana jaeger kiali; do
	cp --no-preserve=mode,ownership "$module_dir/samples/addons/$addon.yaml" "$staging/addons/"
done
# Istio's Grafana dashboards, the JSON files beside their jsonnet sources (jsonnetfile*.json are
# the generator's, not dashboards). Generated ones lose their `.gen`, as in Istio's own sample.
mkdir "$staging/dashboards"
for dashboard in "$module_dir"/manifests/addons/dashboards/*.json; do
	name="$(basename "$dashboard")"
	[[ "$name" == jsonnetfile* ]] && continue
	cp --no-preserve=mode,ownership "$dashboard" "$staging/dashboards/${name/.gen.json/.json}"
done
[[ -n "$(ls "$staging/dashboards")" ]] || {
	echo "fetch: istio.io/istio@$version has no dashboards in manifests/addons/dashboards" >&2
	exit 1
}
# The Gateway API's standard channel CRDs, one file each. Its admission policy (the `vap_` file,
# which refuses experimental or pre-1.5 CRDs cluster-wide) is left out: it governs everyone's
# CRDs, and smm's own apply already never replaces a newer or experimental bundle.
read -r gateway_api_resolved gateway_api_dir < <(resolve_module sigs.k8s.io/gateway-api)
[[ "$gateway_api_resolved" == "$gateway_api_version" ]] || {
	echo "fetch: go resolved sigs.k8s.io/gateway-api $gateway_api_resolved, go.mod requires $gateway_api_version" >&2
	exit 1
}
mkdir "$staging/gateway-api"
for crd in "$gateway_api_dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
	[[ "$(basename "$crd")" == *_vap_* ]] && continue
	cp --no-preserve=mode,ownership "$crd" "$staging/gateway-api/"
done
printf '%s\n' "$stamp_text" >"$staging/stamp"
chmod 755 "$staging"

old="$root/.upstream/.istio.old.$$"
[[ -e "$dest" ]] && mv "$dest" "$old"
mv "$staging" "$dest"
rm -rf "$old"
trap - EXIT
echo "fetch: Istio charts from istio.io/istio@$version and the Gateway API CRDs $gateway_api_version in $dest" >&2
echo "$dest"
