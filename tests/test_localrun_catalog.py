"""End to end: our catalog Task, unchanged, run by `taskimage run` with the task image.

It builds tests/data/localrun/app (busybox base, a RUN step) for linux/amd64 and linux/arm64,
pushes the index to the local registry and checks the results against the registry.

Needs, besides podman and the registry: the session's task image (tests/conftest.py builds it)
and qemu handlers for arm64 (taskimage binfmt install).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import emulation_ready, have_tools, need, skopeo_raw

from taskimage import cli

pytestmark = [pytest.mark.podman, pytest.mark.emulation, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "catalog" / "task" / "buildah-multiarch" / "0.1" / "buildah-multiarch.yaml"
APP = Path(__file__).parent / "data" / "localrun" / "app"


def _declared(task_yaml: Path) -> set[str]:
    import yaml

    task = next(d for d in yaml.safe_load_all(task_yaml.read_text()) if d and d.get("kind") == "Task")
    return {p["name"] for p in task["spec"].get("params") or []}


def test_catalog_task_runs_unchanged(task_image, registry, busybox_base, tmp_path, capsys):
    need(have_tools("podman", "runc", "skopeo"), "podman, runc and skopeo are needed")
    ok, reason = emulation_ready(["linux/arm64"])
    need(ok, reason)
    source = tmp_path / "source"
    shutil.copytree(APP, source)
    image = f"{registry.host}/localrun/app:e2e"
    wanted = {
        "IMAGE": image,
        "PLATFORMS": "linux/amd64,linux/arm64",
        "BUILD_ARGS": f"BASE={busybox_base}",
        "TLSVERIFY": "false",
        "BUILDER_IMAGE": task_image,
    }
    declared = _declared(TASK)
    assert {"IMAGE", "PLATFORMS"} <= declared, f"the catalog Task lacks IMAGE/PLATFORMS: {sorted(declared)}"
    argv = ["run", str(TASK), "-w", f"source={source}", "--tls-verify=false", "--output", "json"]
    for name, value in wanted.items():
        if name in declared:
            argv += ["-p", f"{name}={value}"]
    code = cli.main(argv)
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    results = report["results"]
    assert results["IMAGE_URL"] == image
    digest = results["IMAGE_DIGEST"]
    assert digest.startswith("sha256:") and results["IMAGE_REF"] == f"{registry.host}/localrun/app@{digest}"
    index = skopeo_raw(f"{registry.host}/localrun/app@{digest}")
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])
    assert platforms == ["linux/amd64", "linux/arm64"]
    assert [p for p in report["problems"] if p["failsTaskRun"]] == []


@pytest.fixture(scope="module")
def device_node_base(registry) -> str:
    from taskimage.dev import lookalikes

    need(have_tools("mmdebstrap", "skopeo"), "mmdebstrap and skopeo are needed")
    return lookalikes.device_node_image(registry.host)


@pytest.mark.parametrize("profile", ["containerd", "crio"])
def test_base_image_with_device_nodes_builds_on_containerd_and_names_mknod_on_crio(
    profile, task_image, registry, device_node_base, tmp_path, capsys
):
    """A base layer holding device nodes (as debootstrap/mmdebstrap rootfs images have) unpacks as
    root only with CAP_MKNOD: containerd's default set has it, CRI-O's does not. Under the crio
    profile the run fails and says MKNOD is missing; under containerd the image is pushed."""
    need(have_tools("podman", "runc", "skopeo"), "podman, runc and skopeo are needed")
    source = tmp_path / "source"
    shutil.copytree(APP, source)
    image = f"{registry.host}/localrun/devnodes-{profile}:e2e"
    argv = ["run", str(TASK), "-w", f"source={source}", "--tls-verify=false", "--output", "json"]
    argv += ["--runtime-defaults", profile, "-p", f"IMAGE={image}", "-p", "PLATFORMS=linux/amd64"]
    argv += [
        "-p",
        f"BUILD_ARGS={'BASE=' + device_node_base}",
        "-p",
        "TLSVERIFY=false",
        "-p",
        f"BUILDER_IMAGE={task_image}",
    ]
    code = cli.main(argv)
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    if profile == "containerd":
        assert code == 0, captured.err[-3000:]
        pushed = f"{registry.host}/localrun/devnodes-{profile}@{report['results']['IMAGE_DIGEST']}"
        raw = skopeo_raw(pushed)
        if "manifests" in raw:  # an image index
            assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64"]
        else:
            assert skopeo_raw(pushed, config=True)["architecture"] == "amd64"
    else:
        assert code != 0
        assert "operation not permitted" in captured.err
        assert "without capabilities" in captured.err and "MKNOD" in captured.err
