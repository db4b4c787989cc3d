"""Registry faults during `taskimage build`'s push, injected by a proxy in front of the real registry.

What users rely on: a transient 5xx or reset is retried with backoff and the build succeeds; a
permanent fault ends with one clear line and exit 1; a refused login is never retried and says
which registry refused it; and whatever fails, the tag never points at half a manifest list or at
one platform's image (each platform goes in by digest as soon as it is verified, the tag moves
last, in the list's one PUT).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import emulation_ready, have_tools, need, skopeo_raw_bytes, tag_exists
from faultproxy import BLOB_UPLOAD_PATH, MANIFEST_PATH, Fault, FaultProxy

pytestmark = [pytest.mark.tools]

PLATFORMS = ["linux/amd64", "linux/arm64"]
DIGEST_PUT = r"^/v2/.+/manifests/sha256:"


def tag_put(tag: str) -> str:
    return rf"^/v2/.+/manifests/{re.escape(tag)}$"


@pytest.fixture(scope="module")
def storage_env(tmp_path_factory):
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    d = tmp_path_factory.mktemp("fault-storage")
    return {
        "TASKIMAGE_ROOT": str(d / "root"),
        "TASKIMAGE_RUNROOT": str(d / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
        "TASKIMAGE_STORAGE_DRIVER": "vfs",
    }


@pytest.fixture(scope="module")
def context(tmp_path_factory, busybox_base):
    """An app whose build needs no emulation (no RUN), so the tests spend their time on the push."""
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = tmp_path_factory.mktemp("fault-app")
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY hello.txt /hello.txt\n")
    return ctx


def taskimage(argv, env, timeout=600):
    full = dict(os.environ)
    full.update(env)
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, env=full, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t


def build_through(proxy: FaultProxy, repo_tag: str, context, storage_env, *extra, results=None):
    argv = [
        "build",
        "--image",
        f"{proxy.host}/{repo_tag}",
        "--context",
        str(context),
        "--retry-delay",
        "1",
        # these tests count the image pushes' manifest PUTs by digest: no SBOM/provenance referrers
        # (also PUT by digest) among them; tests/test_supplychain_build.py covers those
        "--sbom",
        "none",
        "--provenance",
        "false",
        *extra,
        *PLATFORMS,
    ]
    if results:
        argv += ["--results-dir", str(results)]
    return taskimage(argv, storage_env)


def tag_puts(proxy: FaultProxy, tag: str) -> list:
    return [r for r in proxy.log if r.method == "PUT" and re.search(tag_put(tag), r.path)]


def assert_tag_moved_last(proxy: FaultProxy, tag: str, digests) -> None:
    """Every PUT of the tag (failed or not) came after each platform's manifest was in by digest."""
    log = list(proxy.log)
    for n, rec in enumerate(log):
        if rec.method == "PUT" and re.search(tag_put(tag), rec.path):
            stored = {
                r.path.rsplit("/", 1)[1]
                for r in log[:n]
                if r.method == "PUT" and r.status == 201 and re.search(DIGEST_PUT, r.path)
            }
            assert set(digests) <= stored, (rec.path, sorted(stored))


PLATFORM_RETRY = (
    r"WARNING: pushing linux/\S+ to \S+@sha256:[0-9a-f]{64}: attempt \d of 4 failed \(.*\); retrying in \d s"
)


# --- the proxy itself ----------------------------------------------------------------------


def test_proxy_forwards_and_injects_by_position_share_and_path(registry):
    rules = [
        Fault("503", ("GET",), r"^/v2/$", nth=(2,)),
        Fault("401", ("GET",), r"_catalog", times=1),
        Fault("500", ("HEAD",), r"^/v2/$", share=0.5, seed=7),
    ]
    with FaultProxy(registry.host, rules) as proxy:

        def status(method, path):
            req = urllib.request.Request(f"http://{proxy.host}{path}", method=method)
            try:
                return urllib.request.urlopen(req, timeout=10).status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert [status("GET", "/v2/") for _ in range(3)] == [200, 503, 200]
        assert [status("GET", "/v2/_catalog") for _ in range(2)] == [401, 200]
        heads = [status("HEAD", "/v2/") for _ in range(200)]
        assert 60 < heads.count(500) < 140 and set(heads) == {200, 500}
        assert [r.fault for r in proxy.requests("GET")] == [None, "503", None, "401", None]


def test_proxy_reset_and_stall(registry):
    with FaultProxy(
        registry.host, [Fault("reset", ("GET",), nth=(1,)), Fault("stall", ("HEAD",), stall_seconds=30)]
    ) as proxy:
        with pytest.raises((ConnectionResetError, urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://{proxy.host}/v2/", timeout=10)
        t = time.monotonic()
        with pytest.raises(OSError):  # a client with a deadline gives up on a stalled registry
            urllib.request.urlopen(urllib.request.Request(f"http://{proxy.host}/v2/", method="HEAD"), timeout=1)
        assert 0.9 < time.monotonic() - t < 25  # gave up at its 1 s deadline, long before the 30 s stall ends
        proxy.release()
        assert urllib.request.urlopen(f"http://{proxy.host}/v2/", timeout=10).status == 200


# --- transient faults: retried with backoff ----------------------------------------------------


def test_transient_faults_are_retried_with_backoff_and_the_build_succeeds(registry, context, storage_env, tmp_path):
    """A reset blob upload and a 503 on a platform manifest: that platform's push is tried again.
    Three 500s on the tag: the list's push waits 1, 2, 4 s (--retry-delay 1, doubling), then gets in."""
    tag = "transient-1"
    faults = [
        Fault("reset", ("PATCH", "PUT"), BLOB_UPLOAD_PATH, nth=(1,)),
        Fault("503", ("PUT",), DIGEST_PUT, nth=(1,)),
        Fault("500", ("PUT",), tag_put(tag), nth=(1, 2, 3)),
    ]
    results = tmp_path / "results"
    results.mkdir()
    with FaultProxy(registry.host, faults) as proxy:
        rc, out, err, seconds = build_through(
            proxy, f"faults/app:{tag}", context, storage_env, "--retry", "3", results=results
        )
        assert rc == 0, err[-3000:]
        assert [f.fired for f in faults] == [1, 1, 3]
        puts = tag_puts(proxy, tag)
        ref = f"{registry.host}/faults/app:{tag}"
        raw = skopeo_raw_bytes(ref)
        index = json.loads(raw)
        assert_tag_moved_last(proxy, tag, [m["digest"] for m in index["manifests"]])
    assert len(re.findall(PLATFORM_RETRY, err)) == 2, err[-3000:]
    for n, delay in ((1, 1), (2, 2), (3, 4)):
        assert re.search(
            rf"WARNING: pushing {re.escape(proxy.host)}/faults/app:{tag}: attempt {n} of 4 failed \(.*500.*\); "
            rf"retrying in {delay} s",
            err,
        ), err[-3000:]
    # backoff, as the registry saw it: from one failed tag PUT to the next attempt's
    assert [r.fault for r in puts] == ["500", "500", "500", None] and puts[-1].status == 201
    for previous, following, delay in zip(puts, puts[1:], (1, 2, 4), strict=False):
        assert following.time - previous.time >= delay - 0.05
    # what the tag points at is the whole list, and the results say so (digest from the registry)
    assert sorted(e["platform"]["architecture"] for e in index["manifests"]) == ["amd64", "arm64"]
    assert (results / "IMAGE_DIGEST").read_text() == "sha256:" + hashlib.sha256(raw).hexdigest()


# --- permanent faults: clear failure, the tag never half-moved ------------------------------------


def test_permanent_fault_on_a_platform_manifest_fails_clearly_and_leaves_the_old_tag(registry, context, storage_env):
    """The tag already holds a good list; a new build whose second platform never gets in must
    leave the tag on the old list, not on a one-platform list or image. (--jobs 1: the first
    platform's manifest is the first digest PUT, every later one is the second platform's.)"""
    tag = "permanent-1"
    with FaultProxy(registry.host) as proxy:
        rc, _, err, _ = build_through(proxy, f"faults/app:{tag}", context, storage_env, "--retry", "0")
        assert rc == 0, err[-2000:]
    ref = f"{registry.host}/faults/app:{tag}"
    before = skopeo_raw_bytes(ref)
    (context / "hello.txt").write_text("hello again\n")  # new content: new per-platform manifests
    try:
        fault = Fault("500", ("PUT",), DIGEST_PUT, nth=tuple(range(2, 100)))
        with FaultProxy(registry.host, [fault]) as proxy:
            rc, out, err, _ = build_through(
                proxy, f"faults/app:{tag}", context, storage_env, "--retry", "2", "--jobs", "1"
            )
            puts = tag_puts(proxy, tag)
    finally:
        (context / "hello.txt").write_text("hello\n")
    assert rc == 1
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(  # emulated platforms go first: linux/arm64 got in, linux/amd64 did not
        rf"ERROR: pushing linux/amd64 to {re.escape(proxy.host)}/faults/app@sha256:[0-9a-f]{{64}} failed after 3 attempt\(s\): "
        r".*500 Internal Server Error.*",
        last,
    ), last
    assert fault.fired == 3
    assert puts == [], "the tag was written"
    assert skopeo_raw_bytes(ref) == before  # still the old, complete list


def test_permanent_fault_on_the_tag_leaves_no_tag(registry, context, storage_env):
    tag = "never-1"
    fault = Fault("503", ("PUT",), tag_put(tag))
    with FaultProxy(registry.host, [fault]) as proxy:
        rc, _, err, seconds = build_through(proxy, f"faults/app:{tag}", context, storage_env, "--retry", "1")
        puts = tag_puts(proxy, tag)
        digests = {
            r.path.rsplit("/", 1)[1]
            for r in proxy.log
            if r.method == "PUT" and r.status == 201 and re.search(DIGEST_PUT, r.path)
        }
        assert len(digests) == len(PLATFORMS)
        assert_tag_moved_last(proxy, tag, digests)
    assert rc == 1
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"ERROR: pushing {proxy.host}/faults/app:{tag} failed after 2 attempt(s): ")
    )
    assert "503 Service Unavailable" in err.strip().splitlines()[-1]
    assert fault.fired == 2 and len(puts) == 2
    assert not tag_exists(f"{registry.host}/faults/app:{tag}")


def test_unauthorized_is_not_retried_and_names_the_registry(registry, context, storage_env):
    tag = "refused-1"
    fault = Fault("401", ("PUT",), MANIFEST_PATH)
    with FaultProxy(registry.host, [fault]) as proxy:  # --jobs 1: one platform's push meets it, and the run ends
        rc, out, err, seconds = build_through(
            proxy, f"faults/app:{tag}", context, storage_env, "--retry", "3", "--jobs", "1"
        )
    assert rc == 1
    assert fault.fired == 1
    assert "retrying" not in err
    assert err.strip().splitlines()[-1] == (
        f"ERROR: the registry {proxy.host} refused the credentials for {proxy.host}/faults/app "
        "(check --authfile / the dockerconfig workspace); not retried"
    )
    assert not tag_exists(f"{registry.host}/faults/app:{tag}")
