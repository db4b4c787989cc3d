"""The task image, built multi-arch by `taskimage build` itself and run the way Tekton runs it.

One module-scoped build (:func:`taskimage.dev.env.build_task_image`: the Containerfile at the
repository root, FROM a Debian trixie minbase made with mmdebstrap, amd64 + arm64, the arm64
half under qemu) feeds every test. Its slow part, the apt layer (about 9 minutes cold under
emulation), is cached between runs in a buildah storage under ~/.cache/taskimage/task-image,
keyed by the Containerfile; a warm run takes about a minute.

The in-container test runs the catalog Task YAML, unchanged, with ``taskimage run`` (Tekton's
substitution of params and workspaces, one podman container per step with the mounts a TaskRun
pod has) and the amd64 task image as BUILDER_IMAGE, then checks the pushed index with skopeo,
what each platform's RUN recorded, and every result against the registry. No substitution is
re-implemented here: the step's argv and environment are what the Task YAML declares.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import resource
import shutil
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import pytest
from conftest import have_tools, need, skopeo_raw, skopeo_raw_bytes

from taskimage import __version__, cli
from taskimage.dev import env as devenv

pytestmark = [pytest.mark.slow, pytest.mark.tools, pytest.mark.emulation]

PLATFORMS = ("linux/amd64", "linux/arm64")
# bytes uncompressed: the size class of quay.io/buildah/stable (400 MB) plus what this image adds
# on purpose: git and openssh-client (the source-artifact Task clones in it, issue 18) and the SBOM
# format libraries (issue 16), together ~55 MB measured (456 MB on 3 Dec 2026)
AMD64_BUDGET = 470 * 1000 * 1000
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
ROOT = Path(__file__).resolve().parent.parent


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task_image(task_image_build) -> devenv.TaskImage:
    """The session's task image (tests/conftest.py builds it once for every test that needs it)."""
    assert tuple(p for p, _ in task_image_build.images) == PLATFORMS
    return task_image_build


def _limit(kind: int, wanted: int = 10000) -> int:
    hard = resource.getrlimit(kind)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """podman with its own storage (removed afterwards), runc, limits below the host's hard ones."""
    need(have_tools("podman", "runc"), "podman and runc are not installed (see .ci/run)")
    root = tmp_path_factory.mktemp("podman")
    base = ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run")]
    run_flags = [
        "--rm",
        "--runtime",
        "runc",
        "--network",
        "host",
        "--pull",
        "missing",
        "--tls-verify=false",
        "--ulimit",
        f"nofile={_limit(resource.RLIMIT_NOFILE)}:{_limit(resource.RLIMIT_NOFILE)}",
        "--ulimit",
        f"nproc={_limit(resource.RLIMIT_NPROC)}:{_limit(resource.RLIMIT_NPROC)}",
    ]

    def run(*args: str, flags: tuple[str, ...] = (), timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*base, "run", *run_flags, *flags, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    run.base = base  # type: ignore[attr-defined]
    yield run
    subprocess.run([*base, "rm", "--all", "--force"], capture_output=True)
    subprocess.run([*base, "rmi", "--all", "--force"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _blob(registry_host: str, repo: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"http://{registry_host}/v2/{repo}/blobs/{digest}", timeout=30) as r:
        data = r.read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def _file_in_layers(registry_host: str, repo: str, manifest: dict, name: str) -> bytes | None:
    """A file as the image's top-most layer that has it holds it (read straight from the registry)."""
    for layer in reversed(manifest["layers"]):
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_blob(registry_host, repo, layer["digest"])))) as tar:
            for member in tar:
                if member.name.lstrip("./") == name and member.isfile():
                    return tar.extractfile(member).read()
    return None


# --- the image in the registry ---------------------------------------------------------------


def test_task_image_is_one_index_with_both_platforms_labelled(task_image, registry):
    repo = task_image.ref.split("/", 1)[1].rsplit(":", 1)[0]
    raw = skopeo_raw_bytes(task_image.ref)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == task_image.digest
    index = json.loads(raw)
    assert index["mediaType"] == MEDIA_INDEX
    entries = {f"{m['platform']['os']}/{m['platform']['architecture']}": m for m in index["manifests"]}
    assert sorted(entries) == sorted(PLATFORMS)
    for platform in PLATFORMS:
        assert task_image.image_for(platform) == f"{task_image.ref.rsplit(':', 1)[0]}@{entries[platform]['digest']}"
        manifest = skopeo_raw(task_image.image_for(platform))
        config = skopeo_raw(task_image.image_for(platform), config=True)
        assert (config["os"], config["architecture"]) == tuple(platform.split("/"))
        labels = config["config"]["Labels"]
        for key, value in task_image.labels.items():
            assert labels[key] == value, key
            assert manifest["annotations"][key] == value, key
        assert labels["org.opencontainers.image.version"] == __version__
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", labels["org.opencontainers.image.revision"])
        assert config["config"]["Entrypoint"] == ["taskimage"]
        assert "BUILDAH_ISOLATION=chroot" in config["config"]["Env"]
        assert "/var/lib/containers" in config["config"]["Volumes"]
        # the package is really there, for this platform's Python (read from the layers)
        script = _file_in_layers(registry.host, repo, manifest, "usr/local/bin/taskimage")
        assert script is not None and script.startswith(b"#!/usr/bin/python3")
        cli = _file_in_layers(registry.host, repo, manifest, "usr/local/lib/python3.13/dist-packages/taskimage/cli.py")
        assert cli is not None and b"def console_main" in cli


# --- run as Tekton runs it ---------------------------------------------------------------------


TASK = ROOT / "catalog" / "task" / "buildah-multiarch" / "0.1" / "buildah-multiarch.yaml"


def test_catalog_task_step_in_the_task_image_builds_and_pushes_multiarch(
    task_image, registry, busybox_base, tmp_path, capsys
):
    need(have_tools("podman", "runc", "skopeo"), "podman, runc and skopeo are not installed (see .ci/run)")
    source = tmp_path / "source"
    storage = tmp_path / "storage"
    for d in (source, storage):
        d.mkdir()
    (source / "Containerfile").write_text(f"FROM {busybox_base}\nRUN uname -m > /uname-m.txt\n")
    target = f"{registry.host}/incontainer/app:v1"

    # the Task as the catalog ships it; only IMAGE, TLSVERIFY and BUILDER_IMAGE given, so
    # PLATFORMS, STORAGE_DRIVER and the rest are the Task's defaults
    code = cli.main(
        [
            "run",
            str(TASK),
            "-w",
            f"source={source}",
            "-w",
            f"storage={storage}",
            "-p",
            f"IMAGE={target}",
            "-p",
            "TLSVERIFY=false",
            "-p",
            f"BUILDER_IMAGE={task_image.image_for('linux/amd64')}",
            "--tls-verify=false",
            "--output",
            "json",
        ]
    )
    out, log = capsys.readouterr()
    report = json.loads(out)
    assert code == 0, log[-4000:]
    assert [s["name"] for s in report["steps"]] == ["build"] and report["steps"][0]["exitCode"] == 0

    # nested storage: overlay on the storage workspace, chosen and logged by STORAGE_DRIVER=auto
    assert re.search(
        r"storage driver overlay: /var/lib/containers/storage is on \S+ and a test overlay mount worked", log
    ), log[-4000:]
    assert (storage / "storage" / "overlay-images").is_dir()

    # the pushed index, read back independently
    raw = skopeo_raw_bytes(target)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    index = json.loads(raw)
    entries = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in index["manifests"]}
    assert sorted(entries) == sorted(PLATFORMS)  # the Task's default PLATFORMS
    expected_uname = {"linux/amd64": b"x86_64\n", "linux/arm64": b"aarch64\n"}
    for platform, entry in entries.items():
        ref = f"{registry.host}/incontainer/app@{entry}"
        config = skopeo_raw(ref, config=True)
        assert (config["os"], config["architecture"]) == tuple(platform.split("/"))
        recorded = _file_in_layers(registry.host, "incontainer/app", skopeo_raw(ref), "uname-m.txt")
        assert recorded == expected_uname[platform], platform

    # every result, as Tekton read them from /tekton/results
    got = report["results"]
    assert sorted(got) == sorted(
        ["IMAGE_DIGEST", "IMAGE_URL", "IMAGE_REF", "IMAGES", "IMAGE_TAGS", "SBOM_BLOB_URL", "ATTESTATIONS"]
    )
    assert {k: got[k] for k in ("IMAGE_DIGEST", "IMAGE_URL", "IMAGE_REF", "IMAGES", "IMAGE_TAGS")} == {
        "IMAGE_DIGEST": digest,
        "IMAGE_URL": target,
        "IMAGE_REF": f"{registry.host}/incontainer/app@{digest}",
        "IMAGES": ",".join(f"{registry.host}/incontainer/app@{entries[p]}" for p in PLATFORMS),
        "IMAGE_TAGS": target,
    }
    # SBOM and provenance of both platform images and the index, each a referrer in the registry
    attested = [a.split(":", 2) for a in got["ATTESTATIONS"].split(",")]
    assert sorted((k, s) for k, s, _ in attested) == sorted(
        (k, s) for k in ("spdx", "provenance") for s in [*PLATFORMS, "index"]
    )
    for _, _, referrer in attested:
        subject = skopeo_raw(f"{registry.host}/incontainer/app@{referrer}")["subject"]["digest"]
        assert subject in [digest, *entries.values()]
    assert got["SBOM_BLOB_URL"].startswith(f"{registry.host}/incontainer/app@sha256:")
    assert report["problems"] == [] and report["undeclaredResults"] == []
    assert report["terminationMessageBytes"] < 4096


FACTS = r"""
import json, os, shutil, glob
from taskimage.emulation import binfmt
from taskimage.build import storage
from taskimage.oci.platforms import Platform, host_platform, runs_natively
foreign = [p for p in (Platform("linux", a, v) for a, v in (("amd64", None), ("arm64", None), ("arm", "v7"),
           ("ppc64le", None), ("s390x", None), ("riscv64", None))) if not runs_natively(p, host_platform())]
regs = {str(p): binfmt.find_registration(p) for p in foreign}
print(json.dumps({
    "tools": {t: shutil.which(t) for t in ("buildah", "gcc", "cc", "g++", "make", "pip", "pip3", "apt-file")},
    "apt_lists": os.listdir("/var/lib/apt/lists") if os.path.isdir("/var/lib/apt/lists") else [],
    "debs": glob.glob("/var/cache/apt/archives/*.deb"),
    "caches": [p for p in ("/root/.cache", "/src", "/staging") if os.path.exists(p)],
    "registrations": {k: [r.interpreter, os.path.exists(r.interpreter), "F" in r.flags] if r else None for k, r in regs.items()},
    "storage_conf": open("/etc/containers/storage.conf").read(),
    "registries_conf": open("/etc/containers/registries.conf").read(),
    "isolation": os.environ.get("BUILDAH_ISOLATION"),
    "no_volume": storage.choose("auto", "/tmp/not-a-volume/storage"),
    "package": sorted(os.listdir(os.path.dirname(storage.__file__) + "/..")),
    "commands": sorted(os.listdir(os.path.dirname(storage.__file__) + "/../commands")),
}))
"""


def test_task_image_contents(task_image, podman):
    proc = podman(task_image.image_for("linux/amd64"), "-c", FACTS, flags=("--entrypoint", "python3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout)
    assert facts["tools"]["buildah"] == "/usr/bin/buildah"
    assert [t for t, path in facts["tools"].items() if path and t != "buildah"] == []  # no compilers, no pip
    assert facts["apt_lists"] in ([], ["partial"]) and facts["debs"] == [] and facts["caches"] == []
    # `taskimage binfmt install` (the DaemonSet) finds an interpreter for every foreign platform
    assert facts["registrations"] and all(r and r[1] and r[2] for r in facts["registrations"].values()), facts[
        "registrations"
    ]
    assert 'graphroot = "/var/lib/containers/storage"' in facts["storage_conf"]
    assert 'short-name-mode = "permissive"' in facts["registries_conf"]
    assert facts["isolation"] == "chroot"
    # without a volume the storage sits on the container's overlay root: vfs, with the reason
    assert facts["no_volume"][0] == "vfs" and "overlay" in facts["no_volume"][1]
    # the developer environment (local registry, mmdebstrap, look-alikes) is not shipped
    assert "build" in facts["package"] and "dev" not in facts["package"], facts["package"]
    assert "build.py" in facts["commands"] and "dev.py" not in facts["commands"], facts["commands"]
    proc = podman(task_image.image_for("linux/amd64"), "--help")
    assert proc.returncode == 0 and " dev " not in proc.stdout and "build" in proc.stdout, proc.stdout + proc.stderr


def test_task_image_amd64_size_within_budget(task_image, podman):
    ref = task_image.image_for("linux/amd64")
    pulled = subprocess.run([*podman.base, "pull", "--tls-verify=false", ref], capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    size = int(
        subprocess.run(
            [*podman.base, "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert size <= AMD64_BUDGET, (
        f"amd64 task image is {size / 1e6:.0f} MB uncompressed (budget {AMD64_BUDGET / 1e6:.0f} MB)"
    )


def test_arm64_task_image_runs_under_emulation(task_image, podman):
    ref = task_image.image_for("linux/arm64")
    version = podman(ref, "--version")
    assert version.returncode == 0, version.stderr[-3000:]
    assert version.stdout.strip() == f"taskimage {__version__}"
    uname = podman(ref, "-m", flags=("--entrypoint", "uname"))
    assert uname.stdout.strip() == "aarch64", uname.stderr
