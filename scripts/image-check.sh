#!/usr/bin/env bash
# Checks the operator image that scripts/image.sh built (target/image/), with tools that did not
# write it: skopeo reads its manifest and config, umoci unpacks its root filesystem, and smm and
# helm then run inside that filesystem under chroot as the image's user, with the image's
# environment, so a missing library or file fails here rather than in a cluster. Also asserts the
# image holds exactly the expected files (no shell, no package manager), that a registry (a private
# one on loopback) serves it under the recorded digest after a push, and that building it again
# gives the same digest. Needs root (chroot, device nodes, umoci's unpack keeps owners).
#
#   scripts/image-check.sh            exits non-zero if any check fails
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
image_dir="$root/target/image"
archive="$image_dir/smm-operator.tar"

# What the image must hold, no more and no less. A change to what scripts/oci_image.py puts in
# changes this list too, on purpose: growing the image should be a decision.
expected_files='/etc
/etc/group
/etc/nsswitch.conf
/etc/passwd
/etc/ssl
/etc/ssl/certs
/etc/ssl/certs/ca-certificates.crt
/lib
/lib/x86_64-linux-gnu
/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
/lib/x86_64-linux-gnu/libc.so.6
/lib/x86_64-linux-gnu/libgcc_s.so.1
/lib/x86_64-linux-gnu/libm.so.6
/lib64
/lib64/ld-linux-x86-64.so.2
/tmp
/usr
/usr/local
/usr/local/bin
/usr/local/bin/helm
/usr/local/bin/smm
/usr/share
/usr/share/doc
/usr/share/doc/ca-certificates
/usr/share/doc/ca-certificates/copyright
/usr/share/doc/gcc-12-base
/usr/share/doc/gcc-12-base/copyright
/usr/share/doc/libc6
/usr/share/doc/libc6/copyright
/usr/share/doc/libgcc-s1
/var
/var/lib
/var/lib/dpkg
/var/lib/dpkg/status.d
/var/lib/dpkg/status.d/ca-certificates
/var/lib/dpkg/status.d/gcc-12-base
/var/lib/dpkg/status.d/libc6
/var/lib/dpkg/status.d/libgcc-s1'

passed=0
failed=0
pass() {
	echo "image-check: ok   $*"
	passed=$((passed + 1))
}
fail() {
	echo "image-check: FAIL $*"
	failed=$((failed + 1))
}
# expect DESCRIPTION ACTUAL WANTED
expect() {
	if [[ "$2" == "$3" ]]; then pass "$1"; else fail "$1: got '$2', want '$3'"; fi
}

# skopeo, umoci and a registry are Debian packages; install them on a machine that lacks them
# (CI's is fresh).
missing=()
for tool in skopeo umoci jq docker-registry; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
	echo "image-check: installing ${missing[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -f "$archive" ]]; then
	echo "image-check: $archive is missing: run scripts/image.sh first" >&2
	exit 1
fi

tmp="$(mktemp -d)"
registry_pid=""
cleanup() {
	if [[ -n "$registry_pid" ]]; then kill "$registry_pid" 2>/dev/null || true; fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# What the image must say about itself, worked out from the sources, not from the image.
version="$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["package"]["version"])')"
revision="$(git rev-parse HEAD)"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then revision="$revision-dirty"; fi
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"
helm_version="$("$root/.tools/helm" version --short)"

# --- manifest and config, as skopeo reads them from the archive ----------------------------------
digest="$(cat "$image_dir/smm-operator.digest")"
expect "the recorded digest is the archive's manifest digest" \
	"sha256:$(skopeo inspect --raw "oci-archive:$archive" | sha256sum | cut -d' ' -f1)" "$digest"
expect "the layout directory holds the same image" \
	"$(skopeo inspect "oci:$image_dir/oci:$version" | jq -r .Digest)" "$digest"
skopeo inspect --config "oci-archive:$archive" >"$tmp/config.json"
config() { jq -c "$1" "$tmp/config.json"; }
expect "architecture" "$(config .architecture)" '"amd64"'
expect "os" "$(config .os)" '"linux"'
expect "user" "$(config .config.User)" '"65532:65532"'
expect "entrypoint" "$(config .config.Entrypoint)" '["/usr/local/bin/smm"]'
expect "command" "$(config .config.Cmd)" '["operator","run"]'
expect "version label" "$(config '.config.Labels["org.opencontainers.image.version"]')" "\"$version\""
expect "revision label" "$(config '.config.Labels["org.opencontainers.image.revision"]')" "\"$revision\""
expect "source label" "$(config '.config.Labels | has("org.opencontainers.image.source")')" true
for variable in SMM_HELM=/usr/local/bin/helm HOME=/tmp HELM_CACHE_HOME=/tmp/helm/cache \
	HELM_CONFIG_HOME=/tmp/helm/config HELM_DATA_HOME=/tmp/helm/data; do
	expect "env $variable" "$(config "[.config.Env[] | select(. == \"$variable\")] | length")" 1
done

# --- the root filesystem, unpacked by umoci after skopeo verified every blob's digest ------------
skopeo copy --quiet "oci-archive:$archive" "oci:$tmp/layout:check"
umoci unpack --image "$tmp/layout:check" "$tmp/bundle" >/dev/null
rootfs="$tmp/bundle/rootfs"
files="$(cd "$rootfs" && find . -mindepth 1 -printf '/%P\n' | LC_ALL=C sort)"
if [[ "$files" == "$expected_files" ]]; then
	pass "the image holds exactly the expected $(wc -l <<<"$files") files and directories"
else
	fail "the image's files differ from the expected list (< image, > expected):"
	diff <(echo "$files") <(echo "$expected_files") || true
fi
for absent in bin/sh bin/bash bin/dash bin/busybox usr/bin/apt usr/bin/apt-get usr/bin/dpkg; do
	if [[ -e "$rootfs/$absent" || -L "$rootfs/$absent" ]]; then fail "/$absent exists"; fi
done
expect "nothing is owned by anyone but root" "$(find "$rootfs" -mindepth 1 \( ! -uid 0 -o ! -gid 0 \) | wc -l)" 0
expect "/tmp is world-writable and sticky" "$(stat -c %a "$rootfs/tmp")" 1777
expect "nonroot is user 65532" "$(grep '^nonroot:' "$rootfs/etc/passwd" | cut -d: -f3,4)" 65532:65532
expect "the CA bundle holds certificates" \
	"$(($(grep -c 'BEGIN CERTIFICATE' "$rootfs/etc/ssl/certs/ca-certificates.crt") > 100))" 1

# Every entry of the layer carries the commit's time and owner 0:0, so the layer is reproducible.
layer="$(jq -r '.layers[0].digest' <(skopeo inspect --raw "oci-archive:$archive"))"
expect "layer entries have one time ($epoch) and owner 0:0" "$(python3 - "$tmp/layout/blobs/sha256/${layer#sha256:}" "$epoch" <<'PY'
import sys, tarfile
with tarfile.open(sys.argv[1], "r:gz") as layer:
    odd = [m.name for m in layer if m.mtime != int(sys.argv[2]) or m.uid or m.gid]
print("odd entries: " + " ".join(odd) if odd else "ok")
PY
)" ok

# --- run it: the image's programs, user and environment, and nothing from this machine -----------
# A container runtime gives every container these devices (the OCI runtime spec requires them);
# the image rightly has no /dev, so make them here as the runtime would. Without /dev/null smm
# cannot start helm: Rust connects a child's stdin to it.
mkdir -m 755 "$rootfs/dev"
for device in null:3 zero:5 full:7 random:8 urandom:9; do
	mknod -m 666 "$rootfs/dev/${device%:*}" c 1 "${device#*:}"
done
mapfile -t image_env < <(jq -r '.config.Env[]' "$tmp/config.json")
mapfile -t entrypoint < <(jq -r '.config.Entrypoint[], .config.Cmd[]' "$tmp/config.json")
chroot_bin="$(command -v chroot)"
in_image() { # runs a command inside the unpacked image as its user; stdout and stderr to files
	env -i "${image_env[@]}" "$chroot_bin" --userspec=65532:65532 "$rootfs" "$@" \
		>"$tmp/out" 2>"$tmp/err"
}
if in_image /usr/local/bin/helm version --short; then
	expect "helm runs in the image" "$(cat "$tmp/out")" "$helm_version"
else
	fail "helm does not run in the image: $(cat "$tmp/err")"
fi
# `smm version` runs helm itself (SMM_HELM); the cluster part fails without one, which it reports.
if in_image /usr/local/bin/smm version --output json; then
	expect "smm runs in the image" "$(jq -r .smm "$tmp/out")" "$version"
	# smm shows helm's version without its build metadata (+g<commit>).
	expect "smm runs the image's helm" "$(jq -r .helm.version "$tmp/out")" \
		"${helm_version%%+*} (/usr/local/bin/helm)"
else
	fail "smm does not run in the image: $(cat "$tmp/err")"
fi
# The work the operator does, short of a cluster: smm writes its embedded charts and values to
# /tmp and has helm render them, as user 65532 in the image's /tmp.
if in_image /usr/local/bin/smm install --all --dump-resources; then
	expect "smm renders every component with helm in the image" \
		"$(($(grep -c '^kind: Deployment$' "$tmp/out") > 0))" 1
else
	fail "smm install --all --dump-resources fails in the image: $(cat "$tmp/err")"
fi
if in_image "${entrypoint[@]}" --help && grep -q -- '--listen' "$tmp/out"; then
	pass "the entrypoint and command are smm's operator run"
else
	fail "entrypoint and command ${entrypoint[*]} --help: $(cat "$tmp/out" "$tmp/err")"
fi

# --- the deployment files name this image -------------------------------------------------------
expect "deploy/operator/smm-operator.yaml names smm-operator:$version" \
	"$(grep -c "image: smm-operator:$version\$" deploy/operator/smm-operator.yaml)" 1
expect "the kustomize base tags smm-operator $version" \
	"$(grep -A1 '^  - name: smm-operator$' deploy/operator/kustomization.yaml | grep -c "^    newTag: $version\$")" 1
expect "the chart's default tag is $version" \
	"$(grep -c "^appVersion: \"$version\"\$" deploy/helm/smm-operator/Chart.yaml)" 1

# --- published: pushed to a registry (a private one on loopback), it keeps its digest -----------
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
	"$tmp/registry" "127.0.0.1:$port" >"$tmp/registry.yml"
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
	if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
	sleep 0.1
done
reference="127.0.0.1:$port/smm-operator"
# --preserve-digests: fail rather than convert the manifest, which would change the digest.
if skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
	"oci-archive:$archive" "docker://$reference:$version" 2>"$tmp/err"; then
	expect "the pushed image has the recorded digest" \
		"$(skopeo inspect --tls-verify=false "docker://$reference:$version" | jq -r .Digest)" "$digest"
	expect "the registry serves it by digest (--image REGISTRY/smm-operator@$digest)" \
		"$(skopeo inspect --tls-verify=false "docker://$reference@$digest" | jq -r .Architecture)" amd64
else
	fail "pushing to a registry: $(cat "$tmp/err" "$tmp/registry.log")"
fi
kill "$registry_pid"
wait "$registry_pid" 2>/dev/null || true
registry_pid=""

# --- reproducible: the same commit again gives the same digest -----------------------------------
again="$(scripts/image.sh --out "$tmp/again" 2>"$tmp/again.log")" || {
	cat "$tmp/again.log" >&2
	again="(build failed)"
}
expect "a second build gives the same digest" "$again" "$digest"

echo "image-check: $passed passed, $failed failed (image $digest)"
((failed == 0))
