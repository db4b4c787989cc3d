"""``taskimage source push`` / ``source pull``: a source tree as an OCI artifact, by digest.

Against the real local registry; what was pushed is read back with skopeo and Python's tarfile,
not with taskimage's reader. Hostile artifacts are written by hand here (tar + JSON + skopeo), as
an attacker would, and must be refused before anything lands in the target directory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import emulation_ready, have_tools, need, skopeo_raw, skopeo_raw_bytes

from taskimage import cli
from taskimage.oci import artifact

pytestmark = pytest.mark.tools


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_tree(root: Path, *, git: bool = True) -> Path:
    """A small source tree: nested dirs, an executable, a relative symlink, an empty dir, .git."""
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "Containerfile").write_text("FROM scratch\nCOPY src /src\n")
    (root / "src" / "pkg" / "mod.py").write_text("print('hi')\n")
    run = root / "src" / "run.sh"
    run.write_text("#!/bin/sh\necho run\n")
    run.chmod(0o755)
    (root / "src" / "link").symlink_to("pkg/mod.py")
    if git:
        (root / ".git" / "objects").mkdir(parents=True)
        (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        (root / "src" / "pkg" / ".git").write_text("gitdir: ../../.git/modules/pkg\n")  # submodule style
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything that must survive the round trip: type, permission bits, content, link target."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", st.st_mode & 0o777)
        else:
            out[rel] = ("file", st.st_mode & 0o777, path.read_bytes())
    return out


def push(capsys, tree: Path, ref: str, *extra: str) -> str:
    code, out, err = run_cli(capsys, "source", "push", "--tls-verify=false", *extra, str(tree), ref)
    assert code == 0, err
    return out.strip()


# --- push ------------------------------------------------------------------------------------


def test_same_tree_twice_same_digest_changed_file_different(registry, tmp_path, capsys):
    ref = f"{registry.host}/src/app:source-a"
    first = make_tree(tmp_path / "one")
    pinned = push(capsys, first, ref)
    repo, _, digest = pinned.partition("@")
    assert repo == f"{registry.host}/src/app"
    # the registry holds exactly the manifest whose digest we printed, under the tag too
    assert sha256(skopeo_raw_bytes(pinned)) == digest == sha256(skopeo_raw_bytes(ref))

    # the same tree made again later elsewhere: other mtimes, other .git content
    second = make_tree(tmp_path / "two")
    (second / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    os.utime(second / "Containerfile", (1_000_000, 1_000_000))
    assert push(capsys, second, f"{registry.host}/src/app:source-b") == pinned

    (second / "src" / "pkg" / "mod.py").write_text("print('changed')\n")
    changed = push(capsys, second, f"{registry.host}/src/app:source-c")
    assert changed != pinned
    (second / "src" / "pkg" / "mod.py").write_text("print('hi')\n")
    (second / "Containerfile").chmod(0o600)  # a mode is part of the tree
    assert push(capsys, second, f"{registry.host}/src/app:source-d") not in (pinned, changed)


def test_pushed_artifact_read_back_with_skopeo_and_tarfile(registry, tmp_path, capsys):
    tree = make_tree(tmp_path / "tree")
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    digestfile = tmp_path / "digest"
    ref = f"{registry.host}/src/readback:source"
    pinned = push(capsys, tree, ref, "--results-dir", str(results_dir), "--digestfile", str(digestfile))
    assert (results_dir / "SOURCE_ARTIFACT").read_text() == pinned  # no trailing newline
    assert digestfile.read_text() == pinned.partition("@")[2]

    manifest = skopeo_raw(pinned)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == artifact.ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert len(manifest["layers"]) == 1
    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{pinned}", f"dir:{layout}"],
        check=True,
        capture_output=True,
    )
    blob = (layout / manifest["layers"][0]["digest"].split(":")[1]).read_bytes()
    assert blob[:4] == b"\x1f\x8b\x08\x00" and blob[4:8] == b"\0\0\0\0"  # gzip, no name, mtime 0
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == [
        "Containerfile",
        "empty",
        "src",
        "src/link",
        "src/pkg",
        "src/pkg/mod.py",
        "src/run.sh",
    ]  # no .git at any depth
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in members.values())
    assert members["src/run.sh"].mode == 0o755
    assert members["src/link"].issym() and members["src/link"].linkname == "pkg/mod.py"


def test_include_git_keeps_git(registry, tmp_path, capsys):
    tree = make_tree(tmp_path / "tree")
    pinned = push(capsys, tree, f"{registry.host}/src/git:source", "--include-git")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "source", "pull", "--tls-verify=false", pinned, str(out))
    assert code == 0, err
    assert (out / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (out / "src" / "pkg" / ".git").is_file()


def test_expires_after_is_a_manifest_annotation(registry, tmp_path, capsys):
    tree = make_tree(tmp_path / "tree")
    pinned = push(capsys, tree, f"{registry.host}/src/expiring:source", "--expires-after", "2d")
    assert skopeo_raw(pinned)["annotations"] == {"quay.expires-after": "2d"}
    code, out, err = run_cli(
        capsys, "source", "push", "--tls-verify=false", "--expires-after", "2 days", str(tree), f"{registry.host}/x:y"
    )
    assert code == 2 and "--expires-after: '2 days'" in err


def test_push_refuses_what_pull_would_refuse_and_sends_nothing(registry, tmp_path, capsys):
    tree = make_tree(tmp_path / "tree")
    (tree / "src" / "passwd").symlink_to("/etc/passwd")
    ref = f"{registry.host}/src/refused:source"
    code, out, err = run_cli(capsys, "source", "push", "--tls-verify=false", str(tree), ref)
    assert code == 2 and "src/passwd" in err and "/etc/passwd" in err and out == ""
    assert subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"]).returncode != 0


def test_push_of_a_missing_directory_is_a_usage_error(registry, tmp_path, capsys):
    code, _, err = run_cli(capsys, "source", "push", str(tmp_path / "nope"), f"{registry.host}/x:y")
    assert code == 2 and "source push DIR" in err and "nope" in err


# --- pull ------------------------------------------------------------------------------------


def test_pull_round_trip_keeps_tree_modes_and_symlinks(registry, tmp_path, capsys):
    tree = make_tree(tmp_path / "tree")
    pinned = push(capsys, tree, f"{registry.host}/src/roundtrip:source")
    shutil.rmtree(tree / ".git")
    (tree / "src" / "pkg" / ".git").unlink()
    out = tmp_path / "out"
    out.mkdir()  # an empty mount point (emptyDir) is fine
    code, _, err = run_cli(capsys, "source", "pull", "--tls-verify=false", pinned, str(out))
    assert code == 0, err
    assert snapshot(out) == snapshot(tree)


def test_pull_refuses_a_tag_without_digest(registry, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "source", "pull", "--tls-verify=false", f"{registry.host}/src/app:source-a", str(tmp_path / "o")
    )
    assert code == 2 and "names no digest" in err
    assert not (tmp_path / "o").exists()


def test_pull_refuses_a_non_empty_directory(registry, tmp_path, capsys):
    pinned = push(capsys, make_tree(tmp_path / "tree"), f"{registry.host}/src/nonempty:source")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    code, _, err = run_cli(capsys, "source", "pull", "--tls-verify=false", pinned, str(out))
    assert code == 2 and "is not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep"]


def test_pull_of_a_tampered_blob_fails_clearly_and_extracts_nothing(registry, tmp_path, capsys):
    tree = make_tree(tmp_path / "tree")
    (tree / "unique").write_text("tamper me\n")  # a layer no other test shares
    pinned = push(capsys, tree, f"{registry.host}/src/tampered:source")
    layer = skopeo_raw(pinned)["layers"][0]["digest"].split(":")[1]
    stored = next(registry.root.rglob(f"blobs/sha256/{layer[:2]}/{layer}/data"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "source", "pull", "--tls-verify=false", pinned, str(out))
    assert code == 1
    assert "does not match its digest" in err and "nothing was extracted" in err
    assert not out.exists()


def hostile_artifact(
    registry, tmp_path: Path, name: str, entries: list[tarfile.TarInfo], artifact_type: str = artifact.ARTIFACT_TYPE
) -> str:
    """Push, by hand, an artifact of ours whose archive holds ``entries`` (files get content 'x')."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            if info.isreg():
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
            else:
                tar.addfile(info)
    layer = gzip.compress(raw.getvalue())
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(config), "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    layout = tmp_path / f"layout-{name}"
    layout.mkdir()
    (layout / "version").write_text("Directory Transport Version: 1.1\n")
    (layout / sha256(layer)[7:]).write_bytes(layer)
    (layout / sha256(config)[7:]).write_bytes(config)
    (layout / "manifest.json").write_bytes(manifest)
    ref = f"{registry.host}/src/hostile-{name}"
    subprocess.run(
        ["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", f"dir:{layout}", f"docker://{ref}:x"],
        check=True,
        capture_output=True,
    )
    return f"{ref}@{sha256(manifest)}"


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


HOSTILE = {
    "dotdot": ([entry("ok"), entry("../escaped")], "../escaped"),
    "dotdot-deep": ([entry("a", tarfile.DIRTYPE), entry("a/../../escaped")], "a/../../escaped"),
    "absolute-name": ([entry("/tmp/escaped")], "/tmp/escaped"),
    "absolute-symlink": ([entry("etc", tarfile.SYMTYPE, "/etc")], "/etc"),
    "relative-symlink-out": ([entry("up", tarfile.SYMTYPE, "../..")], "up"),
    # p/s -> .. stays inside; but a link to p/s/.. is one level above the root
    "symlink-chain": (
        [entry("p", tarfile.DIRTYPE), entry("p/s", tarfile.SYMTYPE, ".."), entry("l", tarfile.SYMTYPE, "p/s/..")],
        "'l'",
    ),
    # the file comes before the link it is written through (tar order is the attacker's choice)
    "write-through-symlink": ([entry("d/escaped"), entry("d", tarfile.SYMTYPE, "/tmp")], "written through"),
    "hardlink-out": ([entry("h", tarfile.LNKTYPE, "../../etc/passwd")], "hard link"),
    "device": ([entry("null", tarfile.CHRTYPE)], "device"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_pull_refuses_an_archive_leading_out_of_dir(registry, tmp_path, capsys, case):
    entries, named = HOSTILE[case]
    pinned = hostile_artifact(registry, tmp_path, case, entries)
    work = tmp_path / "work"
    out = work / "out"
    work.mkdir()
    code, _, err = run_cli(capsys, "source", "pull", "--tls-verify=false", pinned, str(out))
    assert code == 1, err
    assert named in err
    assert sorted(p.name for p in work.iterdir()) == []  # nothing written, not even DIR
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()


def test_pull_refuses_an_artifact_of_another_type(registry, tmp_path, capsys):
    pinned = hostile_artifact(registry, tmp_path, "other-type", [entry("ok")], "application/vnd.example.other")
    code, _, err = run_cli(capsys, "source", "pull", "--tls-verify=false", pinned, str(tmp_path / "o"))
    assert code == 1 and "not a source artifact" in err
    assert not (tmp_path / "o").exists()


# --- build --source-artifact ----------------------------------------------------------------


def taskimage_proc(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, env=full, cwd=cwd, timeout=900
    )


@pytest.fixture
def build_env(tmp_path):
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    (tmp_path / "tmpdir").mkdir()
    return {
        "TASKIMAGE_ROOT": str(tmp_path / "root"),
        "TASKIMAGE_RUNROOT": str(tmp_path / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
        "TMPDIR": str(tmp_path / "tmpdir"),
    }


def test_build_from_a_source_artifact_uses_the_pulled_tree(registry, busybox_base, build_env, tmp_path, capsys):
    tree = tmp_path / "tree"
    (tree / "app").mkdir(parents=True)
    (tree / "app" / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY hello.txt /hello.txt\n")
    (tree / "app" / "hello.txt").write_text("from the artifact\n")
    pinned = push(capsys, tree, f"{registry.host}/demo/fromartifact:source-1")
    empty = tmp_path / "cwd"  # the step's working dir holds no source at all
    empty.mkdir()
    image = f"{registry.host}/demo/fromartifact:v1"
    proc = taskimage_proc(
        [
            "build",
            "--image",
            image,
            "--source-artifact",
            pinned,
            "--context",
            "app",
            "--expires-after",
            "3d",
            "linux/amd64",
        ],
        build_env,
        empty,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"source {pinned}" in proc.stderr
    # read the file back from the pushed image's top layer, straight from the registry
    index = skopeo_raw(image)
    layout = tmp_path / "pulled-image"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{image.rsplit(':', 1)[0]}@{index['manifests'][0]['digest']}",
            f"dir:{layout}",
        ],
        check=True,
    )
    manifest = json.loads((layout / "manifest.json").read_text())
    config = json.loads((layout / manifest["config"]["digest"].split(":")[1]).read_text())
    assert config["config"]["Labels"]["quay.expires-after"] == "3d"  # issue 17: Quay drops the tag then
    top = (layout / manifest["layers"][-1]["digest"].split(":")[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(top))) as tar:
        member = tar.extractfile("hello.txt")
        assert member is not None and member.read() == b"from the artifact\n"
    assert list(Path(build_env["TMPDIR"]).glob("taskimage-source-*")) == []  # the pulled tree is removed


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--expires-after", "3 days"], "--expires-after: '3 days' is not a duration"),
        (
            ["--source-artifact", "127.0.0.1:1/x/y:source-1"],
            "--source-artifact: '127.0.0.1:1/x/y:source-1' names no digest",
        ),
        (
            ["--source-artifact", f"127.0.0.1:1/x/y@sha256:{'a' * 64}", "--source-root", "."],
            "give one source",
        ),
    ],
)
def test_build_source_artifact_bad_input_exits_2_before_any_work(registry, build_env, tmp_path, extra, message):
    (tmp_path / "Containerfile").write_text("FROM scratch\n")  # only the flag under test is wrong
    proc = taskimage_proc(["build", "--image", f"{registry.host}/demo/never:v1", *extra], build_env, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert list(Path(build_env["TMPDIR"]).iterdir()) == []


def test_push_refuses_a_dir_outside_source_root(registry, tmp_path, capsys):
    """The Task builds DIR from its `subdirectory` param: `../home` must not push the credentials."""
    checkout = make_tree(tmp_path / "checkout")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".git-credentials").write_text("https://user:secret@example.com\n")
    ref = f"{registry.host}/src/outside:source"
    code, out, err = run_cli(
        capsys, "source", "push", "--tls-verify=false", "--source-root", str(checkout), f"{checkout}/../home", ref
    )
    assert code == 2 and "is outside --source-root" in err and out == ""
    assert subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"]).returncode != 0
    assert push(capsys, checkout, ref, "--source-root", str(checkout)).startswith(f"{registry.host}/src/outside@")
    assert push(capsys, checkout / "src", ref, "--source-root", str(checkout))


# --- the source-artifact Task, then a build TaskRun from its result, no shared volume ----------

ROOT = Path(__file__).resolve().parent.parent
SOURCE_TASK = ROOT / "catalog/task/source-artifact/0.1/source-artifact.yaml"
PLATFORM_TASK = ROOT / "catalog/task/buildah-multiarch-platform/0.1/buildah-multiarch-platform.yaml"
INDEX_TASK = ROOT / "catalog/task/buildah-multiarch-index/0.1/buildah-multiarch-index.yaml"
APP = Path(__file__).parent / "data" / "localrun" / "app"


@pytest.fixture(scope="module")
def amd64_task_image(registry) -> str:
    """The task image of this checkout (with git) for amd64 only: the Task runs natively here."""
    from taskimage.dev import env as devenv

    need(have_tools("buildah", "skopeo", "mmdebstrap", "podman", "runc"), "buildah, skopeo, mmdebstrap, podman, runc")
    need(os.geteuid() == 0, "buildah builds here run as root")
    return devenv.build_task_image(
        registry.host,
        f"{registry.host}/taskimage/taskimage:source-e2e",
        ["linux/amd64"],
        layer_cache=devenv.cache_dir() / "task-image" / "storage-amd64",  # its own: amd64-only builds
    ).by_digest


@pytest.fixture
def git_server(tmp_path):
    """A real git repository served by `git daemon` on 127.0.0.1 (the steps use the host network)."""
    import socket
    import time

    need(have_tools("git"), "git is not installed")
    base = tmp_path / "git"
    work = base / "work"
    shutil.copytree(APP, work / "app")
    (work / "README").write_text("not in the subdirectory\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z",
        "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }

    def git(*argv: str, cwd: Path = work) -> str:
        return subprocess.run(["git", *argv], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "app")
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(base / "app.git")], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["git", "ls-remote", f"git://127.0.0.1:{port}/app.git"], capture_output=True).returncode:
            assert time.monotonic() < deadline and daemon.poll() is None, "git daemon did not come up"
            time.sleep(0.2)
        yield {
            "url": f"git://127.0.0.1:{port}/app.git",
            "commit": git("rev-parse", "HEAD").strip(),
            "date": git("log", "-1", "--pretty=%ct").strip(),
            "work": work,
        }
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


@pytest.mark.podman
@pytest.mark.emulation
@pytest.mark.slow
def test_matrix_by_hand_source_artifact_then_two_platform_builds_then_index_no_shared_volume(
    amd64_task_image, registry, busybox_base, git_server, tmp_path, capsys
):

    repo = f"{registry.host}/e2e/app"
    code, out, err = run_cli(
        capsys,
        "run",
        str(SOURCE_TASK),
        "--tls-verify=false",
        "--output",
        "json",
        "-p",
        f"url={git_server['url']}",
        "-p",
        "revision=main",
        "-p",
        "subdirectory=app",
        "-p",
        f"REPOSITORY={repo}",
        "-p",
        "TLSVERIFY=false",
        "-p",
        f"BUILDER_IMAGE={amd64_task_image}",
    )
    report = json.loads(out)
    assert code == 0, (report, err[-3000:])
    results = report["results"]
    assert results["commit"] == git_server["commit"]
    assert results["url"] == git_server["url"]
    assert results["committer-date"] == git_server["date"]
    artifact_ref = results["SOURCE_ARTIFACT"]
    assert artifact_ref.startswith(f"{repo}@sha256:")
    # filed under a tag that says what it is, and the tree is the subdirectory without .git
    assert sha256(skopeo_raw_bytes(f"{repo}:source-{git_server['commit']}")) == artifact_ref.split("@")[1]
    # the same commit named by its hash, in another TaskRun: the same artifact, to the digest
    code, out, err = run_cli(
        capsys,
        "run",
        str(SOURCE_TASK),
        "--tls-verify=false",
        "--output",
        "json",
        "-p",
        f"url={git_server['url']}",
        "-p",
        f"revision={git_server['commit']}",
        "-p",
        "subdirectory=app",
        "-p",
        f"REPOSITORY={repo}",
        "-p",
        "TLSVERIFY=false",
        "-p",
        f"BUILDER_IMAGE={amd64_task_image}",
    )
    assert code == 0, err[-3000:]
    assert json.loads(out)["results"]["SOURCE_ARTIFACT"] == artifact_ref
    pulled = tmp_path / "pulled"
    code, _, err = run_cli(capsys, "source", "pull", "--tls-verify=false", artifact_ref, str(pulled))
    assert code == 0, err
    assert snapshot(pulled) == snapshot(git_server["work"] / "app")

    # the matrix, by hand (taskimage run runs Tasks, not Pipelines): one build TaskRun per platform
    # with no source workspace at all, only the artifact's digest connects them; then the index
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    images = []
    for platform in ("amd64", "arm64"):
        code, out, err = run_cli(
            capsys,
            "run",
            str(PLATFORM_TASK),
            "--tls-verify=false",
            "--output",
            "json",
            "-p",
            f"REPOSITORY={repo}",
            "-p",
            f"PLATFORM={platform}",
            "-p",
            f"SOURCE_ARTIFACT={artifact_ref}",
            "-p",
            f"BUILD_ARGS=BASE={busybox_base}",
            "-p",
            "TLSVERIFY=false",
            "-p",
            f"BUILDER_IMAGE={amd64_task_image}",
        )
        report = json.loads(out)
        assert code == 0, (report, err[-3000:])
        image = report["results"]["IMAGES"]
        assert image.startswith(f"{repo}@sha256:")
        assert skopeo_raw(image, config=True)["architecture"] == platform
        images.append(image)
    code, out, err = run_cli(
        capsys,
        "run",
        str(INDEX_TASK),
        "--tls-verify=false",
        "--output",
        "json",
        "-p",
        f"IMAGE={repo}:main",
        "-p",
        f"IMAGE_REFS={','.join(images)}",
        "-p",
        "TLSVERIFY=false",
        "-p",
        f"BUILDER_IMAGE={amd64_task_image}",
    )
    report = json.loads(out)
    assert code == 0, (report, err[-3000:])
    index = skopeo_raw(f"{repo}:main")
    listed = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert listed == {"amd64": images[0].split("@")[1], "arm64": images[1].split("@")[1]}


# --- credentials -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    """A registry that wants a login (htpasswd) and a Tekton dockerconfig workspace for it
    (the same set-up as tests/test_bundle.py)."""
    import base64
    import warnings

    from taskimage.dev import env as devenv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            crypt = None
    need(crypt is not None and crypt.METHOD_BLOWFISH in crypt.methods, "no bcrypt in Python's crypt module")
    root = tmp_path_factory.mktemp("source-auth-registry")
    password = "s3cret-Source-pass"
    (root / "htpasswd").write_text(f"tekton:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
    reg = devenv.LocalRegistry(root, htpasswd=str(root / "htpasswd")).start()
    workspace = root / "dockerconfig"
    workspace.mkdir()
    token = base64.b64encode(f"tekton:{password}".encode()).decode()
    (workspace / ".dockerconfigjson").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    yield reg, workspace, password, token
    reg.stop()


def test_push_and_pull_with_a_dockerconfig_workspace_never_show_the_secret(auth_registry, tmp_path, capsys):
    reg, workspace, password, token = auth_registry
    tree = make_tree(tmp_path / "tree")
    ref = f"{reg.host}/src/private:source"
    code, out, err = run_cli(
        capsys, "source", "push", "--tls-verify=false", "--authfile", str(workspace), str(tree), ref
    )
    assert code == 0, err
    pinned = out.strip()
    code, _, err2 = run_cli(
        capsys, "source", "pull", "--tls-verify=false", "--authfile", str(workspace), pinned, str(tmp_path / "out")
    )
    assert code == 0, err2
    assert (tmp_path / "out" / "Containerfile").is_file()
    # without credentials the registry says no: one clear line, not retried, nothing extracted
    code, _, err3 = run_cli(capsys, "source", "pull", "--tls-verify=false", pinned, str(tmp_path / "anon"))
    assert code == 1 and "refused the credentials" in err3 and "not retried" in err3
    assert not (tmp_path / "anon").exists()
    for text in (out, err, err2, err3):
        assert password not in text and token not in text
