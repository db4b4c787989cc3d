"""The cluster tier: a real kind cluster, real Tekton, our resources, a real multi-arch build.

Opt-in (``pytest -m kind``); needs Docker and network. Steps:

1. create a kind cluster (pytest-kind's ``KindCluster``; kind is downloaded unless on PATH),
2. install Tekton Pipelines from its release YAML and wait for its deployments,
3. start a registry and a git server (a tiny repository with a Containerfile whose RUN step
   has to run under qemu) inside the cluster,
4. ``taskimage cluster install --builder-image`` (the repository's catalog Task and Pipeline,
   binfmt DaemonSet, running TASKIMAGE_BUILDER_IMAGE),
5. ``taskimage pipeline start buildah-multiarch ... --showlog`` building linux/amd64 and
   linux/arm64 into the in-cluster registry,
6. read the pushed manifest list back through a port-forward with skopeo and check both
   platforms and that the run's IMAGE_DIGEST result is the list's digest.

A second test runs the matrix Pipeline ``buildah-multiarch-matrix`` (one TaskRun per platform,
the source as an OCI artifact) on the same cluster, with Tekton's affinity assistant left at its
default (asserted from the ``feature-flags`` ConfigMap, never changed): only emptyDir and Secret
workspaces are bound; see its docstring for how its Tasks are installed.

Environment:
- ``TASKIMAGE_BUILDER_IMAGE`` (required): the task image the Task runs (its BUILDER_IMAGE param),
  as ``REPO@sha256:DIGEST`` (``cluster install --builder-image`` takes only a digest reference),
  pullable by the cluster or present in the local Docker (it is then ``kind load``-ed).
- ``TASKIMAGE_KIND_TEKTON_RELEASE``: Tekton release YAML URL (default below).
- ``TASKIMAGE_KIND_VERSION``: kind release to download when ``kind`` is not on PATH; ``TASKIMAGE_KIND_NODE_IMAGE``.
- ``TASKIMAGE_KIND_KEEP=1`` keeps the cluster for debugging.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.kind

TEKTON_RELEASE = os.environ.get(
    "TASKIMAGE_KIND_TEKTON_RELEASE",
    "https://storage.googleapis.com/tekton-releases/pipeline/previous/v0.62.0/release.yaml",
)
KIND_VERSION = os.environ.get("TASKIMAGE_KIND_VERSION", "v0.24.0")  # default node: Kubernetes 1.31
NS = "taskimage-e2e"
CLUSTER = "taskimage-e2e"
REPO = Path(__file__).resolve().parents[2]


def _docker_answers() -> tuple[bool, str]:
    """Docker CLI present and its daemon answering; checked in well under a second when absent."""
    docker = shutil.which("docker")
    if not docker:
        return False, "the kind tier needs Docker: no docker command on PATH"
    try:
        subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"], check=True, capture_output=True, timeout=5
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return False, f"the kind tier needs Docker: the Docker daemon does not answer ({type(exc).__name__})"
    return True, ""


def _skip_unless_ready() -> str:
    ok, reason = _docker_answers()
    if not ok:
        pytest.skip(reason)  # never fails under TASKIMAGE_REQUIRE_ALL: the tier is opt-in
    image = os.environ.get("TASKIMAGE_BUILDER_IMAGE", "")
    if not image:
        pytest.skip("the kind tier needs TASKIMAGE_BUILDER_IMAGE: the task image the Task runs")
    if not shutil.which("skopeo"):
        pytest.skip("the kind tier needs skopeo to read the pushed manifest list")
    return image


SUPPORT = textwrap.dedent(
    """
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: registry, namespace: NS}
    spec:
      selector: {matchLabels: {app: registry}}
      template:
        metadata: {labels: {app: registry}}
        spec:
          containers:
            - name: registry
              image: docker.io/library/registry:2.8.3
              ports: [{containerPort: 5000}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: registry, namespace: NS}
    spec:
      selector: {app: registry}
      ports: [{port: 5000, targetPort: 5000}]
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: gitserver, namespace: NS}
    spec:
      selector: {matchLabels: {app: gitserver}}
      template:
        metadata: {labels: {app: gitserver}}
        spec:
          containers:
            - name: git
              image: docker.io/library/alpine:3.20
              ports: [{containerPort: 9418}]
              readinessProbe: {tcpSocket: {port: 9418}, periodSeconds: 2}
              command: ["/bin/sh", "-ec"]
              args:
                - |
                  apk add --no-cache git >/dev/null
                  mkdir -p /srv/app && cd /srv/app
                  git init -q -b main
                  printf 'FROM docker.io/library/busybox:1.36\\nRUN uname -m > /built-on\\n' > Containerfile
                  git add Containerfile
                  git -c user.name=e2e -c user.email=e2e@example.org commit -qm app
                  exec git daemon --reuseaddr --export-all --base-path=/srv /srv
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: gitserver, namespace: NS}
    spec:
      selector: {app: gitserver}
      ports: [{port: 9418, targetPort: 9418}]
    """
).replace("NS", NS)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    image = _skip_unless_ready()
    from pytest_kind import cluster as kind_module

    kind_module.KIND_VERSION = KIND_VERSION  # read when the binary is named and downloaded
    kind_bin = shutil.which("kind")
    kc = kind_module.KindCluster(
        CLUSTER,
        image=os.environ.get("TASKIMAGE_KIND_NODE_IMAGE") or None,
        kind_path=Path(kind_bin) if kind_bin else None,
        kubectl_path=Path(shutil.which("kubectl")) if shutil.which("kubectl") else None,
    )
    kc.create()
    try:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0:
            kc.load_docker_image(image)
        kc.kubectl("apply", "-f", TEKTON_RELEASE)
        for ns in ("tekton-pipelines", "tekton-pipelines-resolvers"):
            kc.kubectl("wait", "--for=condition=Available", "deployment", "--all", "-n", ns, "--timeout=600s")
        kc.kubectl("create", "namespace", NS)
        support = tmp_path_factory.mktemp("support") / "support.yaml"
        support.write_text(SUPPORT)
        kc.kubectl("apply", "-f", str(support))
        kc.kubectl("wait", "--for=condition=Available", "deployment", "--all", "-n", NS, "--timeout=300s")
        yield kc, image
    finally:
        if os.environ.get("TASKIMAGE_KIND_KEEP") != "1":
            kc.delete()


def _taskimage(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, timeout=3600, cwd=REPO
    )


def test_pipeline_builds_and_pushes_a_manifest_list(cluster):
    kc, builder = cluster
    kubeconfig = str(kc.kubeconfig_path.resolve())

    argv = ["cluster", "install", "--kubeconfig", kubeconfig, "-n", NS, "--from", str(REPO), "--builder-image", builder]
    install = _taskimage(*argv)
    assert install.returncode == 0, install.stderr
    assert "task.tekton.dev/buildah-multiarch created" in install.stdout
    assert "pipeline.tekton.dev/buildah-multiarch created" in install.stdout
    again = _taskimage(*argv)
    assert again.returncode == 0, again.stderr
    assert all(line.endswith(" unchanged") for line in again.stdout.splitlines()), (
        again.stdout
    )  # webhook defaults ignored

    image = f"registry.{NS}.svc.cluster.local:5000/e2e/app:1"
    start = _taskimage(
        "pipeline",
        "start",
        "buildah-multiarch",
        "--kubeconfig",
        kubeconfig,
        "-n",
        NS,
        "-p",
        f"url=git://gitserver.{NS}.svc.cluster.local/app",
        "-p",
        f"IMAGE={image}",
        "-p",
        "PLATFORMS=linux/amd64,linux/arm64",
        "-p",
        "TLSVERIFY=false",
        "-p",
        f"BUILDER_IMAGE={builder}",
        "-w",
        "name=shared,claimSize=2Gi",
        "--showlog",
    )
    assert start.returncode == 0, start.stderr[-5000:]
    run = start.stdout.strip()
    assert f"PipelineRun {run} succeeded" in start.stderr
    assert "[build:" in start.stderr  # the build's step logs were streamed with their prefix

    status = json.loads(kc.kubectl("get", "pipelinerun", run, "-n", NS, "-o", "json"))
    results = {r["name"]: r["value"] for r in status["status"].get("results", [])}

    with kc.port_forward("service/registry", 5000, "-n", NS) as port:
        ref = f"docker://127.0.0.1:{port}/e2e/app:1"
        raw = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--raw", ref], check=True, capture_output=True
        ).stdout
    manifest = json.loads(raw)
    assert manifest["mediaType"] in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in manifest["manifests"])
    assert platforms == ["linux/amd64", "linux/arm64"]
    assert results.get("IMAGE_DIGEST") == "sha256:" + hashlib.sha256(raw).hexdigest()


MATRIX_TASKS = ("source-artifact", "buildah-multiarch-platform", "buildah-multiarch-index")
MATRIX_PIPELINE = REPO / "catalog/pipeline/buildah-multiarch-matrix/0.1/buildah-multiarch-matrix.yaml"

REGISTRY_AUTH = textwrap.dedent(
    """
    apiVersion: v1
    kind: Secret
    metadata: {name: e2e-registry-auth, namespace: NS}
    type: kubernetes.io/dockerconfigjson
    stringData:
      .dockerconfigjson: '{"auths": {}}'
    """
).replace("NS", NS)


def _matrix_pipeline_with_cluster_task_refs() -> dict:
    """The catalog's matrix Pipeline with every ``resolver: bundles`` taskRef (the release bundle,
    which this cluster cannot pull) pointed at the catalog Task of the same name, applied next to it."""
    from taskimage.tekton import model as tekton

    (pipeline,) = (tekton.Pipeline.from_dict(d) for d in tekton.load_file(MATRIX_PIPELINE))
    for name in MATRIX_TASKS:
        pipeline, changed = pipeline.with_task_ref(name)
        assert changed == 1, f"{MATRIX_PIPELINE.name}: expected one taskRef to {name}, rewrote {changed}"
    doc = pipeline.to_dict()
    refs = [t["taskRef"] for t in doc["spec"]["tasks"]]
    assert refs == [{"name": n, "kind": "Task"} for n in MATRIX_TASKS], refs  # no resolver left
    return doc


def _skopeo(*argv: str) -> bytes:
    return subprocess.run(["skopeo", *argv], check=True, capture_output=True, timeout=300).stdout


def test_matrix_pipeline_with_the_default_affinity_assistant(cluster, tmp_path):
    """The matrix Pipeline (one TaskRun per platform, source as an OCI artifact) on a cluster whose
    Tekton keeps the affinity assistant at its default: the Pipeline shares no volume, so only
    emptyDir and Secret workspaces are bound and no TaskRun is pinned by an affinity assistant.

    Its taskRefs resolve the Tasks from the release bundle; here the three catalog Tasks
    (catalog/task/{source-artifact,buildah-multiarch-platform,buildah-multiarch-index}/0.1) are
    applied with kubectl and, next to them, a copy of the Pipeline whose taskRefs name those Tasks
    (rewritten with ``Pipeline.with_task_ref``, as ``taskimage cluster install`` does for one Task).
    The qemu binfmt DaemonSet (tekton/binfmt-daemonset.yaml) is applied with its image set to
    TASKIMAGE_BUILDER_IMAGE (its own image is a release placeholder) so that the arm64 TaskRun can
    run under qemu whether or not the other test ran first.
    """
    kc, builder = cluster
    kubeconfig = str(kc.kubeconfig_path.resolve())

    # Tekton as released: the affinity assistant at its default, matrix (beta) enabled by default.
    flags = json.loads(kc.kubectl("get", "configmap", "feature-flags", "-n", "tekton-pipelines", "-o", "json"))
    flags = flags.get("data") or {}
    assert flags.get("coschedule", "workspaces") == "workspaces", flags  # absent key: the default
    assert flags.get("disable-affinity-assistant", "false") == "false", flags
    assert flags.get("enable-api-fields", "beta") in ("beta", "alpha"), flags  # matrix is beta

    binfmt = (REPO / "tekton/binfmt-daemonset.yaml").read_text()
    binfmt = binfmt.replace(
        "ghcr.io/taskimage/taskimage@sha256:0000000000000000000000000000000000000000000000000000000000000000", builder
    )
    assert f"image: {builder}" in binfmt, "tekton/binfmt-daemonset.yaml: its image placeholder changed"
    (tmp_path / "binfmt.yaml").write_text(binfmt)
    kc.kubectl("apply", "-f", str(tmp_path / "binfmt.yaml"))
    kc.kubectl("rollout", "status", "daemonset/taskimage-binfmt", "-n", "taskimage-system", "--timeout=300s")

    from taskimage.tekton import model as tekton

    (tmp_path / "pipeline.yaml").write_text(tekton.dump_yaml([_matrix_pipeline_with_cluster_task_refs()]))
    (tmp_path / "auth.yaml").write_text(REGISTRY_AUTH)
    for name in MATRIX_TASKS:
        kc.kubectl("apply", "-n", NS, "-f", str(REPO / f"catalog/task/{name}/0.1/{name}.yaml"))
    kc.kubectl("apply", "-n", NS, "-f", str(tmp_path / "pipeline.yaml"))
    kc.kubectl("apply", "-f", str(tmp_path / "auth.yaml"))

    repository = f"registry.{NS}.svc.cluster.local:5000/e2e/matrix"
    start = _taskimage(
        "pipeline",
        "start",
        "buildah-multiarch-matrix",
        "--kubeconfig",
        kubeconfig,
        "-n",
        NS,
        "-p",
        f"url=git://gitserver.{NS}.svc.cluster.local/app",
        "-p",
        f"REPOSITORY={repository}",
        "-p",
        "TAG=1",
        "-p",
        "PLATFORMS=amd64,arm64",
        "-p",
        "TLSVERIFY=false",
        "-p",
        f"BUILDER_IMAGE={builder}",
        "-w",
        "name=storage,emptyDir=",
        "-w",
        "name=dockerconfig,secret=e2e-registry-auth",
        "--showlog",
    )
    assert start.returncode == 0, start.stderr[-5000:]
    run = start.stdout.strip()
    assert f"PipelineRun {run} succeeded" in start.stderr
    for task in ("fetch-source", "build", "index"):
        assert f"[{task}:" in start.stderr  # each pipeline task's step logs were streamed

    status = json.loads(kc.kubectl("get", "pipelinerun", run, "-n", NS, "-o", "json"))
    succeeded = [c for c in status["status"]["conditions"] if c["type"] == "Succeeded"]
    assert [c["status"] for c in succeeded] == ["True"], succeeded
    bound = status["spec"]["workspaces"]
    assert sorted(w["name"] for w in bound) == ["dockerconfig", "storage"]
    assert all(set(w) <= {"name", "emptyDir", "secret"} for w in bound), bound  # no PVC anywhere
    results = {r["name"]: r["value"] for r in status["status"].get("results", [])}

    taskruns = json.loads(kc.kubectl("get", "taskruns", "-n", NS, "-l", f"tekton.dev/pipelineRun={run}", "-o", "json"))
    by_task: dict[str, list[dict]] = {}
    for tr in taskruns["items"]:
        by_task.setdefault(tr["metadata"]["labels"]["tekton.dev/pipelineTask"], []).append(tr)
        conditions = [c for c in tr["status"]["conditions"] if c["type"] == "Succeeded"]
        assert [c["status"] for c in conditions] == ["True"], (tr["metadata"]["name"], conditions)
    assert sorted(by_task) == ["build", "fetch-source", "index"]
    assert len(by_task["fetch-source"]) == len(by_task["index"]) == 1
    platforms = sorted(
        p["value"] for tr in by_task["build"] for p in tr["spec"].get("params", []) if p["name"] == "PLATFORM"
    )
    assert platforms == ["amd64", "arm64"]  # the matrix fanned out, one TaskRun per platform

    pods = json.loads(kc.kubectl("get", "pods", "-n", NS, "-l", f"tekton.dev/pipelineRun={run}", "-o", "json"))
    assert len(pods["items"]) == 4, [p["metadata"]["name"] for p in pods["items"]]
    for pod in pods["items"]:  # no PVC to share, so no affinity assistant placed these pods
        assert "affinity-assistant" not in json.dumps(pod["spec"].get("affinity") or {}), pod["metadata"]["name"]

    with kc.port_forward("service/registry", 5000, "-n", NS) as port:
        local = f"127.0.0.1:{port}/e2e/matrix"
        raw = _skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{local}:1")
        index = json.loads(raw)
        configs = {
            m["digest"]: json.loads(
                _skopeo("inspect", "--tls-verify=false", "--config", "--raw", f"docker://{local}@{m['digest']}")
            )
            for m in index["manifests"]
        }
    assert index["mediaType"] in (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
    listed = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])
    assert listed == ["linux/amd64", "linux/arm64"]
    for m in index["manifests"]:  # each image really is what the list says it is
        assert configs[m["digest"]]["architecture"] == m["platform"]["architecture"]
        assert configs[m["digest"]]["os"] == "linux"
    assert results.get("IMAGE_DIGEST") == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert sorted(results.get("IMAGES", "").split(",")) == sorted(
        f"{repository}@{m['digest']}" for m in index["manifests"]
    )
    assert results.get("SOURCE_ARTIFACT", "").startswith(f"{repository}@sha256:")
