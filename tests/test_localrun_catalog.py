"""End to end: our catalog Task, unchanged, run by `taskimage run` with the task image.

It builds tests/data/localrun/app (busybox base, a RUN step) for linux/amd64 and linux/arm64,
pushes the index to the local registry and checks the results against the registry.

Needs, besides podman and the registry:
- catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml (skips until it exists);
- the task image: a ``task_image`` fixture (a ref in the session registry) when tests/conftest.py
  provides one, else the env var TASKIMAGE_TASK_IMAGE (a ref pullable with --tls-verify=false);
- qemu handlers for arm64 (taskimage binfmt install).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import emulation_ready, have_tools, need, skopeo_raw
from taskimage import cli, tools

pytestmark = [pytest.mark.podman, pytest.mark.emulation, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
TASK = ROOT / "catalog" / "task" / "buildah-multiarch" / "0.1" / "buildah-multiarch.yaml"
APP = Path(__file__).parent / "data" / "localrun" / "app"


@pytest.fixture
def task_image_ref(request) -> str:
    if not TASK.exists():
        pytest.skip(f"{TASK.relative_to(ROOT)} does not exist yet")
    try:
        return request.getfixturevalue("task_image")
    except pytest.FixtureLookupError:
        pass
    ref = os.environ.get("TASKIMAGE_TASK_IMAGE", "")
    if not ref:
        pytest.skip("no task image: tests/conftest.py has no task_image fixture and TASKIMAGE_TASK_IMAGE is unset")
    return ref


def _declared(task_yaml: Path) -> set[str]:
    import yaml

    task = next(d for d in yaml.safe_load_all(task_yaml.read_text()) if d and d.get("kind") == "Task")
    return {p["name"] for p in task["spec"].get("params") or []}


def test_catalog_task_runs_unchanged(task_image_ref, registry, busybox_base, tmp_path, capsys):
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
        "BUILDER_IMAGE": task_image_ref,
    }
    declared = _declared(TASK)
    assert {"IMAGE", "PLATFORMS"} <= declared, f"the catalog Task lacks IMAGE/PLATFORMS: {sorted(declared)}"
    argv = ["run", str(TASK), "-w", f"source={source}", "--tls-verify=false", "--output", "json"]
    for name, value in wanted.items():
        if name in declared:
            argv += ["-p", f"{name}={value}"]
    tools.reset_stopping()
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
