#!/usr/bin/env bash
# Builds what the GitOps tests run of Argo CD, from the versions pinned in versions.env, into the
# cache directory, and prints that directory as the last line on stdout:
#
#   bin/argocd            the multi-call binary (it runs as argocd-repo-server,
#                         argocd-application-controller, ... by the name it is called by)
#   bin/argocd-*          those names, as links to it
#   bin/kustomize         the kustomize the repo server runs
#   bin/*-wrapper.sh      argo-cd's git and gpg wrappers, which the repo server runs from PATH
#   manifests/            argo-cd's CRDs and base configuration, applied by argocd.sh
#
# A second run with the same inputs rebuilds nothing. A cold build takes about 5 minutes on two
# cores; the test script starts it beside cargo's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# The committed go.sum files must verify everything: -mod=readonly makes a missing or changed sum
# an error instead of a silent update. GOTOOLCHAIN=local: never fetch another Go toolchain.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

cache_root="${SMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smm}/argocd"
out="$cache_root/$ARGOCD_VERSION"
inputs_digest="$( (cd "$here" && cat versions.env go.mod go.sum kustomize/go.mod kustomize/go.sum build.sh &&
	go env GOVERSION) | sha256sum | cut -d' ' -f1)"
stamp="$out/.inputs-sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$inputs_digest" ]]; then
	echo "$out"
	exit 0
fi
rm -rf "$out"
mkdir -p "$out/bin" "$out/manifests"
started=$SECONDS

module=github.com/argoproj/argo-cd/v3
# Downloaded (and checked against go.sum) if the module cache does not have it yet.
module_dir="$(cd "$here" && go mod download -json "$module" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
echo "building argocd from $module@$ARGOCD_VERSION (a cold build takes about 5 minutes)" >&2
(cd "$here" && go build -trimpath -ldflags "-s -w -X $module/common.version=${ARGOCD_VERSION#v}" \
	-o "$out/bin/argocd" "$module/cmd")
(cd "$here/kustomize" && go build -trimpath -ldflags "-s -w" -o "$out/bin/kustomize" \
	sigs.k8s.io/kustomize/kustomize/v5)
for name in argocd-repo-server argocd-application-controller argocd-applicationset-controller; do
	ln -s argocd "$out/bin/$name"
done
# The repo server runs these from PATH for every manifest it generates (the image puts them in
# /usr/local/bin), GPG verification off or not.
install -m 0755 "$module_dir/hack/git-verify-wrapper.sh" "$module_dir/hack/gpg-wrapper.sh" "$out/bin/"
cp -R --no-preserve=mode,ownership "$module_dir/manifests/crds" "$module_dir/manifests/base/config" \
	"$out/manifests/"

echo "$inputs_digest" >"$stamp"
echo "built in $((SECONDS - started))s" >&2
echo "$out"
