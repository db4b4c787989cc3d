"""What a wheel of the repository holds: `taskimage cluster install` must find the Task, Pipeline
and DaemonSet it applies in the installed package, not in a checkout next to it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import need

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], cwd: Path, timeout: int = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_cluster_install_reads_the_files_shipped_in_the_wheel(tmp_path):
    need(shutil.which("git") is not None, "git is needed to list the repository's files")
    # The files a clone has (tracked and new, not ignored), without the tests.
    listed = _run(["git", "ls-files", "-co", "--exclude-standard"], ROOT).split("\n")
    src = tmp_path / "src"
    for rel in filter(None, listed):
        if rel.startswith("tests/") or not (ROOT / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(src)], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("taskimage-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)], tmp_path)
    shutil.rmtree(src)  # nothing of the checkout left to fall back on

    where = _run([str(venv / "bin/python"), "-c", "import taskimage; print(taskimage.__file__)"], tmp_path)
    assert Path(where.strip()).is_relative_to(venv)
    builder = "registry.example.org/team/taskimage@sha256:" + "c" * 64
    out = _run([str(venv / "bin/taskimage"), "cluster", "install", "--dry-run", "--builder-image", builder], tmp_path)
    docs = list(yaml.safe_load_all(out))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Task", "buildah-multiarch"),
        ("Pipeline", "buildah-multiarch"),
        ("Namespace", "taskimage-system"),
        ("DaemonSet", "taskimage-binfmt"),
    ]
    # The repository's files, with the task image given in place of the release placeholder.
    task = yaml.safe_load((ROOT / "catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml").read_text())
    (param,) = [p for p in task["spec"]["params"] if p["name"] == "BUILDER_IMAGE"]
    param["default"] = builder
    assert docs[0] == task
    binfmt = [d for d in yaml.safe_load_all((ROOT / "tekton/binfmt-daemonset.yaml").read_text()) if d]
    binfmt[1]["spec"]["template"]["spec"]["containers"][0]["image"] = builder
    assert docs[2:] == binfmt
