"""Local look-alikes of the public images Tekton's examples name (ubuntu, alpine, bash, busybox).

Nothing outside this machine can be pulled, so each public image gets a stand-in made from Debian
packages with mmdebstrap (cached like the base images of :mod:`taskimage.dev.env`) that has what
the examples use of it: the shell, the tools, and the image config's Entrypoint/Cmd (which
Tekton's entrypoint lookup reads when a step gives ``args`` but no ``command``).

The stand-ins are pushed to a local registry, and a ``registries.conf`` redirects the public
repositories to them by prefix (podman reads it from ``CONTAINERS_REGISTRIES_CONF``). A reference
pinned by digest names bytes no look-alike has: :func:`unpin` rewrites it to a tag, in a copy of the
document only (the example files stay unmodified).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from taskimage.dev import env
from taskimage.oci.platforms import parse_platforms

# every applet of busybox as a link, like alpine's and busybox's own images; /usr/bin/env for
# `#!/usr/bin/env ash` scripts; root and nobody users; a sticky /tmp
_BUSYBOX_HOOK = (
    "--extract-hook="
    'for a in $("$1/bin/busybox" --list); do [ -e "$1/bin/$a" ] || ln -s busybox "$1/bin/$a"; done; '
    'mkdir -p "$1/usr/bin" "$1/root" "$1/tmp" "$1/home"; chmod 1777 "$1/tmp"; ln -sf /bin/busybox "$1/usr/bin/env"; '
    'printf "root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\\n" > "$1/etc/passwd"; '
    'printf "root:x:0:\\nnogroup:x:65534:\\n" > "$1/etc/group"'
)
# the official bash image's entrypoint: a first argument starting with "-" is an option of bash
_BASH_ENTRYPOINT = (
    "--customize-hook="
    'printf \'#!/bin/sh\\nset -e\\nif [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- bash "$@"; fi\\n'
    'exec "$@"\\n\' > "$1/usr/local/bin/docker-entrypoint.sh"; chmod 755 "$1/usr/local/bin/docker-entrypoint.sh"'
)
_SLIM = (
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
)
ROOTFS = {
    "lookalike-busybox": env.RootfsSpec(
        "lookalike-busybox", "extract", "bookworm", ("busybox-static",), (_BUSYBOX_HOOK,)
    ),
    "lookalike-debian": env.RootfsSpec(
        "lookalike-debian", "minbase", "bookworm", ("procps",), (*_SLIM, _BASH_ENTRYPOINT)
    ),
}
_PATH = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


@dataclasses.dataclass(frozen=True)
class Lookalike:
    name: str  # repository under lookalike/ in the local registry
    rootfs: str  # key of ROOTFS
    config: Mapping[str, Any]  # the image config's "config" object
    stands_for: tuple[str, ...]  # public repositories it replaces
    tags: tuple[str, ...] = ("latest",)


LOOKALIKES = (
    Lookalike(
        "busybox",
        "lookalike-busybox",
        {"Env": _PATH, "Cmd": ["sh"]},
        ("mirror.gcr.io/busybox", "cgr.dev/chainguard/busybox", "docker.io/library/busybox"),
    ),
    Lookalike(
        "alpine",
        "lookalike-busybox",
        {"Env": _PATH, "Cmd": ["/bin/sh"]},
        ("mirror.gcr.io/alpine", "docker.io/library/alpine"),
    ),
    Lookalike(
        "ubuntu",
        "lookalike-debian",
        {"Env": _PATH, "Cmd": ["/bin/bash"]},
        ("mirror.gcr.io/ubuntu", "docker.io/library/ubuntu"),
    ),
    Lookalike(
        "bash",
        "lookalike-debian",
        {"Env": _PATH, "Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["bash"]},
        ("mirror.gcr.io/bash", "docker.io/library/bash"),
        ("latest", "5.1.4"),
    ),
)


def push_lookalikes(registry_host: str, lookalikes: Iterable[Lookalike] = LOOKALIKES) -> dict[str, str]:
    """Make (cached) and push every look-alike for linux/amd64; public repository -> local one."""
    platform = parse_platforms(["linux/amd64"], source="--platform")
    mapping: dict[str, str] = {}
    for la in lookalikes:
        flavour = f"{la.rootfs}-{la.name}"  # the layout's cache key: one per config
        layout = env.build_layout(flavour, platform, spec=ROOTFS[la.rootfs], config=dict(la.config))
        local = f"{registry_host}/lookalike/{la.name}"
        for tag in la.tags:
            env.push_layout(layout, f"{local}:{tag}")
        for public in la.stands_for:
            mapping[public] = local
    return mapping


def registries_conf(mapping: Mapping[str, str], registry_host: str) -> str:
    """A registries.conf (v2) redirecting each public repository to its look-alike, by prefix.

    The local registry speaks plain HTTP, hence ``insecure``; a longer prefix wins over a shorter
    one, as containers/image matches them."""
    lines = ['unqualified-search-registries = ["docker.io"]', ""]
    lines += ["[[registry]]", f'location = "{registry_host}"', "insecure = true", ""]
    for public, local in sorted(mapping.items()):
        lines += ["[[registry]]", f'prefix = "{public}"', f'location = "{local}"', "insecure = true", ""]
    return "\n".join(lines)


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def unpin(obj: Any) -> Any:
    """A copy of a YAML document with every ``image: REPO[:TAG]@sha256:…`` turned into REPO[:TAG]."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "image" and isinstance(v, str):
                out[k] = _DIGEST.sub("", v)
            else:
                out[k] = unpin(v)
        return out
    if isinstance(obj, list):
        return [unpin(v) for v in obj]
    return obj


def images(obj: Any) -> set[str]:
    """Every literal ``image:`` value in a document (references to params left out)."""
    if isinstance(obj, dict):
        found = {v for k, v in obj.items() if k == "image" and isinstance(v, str) and "$(" not in v}
        return found.union(*(images(v) for k, v in obj.items() if k != "image"))
    if isinstance(obj, list):
        return set().union(*(images(v) for v in obj))
    return set()


def stand_in(image: str, mapping: Mapping[str, str]) -> str | None:
    """The local repository a public image is redirected to (longest prefix wins), or None."""
    repo = _DIGEST.sub("", image).split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: -len(last)] + last.split(":", 1)[0]
    matches = [p for p in mapping if repo == p or repo.startswith(p + "/")]
    return mapping[max(matches, key=len)] if matches else None


def write_registries_conf(path: Path, mapping: Mapping[str, str], registry_host: str) -> Path:
    path.write_text(registries_conf(mapping, registry_host))
    return path


def device_node_image(registry_host: str, ref: str | None = None) -> str:
    """Push a busybox image whose second layer holds device nodes (``/dev/null``, ``/dev/zero``,
    ``/dev/random`` as in a rootfs made by debootstrap or mmdebstrap), for linux/amd64.

    Unpacking it as root needs CAP_MKNOD: containerd gives it to a container, CRI-O does not."""
    import io
    import tarfile
    import tempfile

    platform = parse_platforms(["linux/amd64"], source="--platform")[0]
    base, base_diff = env._layer_from_rootfs(env._rootfs("lookalike-busybox", platform, ROOTFS["lookalike-busybox"]))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("dev")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        for name, minor in (("null", 3), ("zero", 5), ("random", 8)):
            node = tarfile.TarInfo(f"dev/{name}")
            node.type, node.mode, node.devmajor, node.devminor = tarfile.CHRTYPE, 0o666, 1, minor
            tar.addfile(node)
    dev_layer = raw.getvalue()
    ref = ref or f"{registry_host}/lookalike/device-nodes:latest"
    with tempfile.TemporaryDirectory(prefix="taskimage-devnodes-") as tmp:
        layout = env.OCILayout(Path(tmp))
        config = {
            "created": "1970-01-01T00:00:00Z",
            "architecture": platform.arch,
            "os": platform.os,
            "config": {"Env": _PATH, "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [base_diff, env._sha256(dev_layer)]},
        }
        layers = [
            ("application/vnd.oci.image.layer.v1.tar+gzip", base),
            ("application/vnd.oci.image.layer.v1.tar", dev_layer),
        ]
        layout.write_index([layout.image(config, layers)])
        env.push_layout(Path(tmp), ref)
    return ref
