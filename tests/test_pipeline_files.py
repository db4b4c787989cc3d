"""Every Pipeline and PipelineRun this repository ships resolves and passes every check of
`taskimage run` before anything runs (`--dry-run`): refs (bundles from the local registry, the git
resolver's git-clone through the stand-in), params, workspaces, result references, PaC triggers.

The bundles are rendered as a release renders them (with a placeholder task image digest: nothing
runs) and pushed to the local registry; `ghcr.io/taskimage` is mapped there by registries.conf.
The full runs, with the real task image, are in tests/test_pipeline_catalog.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import have_tools, need, push_release_bundles

from taskimage.dev import env as devenv

pytestmark = pytest.mark.tools
ROOT = Path(__file__).resolve().parent.parent
FAKE_BUILDER = "127.0.0.1:1/taskimage/taskimage@sha256:" + "ab" * 32
STAND_IN = ["--stand-in", f"fetch-source={devenv.GIT_CLONE_STAND_IN}"]
SHIPPED = sorted(
    p.relative_to(ROOT).as_posix()
    for d in ("catalog", "tekton", ".tekton", "examples")
    for p in (ROOT / d).rglob("*.yaml")
    if any(k in p.read_text() for k in ("kind: Pipeline\n", "kind: PipelineRun\n"))
)


@pytest.fixture(scope="module")
def env(registry, tmp_path_factory):
    need(have_tools("skopeo", "git"), "skopeo and git are needed")
    out = tmp_path_factory.mktemp("release")
    push_release_bundles(registry.host, out, FAKE_BUILDER)
    conf = out / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "ghcr.io/taskimage"\nlocation = "{registry.host}/taskimage"\ninsecure = true\n'
    )
    (out / "dockerconfig").mkdir()
    repo = out / "app"
    repo.mkdir()
    for cmd in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "app"], ["tag", "v0.1"]):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", *cmd], check=True)
    return {"conf": conf, "dir": out, "repo": repo}


def args_for(path: str, env: dict) -> list[str]:
    """What a user passes to run each file here: the params a file leaves to the user, the
    Secret-bound workspace as a directory, the event for a PaC file."""
    ws = env["dir"]
    text = (ROOT / path).read_text()
    # git-clone (git resolver, github.com) has a local stand-in; the matrix Pipeline clones with
    # our source-artifact Task, from the tasks bundle in the local registry: nothing to stand in for
    argv = [] if "matrix" in path else [*STAND_IN]
    if "pipelinesascode.tekton.dev/" in text:
        argv += ["--repo", str(env["repo"]), "--repo-url", "git://127.0.0.1:1/app"]
        if "pull-request" in path:
            argv += ["--event", "pull_request", "--branch", "main"]
        elif "release" in path:
            argv += ["--event", "push", "--branch", "refs/tags/v0.1"]
        else:
            argv += ["--event", "push", "--branch", "main"]
    if "secretName" in text:
        argv += ["-w", f"dockerconfig={ws / 'dockerconfig'}"]
    if "kind: Pipeline\n" in text and "kind: PipelineRun" not in text:  # a bare Pipeline
        argv += ["-p", "url=git://127.0.0.1:1/app"] + ([] if "matrix" in path else ["-w", f"shared={ws}"])
        argv += ["-p", "REPOSITORY=r/app", "-p", "TAG=1"] if "matrix" in path else ["-p", "IMAGE=r/app:1"]
    if path.startswith("catalog/") and path.endswith("tests/run.yaml"):  # catalog e2e runs name their
        for obj in sorted((ROOT / "catalog").glob("*/*/0.1/*.yaml")):  # Task or Pipeline: give the files
            argv += ["--task", str(obj)]
    return argv


def test_every_shipped_pipeline_is_found():
    assert {
        "catalog/pipeline/buildah-multiarch/0.1/buildah-multiarch.yaml",
        "catalog/pipeline/buildah-multiarch-matrix/0.1/buildah-multiarch-matrix.yaml",
        "tekton/pipelinerun.yaml",
        "tekton/pipelinerun-matrix.yaml",
        ".tekton/push.yaml",
        ".tekton/pull-request.yaml",
        ".tekton/release.yaml",
        "examples/pac/build.yaml",
    } <= set(SHIPPED)


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_file_passes_every_check(path, env):
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", "run", path, *args_for(path, env), "--dry-run", "--tls-verify=false"],
        cwd=ROOT,
        env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(env["conf"])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = json.loads(proc.stdout)
    runs = plan.get("pipelineRuns", [plan])
    for run in runs:
        names = {t["name"]: t for t in run["tasks"]}
        if "fetch-source" in names:  # git-clone stood in for; the matrix's source-artifact from our bundle
            assert names["fetch-source"]["from"].startswith("bundle" if "matrix" in path else "stand-in"), run
        built = names.get("build") or names.get("build-image")
        assert built is not None and built["from"].startswith(("bundle", "the given files")), run
