"""buildah and skopeo command lines, as pure functions (tests check them without running)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from taskimage.platforms import Platform


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
class Registry:
    """Registry access options shared by buildah and skopeo."""

    tls_verify: bool = True
    authfile: str | None = None
    cert_dir: str | None = None

    def buildah_args(self) -> list[str]:
        out = [f"--tls-verify={'true' if self.tls_verify else 'false'}"]
        if self.authfile:
            out += ["--authfile", self.authfile]
        if self.cert_dir:
            out += ["--cert-dir", self.cert_dir]
        return out

    def skopeo_args(self) -> list[str]:
        # skopeo inspect spells them like buildah
        return self.buildah_args()


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


def build(storage: Storage, registry: Registry, spec: BuildSpec, platform: Platform, iidfile: str, *, layers: bool = True) -> list[str]:
    argv = ["buildah", *storage.args(), "build", "--platform", str(platform), "--iidfile", iidfile,
            "--format", spec.format, "-f", str(spec.containerfile), *registry.buildah_args()]
    for key, value in spec.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in spec.labels:
        argv += ["--label", f"{key}={value}"]
    for key, value in spec.annotations:
        argv += ["--annotation", f"{key}={value}"]
    if spec.target:
        argv += ["--target", spec.target]
    for limit in spec.ulimits:
        argv += ["--ulimit", limit]
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


def manifest_create(storage: Storage, name: str) -> list[str]:
    return ["buildah", *storage.args(), "manifest", "create", name]


def manifest_add(storage: Storage, name: str, image: str) -> list[str]:
    return ["buildah", *storage.args(), "manifest", "add", name, image]


def manifest_rm(storage: Storage, name: str) -> list[str]:
    return ["buildah", *storage.args(), "manifest", "rm", name]


def manifest_push(storage: Storage, registry: Registry, name: str, destination: str, fmt: str) -> list[str]:
    """No ``--digestfile``: with it, buildah 1.28 loses the push error (a reset connection or a 5xx
    exits 0 and leaves an empty file; seen through tests/faultproxy.py, the likely cause of
    konflux-ci/build-definitions#3833). The digest is read from the registry afterwards."""
    return ["buildah", *storage.args(), "manifest", "push", "--all", "--format", "v2s2" if fmt == "docker" else "oci",
            *registry.buildah_args(), name, f"docker://{destination}"]


def skopeo_inspect_raw(registry: Registry, ref: str, *, config: bool = False) -> list[str]:
    return ["skopeo", "inspect", "--raw" if not config else "--config", *(["--raw"] if config else []),
            *registry.skopeo_args(), f"docker://{ref}"]


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
