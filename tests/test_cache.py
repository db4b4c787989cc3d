"""Registry layer cache (--cache-repo), build order and parallelism, with real buildah and a registry.

Evidence is timing-free: buildah's own "Using cache" / "Pushing cache" lines, whether a RUN
step's output appears at all (a reused step does not run), the cache repository's tags in the
registry, and the pushed images' digests and configs read back with skopeo.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import emulation_ready, have_tools, need, repository_tags, skopeo_raw

from taskimage.build import orchestrate as build
from taskimage.dev import env as devenv
from taskimage.oci.platforms import Platform

AMD64, ARM64, S390X = Platform("linux", "amd64"), Platform("linux", "arm64"), Platform("linux", "s390x")


def test_default_jobs_one_per_cpu_at_most_one_per_platform():
    assert build.default_jobs(2, cpus=2) == 2
    assert build.default_jobs(5, cpus=2) == 2
    assert build.default_jobs(1, cpus=8) == 1
    assert build.default_jobs(3, cpus=0) == 1


def test_available_cpus_honours_a_cgroup_cpu_limit(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert build.available_cpus(v2) == affinity
    (v2 / "cpu.max").write_text("50000 100000\n")  # limits.cpu: 500m
    assert build.available_cpus(v2) == 1
    (v2 / "cpu.max").write_text(f"{150000 * affinity} 100000\n")  # more than the node has
    assert build.available_cpus(v2) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert build.available_cpus(v1) == affinity
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert build.available_cpus(v1) == 1
    assert build.available_cpus(tmp_path / "none") == affinity


def test_emulated_platforms_start_first():
    assert build.build_order([AMD64, ARM64, S390X], native=[AMD64]) == [ARM64, S390X, AMD64]
    assert build.build_order([ARM64, AMD64], native=[ARM64]) == [AMD64, ARM64]


# --- for real ---------------------------------------------------------------------------------


@pytest.fixture
def storage(tmp_path):
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")

    def env(name: str) -> dict:
        return {
            "TASKIMAGE_ROOT": str(tmp_path / name / "root"),
            "TASKIMAGE_RUNROOT": str(tmp_path / name / "run"),
            "TASKIMAGE_TLSVERIFY": "false",
        }

    return env


def taskimage(argv, env, timeout=900):
    full = dict(os.environ)
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, env=full, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr


def cache_tags(registry, repo_path: str) -> list[str]:
    return repository_tags(registry.host, repo_path)


def step_tags(registry, repo_path: str) -> list[str]:
    """buildah's per-step cache tags (not the whole-build keys taskimage files beside them, nor the
    referrers tags sha256-<hex> of the package scans filed with those images)."""
    return [
        t
        for t in cache_tags(registry, repo_path)
        if not t.startswith("taskimage-build-") and not re.fullmatch(r"sha256-[0-9a-f]{64}", t)
    ]


def entries(ref: str) -> dict[str, str]:
    return {m["platform"]["architecture"]: m["digest"] for m in skopeo_raw(ref)["manifests"]}


def lines(err: str, platform: str, pattern: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"[{platform}] ") and re.search(pattern, line)]


@pytest.mark.emulation
def test_warm_run_in_empty_storage_reuses_every_layer_from_the_cache_repo(tmp_path, registry, busybox_base, storage):
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM {busybox_base}\nRUN echo ran-on-$(uname -m) && uname -m > /arch\n"
        "RUN echo second-step-ran && touch /second\n"
    )
    cache = f"{registry.host}/cache/warm"
    assert cache_tags(registry, "cache/warm") == []

    # cold: an empty cache repository is a miss, not an error; both platforms, in parallel, fill it
    rc, _, cold = taskimage(
        [
            "build",
            "--image",
            f"{registry.host}/app/warm:cold",
            "--context",
            str(ctx),
            "--cache-repo",
            cache,
            "--jobs",
            "2",
            "linux/amd64",
            "linux/arm64",
        ],
        storage("cold"),
    )
    assert rc == 0, cold[-3000:]
    for plat, uname in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        assert lines(cold, plat, rf"^\[{plat}\] ran-on-{uname}$"), cold[-3000:]
        assert lines(cold, plat, rf"^\[{plat}\] second-step-ran$"), cold[-3000:]
        assert len(lines(cold, plat, r"--> Pushing cache ")) == 2
    tags = step_tags(registry, "cache/warm")
    assert len(tags) == 4  # one per RUN step per platform: their keys differ by platform
    filed = [t for t in cache_tags(registry, "cache/warm") if t.startswith("taskimage-build-")]
    scans = [t for t in cache_tags(registry, "cache/warm") if t.startswith("sha256-")]
    assert len(filed) == 2 and len(scans) == 2  # each platform's image under its key, with its package scan

    # warm: a new, empty storage (a new pod); nothing runs, everything comes from the registry. A
    # build arg no step reads is new, so the whole-build key misses and buildah's layer cache answers.
    rc, _, warm = taskimage(
        [
            "build",
            "--image",
            f"{registry.host}/app/warm:warm",
            "--context",
            str(ctx),
            "--build-arg",
            "UNUSED=1",
            "--cache-repo",
            cache,
            "linux/amd64",
            "linux/arm64",
        ],
        storage("warm"),
    )
    assert rc == 0, warm[-3000:]
    for plat in ("linux/amd64", "linux/arm64"):
        assert not lines(warm, plat, rf"^\[{plat}\] (ran-on-.*|second-step-ran)$"), (
            "a RUN step ran again despite the cache"
        )
        assert len(lines(warm, plat, r"--> Cache pulled from remote ")) == 2
        assert len(lines(warm, plat, r"--> Using cache ")) == 2
    assert sorted(step_tags(registry, "cache/warm")) == sorted(tags)
    # the same images, bit for bit
    assert entries(f"{registry.host}/app/warm:warm") == entries(f"{registry.host}/app/warm:cold")
    # both runs copied each final image from the cache by digest (it is the last step's cache entry,
    # already compressed) instead of compressing it again, and filed it under its whole-build key
    for out in (cold, warm):
        for plat in ("linux/amd64", "linux/arm64"):
            assert len(lines(out, plat, r"pushed \S+@sha256:[0-9a-f]{64} \(copied from the layer cache\)$")) == 1, out[
                -3000:
            ]


@pytest.mark.tools
def test_unreachable_cache_is_logged_and_skipped(tmp_path, registry, busybox_base, storage):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nRUN echo built > /built\n")
    closed = devenv.free_port()  # nothing listens there
    image = f"{registry.host}/app/nocache:1"
    rc, _, err = taskimage(
        [
            "build",
            "--image",
            image,
            "--context",
            str(ctx),
            "--cache-repo",
            f"127.0.0.1:{closed}/cache/x",
            "linux/amd64",
        ],
        storage("nocache"),
    )
    assert rc == 0, err[-3000:]
    assert re.search(rf"WARNING: layer cache 127.0.0.1:{closed}/cache/x not used: .*connection refused", err), err[
        -3000:
    ]
    assert "--cache-from" not in err and "Pushing cache" not in err
    assert skopeo_raw(image)["manifests"][0]["platform"]["architecture"] == "amd64"


@pytest.mark.tools
def test_platform_independent_step_is_not_mislabelled_by_the_cache(tmp_path, registry, storage):
    """buildah < 1.42 reuses a cached layer whatever its platform (buildah#6269): FROM scratch +
    COPY has the same cache key on every platform. The result must still be right per platform."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "motd").write_text("same bytes on every platform\n")
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY motd /etc/motd\n")
    image = f"{registry.host}/app/scratch:1"
    rc, _, err = taskimage(
        [
            "build",
            "--image",
            image,
            "--context",
            str(ctx),
            "--cache-repo",
            f"{registry.host}/cache/scratch",
            "--jobs",
            "1",
            "linux/amd64",
            "linux/arm64",
        ],
        storage("scratch"),
    )
    assert rc == 0, err[-3000:]
    index = skopeo_raw(image)
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert set(by_arch) == {"amd64", "arm64"}
    for arch, digest in by_arch.items():
        assert skopeo_raw(f"{registry.host}/app/scratch@{digest}", config=True)["architecture"] == arch
    assert "rebuilding without the layer cache" in err


@pytest.mark.emulation
def test_unchanged_inputs_reuse_the_earlier_build_without_building(tmp_path, registry, busybox_base, storage):
    """Same Containerfile, context, args and base digest: the second run (a new, empty storage)
    builds nothing, pulls no layer and pushes the very same images; any changed input builds."""
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "data.txt").write_text("one\n")
    (ctx / "Containerfile").write_text(
        "ARG BASE\nFROM ${BASE} AS base\nFROM base\nCOPY data.txt /data.txt\nRUN uname -m > /arch\n"
    )
    cache = f"{registry.host}/cache/reuse"
    common = [
        "--context",
        str(ctx),
        "--cache-repo",
        cache,
        "--build-arg",
        f"BASE={busybox_base}",
        "--evict",
        "linux/amd64",
        "linux/arm64",
    ]
    rc, _, first = taskimage(["build", "--image", f"{registry.host}/app/reuse:1", *common], storage("first"))
    assert rc == 0, first[-3000:]
    assert "whole-build keys for 2 of 2 platform(s)" in first
    keys = [t for t in cache_tags(registry, "cache/reuse") if t.startswith("taskimage-build-")]
    assert len(keys) == 2

    rc, _, again = taskimage(["build", "--image", f"{registry.host}/app/reuse:2", *common], storage("again"))
    assert rc == 0, again[-3000:]
    assert " build --platform " not in again and "Cache pulled" not in again  # buildah never ran a build
    for plat in ("linux/amd64", "linux/arm64"):
        assert len(lines(again, plat, r"nothing the build reads has changed since .*: reused that image")) == 1
    assert entries(f"{registry.host}/app/reuse:2") == entries(f"{registry.host}/app/reuse:1")
    index = skopeo_raw(f"{registry.host}/app/reuse:2")
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]

    # a changed file, build arg or Containerfile: a normal build (the layer cache may still serve steps)
    for change in ("file", "arg"):
        if change == "file":
            (ctx / "data.txt").write_text("two\n")
            extra = []
        else:
            extra = ["--build-arg", "UNUSED=1"]
        rc, _, out = taskimage(
            ["build", "--image", f"{registry.host}/app/reuse:{change}", *common, *extra], storage(change)
        )
        assert rc == 0, out[-3000:]
        assert " build --platform " in out and "reused that image" not in out, change


def test_a_missing_repository_is_told_apart_from_an_unreachable_registry():
    """404 as a status only: a port or an address holding the digits 404 is not a missing repository."""
    assert build.repository_missing(["fetching tags list: StatusCode: 404, 404 page not found"])
    assert build.repository_missing(["reading tags: name unknown: repository name not known to registry"])
    assert build.repository_missing(["Error: manifest unknown"])
    for port in (54047, 40400, 14041):
        assert not build.repository_missing(
            [f'Get "http://127.0.0.1:{port}/v2/": dial tcp 127.0.0.1:{port}: connect: connection refused']
        )
    assert not build.repository_missing(["dial tcp 10.0.404.1:5000: i/o timeout"])


def test_a_fresh_clone_reuses_and_a_moved_copy_from_tag_rebuilds(
    tmp_path, registry, busybox_base, busybox_amd64_only, storage
):
    """The shipped Pipeline's path: a new `git clone` per run, CONTEXT at the clone's root. An
    unchanged commit reuses the earlier image; moving the tag of an image named only in
    `COPY --from=` is a changed input and builds (never a stale copy)."""
    need(have_tools("git"), "git is not installed")
    tools = f"{registry.host}/tools/bb:moving"
    copy = ["skopeo", "copy", "--all", "--dest-tls-verify=false", "--src-tls-verify=false"]
    subprocess.run([*copy, f"docker://{busybox_amd64_only}", f"docker://{tools}"], check=True, capture_output=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.txt").write_text("app\n")
    (src / ".containerignore").write_text(".git\n")
    (src / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY --from={tools} /bin/busybox /bb\nCOPY . /src\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git, "init", "-q", str(src)], check=True)
    subprocess.run([*git, "-C", str(src), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(src), "commit", "-qm", "one"], check=True)

    def run(name: str) -> str:
        clone = tmp_path / f"clone-{name}"
        subprocess.run(["git", "clone", "-q", str(src), str(clone)], check=True)
        argv = ["build", "--image", f"{registry.host}/app/clone:{name}", "--context", str(clone)]
        rc, _, err = taskimage([*argv, "--cache-repo", f"{registry.host}/cache/clone", "linux/amd64"], storage(name))
        assert rc == 0, err[-3000:]
        return err

    first = run("first")
    assert "whole-build keys for 1 of 1 platform(s)" in first and " build --platform " in first
    again = run("again")
    assert " build --platform " not in again  # buildah never ran a build
    assert len(lines(again, "linux/amd64", r"nothing the build reads has changed since .*: reused that image")) == 1

    subprocess.run([*copy, f"docker://{busybox_base}", f"docker://{tools}"], check=True, capture_output=True)
    moved = run("moved")
    assert " build --platform " in moved and "reused that image" not in moved


def test_only_buildahs_cache_errors_count_as_cache_failures():
    # what buildah 1.28 printed here when the cache registry went away mid-build
    pushed = (
        'Error: failed pushing cache to {{{"127.0.0.1:1" "cache/x"} "b18f06d5"}}: trying to reuse blob '
        'sha256:f0da at destination: pinging container registry 127.0.0.1:1: Get "http://127.0.0.1:1/v2/": '
        "dial tcp 127.0.0.1:1: connect: connection refused"
    )
    assert build.cache_failure(["STEP 1/2: FROM scratch", pushed])
    assert build.cache_failure(["Error: unable to parse value provided `x` to --cache-to: bad"])
    step = 'Error: building at STEP "RUN apt-get install -y x": exit status 100'
    for noise in (
        "--> Using cache 5d8f0c",
        "E: Could not open lock file /var/cache/apt/archives/lock",
        "npm ERR! path /root/.npm/_cacache",
        "failed pushing cache to nowhere (printed by the RUN step itself)",
    ):
        assert not build.cache_failure([noise, step]), noise
    assert not build.cache_failure([pushed, step])  # the last error decides


def test_a_failing_run_step_with_a_cache_repo_runs_once(tmp_path, registry, busybox_base, storage):
    """Its output mentions caches ("--> Using cache", /var/cache/apt, _cacache), as real builds'
    do: still one run, one failure."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM {busybox_base}\nRUN echo step-started; echo '--> Using cache' /var/cache/apt _cacache; exit 3\n"
    )
    argv = ["build", "--image", f"{registry.host}/app/fails:1", "--context", str(ctx)]
    rc, _, err = taskimage([*argv, "--cache-repo", f"{registry.host}/cache/fails", "linux/amd64"], storage("once"))
    assert rc == 1, err[-3000:]
    assert err.splitlines().count("[linux/amd64] step-started") == 1, err[-3000:]
    assert "retrying without it" not in err
