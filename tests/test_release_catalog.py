"""The release catalog (issue 17): what Artifact Hub indexes and `resolver: hub` hands out verbatim.

Rendered against a local registry holding the "released" task image and the two bundles (pushed
with `taskimage bundle push` from the release rendering of this checkout), then checked as a
user would meet it: no zero digest, every image and bundle by digest and resolvable in that
registry, Artifact Hub's layout rules, and the same lint as the shipped YAML.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import emulation_ready, need, skopeo_raw, tag_exists

from taskimage import cli
from taskimage.tekton import catalog
from taskimage.tekton.lint import lint_paths

pytestmark = pytest.mark.tools
ROOT = Path(__file__).resolve().parent.parent
CRDS = os.environ.get("TASKIMAGE_CRDS") or str(ROOT.parent / "shared" / "tekton-crds")
ZERO = "0" * 64
REF_RE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")


def digest_of(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert cli.main(argv) == 0
    return capsys.readouterr().out.strip().rsplit("@", 1)[1]


@pytest.fixture(scope="module")
def released(registry, busybox_base, tmp_path_factory):
    """The task image, the Tasks bundle and the Pipelines bundle in the registry, by digest."""
    tmp = tmp_path_factory.mktemp("release")
    image_repo = f"{registry.host}/taskimage/taskimage"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--quiet",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{busybox_base}",
            f"docker://{image_repo}:release",
        ],
        check=True,
    )
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{image_repo}:release"],
        check=True,
        capture_output=True,
    ).stdout
    import hashlib

    image = f"{image_repo}@sha256:{hashlib.sha256(raw).hexdigest()}"
    (tasks,) = catalog.release_tasks(tmp / "bundles", image)
    return {"tmp": tmp, "image": image, "tasks_yaml": tasks, "registry": registry.host}


def test_release_catalog_is_pinned_resolvable_and_laid_out_for_artifact_hub(released, capsys):
    host, tmp, image = released["registry"], released["tmp"], released["image"]
    tasks_digest = digest_of(
        capsys, ["bundle", "push", "--tls-verify=false", f"{host}/taskimage/tasks:0.1", str(released["tasks_yaml"])]
    )
    task_bundle = f"{host}/taskimage/tasks@{tasks_digest}"
    (pipes,) = catalog.release_pipelines(ROOT, tmp / "bundles", task_bundle, image)
    pipeline_bundle = f"{host}/taskimage/pipelines@" + digest_of(
        capsys, ["bundle", "push", "--tls-verify=false", f"{host}/taskimage/pipelines:0.1", str(pipes)]
    )
    out = tmp / "catalog"
    code = catalog.main(
        ["--release", str(out), "--image-digest", image, "--bundle", task_bundle, "--pipeline-bundle", pipeline_bundle]
    )
    assert code == 0

    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert all(ZERO not in p.read_text() for p in files), "a zero digest was left in the release"
    license_text = (out / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    for folder, kind in (("tasks", "Task"), ("pipelines", "Pipeline")):
        meta = yaml.safe_load((out / folder / "artifacthub-repo.yml").read_text())
        assert meta["owners"] and all(o["name"] and o["email"] for o in meta["owners"])
        objects = sorted(out.glob(f"{folder}/*/*/*.yaml"))
        assert objects, folder
        for path in objects:
            name, version = path.parent.parent.name, path.parent.name
            doc = yaml.safe_load(path.read_text())
            # Artifact Hub's Tekton layout: <name>/<version>/<name>.yaml, version = label, semver
            assert doc["kind"] == kind and doc["metadata"]["name"] == name == path.stem
            assert doc["metadata"]["labels"]["app.kubernetes.io/version"] == version
            assert re.fullmatch(r"\d+\.\d+(\.\d+)?", version)
            assert doc["spec"]["description"].strip()
            ann = doc["metadata"]["annotations"]
            assert ann["artifacthub.io/license"] == "Apache-2.0"
            assert yaml.safe_load(ann["artifacthub.io/links"])[0]["url"].startswith("https://")
            assert yaml.safe_load(ann["artifacthub.io/changes"])
            assert ann["tekton.dev/categories"] and ann["tekton.dev/pipelines.minVersion"]
            assert (path.parent / "README.md").read_text().strip()
    # every image and bundle reference, by digest, and the registry has it
    refs = set()
    for path in out.rglob("*.yaml"):
        text = path.read_text()
        refs |= set(re.findall(r"\b" + re.escape(host) + r"/[^\s\"']+", text))
        assert "ghcr.io/taskimage" not in text, f"{path}: still points at the unreleased location"
    assert {image, task_bundle, pipeline_bundle} <= refs
    for ref in refs:
        assert REF_RE.match(ref), f"not by digest: {ref}"
        assert tag_exists(ref), f"not in the registry: {ref}"


def test_release_catalog_passes_lint_crds_and_tekton_lint(released, tmp_path):
    from taskimage.tekton.lint.tektonlint import find_tekton_lint, run_tekton_lint

    need(Path(CRDS, "300-task.yaml").is_file(), f"Tekton CRDs not found at {CRDS} (set TASKIMAGE_CRDS)")
    digest = "sha256:" + "ab" * 32
    out = tmp_path / "catalog"
    bundle = f"{released['registry']}/taskimage/tasks@{digest}"
    assert (
        catalog.main(
            [
                "--release",
                str(out),
                "--image-digest",
                released["image"],
                "--bundle",
                bundle,
                "--pipeline-bundle",
                bundle,
            ]
        )
        == 0
    )
    files = [str(p) for p in sorted(out.rglob("*.yaml"))]
    report = lint_paths(files, crds=CRDS)
    assert report.errors == 0, [str(p) for p in report.problems]
    exe = find_tekton_lint()
    need(bool(exe) and Path(exe).exists(), "tekton-lint not found (set TEKTON_LINT)")
    _, found = run_tekton_lint(files, exe)
    assert not [f for f in found if f.get("level") == "error"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [
                "--image-digest",
                "r/x:1",
                "--bundle",
                "r/t@sha256:" + "a" * 64,
                "--pipeline-bundle",
                "r/p@sha256:" + "a" * 64,
            ],
            "--image-digest",
        ),
        (
            [
                "--image-digest",
                "r/x@sha256:" + ZERO,
                "--bundle",
                "r/t@sha256:" + "a" * 64,
                "--pipeline-bundle",
                "r/p@sha256:" + "a" * 64,
            ],
            "--image-digest",
        ),
        (
            [
                "--image-digest",
                "r/x@sha256:" + "a" * 64,
                "--bundle",
                "r/t:0.1",
                "--pipeline-bundle",
                "r/p@sha256:" + "a" * 64,
            ],
            "--bundle",
        ),
        (
            [
                "--image-digest",
                "r/x@sha256:" + "a" * 64,
                "--bundle",
                "r/t@sha256:" + "a" * 64,
                "--pipeline-bundle",
                "r/p@sha256:" + "a" * 64,
                "--version",
                "1.0",
            ],
            "--version",
        ),
    ],
)
def test_release_refuses_tags_and_wrong_versions(tmp_path, capsys, argv, message):
    assert catalog.main(["--release", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_release_run_renders_the_catalog_with_the_digests_it_pushed(tmp_path):
    """.tekton/release.yaml's release-catalog task: its render step, with Tekton's values
    substituted, is a real generator invocation producing the Artifact Hub tree."""
    (run,) = [d for d in yaml.safe_load_all((ROOT / ".tekton/release.yaml").read_text()) if d]
    task = next(t for t in run["spec"]["pipelineSpec"]["tasks"] if t["name"] == "release-catalog")
    digest = "sha256:" + "cd" * 32
    values = {
        "TASKIMAGE": f"ghcr.io/taskimage/taskimage@{digest}",
        "TASKS_BUNDLE": f"ghcr.io/taskimage/tasks@{digest}",
        "PIPELINES_BUNDLE": f"ghcr.io/taskimage/pipelines@{digest}",
    }
    given = {p["name"]: p["value"] for p in task["params"]}
    assert given["TASKS_BUNDLE"].endswith("$(tasks.release-tasks.results.DIGEST)")
    assert given["PIPELINES_BUNDLE"].endswith("$(tasks.release-pipelines.results.DIGEST)")
    render, publish = task["taskSpec"]["steps"]
    assert render["command"] == ["python3", "-m", "taskimage.tekton.catalog"]

    def subst(arg: str) -> str:
        arg = arg.replace("$(workspaces.source.path)", str(ROOT)).replace("/out/", f"{tmp_path}/")
        return re.sub(r"\$\(params\.([A-Z_]+)\)", lambda m: values[m.group(1)], arg)

    assert catalog.main([subst(a) for a in render["args"]]) == 0
    text = (tmp_path / "catalog/tasks/buildah-multiarch/0.1/buildah-multiarch.yaml").read_text()
    assert values["TASKIMAGE"] in text and ZERO not in text
    assert "$(params." not in publish["script"]


@pytest.fixture(scope="module")
def amd64_task_image(registry) -> str:
    """The task image of this checkout for amd64 only (the arm64 half is built under qemu,
    minutes; the catalog tests build both)."""
    from conftest import have_tools

    from taskimage.dev import env as devenv

    need(have_tools("buildah", "skopeo", "mmdebstrap", "podman", "runc"), "buildah, skopeo, mmdebstrap, podman, runc")
    need(os.geteuid() == 0, "buildah builds here run as root")
    return devenv.build_task_image(
        registry.host,
        f"{registry.host}/taskimage/taskimage:released",
        ["linux/amd64"],
        layer_cache=devenv.cache_dir() / "task-image" / "storage-amd64",  # its own: amd64-only builds
    ).by_digest


@pytest.mark.podman
@pytest.mark.emulation
@pytest.mark.slow
def test_released_tasks_bundle_runs_with_its_pinned_image(amd64_task_image, registry, busybox_base, tmp_path, capsys):
    """`taskimage run --bundle` of the released Tasks bundle builds with no BUILDER_IMAGE override:
    the default the release pinned is a task image the registry serves."""

    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)

    image = amd64_task_image
    (tasks,) = catalog.release_tasks(tmp_path / "bundles", image)
    bundle = f"{registry.host}/taskimage/tasks@" + digest_of(
        capsys, ["bundle", "push", "--tls-verify=false", f"{registry.host}/taskimage/tasks:released", str(tasks)]
    )
    source = tmp_path / "source"
    source.mkdir()
    (source / "Containerfile").write_text(f"FROM {busybox_base}\nRUN echo released > /released\n")
    target = f"{registry.host}/released/app:v1"
    capsys.readouterr()
    code = cli.main(
        [
            "run",
            "--bundle",
            bundle,
            "--name",
            "buildah-multiarch",
            "--tls-verify=false",
            "--output",
            "json",
            "-w",
            f"source={source}",
            "-p",
            f"IMAGE={target}",
            "-p",
            "PLATFORMS=linux/amd64,linux/arm64",
            "-p",
            "TLSVERIFY=false",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    import json

    results = json.loads(out)["results"]
    assert results["IMAGE_URL"] == target
    index = skopeo_raw(results["IMAGE_REF"])  # both platforms, the arm64 one built under qemu
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    assert image in err  # the step ran the pinned default image, not an override


@pytest.mark.podman
@pytest.mark.slow
def test_taskrun_with_resolver_hub_runs_the_task_artifact_hub_serves(
    amd64_task_image, registry, busybox_base, tmp_path, capsys, monkeypatch
):
    """`resolver: hub`, `type: artifact`: taskimage run asks Artifact Hub's API (here a local
    server answering as the API documents it, with the release-rendered Task) and runs what it gets."""
    import http.server
    import json
    import threading

    digest = "sha256:" + "ab" * 32
    out = tmp_path / "catalog"
    bundle = f"{registry.host}/taskimage/tasks@{digest}"
    assert (
        catalog.main(
            ["--release", str(out), "--image-digest", amd64_task_image, "--bundle", bundle, "--pipeline-bundle", bundle]
        )
        == 0
    )
    manifest = (out / "tasks/buildah-multiarch/0.1/buildah-multiarch.yaml").read_text()
    asked = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.append(self.path)
            if self.path != "/api/v1/packages/tekton-task/taskimage-tasks/buildah-multiarch/0.1.0":
                self.send_error(404)
                return
            body = json.dumps({"name": "buildah-multiarch", "version": "0.1.0", "data": {"manifestRaw": manifest}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ARTIFACT_HUB_API", f"http://127.0.0.1:{server.server_address[1]}")
    source = tmp_path / "source"
    source.mkdir()
    (source / "Containerfile").write_text(f"FROM {busybox_base}\nRUN echo from-hub > /hub\n")
    target = f"{registry.host}/hub/app:v1"
    taskrun = tmp_path / "taskrun.yaml"
    taskrun.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "tekton.dev/v1",
                "kind": "TaskRun",
                "metadata": {"name": "from-hub"},
                "spec": {
                    "taskRef": {
                        "resolver": "hub",
                        "params": [
                            {"name": "type", "value": "artifact"},
                            {"name": "kind", "value": "task"},
                            {"name": "catalog", "value": "taskimage-tasks"},
                            {"name": "name", "value": "buildah-multiarch"},
                            {"name": "version", "value": "0.1"},
                        ],
                    },
                    "params": [
                        {"name": "IMAGE", "value": target},
                        {"name": "PLATFORMS", "value": ["linux/amd64"]},
                        {"name": "TLSVERIFY", "value": "false"},
                    ],
                },
            }
        )
    )
    capsys.readouterr()
    try:
        code = cli.main(
            ["run", "--taskrun", str(taskrun), "-w", f"source={source}", "--tls-verify=false", "--output", "json"]
        )
    finally:
        server.shutdown()
    out_text, err = capsys.readouterr()
    assert asked == ["/api/v1/packages/tekton-task/taskimage-tasks/buildah-multiarch/0.1.0"]
    assert code == 0, err[-3000:]
    results = json.loads(out_text)["results"]
    assert results["IMAGE_URL"] == target and tag_exists(results["IMAGE_REF"])
    assert amd64_task_image in err  # the Task Artifact Hub served, with its pinned image


@pytest.mark.parametrize(
    "params, message",
    [
        (
            [{"name": "type", "value": "tekton"}, {"name": "name", "value": "x"}, {"name": "version", "value": "0.1"}],
            "only artifact",
        ),
        ([{"name": "name", "value": "x"}], "needs params name and version"),
    ],
)
def test_resolver_hub_bad_params_are_usage_errors(tmp_path, capsys, params, message):
    taskrun = tmp_path / "taskrun.yaml"
    taskrun.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "tekton.dev/v1",
                "kind": "TaskRun",
                "metadata": {"name": "bad-hub"},
                "spec": {"taskRef": {"resolver": "hub", "params": params}},
            }
        )
    )
    capsys.readouterr()
    assert cli.main(["run", "--taskrun", str(taskrun)]) == 2
    assert message in capsys.readouterr().err
