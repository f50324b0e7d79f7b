#!/usr/bin/env python3
"""Assembles the operator's image from one static binary, with no container engine.

    hack/oci-image.py BINARY VERSION ARCH OUT.tar [NAME [USER]]

OUT.tar holds an OCI image layout (index.json, blobs/) and Docker's manifest.json beside
it, so `docker load`, `podman load`, `ctr images import` and `skopeo copy oci-archive:`
all take it. The image has one layer with the binary at /baseten-secrets-operator, runs as
65532:65532 and has nothing else: no shell, no libraries, no package manager. The same
binary and version give the same bytes, so the digest is reproducible. NAME and USER
(default baseten-secrets-operator and 65532:65532) make another one-binary image the same way;
`make e2e` builds the node's pause image so.
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile

DEFAULT_NAME = "baseten-secrets-operator"
DEFAULT_USER = "65532:65532"


def tar_bytes(members):
    """A tar of (name, bytes, mode) with fixed owners and times."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def main():
    if len(sys.argv) not in (5, 6, 7):
        sys.exit(__doc__)
    binary, version, arch, out = sys.argv[1:5]
    name = sys.argv[5] if len(sys.argv) > 5 else DEFAULT_NAME
    user = sys.argv[6] if len(sys.argv) > 6 else DEFAULT_USER
    with open(binary, "rb") as f:
        program = f.read()
    layer = tar_bytes([(name, program, 0o755)])
    compressed = gzip.compress(layer, compresslevel=9, mtime=0)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {
                "User": user,
                "Entrypoint": ["/" + name],
                "Labels": {
                    "org.opencontainers.image.title": name,
                    "org.opencontainers.image.version": version,
                    "org.opencontainers.image.licenses": "Apache-2.0",
                },
            },
            "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
            "history": [{"created_by": "hack/oci-image.py: the static binary"}],
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(compressed),
                    "size": len(compressed),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    tag = f"{name}:{version}"
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest(manifest),
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": tag,
                        "org.opencontainers.image.ref.name": version,
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    blob = lambda data: "blobs/sha256/" + digest(data).removeprefix("sha256:")
    docker = json.dumps(
        [{"Config": blob(config), "RepoTags": [tag], "Layers": [blob(compressed)]}]
    ).encode()
    members = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o644),
        ("index.json", index, 0o644),
        ("manifest.json", docker, 0o644),
    ] + [(blob(data), data, 0o644) for data in (config, manifest, compressed)]
    with open(out, "wb") as f:
        f.write(tar_bytes(members))
    print(f"{out}: {tag}, manifest {digest(manifest)}, layer {len(compressed)} bytes")


main()
