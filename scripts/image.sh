#!/usr/bin/env bash
# Builds the operator image, smm-operator:<version> for linux/amd64, without a container engine:
#   target/image/smm-operator.tar     OCI archive (what `skopeo copy oci-archive:...` pushes)
#   target/image/oci/                 the same image as an OCI layout directory (tag <version>)
#   target/image/smm-operator.digest  the image (manifest) digest, sha256:...
#   target/image/smm-operator.json    digest, layer sizes and the image's file list
# The image holds the release `smm`, the pinned helm from scripts/tools.sh, and from Debian
# packages pinned by version and sha256 below only what those two need: the shared libraries smm
# links (helm is static), the CA bundle, and the packages' copyright files. No shell. It runs as
# 65532:65532 with `smm operator run`. scripts/oci_image.py writes the layout; see it for the
# file list. Two builds of one commit give one digest: every timestamp is SOURCE_DATE_EPOCH
# (default: the commit's time) and nothing of the build machine goes in.
#
#   scripts/image.sh [--out DIR]     (default DIR: target/image)
# SMM_IMAGE_SOURCE sets the org.opencontainers.image.source label (the repository's URL).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

out="$root/target/image"
if [[ "${1:-}" == "--out" && -n "${2:-}" ]]; then
	out="$(mkdir -p "$2" && cd "$2" && pwd)"
elif [[ $# -gt 0 ]]; then
	echo "usage: scripts/image.sh [--out DIR]" >&2
	exit 2
fi

# name  version  sha256 of the .deb. Bookworm's, as the rest of the toolchain here. When Debian
# publishes a newer version the old one leaves the archive: then `apt-get download` fails below
# and the pins need bumping (`apt-cache policy NAME` shows the current version; the script prints
# the new file's sha256 when it does not match).
packages=(
	"libc6           2.36-9+deb12u14   ba4f88f73dbc3ae9055f3c20f4523bfdbaf1ad13ff95e258924f77d20b4fbedf"
	"libgcc-s1       12.2.0-14+deb12u1 3016e62cb4b7cd8038822870601f5ed131befe942774d0f745622cc77d8a88f7"
	"gcc-12-base     12.2.0-14+deb12u1 1896a2aacf4ad681ff5eacc24a5b0ca4d5d9c9b9c9e4b6de5197bc1e116ea619"
	"ca-certificates 20250419~deb12u2  b9f76b5271a7ac373fd5e7e1b5b826a71ddd702b42a0d104955ecb1acfffc94b"
)

log() { echo "image: $*" >&2; }

# readelf (binutils) finds the libraries smm needs; strip drops its symbol table. Both come with
# the C toolchain that cargo links with, so this only matters on an unusual machine.
if ! command -v readelf >/dev/null || ! command -v strip >/dev/null; then
	log "installing binutils"
	apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null
fi

scripts/tools.sh
helm="$root/.tools/helm"

log "building smm (release)"
# Panic locations name source files: the checkout's and cargo's registry paths are rewritten to
# fixed ones, so the binary is the same from any checkout, home or user, and carries no path of
# the build machine. The toolchain itself is pinned by rust-toolchain.toml.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
RUSTFLAGS="--remap-path-prefix=$root=/smm --remap-path-prefix=$cargo_home=/cargo" \
	cargo build --release --locked --bin smm
mkdir -p "$out"
# The release profile keeps the symbol table; the image does not need it (panics still name the
# source location). A stripped copy, so target/release/smm stays what cargo built.
strip --strip-all -o "$out/smm" target/release/smm
for machine_path in "$root" "$cargo_home" "$HOME"; do
	if grep -qaF "$machine_path/" "$out/smm"; then
		log "the binary still holds the build machine's path $machine_path/"
		exit 1
	fi
done

# The .debs are kept under target/ so a rebuild downloads nothing; a cached file is only used
# if its sha256 is the pinned one.
debs="$root/target/image-debs"
unpacked="$(mktemp -d)"
trap 'rm -rf "$unpacked"' EXIT
mkdir -p "$debs"
names=()
for spec in "${packages[@]}"; do
	read -r name version sha256 <<<"$spec"
	names+=("$name")
	deb=""
	for candidate in "$debs/${name}_${version//:/%3a}_"*.deb; do
		if [[ -f "$candidate" ]] && sha256sum --check --status <<<"$sha256  $candidate"; then
			deb="$candidate"
		fi
	done
	if [[ -z "$deb" ]]; then
		log "fetching $name=$version"
		rm -f "$debs/${name}_"*.deb
		# apt-get download fails when the package lists are missing or stale; refresh them once.
		# The sandbox user would need write access to $debs; downloading as root is fine here.
		if ! (cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$name=$version"); then
			apt-get update -qq
			(cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "$name=$version")
		fi
		deb="$(compgen -G "$debs/${name}_*.deb")"
		if ! sha256sum --check --status <<<"$sha256  $deb"; then
			log "$deb: sha256 $(sha256sum "$deb" | cut -d' ' -f1), pinned $sha256"
			exit 1
		fi
	fi
	dpkg-deb -x "$deb" "$unpacked/$name"
	dpkg-deb -f "$deb" >"$unpacked/$name.control"
done

version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["package"]["version"])')"
revision="$(git rev-parse HEAD)"
# An image from uncommitted changes must not claim to be the commit.
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
	revision="$revision-dirty"
fi
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"

package_args=()
for name in "${names[@]}"; do package_args+=(--package "$name"); done
python3 scripts/oci_image.py \
	--smm "$out/smm" --helm "$helm" \
	--packages "$unpacked" "${package_args[@]}" \
	--epoch "$epoch" --version "$version" --revision "$revision" \
	--source "${SMM_IMAGE_SOURCE:-}" \
	--layout "$out/oci" --archive "$out/smm-operator.tar" >"$out/smm-operator.json"
rm "$out/smm"

digest="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["digest"])' "$out/smm-operator.json")"
echo "$digest" >"$out/smm-operator.digest"
log "built smm-operator:$version ($revision): $(python3 scripts/oci_image.py --summary "$out/smm-operator.json")"
log "  archive $out/smm-operator.tar, layout $out/oci"
log "  push:    skopeo copy --preserve-digests oci-archive:$out/smm-operator.tar docker://REGISTRY/smm-operator:$version"
log "  install: smm operator install --image REGISTRY/smm-operator@$digest"
echo "$digest"
