"""`taskimage build` for real: buildah, qemu through binfmt_misc, a real registry, skopeo read-back."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import emulation_ready, have_tools, need, registry_snapshot, skopeo_raw, skopeo_raw_bytes, tag_exists

from taskimage.oci.platforms import ARCHES, normalize

pytestmark = [pytest.mark.tools]


@pytest.fixture(scope="session")
def storage_env(tmp_path_factory):
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    d = tmp_path_factory.mktemp("storage")
    return {"TASKIMAGE_ROOT": str(d / "root"), "TASKIMAGE_RUNROOT": str(d / "run"), "TASKIMAGE_TLSVERIFY": "false"}


def taskimage(argv, env=None, timeout=900):
    full = dict(os.environ)
    full.update(env or {})
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, env=full, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t


def app(tmp_path, base, body="RUN uname -m > /uname.txt\n", name="Containerfile"):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / name).write_text(f"FROM {base}\n{body}")
    return ctx


def layer_file(ref: str, path: str, tmp_path: Path) -> str:
    """Read one file from the top layer of a pushed image (skopeo copy to a dir: layout)."""
    out = tmp_path / ("layers-" + hashlib.sha256(ref.encode()).hexdigest()[:12])
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}"], check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    top = manifest["layers"][-1]["digest"].split(":", 1)[1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress((out / top).read_bytes()))) as tar:
        member = tar.extractfile(path.lstrip("/")) or tar.extractfile("./" + path.lstrip("/"))
        return member.read().decode()


@pytest.mark.emulation
def test_multiarch_build_runs_each_step_on_its_architecture(tmp_path, registry, busybox_base, storage_env):
    """amd64 + arm64 + arm/v7 + s390x + ppc64le, old spellings, tag honoured; each RUN really ran on its arch."""
    ok, why = emulation_ready()
    need(ok, why)
    ctx = app(tmp_path, busybox_base)
    results = tmp_path / "results"
    results.mkdir()
    image = f"{registry.host}/demo/uname:v1.2.3"
    rc, out, err, _ = taskimage(
        [
            "build",
            "--image",
            image,
            "--context",
            str(ctx),
            "--results-dir",
            str(results),
            "linux/x86_64",
            "linux/arm64/v8",
            "--platform",
            "linux/arm/v7,linux/s390x",
            "linux/ppc64le",
        ],
        storage_env,
    )
    assert rc == 0, err[-3000:]
    # --platform values first, then positional ones (argparse keeps each group's order)
    wanted = ["linux/arm/v7", "linux/s390x", "linux/amd64", "linux/arm64", "linux/ppc64le"]

    # the index, read independently from the registry
    raw = skopeo_raw_bytes(image)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [e["platform"]["architecture"] for e in index["manifests"]] == ["arm", "s390x", "amd64", "arm64", "ppc64le"]
    entries = {
        "/".join(x for x in (e["platform"]["os"], e["platform"]["architecture"], e["platform"].get("variant")) if x): e[
            "digest"
        ]
        for e in index["manifests"]
    }
    assert sorted(entries) == sorted(wanted)
    for plat, entry_digest in entries.items():
        p = normalize(plat)
        cfg = skopeo_raw(f"{registry.host}/demo/uname@{entry_digest}", config=True)
        assert (cfg["os"], cfg["architecture"]) == ("linux", p.arch)
        # the RUN step executed on that architecture (under qemu for the foreign ones)
        assert (
            layer_file(f"{registry.host}/demo/uname@{entry_digest}", "uname.txt", tmp_path).strip()
            == ARCHES[p.arch].uname
        )

    # results: registry digest, no trailing newline, per-platform refs in the requested order
    got = {f.name: f.read_text() for f in results.iterdir()}
    assert sorted(got) == sorted(
        ["IMAGE_DIGEST", "IMAGE_URL", "IMAGE_REF", "IMAGES", "IMAGE_TAGS", "SBOM_BLOB_URL", "ATTESTATIONS"]
    )
    assert {k: got[k] for k in ("IMAGE_DIGEST", "IMAGE_URL", "IMAGE_REF", "IMAGES", "IMAGE_TAGS")} == {
        "IMAGE_DIGEST": digest,
        "IMAGE_URL": image,
        "IMAGE_REF": f"{registry.host}/demo/uname@{digest}",
        "IMAGES": ",".join(f"{registry.host}/demo/uname@{entries[w]}" for w in wanted),
        "IMAGE_TAGS": image,
    }
    # SBOM and provenance (on by default) for every platform image and the index, each in the registry
    attested = [a.split(":", 2) for a in got["ATTESTATIONS"].split(",")]
    assert sorted((k, s) for k, s, _ in attested) == sorted(
        (k, s) for k in ("spdx", "provenance") for s in [*(str(normalize(w)) for w in wanted), "index"]
    )
    for _, _, referrer in attested:
        assert skopeo_raw(f"{registry.host}/demo/uname@{referrer}")["subject"]["digest"] in [digest, *entries.values()]
    assert got["SBOM_BLOB_URL"].startswith(f"{registry.host}/demo/uname@sha256:")
    # logs made for tkn: phase headers, prefixed tool output, a summary table
    assert "==> preflight" in err and "==> build linux/s390x" in err and "==> push " in err
    assert "[linux/arm64] STEP 2/2: RUN uname -m > /uname.txt" in err
    assert "PLATFORM" in err and "SECONDS" in err


@pytest.mark.emulation
def test_docker_format_gives_a_docker_manifest_list(tmp_path, registry, busybox_base, storage_env):
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = app(tmp_path, busybox_base, "RUN echo hi > /hi\n", name="Dockerfile")
    image = f"{registry.host}/demo/docker-format"
    rc, _, err, _ = taskimage(
        ["build", "--image", image, "--context", str(ctx), "--format", "docker", "linux/amd64", "linux/arm64"],
        storage_env,
    )
    assert rc == 0, err[-2000:]
    index = skopeo_raw(f"{image}:latest")  # no tag means latest
    assert index["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    assert {e["mediaType"] for e in index["manifests"]} == {"application/vnd.docker.distribution.manifest.v2+json"}


@pytest.mark.emulation
def test_single_arch_base_is_caught_before_push(tmp_path, registry, busybox_amd64_only, storage_env):
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = app(tmp_path, busybox_amd64_only)
    image = f"{registry.host}/demo/wrong-arch:1"
    rc, _, err, _ = taskimage(
        ["build", "--image", image, "--context", str(ctx), "linux/amd64", "linux/arm64"], storage_env
    )
    assert rc == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("ERROR: linux/arm64: the built image's")
    assert "amd64" in last
    assert not tag_exists(image)


def test_missing_emulation_is_reported_before_any_build(tmp_path, registry, busybox_base, storage_env):
    """With no handler registered (an empty binfmt_misc, as on a fresh node), exit 3 before any
    build: FROM a real base that the amd64 build would pull and push, yet the registry is unchanged."""
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    (d / "register").write_text("")
    (d / "status").write_text("enabled\n")
    ctx = app(tmp_path, busybox_base)
    image = f"{registry.host}/demo/noemu:1"
    env = dict(storage_env, TASKIMAGE_BINFMT_DIR=str(d))
    before = registry_snapshot(registry.host)
    rc, _, err, _ = taskimage(
        ["build", "--image", image, "--context", str(ctx), "linux/amd64", "linux/arm64", "linux/s390x"], env
    )
    assert rc == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "ERROR: emulation missing for 2 platform(s): linux/arm64: no binfmt_misc handler for aarch64 binaries; "
        "linux/s390x: no binfmt_misc handler for s390x binaries. Fix:"
    )
    assert "buildah" not in err  # no build started
    assert registry_snapshot(registry.host) == before


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (
            ["--image", "{reg}/demo/Bad:1"],
            {},
            "ERROR: --image: invalid image name '{reg}/demo/Bad:1': repository names must be lower-case",
        ),
        (["--image", "{reg}/demo/bad@sha256:" + "1" * 64], {}, "ERROR: --image: '{reg}/demo/bad@sha256:"),
        (
            ["--image", "{reg}/demo/bad:1", "linux/amd64", "linux/x86_64"],
            {},
            "ERROR: --platform: duplicate platform 'linux/x86_64'",
        ),
        (
            ["--image", "{reg}/demo/bad:1", "linux/vax"],
            {},
            "ERROR: --platform: unknown platform 'linux/vax'; accepted:",
        ),
        (["--image", "{reg}/demo/bad:1", "--file", "Nope"], {}, "ERROR: --file: 'Nope' not found in the context"),
        (
            ["--image", "{reg}/demo/bad:1", "--build-arg", "JUSTKEY"],
            {},
            "ERROR: --build-arg: 'JUSTKEY' is not KEY=VALUE",
        ),
        (["--image", "{reg}/demo/bad:1", "--tls-verify=perhaps"], {}, "ERROR: --tls-verify: invalid boolean 'perhaps'"),
        (
            ["--image", "{reg}/demo/bad:1"],
            {"TASKIMAGE_FORMAT": "v2s1"},
            "ERROR: TASKIMAGE_FORMAT: invalid value 'v2s1'; accepted: oci, docker",
        ),
        (
            ["--image", "{reg}/demo/bad:1", "--no-such-flag"],
            {},
            "ERROR: taskimage build: unrecognized arguments: --no-such-flag",
        ),
    ],
)
def test_bad_input_exits_2_and_pushes_nothing(tmp_path, registry, busybox_base, storage_env, argv, env, message):
    """FROM a real base: let through, the build would pull, build and push; every repository's
    tags are compared, not only the one name a case might have pushed to."""
    ctx = app(tmp_path, busybox_base)
    argv = [a.replace("{reg}", registry.host) for a in argv]
    before = registry_snapshot(registry.host)
    rc, out, err, _ = taskimage(["build", "--context", str(ctx), *argv], dict(storage_env, **env))
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, nothing else ran
    assert lines[0].startswith(message.replace("{reg}", registry.host)), lines[0]
    assert registry_snapshot(registry.host) == before


def test_skip_push_builds_and_verifies_but_pushes_nothing(tmp_path, registry, busybox_base, storage_env):
    ctx = app(tmp_path, busybox_base)
    results = tmp_path / "r"
    results.mkdir()
    image = f"{registry.host}/demo/skipped:1"
    rc, _, err, _ = taskimage(
        ["build", "--image", image, "--context", str(ctx), "--skip-push", "--results-dir", str(results), "linux/amd64"],
        storage_env,
    )
    assert rc == 0, err[-2000:]
    assert "executables are amd64" in err
    assert not tag_exists(image)
    assert (results / "IMAGE_URL").read_text() == image
    assert (results / "IMAGE_DIGEST").read_text() == ""


def test_failing_run_step_exits_1_with_the_tool_output(tmp_path, registry, busybox_base, storage_env):
    ctx = app(tmp_path, busybox_base, "RUN echo about to fail && exit 7\n")
    image = f"{registry.host}/demo/failing:1"
    rc, _, err, _ = taskimage(["build", "--image", image, "--context", str(ctx), "linux/amd64"], storage_env)
    assert rc == 1
    assert "about to fail" in err
    assert err.strip().splitlines()[-1] == "ERROR: buildah build for linux/amd64 failed with exit code 7"
    assert not tag_exists(image)


def _image_ids(root: Path, run: Path) -> set[str]:
    out = subprocess.run(
        ["buildah", "--root", str(root), "--runroot", str(run), "images", "--all", "--quiet", "--no-trunc"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


@pytest.mark.emulation
def test_evict_leaves_only_what_was_there_before_and_pushes_every_platform(
    tmp_path, registry, busybox_base, busybox_amd64_only
):
    """--evict: each platform is pushed by digest and removed from the storage (its image, the
    intermediate images of --layers, the base pulled for it); an image the storage already held
    stays. Without --evict the run's images stay for the next local build."""
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    root, run = tmp_path / "root", tmp_path / "run"
    env = {"TASKIMAGE_ROOT": str(root), "TASKIMAGE_RUNROOT": str(run), "TASKIMAGE_TLSVERIFY": "false"}
    subprocess.run(
        [
            "buildah",
            "--root",
            str(root),
            "--runroot",
            str(run),
            "pull",
            "--quiet",
            "--tls-verify=false",
            busybox_amd64_only,
        ],
        check=True,
        capture_output=True,
    )
    before = _image_ids(root, run)
    assert len(before) == 1
    ctx = app(tmp_path, busybox_base, "COPY Containerfile /c\nRUN uname -m > /uname.txt\n")
    image = f"{registry.host}/demo/evicted:1"
    rc, out, err, _ = taskimage(
        ["build", "--image", image, "--context", str(ctx), "--evict", "linux/amd64", "linux/arm64"], env
    )
    assert rc == 0, err[-3000:]
    assert _image_ids(root, run) == before
    for p in ("linux/amd64", "linux/arm64"):
        assert f"[{p}] removed " in err and f"image(s) of {p} from the storage (--evict)" in err
        assert "could not remove" not in err
    index = skopeo_raw(image)
    for entry in index["manifests"]:
        ref = f"{registry.host}/demo/evicted@{entry['digest']}"
        assert skopeo_raw(ref, config=True)["architecture"] == entry["platform"]["architecture"]
        want = {"amd64": "x86_64", "arm64": "aarch64"}[entry["platform"]["architecture"]]
        assert layer_file(ref, "uname.txt", tmp_path) == want + "\n"  # the RUN step really ran on it
    assert sorted(e["platform"]["architecture"] for e in index["manifests"]) == ["amd64", "arm64"]

    rc, out, err, _ = taskimage(
        ["build", "--image", f"{registry.host}/demo/kept:1", "--context", str(ctx), "linux/amd64", "linux/arm64"], env
    )
    assert rc == 0, err[-3000:]
    kept = _image_ids(root, run) - before
    assert len(kept) >= 5  # the arm64 base (amd64's was there), per platform one image per step (--layers)
    assert "(--evict)" not in err
