"""Bad input through the real CLI: exit 2, exactly one line naming the flag (or env var) and the
value, nothing on stdout, nothing built, nothing pushed.

The Containerfiles build FROM a real multi-arch base in the test registry: were the bad input
let through, the build would really pull, build and push, and the registry's full list of tags
(read before and after, every repository) would show it. "Nothing built" is the log: a run that
started would write its `==>` phase headers, and stderr holds only the one ERROR line.

Complements tests/test_build_real.py (upper-case name, digest, duplicate and unknown platform,
missing --file, build arg without '=', bad boolean/choice, unknown flag) and tests/test_bundle.py
(invalid bundle objects through `taskimage bundle push`); the cases here are the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from conftest import need, registry_snapshot, skopeo_raw_bytes

from taskimage.oci.platforms import ACCEPTED

pytestmark = [pytest.mark.tools]

SECRET = "bad-input-Secret-7f3a"


def taskimage(argv, env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKIMAGE_")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, env=full, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def ws(tmp_path, busybox_base):
    """A source workspace with an app, a sibling directory outside it, and auth files."""
    src = tmp_path / "source"
    (src / "app").mkdir(parents=True)
    (src / "app" / "Containerfile").write_text(f"FROM {busybox_base}\nRUN echo built > /built\n")
    (src / "empty").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Containerfile").write_text(f"FROM {busybox_base}\nRUN echo built > /built\n")
    (src / "escape").symlink_to(outside)  # inside by name, outside in fact
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "truncated.json").write_text('{"auths": {"r.example.com": {"auth": "' + SECRET)
    (auth / "list.json").write_text(json.dumps([{"auth": SECRET}]))
    (auth / "auths-list.json").write_text(json.dumps({"auths": [SECRET]}))
    (auth / "entry-string.json").write_text(json.dumps({"auths": {"r.example.com": SECRET}}))
    (auth / "binary.json").write_bytes(b"\xff\xfe" + SECRET.encode() + b"\x00\x81")
    (auth / "dockerconfig").mkdir()
    (auth / "dockerconfig" / ".dockerconfigjson").write_text(
        '{"auths": {"r.example.com": {"auth": "' + SECRET + '"},}}'
    )
    return tmp_path


CASES = [
    # platforms: invalid, unsupported, duplicate after normalization (flags, positional, env)
    (
        "invalid-platform-empty-part",
        ["linux//amd64"],
        {},
        f"--platform: invalid platform 'linux//amd64': expected OS/ARCH[/VARIANT]; accepted: {ACCEPTED}",
    ),
    (
        "invalid-platform-too-long",
        ["linux/arm/v7/extra"],
        {},
        f"--platform: invalid platform 'linux/arm/v7/extra': expected OS/ARCH[/VARIANT]; accepted: {ACCEPTED}",
    ),
    (
        "invalid-variant",
        ["--platform", "linux/arm64/v7"],
        {},
        f"--platform: invalid variant in platform 'linux/arm64/v7'; accepted: {ACCEPTED}",
    ),
    (
        "alias-with-other-variant",
        ["linux/armhf/v6"],
        {},
        "--platform: invalid platform 'linux/armhf/v6': armhf means arm/v7",
    ),
    (
        "unsupported-os",
        ["windows/amd64"],
        {},
        f"--platform: unsupported platform 'windows/amd64': only linux images can be built; accepted: {ACCEPTED}",
    ),
    (
        "duplicate-aarch64",
        ["linux/arm64", "--platform", "linux/aarch64"],
        {},
        "--platform: duplicate platform 'linux/arm64' (same as 'linux/aarch64', both mean linux/arm64)",
    ),
    (
        "duplicate-in-env",
        [],
        {"TASKIMAGE_PLATFORMS": "linux/arm64/v8,linux/amd64\nlinux/arm64"},
        "TASKIMAGE_PLATFORMS: duplicate platform 'linux/arm64' (same as 'linux/arm64/v8', both mean linux/arm64)",
    ),
    (
        "unknown-in-env",
        [],
        {"TASKIMAGE_PLATFORMS": "linux/amd64,linux/sparc64"},
        f"TASKIMAGE_PLATFORMS: unknown platform 'linux/sparc64'; accepted: {ACCEPTED}",
    ),
    # image references
    (
        "upper-case-from-env",
        ["linux/amd64"],
        {"TASKIMAGE_IMAGE": "{reg}/Team/app:1"},
        "TASKIMAGE_IMAGE: invalid image name '{reg}/Team/app:1': repository names must be lower-case",
    ),
    (
        "digest-with-tag",
        ["--image", "{reg}/bad/app:1@sha256:" + "a" * 64],
        {},
        "--image: '{reg}/bad/app:1@sha256:" + "a" * 64 + "' is a digest reference; give a tag (repo[:tag]) to push to",
    ),
    (
        "bad-tag",
        ["--image", "{reg}/bad/app:-1"],
        {},
        "--image: invalid tag '-1' in '{reg}/bad/app:-1' (letters, digits, '_', '.', '-'; at most 128)",
    ),
    (
        "no-image",
        ["--image", ""],
        {},
        "--image: an image to push is required (e.g. --image registry.example.com/team/app:1.0)",
    ),
    # files and directories
    (
        "no-containerfile",
        ["--context", "{ws}/source/empty"],
        {},
        "--context: no Containerfile or Dockerfile in the context {ws}/source/empty".replace("--context", "--file"),
    ),
    (
        "context-outside-workspace",
        ["--source-root", "{ws}/source", "--context", "../outside"],
        {},
        "--context: '../outside' is outside the source workspace {ws}/source",
    ),
    (
        "context-symlink-escapes",
        ["--source-root", "{ws}/source", "--context", "escape"],
        {},
        "--context: 'escape' is outside the source workspace {ws}/source",
    ),
    (
        "file-outside-workspace",
        ["--source-root", "{ws}/source", "--context", "app", "--file", "../../outside/Containerfile"],
        {},
        "--file: '../../outside/Containerfile' is outside the source workspace {ws}/source",
    ),
    (
        "workspace-env-missing",
        ["--context", "app"],
        {"TASKIMAGE_SOURCE_ROOT": "{ws}/nope"},
        "TASKIMAGE_SOURCE_ROOT: '{ws}/nope' is not a directory",
    ),
    (
        "results-dir-missing",
        ["--results-dir", "{ws}/no-results"],
        {},
        "--results-dir: '{ws}/no-results' is not a directory",
    ),
    # build args from the Task's env (one per line)
    ("build-arg-env", [], {"TASKIMAGE_BUILD_ARGS": "A=1\nNOVALUE"}, "TASKIMAGE_BUILD_ARGS: 'NOVALUE' is not KEY=VALUE"),
    # malformed auth: named, never echoed
    (
        "auth-truncated",
        ["--authfile", "{ws}/auth/truncated.json"],
        {},
        "--authfile: {ws}/auth/truncated.json is not valid JSON (line 1, column 38)",
    ),
    (
        "auth-list",
        ["--authfile", "{ws}/auth/list.json"],
        {},
        '--authfile: {ws}/auth/list.json must hold a JSON object with an "auths" map',
    ),
    (
        "auth-auths-list",
        ["--authfile", "{ws}/auth/auths-list.json"],
        {},
        '--authfile: {ws}/auth/auths-list.json must hold a JSON object with an "auths" map',
    ),
    (
        "auth-entry-string",
        ["--authfile", "{ws}/auth/entry-string.json"],
        {},
        "--authfile: {ws}/auth/entry-string.json: the entry for 'r.example.com' must be an object",
    ),
    (
        "auth-binary",
        ["--authfile", "{ws}/auth/binary.json"],
        {},
        "--authfile: {ws}/auth/binary.json is not a text file",
    ),
    (
        "auth-dockerconfig-workspace",
        [],
        {"TASKIMAGE_AUTHFILE": "{ws}/auth/dockerconfig"},
        "TASKIMAGE_AUTHFILE: {ws}/auth/dockerconfig/.dockerconfigjson is not valid JSON (line 1, column 63)",
    ),
    ("creds-env-no-password", [], {"TASKIMAGE_CREDS": "user-only"}, "TASKIMAGE_CREDS: expected USERNAME:PASSWORD"),
    ("retry-negative", ["--retry", "-1"], {}, "--retry: must not be negative, got '-1'"),
    ("jobs-not-a-number", [], {"TASKIMAGE_JOBS": "two"}, "TASKIMAGE_JOBS: invalid number 'two'"),
]


@pytest.mark.parametrize("argv, env, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_pushes_nothing(registry, ws, argv, env, message):
    image = f"{registry.host}/bad-input/app:1"

    def fill(text: str) -> str:
        return text.replace("{reg}", registry.host).replace("{ws}", str(ws))

    argv = [fill(a) for a in argv]
    base = ["build", "--context", str(ws / "source" / "app"), "--tls-verify=false"]
    if not any(a.startswith("--image") for a in argv) and "TASKIMAGE_IMAGE" not in env:
        base += ["--image", image]
    env = {k: fill(v) for k, v in env.items()}
    before = registry_snapshot(registry.host)
    rc, out, err = taskimage(base + argv, env)
    assert rc == 2, err
    assert out == ""
    assert err.splitlines() == ["ERROR: " + fill(message)], err  # no `==>` phase: nothing ran
    assert SECRET not in err
    assert registry_snapshot(registry.host) == before


def test_unwritable_results_dir_through_the_cli(registry, ws):
    """A read-only results directory fails before anything runs (root ignores modes: a ro mount)."""
    d = ws / "ro-results"
    d.mkdir()
    need(os.geteuid() == 0, "mounting a read-only tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)]).returncode == 0
    need(mounted, "cannot mount a read-only tmpfs here (mount -t tmpfs -o ro)")
    before = registry_snapshot(registry.host)
    try:
        image = f"{registry.host}/bad-input/ro:1"
        argv = ["build", "--image", image, "--context", str(ws / "source" / "app"), "--tls-verify=false"]
        rc, out, err = taskimage([*argv, "--results-dir", str(d)], {})
    finally:
        subprocess.run(["umount", str(d)])
    assert rc == 2 and out == ""
    assert err.splitlines() == [f"ERROR: --results-dir: cannot write to '{d}': Read-only file system"]
    assert registry_snapshot(registry.host) == before


def test_the_same_workspace_with_good_input_builds_and_pushes(registry, ws):
    """The control for the tests above: their workspace, with nothing wrong, really builds and
    pushes, so "the registry holds the same tags as before" is a check that can fail."""
    image = f"{registry.host}/bad-input/control:1"
    before = registry_snapshot(registry.host)
    rc, out, err = taskimage(
        ["build", "--image", image, "--context", str(ws / "source" / "app"), "--tls-verify=false"], {}
    )
    assert rc == 0, err[-3000:]
    index = skopeo_raw_bytes(image)
    subjects = [m["digest"] for m in json.loads(index)["manifests"]] + ["sha256:" + hashlib.sha256(index).hexdigest()]
    # the new repository, the image's tag, and the OCI 1.1 referrers fallback tag (SBOM, provenance)
    # of each manifest it pushed
    expected = {"bad-input/control", "bad-input/control:1"} | {
        f"bad-input/control:{d.replace(':', '-')}" for d in subjects
    }
    assert registry_snapshot(registry.host) - before == expected


def test_the_snapshot_sees_a_repository_that_holds_only_untagged_images(registry, busybox_base):
    """A failed multi-platform run may leave a platform image pushed by digest (pushed as soon as it
    was verified; the list and its tag never came). The distribution registry lists that repository
    in ``_catalog`` and answers 404 NAME_UNKNOWN to its ``tags/list``: the snapshot must read that
    as "no tags", and still see the new repository, or a push that stopped half-way looks like none."""
    amd64 = next(
        m for m in json.loads(skopeo_raw_bytes(busybox_base))["manifests"] if m["platform"]["architecture"] == "amd64"
    )
    repo = "bad-input/untagged-only"
    before = registry_snapshot(registry.host)
    subprocess.run(
        [
            "skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{busybox_base.rsplit(':', 1)[0]}@{amd64['digest']}", f"docker://{registry.host}/{repo}@{amd64['digest']}",
        ],
        check=True,
    )  # fmt: skip
    assert registry_snapshot(registry.host) - before == {repo}
