"""buildah and skopeo command lines, as pure functions (tests check them without running)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from taskimage.oci.platforms import Platform

if TYPE_CHECKING:  # oci.registry imports this module
    from taskimage.oci.registry import Access


@dataclasses.dataclass(frozen=True)
class Storage:
    driver: str  # overlay | vfs
    root: str | None = None
    runroot: str | None = None

    def args(self) -> list[str]:
        out = ["--storage-driver", self.driver]
        if self.root:
            out += ["--root", self.root]
        if self.runroot:
            out += ["--runroot", self.runroot]
        return out


@dataclasses.dataclass(frozen=True)
class BuildSpec:
    context: Path
    containerfile: Path
    build_args: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    target: str = ""
    format: str = "oci"  # oci | docker
    cache_repo: str = ""
    ulimits: tuple[str, ...] = ()  # e.g. "nofile=20000:20000", for RUN steps (see run_limits)
    platform_annotations: tuple[tuple[Platform, str, str], ...] = ()  # manifest[PLATFORM]:KEY=VALUE
    ssh: tuple[str, ...] = ()  # buildah --ssh values: default | ID | ID=PATH[,PATH] (no key bytes)
    timestamp: int | None = None  # SOURCE_DATE_EPOCH: buildah --timestamp (1.28 and 1.39 have it)
    secrets: tuple[str, ...] = ()  # buildah --secret values: id=ID,src=PATH | id=ID,env=VAR (no secret bytes)


def build(
    storage: Storage, registry: Access, spec: BuildSpec, platform: Platform, iidfile: str, *, layers: bool = True
) -> list[str]:
    argv = [
        "buildah",
        *storage.args(),
        "build",
        "--platform",
        str(platform),
        "--iidfile",
        iidfile,
        "--format",
        spec.format,
        "-f",
        str(spec.containerfile),
        *registry.buildah_args(),
    ]
    for key, value in spec.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in spec.labels:
        argv += ["--label", f"{key}={value}"]
    for key, value in spec.annotations:
        argv += ["--annotation", f"{key}={value}"]
    for only, key, value in spec.platform_annotations:
        if only == platform:
            argv += ["--annotation", f"{key}={value}"]
    if spec.target:
        argv += ["--target", spec.target]
    for limit in spec.ulimits:
        argv += ["--ulimit", limit]
    for secret in spec.secrets:
        argv += ["--secret", secret]
    for ssh in spec.ssh:
        argv += ["--ssh", ssh]
    if spec.timestamp is not None:
        argv += ["--timestamp", str(spec.timestamp)]
    if layers or spec.cache_repo:
        argv.append("--layers")
    if spec.cache_repo:
        argv += ["--cache-from", spec.cache_repo, "--cache-to", spec.cache_repo]
    argv.append(str(spec.context))
    return argv


def inspect_image(storage: Storage, image: str) -> list[str]:
    return ["buildah", *storage.args(), "inspect", "--type", "image", image]


def from_image(storage: Storage, image: str, name: str) -> list[str]:
    return ["buildah", *storage.args(), "from", "--pull-never", "--name", name, image]


def mount(storage: Storage, container: str) -> list[str]:
    return ["buildah", *storage.args(), "mount", container]


def remove_container(storage: Storage, container: str) -> list[str]:
    return ["buildah", *storage.args(), "rm", container]


def image_ids(storage: Storage) -> list[str]:
    """Every image in the storage, intermediate ones included, by full ID (one per line)."""
    return ["buildah", *storage.args(), "images", "--all", "--quiet", "--no-trunc"]


def remove_images(storage: Storage, images: Sequence[str]) -> list[str]:
    """Remove images; buildah also removes the unnamed intermediate images only they used."""
    return ["buildah", *storage.args(), "rmi", *images]


def push_dir(storage: Storage, image: str, directory: str, fmt: str) -> list[str]:
    """Write ``image`` with compressed layers to a ``dir:`` copy, whose manifest.json gives the digest
    the registry will know it by (buildah itself can push only to a tag)."""
    return [
        "buildah",
        *storage.args(),
        "push",
        "--quiet",
        "--format",
        "v2s2" if fmt == "docker" else "oci",
        image,
        f"dir:{directory}",
    ]


def skopeo_push_dir(registry: Access, directory: str, destination: str) -> list[str]:
    """Push a ``dir:`` copy unchanged to ``destination`` (REPOSITORY@DIGEST: no tag is written)."""
    return [
        "skopeo",
        "copy",
        "--quiet",
        "--preserve-digests",
        *copy_flags(registry, src=False),
        *(["--authfile", registry.authfile] if registry.authfile else []),
        f"dir:{directory}",
        f"docker://{destination}",
    ]


def skopeo_inspect_raw(registry: Access, ref: str, *, config: bool = False) -> list[str]:
    return [
        "skopeo",
        "inspect",
        "--raw" if not config else "--config",
        *(["--raw"] if config else []),
        *registry.skopeo_args(),
        f"docker://{ref}",
    ]


def skopeo_copy_image(registry: Access, source: str, destination: str) -> list[str]:
    """Copy one image between repositories, by digest, unchanged."""
    return _skopeo_copy(registry, [], source, destination)


def skopeo_copy_list(registry: Access, source: str, destination: str) -> list[str]:
    """Copy a pushed manifest list and its images, by digest, to another tag, unchanged."""
    return _skopeo_copy(registry, ["--all"], source, destination)


def _skopeo_copy(registry: Access, extra: list[str], source: str, destination: str) -> list[str]:
    return [
        "skopeo",
        "copy",
        "--quiet",
        *extra,
        "--preserve-digests",
        *copy_flags(registry, src=True),
        *copy_flags(registry, src=False),
        *(["--authfile", registry.authfile] if registry.authfile else []),
        f"docker://{source}",
        f"docker://{destination}",
    ]


def skopeo_push_list_dir(registry: Access, directory: Path, destination: str, fmt: str = "") -> list[str]:
    """Push a list and its images' manifests (``dir:``, no layers) unchanged; the tag moves last.

    ``fmt`` (oci | docker, when the list and every image are of that family) pins the list's type:
    otherwise, when the registry refuses the list (a 503 on the tag), skopeo 1.9 tries the other
    list type, cannot convert it under --preserve-digests, and reports only that, hiding the 503.
    """
    forced = ["--format", "v2s2" if fmt == "docker" else "oci"] if fmt else []
    return [
        "skopeo",
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        *forced,
        *copy_flags(registry, src=False),
        *(["--authfile", registry.authfile] if registry.authfile else []),
        f"dir:{directory}",
        f"docker://{destination}",
    ]


def copy_flags(registry: Access, *, src: bool) -> list[str]:
    side = "src" if src else "dest"
    out = [f"--{side}-tls-verify={'true' if registry.tls_verify else 'false'}"]
    if registry.cert_dir:
        out += [f"--{side}-cert-dir", registry.cert_dir]
    return out


NPROC_CAP = 32768  # what buildah 1.28's chroot isolation has already set when it applies --ulimit


def run_limits(getrlimit=None) -> tuple[str, ...]:
    """``--ulimit`` values for RUN steps: the limits this process has.

    Without them buildah 1.39 (chroot isolation) raises RLIMIT_NOFILE/NPROC of RUN steps to
    1048576, which fails in any container or pod whose hard limit is lower ("setting RLIMIT_NOFILE
    ... operation not permitted"). RLIMIT_NPROC is capped at 32768: buildah 1.28 has lowered it to
    that before applying --ulimit and cannot raise it back.
    """
    import resource

    getrlimit = getrlimit or resource.getrlimit
    out = []
    for name, kind, cap in (("nofile", resource.RLIMIT_NOFILE, 1048576), ("nproc", resource.RLIMIT_NPROC, NPROC_CAP)):
        soft, hard = getrlimit(kind)
        hard = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
        out.append(f"{name}={soft}:{hard}")
    return tuple(out)
