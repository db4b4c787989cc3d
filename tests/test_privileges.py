"""The build step with exactly the privileges the README claims: the task image in podman with
Kubernetes' default capability set (containerd's), the default seccomp profile, not privileged,
no added capability, vfs storage on a volume.

Established by experiment here (podman 4.3, runc, buildah 1.39 in the task image):
- no added capability, vfs: FROM, RUN (chroot isolation) and COPY build and push;
- no added capability, overlay: fails (`mount ... operation not permitted`): overlay needs SYS_ADMIN;
  `--storage-driver auto` sees the probe mount fail and takes vfs, saying why;
- foreign platforms: the container sees no binfmt_misc (it is not mounted in the container's /proc
  and mounting it is denied), so the preflight exits 3 although the host's F-flag handlers would
  run the binaries. Until the preflight can probe without binfmt_misc, foreign builds need the
  handlers' directory visible (TASKIMAGE_BINFMT_DIR on a read-only hostPath of
  /proc/sys/fs/binfmt_misc) — tested below as what it is today.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from conftest import have_tools, need, skopeo_raw, tag_exists

pytestmark = [pytest.mark.podman, pytest.mark.slow, pytest.mark.tools]

# containerd's default capabilities (what a Kubernetes container gets without securityContext)
K8S_DEFAULT_CAPS = (
    "CHOWN,DAC_OVERRIDE,FSETID,FOWNER,MKNOD,NET_RAW,SETGID,SETUID,SETFCAP,SETPCAP,"
    "NET_BIND_SERVICE,SYS_CHROOT,KILL,AUDIT_WRITE"
)
# this machine's hard limit is below podman's defaults (see the common brief)
ULIMITS = ["--ulimit", "nofile=10000:10000", "--ulimit", "nproc=10000:10000"]


@pytest.fixture(scope="module")
def task_image(task_image_build):
    """The session's task image (tests/conftest.py), pulled into podman's storage."""
    need(have_tools("podman", "runc"), "podman and runc are needed")
    subprocess.run(
        ["podman", "pull", "-q", "--tls-verify=false", task_image_build.by_digest], check=True, capture_output=True
    )
    return task_image_build.by_digest


def run_step(
    task_image,
    tmp_path,
    registry,
    name,
    *,
    extra=(),
    driver="vfs",
    platforms=("linux/amd64",),
    body="RUN uname -m > /uname.txt\n",
):
    src, results, storage = tmp_path / "src", tmp_path / "results", tmp_path / "storage"
    for d in (src, results, storage):
        d.mkdir(parents=True, exist_ok=True)
    (src / "Containerfile").write_text(f"FROM {registry.host}/base/busybox:bookworm\n{body}")
    image = f"{registry.host}/privileges/{name}:1"
    argv = [
        "podman",
        "run",
        "--rm",
        "--runtime",
        "runc",
        "--network",
        "host",
        *ULIMITS,
        "--cap-drop",
        "all",
        "--cap-add",
        K8S_DEFAULT_CAPS,
        *extra,
        "-v",
        f"{src}:/workspace/source:ro",
        "-v",
        f"{results}:/tekton/results",
        "-v",
        f"{storage}:/var/lib/containers",
        task_image,
        "build",
        "--image",
        image,
        "--tls-verify=false",
        "--storage-driver",
        driver,
        "--source-root",
        "/workspace/source",
        "--context",
        ".",
        *platforms,
    ]
    t = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    return proc, image, results, time.monotonic() - t


def test_build_step_needs_no_added_capability_with_vfs(task_image, tmp_path, registry, busybox_base):
    proc, image, results, _ = run_step(task_image, tmp_path, registry, "unprivileged")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "storage driver vfs" in proc.stderr
    assert (results / "IMAGE_URL").read_text() == image
    index = skopeo_raw(image)
    assert [e["platform"]["architecture"] for e in index["manifests"]] == ["amd64"]


def test_without_sys_admin_the_push_happens_and_overlay_is_refused(task_image, tmp_path, registry, busybox_base):
    """The unprivileged step really builds and pushes (the tag exists); overlay needs SYS_ADMIN."""
    proc, image, _, _ = run_step(task_image, tmp_path / "vfs", registry, "unprivileged-push")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"pushed {image} = " in proc.stderr
    assert tag_exists(image)
    proc, image, _, _ = run_step(task_image, tmp_path / "overlay", registry, "unprivileged-overlay", driver="overlay")
    assert proc.returncode == 1
    assert "operation not permitted" in proc.stderr
    assert not tag_exists(image)
    proc, _, _, _ = run_step(
        task_image, tmp_path / "auto", registry, "unprivileged-auto", driver="auto", body="COPY Containerfile /c\n"
    )
    assert "storage driver vfs: a test overlay mount failed" in proc.stderr


def test_foreign_platform_builds_without_binfmt_misc_in_the_container(task_image, tmp_path, registry, busybox_base):
    """binfmt_misc cannot be mounted without SYS_ADMIN; the emulation check then runs a test
    binary per foreign architecture, and the node's F handlers run the arm64 RUN step."""
    proc, image, results, _ = run_step(
        task_image, tmp_path, registry, "unprivileged-arm64", platforms=("linux/amd64", "linux/arm64")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "linux/arm64: a test binary ran (binfmt_misc is not readable here)" in proc.stderr
    index = skopeo_raw(image)
    assert sorted(e["platform"]["architecture"] for e in index["manifests"]) == ["amd64", "arm64"]
