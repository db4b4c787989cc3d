"""End to end: the Pipelines and PipelineRuns this repository ships, run unchanged by
`taskimage run` with the task image built from this checkout, building tests/data/localrun/app
from a real git repository (served by git daemon) for linux/amd64 + linux/arm64 and reading the
pushed manifest list back from the registry.

What this machine cannot reach is replaced the way a user would replace it, never by editing the
YAML: `ghcr.io/taskimage/*` is mapped to the local registry by a registries.conf (the bundles are
pushed there by `taskimage bundle push`), and tektoncd/catalog's git-clone (git resolver on
github.com) by the stand-in taskimage/dev/git-clone.yaml with `--stand-in fetch-source=...`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import emulation_ready, have_tools, need, push_release_bundles, skopeo_raw

from taskimage import cli
from taskimage.dev import env as devenv

pytestmark = [pytest.mark.podman, pytest.mark.emulation, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
APP = Path(__file__).parent / "data" / "localrun" / "app"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def app_repo(tmp_path_factory):
    """The app in a git repository (two commits: the build must take the named revision), served
    by git daemon on 127.0.0.1."""
    need(have_tools("git"), "git is not installed")
    root = tmp_path_factory.mktemp("git")
    repo = root / "app"
    shutil.copytree(APP, repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "app")
    server = devenv.GitServer(root).start()
    yield server.url("app"), _git(repo, "rev-parse", "HEAD"), repo
    server.stop()


@pytest.fixture(scope="module")
def task_image(registry) -> str:
    """The task image built from this checkout for this machine's platform only (the steps run
    here; the app is still built for amd64 + arm64 inside it), in a layer cache of its own so
    that no other build's eviction of the shared cache can pull it away mid-build."""
    need(have_tools("buildah", "skopeo", "mmdebstrap"), "buildah, skopeo and mmdebstrap are needed")
    from taskimage.oci.platforms import host_platform

    cache = devenv.cache_dir() / "task-image" / "pipeline-tests"
    cache.mkdir(parents=True, exist_ok=True)
    return devenv.build_task_image(
        registry.host, f"{registry.host}/taskimage/taskimage:pipeline", [str(host_platform())], layer_cache=cache
    ).by_digest


@pytest.fixture(scope="module")
def released(registry, task_image, tmp_path_factory):
    """The Tasks and Pipelines bundles, as a release makes them, pushed to the local registry;
    ghcr.io/taskimage mapped there by a registries.conf for the whole module."""
    need(have_tools("podman", "runc", "skopeo"), "podman, runc and skopeo are needed")
    ok, reason = emulation_ready(["linux/arm64"])
    need(ok, reason)
    out = tmp_path_factory.mktemp("release")
    _, pipelines_ref = push_release_bundles(registry.host, out, task_image)
    conf = out / "registries.conf"
    conf.write_text(
        f'[[registry]]\nprefix = "ghcr.io/taskimage"\nlocation = "{registry.host}/taskimage"\ninsecure = true\n'
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    old = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    os.environ["CONTAINERS_REGISTRIES_CONF"] = str(conf)
    (out / "dockerconfig").mkdir()
    (out / "dockerconfig" / "config.json").write_text('{"auths": {}}')
    yield {"pipelines": pipelines_ref, "dir": out}
    if old is None:
        os.environ.pop("CONTAINERS_REGISTRIES_CONF", None)
    else:
        os.environ["CONTAINERS_REGISTRIES_CONF"] = old


@pytest.fixture(scope="module")
def git_image():
    need(have_tools("mmdebstrap", "skopeo"), "mmdebstrap and skopeo are needed for the git-clone stand-in's image")
    return devenv.git_image()


def run(capsys, *argv) -> tuple[int, dict, str]:
    code = cli.main(["run", *argv, "--tls-verify=false", "--output", "json"])
    captured = capsys.readouterr()
    assert captured.out, f"exit {code}, nothing on stdout: {captured.err[-3000:]}"
    return code, json.loads(captured.out), captured.err


def platforms_of(ref: str) -> list[str]:
    index = skopeo_raw(ref)
    return sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])


def common(busybox_base, task_image, url, stand_in: bool = True) -> list[str]:
    """``stand_in``: git-clone (github.com) replaced by the local stand-in; the matrix Pipeline
    clones with our source-artifact Task from the tasks bundle, which needs none."""
    return [
        *(["--stand-in", f"fetch-source={devenv.GIT_CLONE_STAND_IN}"] if stand_in else []),
        "-p",
        f"url={url}",
        "-p",
        f"BUILD_ARGS=BASE={busybox_base}",
        "-p",
        "TLSVERIFY=false",
        "-p",
        f"BUILDER_IMAGE={task_image}",
    ]


def test_catalog_pipeline_source_file(
    released, git_image, app_repo, registry, busybox_base, task_image, tmp_path, capsys
):
    url, commit, _ = app_repo
    image = f"{registry.host}/pipeline/app:catalog"
    code, report, err = run(
        capsys,
        str(ROOT / "catalog/pipeline/buildah-multiarch/0.1/buildah-multiarch.yaml"),
        *common(busybox_base, task_image, url),
        "-p",
        "revision=main",
        "-p",
        f"IMAGE={image}",
        "-w",
        f"shared={tmp_path}",
    )
    assert code == 0, err[-3000:]
    assert "stand-in: using task git-clone" in err
    results = report["results"]
    assert results["COMMIT"] == commit
    assert results["IMAGE_URL"] == image
    assert platforms_of(f"{registry.host}/pipeline/app@{results['IMAGE_DIGEST']}") == ["linux/amd64", "linux/arm64"]
    for ref in results["IMAGES"].split(","):
        labels = skopeo_raw(ref, config=True)["config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == commit  # the clone's result reached the build
    assert (tmp_path / "src" / "Containerfile").is_file()  # the subPath of the shared workspace


def test_matrix_pipeline_from_the_bundle(released, git_image, app_repo, registry, busybox_base, task_image, capsys):
    url, commit, _ = app_repo
    code, report, err = run(
        capsys,
        "--bundle",
        released["pipelines"],
        "--name",
        "buildah-multiarch-matrix",
        *common(busybox_base, task_image, url, stand_in=False),
        "-p",
        f"REPOSITORY={registry.host}/pipeline/matrix",
        "-p",
        "TAG=m1",
        "--parallel",
        "2",
    )
    assert code == 0, err[-3000:]
    build = {t["name"]: t for t in report["tasks"]}["build"]
    assert [r["params"] for r in build["taskRuns"]] == [{"PLATFORM": "amd64"}, {"PLATFORM": "arm64"}]
    results = report["results"]
    assert results["COMMIT"] == commit
    assert platforms_of(f"{registry.host}/pipeline/matrix:m1") == ["linux/amd64", "linux/arm64"]
    assert len(results["IMAGES"].split(",")) == 2
    # the clone's url and commit reached the index Task as index: annotations
    assert skopeo_raw(f"{registry.host}/pipeline/matrix:m1")["annotations"] == {
        "org.opencontainers.image.source": url,
        "org.opencontainers.image.revision": commit,
    }
    # the two TaskRuns overlapped: a line of build[1]'s step came before the last line of build[0]'s
    lines = err.splitlines()
    first = [i for i, line in enumerate(lines) if line.startswith("[build[0] : ")]
    second = [i for i, line in enumerate(lines) if line.startswith("[build[1] : ")]
    assert first and second and min(second) < max(first) and min(first) < max(second)


@pytest.mark.parametrize("path", ["tekton/pipelinerun.yaml", "tekton/pipelinerun-matrix.yaml"])
def test_cluster_pipelineruns(path, released, git_image, app_repo, registry, busybox_base, task_image, capsys):
    url, commit, _ = app_repo
    name = Path(path).stem
    params = ["-p", f"IMAGE={registry.host}/pipeline/{name}:1"]
    if "matrix" in path:
        params = ["-p", f"REPOSITORY={registry.host}/pipeline/{name}", "-p", "TAG=1"]
    code, report, err = run(
        capsys,
        str(ROOT / path),
        *common(busybox_base, task_image, url, stand_in="matrix" not in path),
        *params,
        "-w",
        f"dockerconfig={released['dir'] / 'dockerconfig'}",
    )
    assert code == 0, err[-3000:]
    assert report["results"]["COMMIT"] == commit
    assert platforms_of(f"{registry.host}/pipeline/{name}:1") == ["linux/amd64", "linux/arm64"]
    assert "serviceAccountName" in err  # reported as ignored, not silently dropped
