#!/usr/bin/env python3
"""Writes the smm operator image as an OCI image layout directory and an OCI archive of it.

Called by scripts/image.sh, which builds smm, installs helm and unpacks the pinned Debian packages;
this program decides what of those goes into the image and writes the blobs. Written by hand rather
than by a container tool so that every byte is under our control: entries are sorted, owned by 0:0,
stamped with one fixed time, and gzip gets no name and no time, so the same inputs always give the
same image digest.

The image has one layer, holding:
  /usr/local/bin/smm, /usr/local/bin/helm    the two programs (helm is static Go)
  the shared libraries smm's ELF headers ask for (the interpreter and DT_NEEDED, transitively),
      taken only from the unpacked packages, so a library missing there fails the build
  /etc/ssl/certs/ca-certificates.crt         Debian's Mozilla bundle, concatenated as
                                             update-ca-certificates would
  /etc/passwd, /etc/group, /etc/nsswitch.conf  root, nobody and nonroot (65532)
  /usr/share/doc/<package>/copyright and /var/lib/dpkg/status.d/<package>
      the licences of what we ship, and package records that image scanners read
  /tmp                                       mode 1777, smm's and helm's scratch space
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path

LIB_DIRS = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"]

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

NONROOT = 65532

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/tmp:/sbin/nologin\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\n" f"nonroot:x:{NONROOT}:\n"
# Without this file glibc's defaults would still work, but say it: users and names come from
# the files above, host names from /etc/hosts (which the kubelet mounts) and then DNS.
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"


def fail(message):
    sys.exit(f"oci_image: {message}")


class Layer:
    """The root filesystem as a map from path (no leading slash) to a tar entry and its data."""

    def __init__(self, mtime):
        self.mtime = mtime
        self.entries = {}

    def _info(self, path, kind, mode):
        info = tarfile.TarInfo(path)
        info.type = kind
        info.mode = mode
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = self.mtime
        return info

    def directory(self, path, mode=0o755):
        path = path.strip("/")
        if not path:
            return
        parent = os.path.dirname(path)
        if parent:
            self.directory(parent)
        if path not in self.entries or mode != 0o755:
            self.entries[path] = (self._info(path, tarfile.DIRTYPE, mode), None)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        if path in self.entries:
            fail(f"/{path} added twice")
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.entries[path] = (info, data)

    def symlink(self, path, target):
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.entries[path] = (info, None)

    def tar(self):
        out = io.BytesIO()
        # USTAR holds every path here and needs no extended headers, which keeps the layer plain.
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            # Sorting by path components puts each directory before what it holds.
            for path in sorted(self.entries, key=lambda p: p.split("/")):
                info, data = self.entries[path]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return out.getvalue()


def readelf(*args):
    # The C locale keeps readelf's wording the one the patterns below match.
    return subprocess.run(
        ["readelf", "--wide", *args],
        check=True, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
    ).stdout


def elf_needs(binary):
    """The program interpreter and DT_NEEDED names of an ELF file (empty for static ones)."""
    interp = None
    headers = readelf("--program-headers", binary)
    found = re.search(r"Requesting program interpreter: ([^\]]+)\]", headers)
    if found:
        interp = found.group(1)
    dynamic = readelf("--dynamic", binary)
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
    return interp, needed


class Packages:
    """The unpacked Debian packages: <root>/<name>/ trees and <root>/<name>.control files."""

    def __init__(self, root, names):
        self.root = Path(root)
        self.names = names
        self.used = set()

    def locate(self, image_path):
        """(package, path on disk) of an absolute path as one of the packages ships it."""
        for name in self.names:
            candidate = self.root / name / image_path.lstrip("/")
            if os.path.lexists(candidate):
                return name, candidate
        return None, None

    def find_library(self, soname):
        for lib_dir in LIB_DIRS:
            if self.locate(f"/{lib_dir}/{soname}")[1] is not None:
                return f"/{lib_dir}/{soname}"
        fail(f"no pinned package ships {soname}; add the package that does to scripts/image.sh")


def add_from_package(layer, packages, image_path, queue):
    """Adds a file of a package, following symlinks (each link and its target go in)."""
    name, on_disk = packages.locate(image_path)
    if on_disk is None:
        fail(f"no pinned package ships {image_path}")
    packages.used.add(name)
    if on_disk.is_symlink():
        target = os.readlink(on_disk)
        layer.symlink(image_path, target)
        resolved = os.path.normpath(os.path.join(os.path.dirname(image_path), target))
        if resolved.lstrip("/") not in layer.entries:
            add_from_package(layer, packages, resolved, queue)
        return
    if image_path.lstrip("/") in layer.entries:
        return
    layer.file(image_path, on_disk.read_bytes(), on_disk.stat().st_mode & 0o7777)
    queue.append(on_disk)


def add_libraries(layer, packages, binaries):
    """Everything the binaries' dynamic loader will open, found in the packages, transitively."""
    queue = list(binaries)
    seen = set()
    while queue:
        binary = queue.pop()
        interp, needed = elf_needs(binary)
        wanted = ([interp] if interp else []) + [packages.find_library(n) for n in needed]
        for image_path in wanted:
            if image_path in seen:
                continue
            seen.add(image_path)
            add_from_package(layer, packages, image_path, queue)


def ca_bundle(packages):
    """Debian's bundle is made at install time by update-ca-certificates; do the same here."""
    name = "ca-certificates"
    certs = sorted((packages.root / name / "usr/share/ca-certificates/mozilla").glob("*.crt"))
    if len(certs) < 100:
        fail(f"expected Mozilla's CA certificates in the {name} package, found {len(certs)}")
    packages.used.add(name)
    bundle = b""
    for cert in certs:
        data = cert.read_bytes()
        bundle += data if data.endswith(b"\n") else data + b"\n"
    return bundle


def add_package_records(layer, packages):
    """Copyright file and dpkg record of every package something was taken from. A package's
    doc directory may be a link to another package's (libgcc-s1's is gcc-12-base's): then the
    link goes in, and that other package counts as used too."""
    pending = sorted(packages.used)
    done = set()
    while pending:
        name = pending.pop(0)
        if name in done:
            continue
        done.add(name)
        doc = packages.root / name / "usr/share/doc" / name
        if doc.is_symlink():
            target = os.readlink(doc)
            owner = os.path.basename(os.path.normpath(target))
            if owner not in packages.names:
                fail(f"/usr/share/doc/{name} links to {target}: pin the package {owner}")
            layer.symlink(f"/usr/share/doc/{name}", target)
            pending.append(owner)
        else:
            layer.file(f"/usr/share/doc/{name}/copyright", (doc / "copyright").read_bytes())
        control = (packages.root / f"{name}.control").read_text()
        layer.file(f"/var/lib/dpkg/status.d/{name}", control.encode())


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}", len(data)


def canonical(document):
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def archive(layout, path, mtime):
    """The OCI archive skopeo and friends read: a tar of the layout directory, itself sorted."""
    members = sorted(
        (p for p in layout.rglob("*")), key=lambda p: p.relative_to(layout).parts
    )
    tmp = path.with_suffix(".partial")
    with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(str(member.relative_to(layout)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            if member.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, member.stat().st_size
                with member.open("rb") as data:
                    tar.addfile(info, data)
    os.replace(tmp, path)


def summary(info_file):
    info = json.loads(Path(info_file).read_text())
    mib = 2**20
    print(
        f"layer {info['layer_compressed'] / mib:.1f} MiB compressed, "
        f"{info['layer_uncompressed'] / mib:.1f} MiB unpacked, {len(info['files'])} entries"
    )


def main():
    if sys.argv[1:2] == ["--summary"]:
        summary(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smm", required=True)
    parser.add_argument("--helm", required=True)
    parser.add_argument("--packages", required=True, help="directory of unpacked packages")
    parser.add_argument("--package", action="append", required=True, help="package name, in order")
    parser.add_argument("--epoch", type=int, required=True, help="SOURCE_DATE_EPOCH")
    parser.add_argument("--version", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--source", default="")
    parser.add_argument("--layout", required=True, help="OCI layout directory to (re)create")
    parser.add_argument("--archive", required=True, help="OCI archive file to write")
    args = parser.parse_args()

    packages = Packages(args.packages, args.package)
    layer = Layer(args.epoch)
    layer.file("/usr/local/bin/smm", Path(args.smm).read_bytes(), 0o755)
    layer.file("/usr/local/bin/helm", Path(args.helm).read_bytes(), 0o755)
    add_libraries(layer, packages, [args.smm, args.helm])
    layer.file("/etc/ssl/certs/ca-certificates.crt", ca_bundle(packages))
    layer.file("/etc/passwd", PASSWD.encode())
    layer.file("/etc/group", GROUP.encode())
    layer.file("/etc/nsswitch.conf", NSSWITCH.encode())
    add_package_records(layer, packages)
    layer.directory("/tmp", 0o1777)

    layer_tar = layer.tar()
    # mtime=0 and no file name: the gzip header carries nothing of this build.
    layer_gz = gzip.compress(layer_tar, compresslevel=9, mtime=0)

    layout = Path(args.layout)
    if layout.exists():
        shutil.rmtree(layout)
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))

    created = datetime.fromtimestamp(args.epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.opencontainers.image.title": "smm-operator",
        "org.opencontainers.image.description": "The smm operator: reconciles ControlPlanes "
        "into a service mesh with helm",
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": args.source,
    }
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{NONROOT}:{NONROOT}",
            "Entrypoint": ["/usr/local/bin/smm"],
            "Cmd": ["operator", "run"],
            "Env": [
                "PATH=/usr/local/bin",
                "SMM_HELM=/usr/local/bin/helm",
                "HOME=/tmp",
                "HELM_CACHE_HOME=/tmp/helm/cache",
                "HELM_CONFIG_HOME=/tmp/helm/config",
                "HELM_DATA_HOME=/tmp/helm/data",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ],
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": labels,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"],
        },
        "history": [{"created": created, "created_by": "scripts/image.sh"}],
    }
    layer_digest, layer_size = blob(layout, layer_gz)
    config_digest, config_size = blob(layout, canonical(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size}],
        "annotations": {k: v for k, v in labels.items() if v},
    }
    manifest_digest, manifest_size = blob(layout, canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": args.version},
            }
        ],
    }
    (layout / "index.json").write_bytes(canonical(index))
    archive(layout, Path(args.archive), args.epoch)

    print(
        json.dumps(
            {
                "digest": manifest_digest,
                "layer_compressed": layer_size,
                "layer_uncompressed": len(layer_tar),
                "files": sorted("/" + p for p in layer.entries),
            }
        )
    )


if __name__ == "__main__":
    main()
