"""The cluster tier: a real kind cluster, real Tekton, our resources, a real multi-arch build.

Opt-in (``pytest -m kind``); needs Docker and network. Steps:

1. create a kind cluster (pytest-kind's ``KindCluster``; kind is downloaded unless on PATH),
2. install Tekton Pipelines from its release YAML and wait for its deployments,
3. start a registry and a git server (a tiny repository with a Containerfile whose RUN step
   has to run under qemu) inside the cluster,
4. ``taskimage cluster install`` (the repository's catalog Task and Pipeline, binfmt DaemonSet),
5. ``taskimage pipeline start buildah-multiarch ... --showlog`` building linux/amd64 and
   linux/arm64 into the in-cluster registry,
6. read the pushed manifest list back through a port-forward with skopeo and check both
   platforms and that the run's IMAGE_DIGEST result is the list's digest.

Environment:
- ``TASKIMAGE_BUILDER_IMAGE`` (required): the task image the Task runs (its BUILDER_IMAGE param),
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

    install = _taskimage("cluster", "install", "--kubeconfig", kubeconfig, "-n", NS, "--from", str(REPO))
    assert install.returncode == 0, install.stderr
    assert "task.tekton.dev/buildah-multiarch created" in install.stdout
    assert "pipeline.tekton.dev/buildah-multiarch created" in install.stdout
    again = _taskimage("cluster", "install", "--kubeconfig", kubeconfig, "-n", NS, "--from", str(REPO))
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
