"""Shared fixtures: a real local registry and real multi-arch base images.

Tiers (markers in pyproject.toml): unit tests need nothing; ``tools`` tests need buildah,
skopeo and docker-registry; ``emulation`` tests need qemu handlers in binfmt_misc; ``podman``
tests need podman with runc; ``kind`` tests need Docker and network. A missing component
skips its tier with the reason, unless TASKIMAGE_REQUIRE_ALL=1 (set by .ci/run), where it fails:
CI must never pass by skipping what it is supposed to exercise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from taskimage.dev import env as devenv
from taskimage.oci.platforms import normalize

REQUIRE_ALL = os.environ.get("TASKIMAGE_REQUIRE_ALL") == "1"
BASE_PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x", "linux/ppc64le"]


def need(condition: bool, reason: str) -> None:
    """Skip (or, under TASKIMAGE_REQUIRE_ALL=1, fail) when a real component is missing."""
    if condition:
        return
    if REQUIRE_ALL:
        pytest.fail(f"required component missing: {reason}")
    pytest.skip(reason)


def have_tools(*names: str) -> bool:
    return all(shutil.which(n) for n in names)


def htpasswd_line(user: str, password: str) -> str:
    """One bcrypt line of an htpasswd file, as the registry's htpasswd auth reads it, from
    Apache's ``htpasswd`` (Debian's apache2-utils; Python 3.13 has no ``crypt`` module).
    Cost 4, the lowest: the registry checks the password on every request."""
    need(have_tools("htpasswd"), "htpasswd is not installed (apt install apache2-utils; see .ci/setup-host)")
    out = subprocess.run(["htpasswd", "-nbB", "-C", "4", user, password], check=True, capture_output=True, text=True)
    return out.stdout.strip() + "\n"


def emulation_ready(platforms=("linux/arm64", "linux/arm/v7", "linux/s390x", "linux/ppc64le")) -> tuple[bool, str]:
    from taskimage.emulation import binfmt

    missing = binfmt.missing_emulation([normalize(p) for p in platforms])
    if missing:
        return False, "no binfmt_misc handler (with F flag) for: " + ", ".join(
            str(m.platform) for m in missing
        ) + " (run: taskimage binfmt install)"
    return True, ""


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real distribution registry on 127.0.0.1:<free port>, empty, for the whole session."""
    need(have_tools("docker-registry", "skopeo"), "docker-registry and skopeo are not installed (see .ci/run)")
    reg = devenv.LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def busybox_base(registry) -> str:
    """A multi-arch busybox-static base image (amd64, arm64, arm/v7, s390x, ppc64le) in the registry."""
    need(have_tools("mmdebstrap"), "mmdebstrap is not installed (see .ci/run)")
    return devenv.base_image("busybox", BASE_PLATFORMS, f"{registry.host}/base/busybox:bookworm")


@pytest.fixture(scope="session")
def busybox_amd64_only(registry) -> str:
    """A single-arch (amd64) base image: building other arches FROM it must be caught."""
    need(have_tools("mmdebstrap"), "mmdebstrap is not installed (see .ci/run)")
    return devenv.base_image("busybox", ["linux/amd64"], f"{registry.host}/base/busybox-amd64:bookworm")


def skopeo_raw(ref: str, *, config: bool = False) -> dict:
    """Read a manifest (or with ``config``, an image config) straight from the registry."""
    argv = ["skopeo", "inspect", "--tls-verify=false", "--raw"]
    if config:
        argv[-1] = "--config"
    out = subprocess.run(argv + [f"docker://{ref}"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def skopeo_raw_bytes(ref: str) -> bytes:
    return subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], check=True, capture_output=True
    ).stdout


def _registry_get(host: str, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://{host}{path}", timeout=30) as response:
        return json.load(response)


def repository_tags(host: str, repo: str) -> list[str]:
    """The tags of ``repo`` on the registry at ``host`` (its ``tags/list``). A repository that
    does not exist, or holds only untagged manifests (what a run that failed after pushing one
    platform by digest leaves), answers 404 NAME_UNKNOWN: no tags. Any other error raises."""
    import urllib.error

    try:
        return _registry_get(host, f"/v2/{repo}/tags/list").get("tags") or []
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
        if exc.code == 404 and any(e.get("code") == "NAME_UNKNOWN" for e in body.get("errors", [])):
            return []
        raise


def registry_snapshot(host: str) -> set[str]:
    """Every repository (``repo``) and every ``repo:tag`` the registry at ``host`` holds, read with
    its own API (``_catalog``, ``tags/list``): a "nothing pushed" check over every name, not only the
    one a test expects. A repository with only untagged manifests is listed by ``_catalog``: it
    counts as a repository without tags."""
    repos = _registry_get(host, "/v2/_catalog?n=1000").get("repositories") or []  # the registry's page maximum
    assert len(repos) < 1000, "more repositories than one _catalog page: follow its Link header"
    return set(repos) | {f"{repo}:{tag}" for repo in repos for tag in repository_tags(host, repo)}


def tag_exists(ref: str) -> bool:
    proc = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], capture_output=True, text=True
    )
    return proc.returncode == 0


TASK_IMAGE_PLATFORMS = ("linux/amd64", "linux/arm64")


@pytest.fixture(scope="session")
def task_image_build(registry):
    """The task image, built once per session from this checkout by `taskimage build` itself
    (amd64 + arm64, the arm64 half under qemu), pushed to the session registry. Its buildah layer
    cache lives in ~/.cache/taskimage, so only a changed source tree rebuilds the small layers."""
    need(
        have_tools("buildah", "skopeo", "mmdebstrap"), "buildah, skopeo and mmdebstrap are not installed (see .ci/run)"
    )
    need(os.geteuid() == 0, "buildah builds here run as root")
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    return devenv.build_task_image(registry.host, f"{registry.host}/taskimage/taskimage:test", TASK_IMAGE_PLATFORMS)


@pytest.fixture(scope="session")
def task_image(task_image_build) -> str:
    """The task image by digest (REPO@sha256:...), as a Task's BUILDER_IMAGE would pin it."""
    return task_image_build.by_digest


def _mounts_below(path: str) -> list[str]:
    base = os.path.realpath(path).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mountpoint = line.split()[4].replace("\\040", " ")
            if mountpoint.startswith(base):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)  # deepest first


@pytest.fixture(scope="session", autouse=True)
def _no_mounts_left_behind(tmp_path_factory):
    """buildah's overlay storage keeps its layer mounts after a build; a test run must not leave
    them on the machine (they pile up and keep pytest from removing old temp dirs)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for mountpoint in _mounts_below(base):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)


@pytest.fixture(autouse=True)
def _secrets_of_one_test():
    """Each test is one command's worth of secrets, as `cli.main` scopes them: a test that calls
    option parsing directly (registering e.g. the password 'pass' of a sample auth file) does not
    get 'passwd' masked in a later test's output."""
    from taskimage import log

    with log.secrets_scope():
        yield


def push_release_bundles(registry_host: str, out, builder_image: str) -> tuple[str, str]:
    """The Tasks and Pipelines bundles as a release renders them (the Tasks pinned to
    ``builder_image``, the Pipelines to the Tasks bundle by digest), pushed with `taskimage bundle
    push` to ``registry_host``/taskimage; returns (tasks bundle by digest, pipelines bundle by tag)."""
    import hashlib
    from pathlib import Path

    from taskimage import cli
    from taskimage.tekton import catalog

    root = Path(__file__).resolve().parents[1]
    catalog.release_tasks(out, builder_image)
    tasks = f"{registry_host}/taskimage/tasks:{catalog.VERSION}"
    assert cli.main(["bundle", "push", tasks, str(out / "tasks.yaml"), "--tls-verify=false"]) == 0
    pinned = f"{registry_host}/taskimage/tasks@sha256:" + hashlib.sha256(skopeo_raw_bytes(tasks)).hexdigest()
    catalog.release_pipelines(root, out, pinned, builder_image)
    pipelines = f"{registry_host}/taskimage/pipelines:{catalog.VERSION}"
    assert cli.main(["bundle", "push", pipelines, str(out / "pipelines.yaml"), "--tls-verify=false"]) == 0
    return pinned, pipelines
