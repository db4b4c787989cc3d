"""The cluster commands against kmock, a real local HTTP server that EMULATES the Kubernetes API.

What is real here: the ``kubernetes`` client, HTTP, JSON, watch streams, log streams, the
kubeconfig loading, our CLI. What is emulated: the API server (kmock stores objects as posted,
merges patches, streams watch events) and the Tekton controller and kubelet, which a coroutine in
each test plays: it creates TaskRuns and pods, moves step containers through running/terminated
and sets the conditions and results a real controller would. kmock answers a create with 200;
like the real API server we answer 201 (a reaction on POST), see ``tekton_api``.

The CLI runs in a worker thread (the ``kubernetes`` client is blocking) while the test's event
loop serves kmock and plays the controller.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest
import yaml

from taskimage import cli
from taskimage.tekton.kube import client as kube_client
from taskimage.tekton.kube import errors as kube_errors


@attrs.define(kw_only=True)
class ApplyingApiServer(kmock.KubernetesEmulator):
    """kmock's emulator plus server-side apply (PATCH application/apply-patch+yaml) as the API
    server does it for CRDs without list markers (lists are atomic): the object is created when
    missing; fields the same field manager applied last time and no longer sends are removed;
    the fields it sends are set; fields nobody applied (a webhook's defaults, someone's label)
    stay. kmock alone merges every PATCH and answers 404 for a missing object."""

    applied: dict[tuple[Any, ...], Any] = attrs.field(factory=dict, init=False)
    # Namespaces (the binfmt DaemonSet's file has one): kmock reads /api/v1/namespaces/NAME as
    # "namespace NAME" and serves nothing there, so GET and apply of a Namespace are served here.
    namespaces: dict[str, Any] = attrs.field(factory=dict, init=False)

    async def _handle(self, request):
        ctype = str(request.headers.get("Content-Type", ""))
        namespace = re.fullmatch(r"/api/v1/namespaces/([^/]+)", request.url.path)
        if namespace and request.method in ("GET", "PATCH"):
            name = namespace.group(1)
            if request.method == "PATCH" and ctype.startswith("application/apply-patch"):
                self.namespaces[name] = _set(self.namespaces.get(name, {}), json.loads(request.text))
            if name not in self.namespaces:
                status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
                return aiohttp.web.json_response(status, status=404)
            return aiohttp.web.json_response(self.namespaces[name])
        if request.method == "PATCH" and ctype.startswith("application/apply-patch") and request.resource is not None:
            config = json.loads(request.text)
            manager = request.params.get("fieldManager", "")
            key = (request.resource, request.namespace, request.name)
            try:
                live = self.objects[key].raw
            except KeyError:
                live = {}
            result = _set(_drop(live, self.applied.get((*key, manager), {}), config), config)
            self.objects[key] = result
            self.applied[(*key, manager)] = config
        return await super()._handle(request)


def _drop(live: Any, before: Any, now: Any) -> Any:
    if not isinstance(live, dict) or not isinstance(before, dict):
        return live
    now = now if isinstance(now, dict) else {}
    out = {}
    for k, v in live.items():
        if k in before and k not in now:
            continue
        out[k] = _drop(v, before[k], now[k]) if k in before and k in now else v
    return out


def _set(live: Any, config: Any) -> Any:
    if not isinstance(live, dict) or not isinstance(config, dict):
        return copy.deepcopy(config)
    return {**live, **{k: _set(live.get(k), v) for k, v in config.items()}}


pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=ApplyingApiServer)]

NS = "ci"
TOKEN = "kmock-token-0123456789"
TEKTON = "/apis/tekton.dev/v1/namespaces/ci"

TASK = {
    "apiVersion": "tekton.dev/v1",
    "kind": "Task",
    "metadata": {"name": "mini-build", "labels": {"app.kubernetes.io/version": "0.1"}},
    "spec": {
        "params": [
            {"name": "IMAGE", "type": "string"},
            {"name": "PLATFORMS", "type": "array", "default": ["linux/amd64"]},
        ],
        "results": [{"name": "IMAGE_DIGEST"}],
        "workspaces": [{"name": "source"}],
        "steps": [
            {
                "name": "build",
                "image": "example.org/taskimage@sha256:" + "a" * 64,
                "args": ["build", "$(params.PLATFORMS[*])"],
            }
        ],
    },
}
PIPELINE = {
    "apiVersion": "tekton.dev/v1",
    "kind": "Pipeline",
    "metadata": {"name": "mini"},
    "spec": {
        "params": [
            {"name": "IMAGE", "type": "string"},
            {"name": "PLATFORMS", "type": "array", "default": ["linux/amd64"]},
            {"name": "CONTEXT", "type": "string", "default": "."},
        ],
        "workspaces": [{"name": "source"}, {"name": "dockerconfig", "optional": True}],
        "results": [{"name": "IMAGE_DIGEST", "value": "$(tasks.build.results.IMAGE_DIGEST)"}],
        "tasks": [
            {"name": "clone", "taskRef": {"resolver": "hub", "params": [{"name": "name", "value": "git-clone"}]}},
            # As the published Pipeline does: the Task comes from the release bundle.
            {
                "name": "build",
                "runAfter": ["clone"],
                "taskRef": {
                    "resolver": "bundles",
                    "params": [
                        {"name": "bundle", "value": "ghcr.io/example/tasks:0.1"},
                        {"name": "name", "value": "mini-build"},
                        {"name": "kind", "value": "task"},
                    ],
                },
            },
        ],
    },
}
DAEMONSET = {
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "metadata": {"name": "binfmt"},
    "spec": {
        "selector": {"matchLabels": {"app": "binfmt"}},
        "template": {
            "metadata": {"labels": {"app": "binfmt"}},
            "spec": {
                "containers": [
                    {
                        "name": "binfmt",
                        "image": "example.org/binfmt@sha256:" + "b" * 64,
                        "securityContext": {"privileged": True},
                    }
                ]
            },
        },
    },
}


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def tekton_api(kmock):
    """kmock with the Tekton v1 and apps/v1 resources declared; creates answer 201 like the real server."""
    for plural, kind in (
        ("tasks", "Task"),
        ("pipelines", "Pipeline"),
        ("pipelineruns", "PipelineRun"),
        ("taskruns", "TaskRun"),
    ):
        kmock.resources[f"tekton.dev/v1/{plural}"] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs={"create", "get", "list", "watch", "patch"}
        )
    kmock.resources["apps/v1/daemonsets"] = kmock.ResourceInfo(kind="DaemonSet", namespaced=True)
    kmock.resources["v1/pods"] = kmock.ResourceInfo(kind="Pod", namespaced=True)
    # The emulator stores the object before reactions run; this only fixes the status code.
    kmock["post", kmock.resource("tekton.dev/v1/tasks")] << 201 << (lambda req: req.data)
    kmock["post", kmock.resource("tekton.dev/v1/pipelines")] << 201 << (lambda req: req.data)
    kmock["post", kmock.resource("tekton.dev/v1/pipelineruns")] << 201 << (lambda req: req.data)
    kmock["post", kmock.resource("apps/v1/daemonsets")] << 201 << (lambda req: req.data)
    return kmock


def write_kubeconfig(path: Path, url: str, namespace: str = NS) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": url.rstrip("/")}}],
                "users": [{"name": "tester", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "kmock", "context": {"cluster": "kmock", "user": "tester", "namespace": namespace}}
                ],
                "current-context": "kmock",
            }
        )
    )
    return path


@pytest.fixture
def kubeconfig(kmock, tmp_path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))


@pytest.fixture
def catalog(tmp_path) -> Path:
    """A small repository layout with our own fixture YAML (not the real catalog)."""
    root = tmp_path / "repo"
    for rel, doc in (
        ("catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml", TASK),
        ("catalog/pipeline/buildah-multiarch/0.1/buildah-multiarch.yaml", PIPELINE),
        ("tekton/binfmt-daemonset.yaml", DAEMONSET),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


class CliRun:
    """``taskimage ARGV`` in a worker thread; ``await run.done()`` gives the exit code."""

    def __init__(self, argv: list[str], capsys):
        self.argv = argv
        self.capsys = capsys
        self.code: int | None = None
        self.exc: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.code = cli.main(self.argv)
        except BaseException as exc:  # surfaced by done()
            self.exc = exc

    async def done(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.thread.is_alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"taskimage {' '.join(self.argv)} did not finish within {timeout} s")
            await asyncio.sleep(0.02)
        if self.exc is not None:
            raise self.exc
        assert self.code is not None
        return self.code


async def run_cli(argv: list[str], capsys, timeout: float = 20) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await CliRun(argv, capsys).done(timeout)
    out, err = capsys.readouterr()
    return code, out, err


def stored(kmock, plural: str, name: str, group: str = "tekton.dev/v1") -> dict[str, Any]:
    return kmock.objects[f"{group}/{plural}", NS, name].raw


def requests_of(kmock, method: str, fragment: str) -> list:
    return [r for r in list(kmock) if r.method == method and fragment in str(r.url)]


def assert_server_side_applies(kmock, count: int) -> None:
    """``count`` PATCHes so far, each a server-side apply by field manager taskimage, forced."""
    patches = requests_of(kmock, "PATCH", "/")
    assert len(patches) == count
    for r in patches:
        assert r.headers["Content-Type"] == "application/apply-patch+yaml"
        assert dict(r.params) == {"fieldManager": "taskimage", "force": "true"}


# --------------------------------------------------------------------------- cluster install


async def test_install_creates_the_exact_objects_then_reports_unchanged(tekton_api, kubeconfig, catalog, capsys):
    kmock = tekton_api
    argv = ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog)]
    code, out, err = await run_cli(argv, capsys)
    assert code == 0, err
    assert out.splitlines() == [
        "task.tekton.dev/mini-build created",
        "pipeline.tekton.dev/mini created",
        "daemonset.apps/binfmt created",
    ]
    for plural, doc, group in (("tasks", TASK, "tekton.dev/v1"), ("daemonsets", DAEMONSET, "apps/v1")):
        expected = {**doc, "metadata": {**doc["metadata"], "namespace": NS}}
        assert stored(kmock, plural, doc["metadata"]["name"], group) == expected
    # The Pipeline runs the Task we just applied, not the one in the release bundle.
    pipeline = copy.deepcopy(stored(kmock, "pipelines", "mini"))
    assert pipeline["spec"]["tasks"][1]["taskRef"] == {"name": "mini-build", "kind": "Task"}
    pipeline["spec"]["tasks"][1]["taskRef"] = PIPELINE["spec"]["tasks"][1]["taskRef"]
    assert pipeline == {**PIPELINE, "metadata": {"name": "mini", "namespace": NS}}
    # The kubeconfig's token went to the server and never into our output.
    assert all(
        r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in list(kmock) if "/apis/tekton.dev" in str(r.url)
    )
    assert TOKEN not in out + err

    # Every object went in by server-side apply as field manager taskimage, none by POST.
    assert_server_side_applies(kmock, 3)
    assert not requests_of(kmock, "POST", "/")

    # What Tekton's defaulting webhook does: it adds fields. They are not ours: they stay,
    # and applying the same files again changes nothing.
    kmock.objects["tekton.dev/v1/tasks", NS, "mini-build"].patch(
        {"spec": {"stepTemplate": {}}, "metadata": {"uid": "1234", "resourceVersion": "7"}}
    )
    code, out, err = await run_cli(argv, capsys)
    assert code == 0, err
    assert out.splitlines() == [
        "task.tekton.dev/mini-build unchanged",
        "pipeline.tekton.dev/mini unchanged",
        "daemonset.apps/binfmt unchanged",
    ]
    assert_server_side_applies(kmock, 6)
    assert stored(kmock, "tasks", "mini-build")["spec"]["stepTemplate"] == {}


async def test_install_updates_only_what_changed(tekton_api, kubeconfig, catalog, capsys):
    kmock = tekton_api
    argv = ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog), "--skip-binfmt"]
    assert (await run_cli(argv, capsys))[0] == 0
    changed = yaml.safe_load((catalog / "catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml").read_text())
    changed["spec"]["steps"][0]["image"] = "example.org/taskimage@sha256:" + "c" * 64
    del changed["spec"]["results"]  # removed fields must go away on the server too
    # Fields another manager owns must not: a label a controller set, a webhook default.
    kmock.objects["tekton.dev/v1/tasks", NS, "mini-build"].patch(
        {"metadata": {"labels": {"team": "ci"}}, "spec": {"stepTemplate": {"env": []}}}
    )
    (catalog / "catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml").write_text(yaml.safe_dump(changed))
    code, out, err = await run_cli(argv, capsys)
    assert code == 0, err
    assert out.splitlines() == ["task.tekton.dev/mini-build updated", "pipeline.tekton.dev/mini unchanged"]
    task = stored(kmock, "tasks", "mini-build")
    assert task["spec"]["steps"][0]["image"].endswith("c" * 64)
    assert "results" not in task["spec"]
    assert task["metadata"]["labels"] == {"app.kubernetes.io/version": "0.1", "team": "ci"}
    assert task["spec"]["stepTemplate"] == {"env": []}
    assert not [r for r in list(kmock) if "daemonsets" in str(r.url)]
    assert_server_side_applies(kmock, 4)
    (last,) = requests_of(kmock, "PATCH", "/tasks/mini-build")[-1:]
    assert json.loads(last.text) == {**changed, "metadata": {**changed["metadata"], "namespace": NS}}


async def test_install_with_bundle_references_the_bundle_instead_of_applying_the_task(
    tekton_api, kubeconfig, catalog, capsys
):
    kmock = tekton_api
    bundle = "registry.example/tasks/buildah-multiarch:0.1"
    code, out, err = await run_cli(
        [
            "cluster",
            "install",
            "--kubeconfig",
            str(kubeconfig),
            "--from",
            str(catalog),
            "--bundle",
            bundle,
            "--skip-binfmt",
            "-n",
            "other",
        ],
        capsys,
    )
    assert code == 0, err
    assert out.splitlines() == ["pipeline.tekton.dev/mini created"]
    pipeline = kmock.objects["tekton.dev/v1/pipelines", "other", "mini"].raw
    assert pipeline["spec"]["tasks"][1]["taskRef"] == {
        "resolver": "bundles",
        "params": [
            {"name": "bundle", "value": bundle},
            {"name": "name", "value": "mini-build"},
            {"name": "kind", "value": "task"},
        ],
    }
    assert pipeline["spec"]["tasks"][0]["taskRef"] == PIPELINE["spec"]["tasks"][0]["taskRef"]  # others untouched
    assert not requests_of(kmock, "PATCH", "/tasks") and not requests_of(kmock, "POST", "/tasks")


async def test_install_warns_about_a_task_the_pipeline_needs_but_nobody_installed(
    tekton_api, kubeconfig, catalog, capsys
):
    doc = dict(
        PIPELINE,
        spec=dict(
            PIPELINE["spec"], tasks=PIPELINE["spec"]["tasks"] + [{"name": "scan", "taskRef": {"name": "trivy-scan"}}]
        ),
    )
    (catalog / "catalog/pipeline/buildah-multiarch/0.1/buildah-multiarch.yaml").write_text(yaml.safe_dump(doc))
    code, out, err = await run_cli(
        ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog), "--skip-binfmt"], capsys
    )
    assert code == 0, err
    assert "refers to Task trivy-scan, which is not in namespace ci" in err
    assert "mini-build, which" not in err


# --------------------------------------------------------------------------- the task image

# What the shipped Task, Pipeline and binfmt DaemonSet name until a release pins the task image:
# the digest of no image. Applied as is, the DaemonSet crash-loops on ImagePullBackOff and every
# TaskRun keeping the BUILDER_IMAGE default fails at its first pull.
PLACEHOLDER = "@sha256:" + "0" * 64
BUILDER = "registry.example.org/team/taskimage@sha256:" + "c" * 64
REFUSED = (
    "ERROR: the unreleased placeholder image …@sha256:000… (in Task buildah-multiarch, Pipeline buildah-multiarch, "
    "DaemonSet taskimage-binfmt) cannot be pulled by any cluster: pass --builder-image REPO@sha256:DIGEST "
    "(a released task image)"
)


def _builder_param(doc: dict[str, Any]) -> dict[str, Any]:
    (param,) = [p for p in doc["spec"]["params"] if p["name"] == "BUILDER_IMAGE"]
    return param


async def test_install_of_the_shipped_files_runs_the_builder_image_given(tekton_api, kubeconfig, capsys):
    kmock = tekton_api
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False)
    argv = ["cluster", "install", "--kubeconfig", str(kubeconfig), "--builder-image", BUILDER]
    code, out, err = await run_cli(argv, capsys)
    assert code == 0, err
    assert out.splitlines() == [
        "task.tekton.dev/buildah-multiarch created",
        "pipeline.tekton.dev/buildah-multiarch created",
        "namespace/taskimage-system created",
        "daemonset.apps/taskimage-binfmt created",
    ]
    # Read back from the API server: what a cluster would pull.
    task = stored(kmock, "tasks", "buildah-multiarch")
    pipeline = stored(kmock, "pipelines", "buildah-multiarch")
    daemonset = kmock.objects["apps/v1/daemonsets", "taskimage-system", "taskimage-binfmt"].raw
    assert _builder_param(task)["default"] == BUILDER
    assert _builder_param(pipeline)["default"] == BUILDER
    assert [c["image"] for c in daemonset["spec"]["template"]["spec"]["containers"]] == [BUILDER]
    assert [s["image"] for s in task["spec"]["steps"]] == ["$(params.BUILDER_IMAGE)"]
    for doc in (task, pipeline, daemonset):
        assert PLACEHOLDER not in json.dumps(doc)
    assert (
        kmock.namespaces["taskimage-system"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    )
    assert_server_side_applies(kmock, 4)

    # The same image again changes nothing.
    code, out, err = await run_cli(argv, capsys)
    assert code == 0, err
    assert all(line.endswith(" unchanged") for line in out.splitlines()), out


@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run"])
async def test_install_without_builder_image_refuses_the_placeholder_and_writes_nothing(
    tekton_api, kubeconfig, capsys, dry_run
):
    kmock = tekton_api
    argv = ["cluster", "install", "--kubeconfig", str(kubeconfig)] + (["--dry-run"] if dry_run else [])
    code, out, err = await run_cli(argv, capsys)
    assert code == 2
    assert err.strip().splitlines() == [REFUSED]
    assert out == ""
    assert not [r for r in list(kmock) if r.method in ("POST", "PUT", "PATCH", "DELETE")]
    assert list(kmock) == []  # refused before connecting: not even a read


async def test_install_refuses_the_placeholder_wherever_it_is_left(tekton_api, kubeconfig, catalog, capsys):
    kmock = tekton_api
    doc = copy.deepcopy(TASK)
    doc["spec"]["steps"][0]["image"] = "ghcr.io/taskimage/taskimage" + PLACEHOLDER
    (catalog / "catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml").write_text(yaml.safe_dump(doc))
    base = ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog), "--skip-binfmt"]
    code, out, err = await run_cli(base, capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        "ERROR: the unreleased placeholder image …@sha256:000… (in Task mini-build) cannot be pulled by any "
        "cluster: pass --builder-image REPO@sha256:DIGEST (a released task image)"
    ]
    # --builder-image sets BUILDER_IMAGE defaults and DaemonSet containers, not a step's literal image.
    code, out, err = await run_cli(base + ["--builder-image", BUILDER], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"ERROR: --builder-image {BUILDER}: the unreleased placeholder image …@sha256:000… is still in Task "
        "mini-build, outside the BUILDER_IMAGE param defaults and DaemonSet containers --builder-image sets"
    ]
    assert list(kmock) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "registry.example.org/team/taskimage:1.0",
            "--builder-image: 'registry.example.org/team/taskimage:1.0' names no digest (a tag can be moved): "
            "give REPO@sha256:DIGEST (a released task image)",
        ),
        (
            "registry.example.org/team/taskimage@sha256:abc",
            "--builder-image: 'sha256:abc' in 'registry.example.org/team/taskimage@sha256:abc' is not a sha256 "
            "digest (sha256: and 64 hex digits)",
        ),
        (
            "registry.example.org/Team/taskimage@sha256:" + "c" * 64,
            f"--builder-image: invalid image name 'registry.example.org/Team/taskimage@sha256:{'c' * 64}': "
            "repository names must be lower-case",
        ),
        (
            "ghcr.io/taskimage/taskimage" + PLACEHOLDER,
            f"--builder-image: 'ghcr.io/taskimage/taskimage{PLACEHOLDER}' is the unreleased placeholder digest; "
            "give a released task image",
        ),
    ],
    ids=["tag-only", "short-digest", "upper-case", "placeholder"],
)
async def test_a_bad_builder_image_is_refused_before_any_request(tekton_api, kubeconfig, capsys, value, message):
    kmock = tekton_api
    for extra in ([], ["--dry-run"]):
        argv = ["cluster", "install", "--kubeconfig", str(kubeconfig), "--builder-image", value, *extra]
        code, out, err = await run_cli(argv, capsys)
        assert code == 2
        assert err.strip().splitlines() == [f"ERROR: {message}"]
        assert out == ""
    assert list(kmock) == []


# --------------------------------------------------------------------------- errors


async def test_no_tekton_api_means_tekton_is_not_installed(kmock, kubeconfig, catalog, capsys):
    code, out, err = await run_cli(
        ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog)], capsys
    )
    assert code == 1
    assert "ERROR: Tekton Pipelines is not installed in this cluster" in err
    assert len(err.strip().splitlines()) == 2  # the phase header and one error line
    assert not requests_of(kmock, "POST", "/") and not requests_of(kmock, "PATCH", "/")


async def test_plain_404_on_apply_means_tekton_is_not_installed(tekton_api, kubeconfig, catalog, capsys):
    # A real API server answers an unknown resource type with a plain-text 404, not a Status.
    tekton_api["patch", tekton_api.resource("tekton.dev/v1/tasks")] ** 10 << 404 << b"404 page not found\n"
    code, out, err = await run_cli(
        ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog)], capsys
    )
    assert code == 1
    assert (
        "ERROR: Tekton Pipelines is not installed in this cluster (the API server has no tasks.tekton.dev; could not apply tasks.tekton.dev 'mini-build' in namespace ci)"
        in err
    )


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


async def test_403_names_the_verb_and_resource(tekton_api, kubeconfig, catalog, capsys):
    message = 'pipelines.tekton.dev is forbidden: User "system:serviceaccount:ci:builder" cannot patch resource "pipelines" in API group "tekton.dev" in the namespace "ci"'
    (
        tekton_api["patch", tekton_api.resource("tekton.dev/v1/pipelines")] ** 10
        << 403
        << _status(403, "Forbidden", message)
    )
    code, out, err = await run_cli(
        ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog)], capsys
    )
    assert code == 1
    assert out.splitlines() == ["task.tekton.dev/mini-build created"]  # what got done is still reported
    error = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert error == [
        f"ERROR: not allowed to apply pipelines.tekton.dev 'mini' in namespace ci (403 Forbidden): {message}"
    ]


async def test_401_says_credentials_were_refused(tekton_api, kubeconfig, catalog, capsys):
    (
        tekton_api["get", tekton_api.resource("tekton.dev/v1/pipelines")] ** 10
        << 401
        << _status(401, "Unauthorized", "Unauthorized")
    )
    code, out, err = await run_cli(["pipeline", "start", "mini", "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 1
    assert (
        "refused our credentials (401 Unauthorized) when trying to get pipelines.tekton.dev 'mini' in namespace ci"
        in err
    )
    assert TOKEN not in err


async def test_409_on_update_is_a_conflict_message(tekton_api, kubeconfig, catalog, capsys):
    kmock = tekton_api
    kmock.objects["tekton.dev/v1/tasks", NS, "mini-build"] = {**TASK, "spec": {"steps": []}}
    (
        kmock["patch", kmock.resource("tekton.dev/v1/tasks")] ** 10
        << 409
        << _status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    )
    code, out, err = await run_cli(
        ["cluster", "install", "--kubeconfig", str(kubeconfig), "--from", str(catalog)], capsys
    )
    assert code == 1
    assert (
        "ERROR: conflict: tasks.tekton.dev 'mini-build' was changed by someone else while we tried to apply it (409 Conflict); run the command again: the object has been modified"
        in err
    )


async def test_timeouts_and_unreachable_servers_are_one_line(tekton_api, tmp_path):
    async def slow(request):
        await asyncio.sleep(2)
        return {}

    tekton_api["get", tekton_api.resource("tekton.dev/v1/pipelines")] ** 10 << slow
    config = write_kubeconfig(tmp_path / "kc", str(tekton_api.url))

    def call() -> str:
        kube = kube_client.Kube.connect(kubeconfig=str(config), timeouts=kube_client.Timeouts(connect=1, read=0.5))
        try:
            kube.get(kube_client.PIPELINES, "mini")
        except kube_errors.Timeout as exc:
            return str(exc)
        return "no error"

    message = await asyncio.to_thread(call)
    assert (
        message
        == f"timed out talking to the Kubernetes API at {str(tekton_api.url).rstrip('/')} when trying to get pipelines.tekton.dev 'mini' in namespace ci"
    )

    closed = write_kubeconfig(tmp_path / "closed", "http://127.0.0.1:9")  # discard port: nobody listens

    def refused() -> str:
        kube = kube_client.Kube.connect(kubeconfig=str(closed), timeouts=kube_client.Timeouts(connect=1, read=1))
        kube.api_client.configuration.retries = 0
        try:
            kube.require_tekton()
        except kube_errors.Unreachable as exc:
            return str(exc)
        return "no error"

    assert (await asyncio.to_thread(refused)).startswith(
        "cannot reach the Kubernetes API at http://127.0.0.1:9 (connection refused)"
    )


# --------------------------------------------------------------------------- pipeline start


async def test_start_creates_the_pipelinerun_tkn_would(tekton_api, kubeconfig, capsys):
    kmock = tekton_api
    kmock.objects["tekton.dev/v1/pipelines", NS, "mini"] = PIPELINE
    code, out, err = await run_cli(
        [
            "pipeline",
            "start",
            "mini",
            "--kubeconfig",
            str(kubeconfig),
            "-p",
            "IMAGE=registry.example/app:1",
            "-p",
            "PLATFORMS=linux/amd64,linux/arm64",
            "-w",
            "name=source,claimSize=1Gi",
            "-w",
            "name=dockerconfig,secret=regcred",
            "-s",
            "builder",
            "--timeout",
            "1h30m",
            "--use-param-defaults",
        ],
        capsys,
    )
    assert code == 0, err
    name = out.strip()
    assert name.startswith("mini-run-") and len(name) == len("mini-run-") + 5
    assert stored(kmock, "pipelineruns", name) == {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": NS, "labels": {"tekton.dev/pipeline": "mini"}},
        "spec": {
            "pipelineRef": {"name": "mini"},
            "params": [
                {"name": "IMAGE", "value": "registry.example/app:1"},
                {"name": "PLATFORMS", "value": ["linux/amd64", "linux/arm64"]},
            ],
            "workspaces": [
                {
                    "name": "source",
                    "volumeClaimTemplate": {
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                    },
                },
                {"name": "dockerconfig", "secret": {"secretName": "regcred"}},
            ],
            "taskRunTemplate": {"serviceAccountName": "builder"},
            "timeouts": {"pipeline": "1h30m"},
        },
    }


async def test_start_rejects_bad_params_before_creating_anything(tekton_api, kubeconfig, capsys):
    kmock = tekton_api
    kmock.objects["tekton.dev/v1/pipelines", NS, "mini"] = PIPELINE
    base = ["pipeline", "start", "mini", "--kubeconfig", str(kubeconfig)]
    code, _, err = await run_cli(base + ["-p", "IMAGE=x", "-p", "IMAGES=y", "-w", "name=source,emptyDir="], capsys)
    assert code == 2
    assert "ERROR: -p IMAGES: Pipeline mini declares no param IMAGES (declared: CONTEXT, IMAGE, PLATFORMS)" in err
    code, _, err = await run_cli(base + ["-p", "IMAGE=x"], capsys)
    assert code == 2
    assert "ERROR: -w name=source: Pipeline mini requires this workspace; missing: source" in err
    code, _, err = await run_cli(["pipeline", "start", "nope", "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 2
    assert "no Pipeline nope in namespace ci" in err
    assert not requests_of(kmock, "POST", "/pipelineruns")


class Controller:
    """Plays the Tekton controller and the kubelet for one PipelineRun, through the API."""

    def __init__(self, kmock, lockstep: bool = False):
        self.kmock = kmock
        # lockstep: a step ends only after its log was requested, so the follower must watch the
        # pod for every next step (it cannot see them all finished at once).
        self.lockstep = lockstep

    async def log_requested(self, pod: str, container: str) -> None:
        for _ in range(500):
            if any(
                str(r.url.path).endswith(f"/pods/{pod}/log") and r.params.get("container") == container
                for r in list(self.kmock)
            ):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"nobody asked for the log of {pod}/{container}")

    async def wait_for_run(self) -> str:
        for _ in range(500):
            resp = await self.kmock.get(f"{TEKTON}/pipelineruns")
            items = (await resp.json()).get("items") or []
            if items:
                return items[0]["metadata"]["name"]
            await asyncio.sleep(0.02)
        raise AssertionError("no PipelineRun was created")

    async def patch(self, path: str, body: dict) -> None:
        resp = await self.kmock.patch(path, json=body)
        assert resp.status == 200, await resp.text()

    async def run(
        self, tasks: list[tuple[str, list[tuple[str, list[str], int]]]], results: list[dict], pause: float = 0.05
    ) -> str:
        """``tasks``: (pipeline task, [(step, log lines, exit code)]). Stops at the first failing step."""
        kmock = self.kmock
        run = await self.wait_for_run()
        children: list[dict] = []
        await self.patch(
            f"{TEKTON}/pipelineruns/{run}",
            {"status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}]}},
        )
        failed: tuple[str, str, str, int] | None = None
        for task, steps in tasks:
            tr, pod = f"{run}-{task}", f"{run}-{task}-pod"
            children.append({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": tr, "pipelineTaskName": task})
            await kmock.post(
                f"{TEKTON}/taskruns",
                json={
                    "apiVersion": "tekton.dev/v1",
                    "kind": "TaskRun",
                    "metadata": {
                        "name": tr,
                        "namespace": NS,
                        "labels": {"tekton.dev/pipelineRun": run, "tekton.dev/pipelineTask": task},
                    },
                    "status": {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Pending"}]},
                },
            )
            await self.patch(f"{TEKTON}/pipelineruns/{run}", {"status": {"childReferences": list(children)}})
            await asyncio.sleep(pause)
            containers = [f"step-{s}" for s, _, _ in steps]
            # The kubelet reports containerStatuses sorted by name, not in step order.
            waiting = sorted(
                ({"name": c, "state": {"waiting": {"reason": "PodInitializing"}}} for c in containers),
                key=lambda s: s["name"],
            )
            await kmock.post(
                f"/api/v1/namespaces/{NS}/pods",
                json={
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod, "namespace": NS},
                    "spec": {
                        "initContainers": [{"name": "prepare"}],
                        "containers": [{"name": c} for c in containers] + [{"name": "sidecar-x"}],
                    },
                    "status": {"phase": "Pending", "containerStatuses": waiting},
                },
            )
            for step, lines, _ in steps:  # (a skipped step's log, if read, would be empty on a real cluster)
                (
                    kmock[f"get /api/v1/namespaces/{NS}/pods/{pod}/log", kmock.params(container=f"step-{step}")]
                    << "".join(line + "\n" for line in lines).encode()
                )
            await asyncio.sleep(pause)
            await self.patch(f"{TEKTON}/taskruns/{tr}", {"status": {"podName": pod}})
            states = {s["name"]: s for s in waiting}
            step_status = []
            for step, _, exit_code in steps:
                c = f"step-{step}"
                if failed:  # Tekton skips the remaining steps; their containers end without running
                    states[c] = {"name": c, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
                    step_status.append({"name": step, "container": c, "terminated": {"exitCode": 1, "reason": "Error"}})
                    continue
                states[c] = {"name": c, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}
                await self.patch(
                    f"/api/v1/namespaces/{NS}/pods/{pod}",
                    {
                        "status": {
                            "phase": "Running",
                            "containerStatuses": sorted(states.values(), key=lambda s: s["name"]),
                        }
                    },
                )
                await asyncio.sleep(pause)
                if self.lockstep:
                    await self.log_requested(pod, c)
                reason = "Completed" if exit_code == 0 else "Error"
                states[c] = {"name": c, "state": {"terminated": {"exitCode": exit_code, "reason": reason}}}
                step_status.append(
                    {"name": step, "container": c, "terminated": {"exitCode": exit_code, "reason": reason}}
                )
                if exit_code:
                    failed = (tr, task, step, exit_code)
            await self.patch(
                f"/api/v1/namespaces/{NS}/pods/{pod}",
                {
                    "status": {
                        "phase": "Failed" if failed else "Succeeded",
                        "containerStatuses": sorted(states.values(), key=lambda s: s["name"]),
                    }
                },
            )
            if failed:
                cond = {
                    "type": "Succeeded",
                    "status": "False",
                    "reason": "Failed",
                    "message": f'"step-{failed[2]}" exited with code {failed[3]}',
                }
            else:
                cond = {
                    "type": "Succeeded",
                    "status": "True",
                    "reason": "Succeeded",
                    "message": "All Steps have completed executing",
                }
            await self.patch(f"{TEKTON}/taskruns/{tr}", {"status": {"conditions": [cond], "steps": step_status}})
            await asyncio.sleep(pause)
            if failed:
                break
        if failed:
            final = {
                "type": "Succeeded",
                "status": "False",
                "reason": "Failed",
                "message": f"Tasks Completed: {len(children)} (Failed: 1, Cancelled 0), Skipped: {len(tasks) - len(children)}",
            }
        else:
            final = {
                "type": "Succeeded",
                "status": "True",
                "reason": "Succeeded",
                "message": f"Tasks Completed: {len(children)} (Failed: 0, Cancelled 0), Skipped: 0",
            }
        await self.patch(
            f"{TEKTON}/pipelineruns/{run}",
            {"status": {"conditions": [final], "results": results, "childReferences": children}},
        )
        return run


TASKS_OK = [
    ("clone", [("clone", ["Cloning https://example.org/app.git", "Checked out 1234abcd"], 0)]),
    (
        "build",
        [
            ("prepare", ["preflight ok"], 0),
            ("build", ["==> build linux/amd64", "==> build linux/arm64"], 0),
            ("push", ["pushed registry.example/app@sha256:ab12"], 0),
        ],
    ),
]


async def test_showlog_streams_steps_in_order_then_results_and_status(tekton_api, kubeconfig, capsys):
    kmock = tekton_api
    kmock.objects["tekton.dev/v1/pipelines", NS, "mini"] = PIPELINE
    cli_run = CliRun(
        [
            "pipeline",
            "start",
            "mini",
            "--kubeconfig",
            str(kubeconfig),
            "-p",
            "IMAGE=registry.example/app:1",
            "-w",
            "name=source,claimSize=1Gi",
            "--showlog",
        ],
        capsys,
    )
    run = await Controller(kmock, lockstep=True).run(
        TASKS_OK, results=[{"name": "IMAGE_DIGEST", "value": "sha256:ab12"}, {"name": "IMAGES", "value": ["a", "b"]}]
    )
    code = await cli_run.done()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == run
    logged = [line for line in err.splitlines() if line.startswith("[")]
    assert logged == [
        "[clone:clone] Cloning https://example.org/app.git",
        "[clone:clone] Checked out 1234abcd",
        "[build:prepare] preflight ok",
        "[build:build] ==> build linux/amd64",
        "[build:build] ==> build linux/arm64",
        "[build:push] pushed registry.example/app@sha256:ab12",
    ]
    tail = err[err.index("[build:push]") :]
    assert "IMAGE_DIGEST  sha256:ab12" in tail and "IMAGES        a,b" in tail
    assert f"PipelineRun {run} succeeded (Succeeded)" in tail
    # Logs were followed (not read once), and only after the follower watched for them.
    log_requests = [r for r in list(kmock) if str(r.url.path).endswith("/log")]
    assert [r.params["container"] for r in log_requests] == ["step-clone", "step-prepare", "step-build", "step-push"]
    assert all(r.params.get("follow") == "true" for r in log_requests)
    watches = [r for r in list(kmock) if r.params.get("watch") == "true"]
    pod_watches = [r.params["fieldSelector"] for r in watches if "/pods" in str(r.url)]
    # In lockstep the build pod's 2nd and 3rd steps start only after the previous log was read:
    # the follower must have waited for each on a watch (the 1st step may already be running).
    assert pod_watches.count(f"metadata.name={run}-build-pod") >= 2
    assert set(pod_watches) <= {f"metadata.name={run}-clone-pod", f"metadata.name={run}-build-pod"}
    assert [r for r in watches if "/pipelineruns" in str(r.url)] and [r for r in watches if "/taskruns" in str(r.url)]


async def test_showlog_failure_names_taskrun_step_and_reason_and_exits_1(tekton_api, kubeconfig, capsys):
    kmock = tekton_api
    kmock.objects["tekton.dev/v1/pipelines", NS, "mini"] = PIPELINE
    cli_run = CliRun(
        [
            "pipeline",
            "start",
            "mini",
            "--kubeconfig",
            str(kubeconfig),
            "-p",
            "IMAGE=r/a:1",
            "-w",
            "name=source,emptyDir=",
            "--showlog",
        ],
        capsys,
    )
    tasks = [
        TASKS_OK[0],
        ("build", [("prepare", ["ok"], 0), ("build", ["Error: exec format error"], 3), ("push", ["never"], 0)]),
    ]
    run = await Controller(kmock).run(tasks, results=[])
    code = await cli_run.done()
    out, err = capsys.readouterr()
    assert code == 1
    assert "[build:build] Error: exec format error" in err
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert errors == [
        f'ERROR: PipelineRun {run} failed (Failed): TaskRun {run}-build (task build) step build exited with code 3 (Error): "step-build" exited with code 3'
    ]


async def test_logs_of_a_finished_run_and_of_a_taskrun(tekton_api, kubeconfig, capsys):
    kmock = tekton_api
    kmock.objects["tekton.dev/v1/pipelines", NS, "mini"] = PIPELINE
    # Start without following, let the run finish, then read its logs.
    code, out, _ = await run_cli(
        [
            "pipeline",
            "start",
            "mini",
            "--kubeconfig",
            str(kubeconfig),
            "-p",
            "IMAGE=r/a:1",
            "-w",
            "name=source,claimName=src",
        ],
        capsys,
    )
    assert code == 0
    run = await Controller(kmock).run(TASKS_OK, results=[{"name": "IMAGE_DIGEST", "value": "sha256:ab12"}], pause=0)
    assert out.strip() == run
    code, out, err = await run_cli(["logs", run, "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == "[clone:clone] Cloning https://example.org/app.git"
    assert out.splitlines()[-1] == "[build:push] pushed registry.example/app@sha256:ab12"
    assert len(out.splitlines()) == 6
    assert f"PipelineRun {run} succeeded" in err
    log_requests = [r for r in list(kmock) if str(r.url.path).endswith("/log")]
    assert all(r.params.get("follow") == "false" for r in log_requests[-4:])

    code, out, err = await run_cli(["logs", f"{run}-build", "--kubeconfig", str(kubeconfig), "-f"], capsys)
    assert code == 0, err
    assert [line.split("]")[0] for line in out.splitlines()] == [
        "[build:prepare",
        "[build:build",
        "[build:build",
        "[build:push",
    ]

    code, _, err = await run_cli(["logs", "nothing-here", "--kubeconfig", str(kubeconfig)], capsys)
    assert code == 2 and "no PipelineRun or TaskRun nothing-here in namespace ci" in err
