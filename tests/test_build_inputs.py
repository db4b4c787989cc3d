"""Build inputs of real applications (issue 15), for real: buildah, qemu, a real registry, read back.

Build secrets reach RUN steps of every platform (arm64 under qemu) and nowhere else: every pushed
layer blob, image config and history, the log and the results are searched for the secret's bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import secrets as pysecrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import emulation_ready, have_tools, need, skopeo_raw, skopeo_raw_bytes
from faultproxy import Fault, FaultProxy

pytestmark = [pytest.mark.tools]


@pytest.fixture
def storage_env(tmp_path):
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    return {
        "TASKIMAGE_ROOT": str(tmp_path / "storage" / "root"),
        "TASKIMAGE_RUNROOT": str(tmp_path / "storage" / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
    }


def taskimage(argv, env=None, cwd=None, timeout=900):
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, env=full, timeout=timeout, cwd=cwd
    )
    return proc.returncode, proc.stdout, proc.stderr


def pull_dir(ref: str, out: Path) -> Path:
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"dir:{out}"], check=True)
    return out


def layer_files(layer: bytes) -> dict[str, bytes]:
    """Every regular file of a gzip tar layer, by path."""
    import io

    out = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name.lstrip("./")] = tar.extractfile(m).read()
    return out


def k8s_secret_volume(root: Path, files: dict[str, bytes]) -> Path:
    """A directory laid out like a Kubernetes Secret volume: each key a symlink into ..data/."""
    data = root / "..2026_12_02_21_00_00.000000001"
    data.mkdir(parents=True)
    for name, content in files.items():
        (data / name).write_bytes(content)
    (root / "..data").symlink_to(data.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")
    return root


@pytest.mark.emulation
def test_secret_reaches_run_steps_of_every_platform_and_no_image_log_or_result(
    tmp_path, registry, busybox_base, storage_env
):
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    secret = ("//npm.example.com/:_authToken=" + pysecrets.token_hex(16) + "\n").encode()
    token = pysecrets.token_hex(12)
    workspace = k8s_secret_volume(tmp_path / "build-secrets", {"npmrc": secret})
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM {busybox_base}\n"
        "RUN --mount=type=secret,id=npmrc cat /run/secrets/npmrc >/dev/null && "
        "sha256sum /run/secrets/npmrc | cut -c1-64 > /npmrc.sha256 && uname -m > /uname.txt\n"
        "RUN --mount=type=secret,id=token sha256sum /run/secrets/token | cut -c1-64 > /token.sha256\n"
    )
    results = tmp_path / "results"
    results.mkdir()
    image = f"{registry.host}/inputs/secret:1"
    env = dict(storage_env, TASKIMAGE_SECRETS_ROOT=str(workspace), APP_TOKEN=token)
    rc, out, err = taskimage(
        [
            "build",
            "--image",
            image,
            "--context",
            str(ctx),
            "--results-dir",
            str(results),
            "--secret",
            "npmrc",
            "--secret",
            "id=token,env=APP_TOKEN",
            "--platform",
            "linux/amd64,linux/arm64",
        ],
        env,
    )
    assert rc == 0, err[-3000:]
    forms = [secret.strip(), secret.strip().split(b"=", 1)[1], token.encode()]

    index = skopeo_raw(image)
    assert sorted(e["platform"]["architecture"] for e in index["manifests"]) == ["amd64", "arm64"]
    for entry in index["manifests"]:
        arch = entry["platform"]["architecture"]
        d = pull_dir(f"{registry.host}/inputs/secret@{entry['digest']}", tmp_path / f"pulled-{arch}")
        manifest = json.loads((d / "manifest.json").read_text())
        config = (d / manifest["config"]["digest"].split(":", 1)[1]).read_bytes()
        blobs = [config, (d / "manifest.json").read_bytes()]
        files: dict[str, bytes] = {}
        for layer in manifest["layers"]:
            raw = (d / layer["digest"].split(":", 1)[1]).read_bytes()
            blobs.append(raw)
            contents = layer_files(raw)
            blobs += list(contents.values())
            files.update(contents)
        # the RUN step of this platform (arm64 under qemu) saw the exact bytes of both secrets ...
        assert files["npmrc.sha256"].decode().strip() == hashlib.sha256(secret).hexdigest()
        assert files["token.sha256"].decode().strip() == hashlib.sha256(token.encode()).hexdigest()
        assert files["uname.txt"].decode().strip() == {"amd64": "x86_64", "arm64": "aarch64"}[arch]
        # ... and neither is anywhere in the image: layers (compressed and not), config, history
        assert not any(f.endswith(("npmrc", "token")) and files[f] for f in files), sorted(files)
        for blob in blobs:
            for form in forms:
                assert form not in blob
        history = json.dumps(json.loads(config).get("history", []))
        assert "npmrc" in history  # the step is recorded (its command), the secret is not
    for text in (out, err, *(f.read_text() for f in results.iterdir())):
        for form in forms:
            assert form.decode() not in text
    assert (results / "IMAGE_DIGEST").read_text() == "sha256:" + hashlib.sha256(skopeo_raw_bytes(image)).hexdigest()


def _cli_bad(tmp_path, registry, storage_env, containerfile, argv, env=None):
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text(containerfile)
    image = f"{registry.host}/inputs/bad:1"
    rc, out, err = taskimage(
        ["build", "--image", image, "--context", str(ctx), *argv], dict(storage_env, **(env or {}))
    )
    return rc, err, image


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (
            ["--secret", "npmrc"],
            {},
            "--secret (SECRETS): secret 'npmrc': no file 'npmrc' in the build-secrets workspace",
        ),
        (
            ["--secret", "id=npmrc,src=../outside"],
            {},
            "--secret (SECRETS): secret 'npmrc': '../outside' is outside the build-secrets workspace",
        ),
        (
            ["--secret", "id=npmrc,src=leak"],
            {},
            "--secret (SECRETS): secret 'npmrc': 'leak' is outside the build-secrets workspace",
        ),
        ([], {}, "--secret (SECRETS): the Containerfile mounts secret 'npmrc', which is not given"),
        (
            ["--secret", "id=npmrc,env=NO_SUCH_VAR_F15"],
            {},
            "--secret (SECRETS): secret 'npmrc': the environment variable NO_SUCH_VAR_F15 is not set",
        ),
        (["--secret", "id=a b"], {}, "--secret (SECRETS): 'id=a b': the secret id 'a b' must be"),
    ],
)
def test_bad_secrets_exit_2_naming_secrets_and_the_id_before_any_build(
    tmp_path, registry, storage_env, argv, env, message
):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (tmp_path / "outside").write_text("x")
    (workspace / "leak").symlink_to(tmp_path / "outside")  # a symlink out of the workspace
    rc, err, image = _cli_bad(
        tmp_path,
        registry,
        storage_env,
        "FROM scratch\nRUN --mount=type=secret,id=npmrc true\n",
        argv,
        dict(env, TASKIMAGE_SECRETS_ROOT=str(workspace)),
    )
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "storage").exists()  # nothing ran: buildah never made its storage
    assert subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{image}"], capture_output=True
    ).returncode


def test_optional_secret_mount_may_be_missing(tmp_path):
    from taskimage.build import inputs

    text = "RUN --mount=type=secret,id=a,required=false true\nRUN --mount=type=secret,target=/run/secrets/b x\n"
    assert inputs.secret_mounts(text) == {"a": True, "b": False}
    assert inputs.check_secret_mounts("RUN --mount=type=secret,id=a,required=false true\n", (), "--secret") == []


# --- extra tags -----------------------------------------------------------------------------------


def digest_at(ref: str) -> str:
    return "sha256:" + hashlib.sha256(skopeo_raw_bytes(ref)).hexdigest()


@pytest.mark.emulation
def test_extra_tags_all_name_the_list_and_none_moves_when_the_list_push_fails(
    tmp_path, registry, busybox_base, storage_env
):
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY v.txt /v.txt\n")
    repo = "inputs/tags"
    tags = ["1.2.3", "1.2", "1", "latest"]

    def build(host, version, results):
        extra = ["--tag", "1.2", "-t", "1", "--tag", f"{host}/{repo}:latest"]  # bare tags and a full one
        (ctx / "v.txt").write_text(version)
        results.mkdir()
        return taskimage(
            [
                "build",
                "--image",
                f"{host}/{repo}:1.2.3",
                "--context",
                str(ctx),
                "--retry",
                "0",
                "--retry-delay",
                "0",
                "--results-dir",
                str(results),
                *extra,
                "--platform",
                "linux/amd64,linux/arm64",
            ],
            storage_env,
        )

    rc, _, err = build(registry.host, "one", tmp_path / "r1")
    assert rc == 0, err[-3000:]
    first = (tmp_path / "r1" / "IMAGE_DIGEST").read_text()
    assert {t: digest_at(f"{registry.host}/{repo}:{t}") for t in tags} == dict.fromkeys(tags, first)
    assert (tmp_path / "r1" / "IMAGE_TAGS").read_text() == ",".join(f"{registry.host}/{repo}:{t}" for t in tags)
    assert err.index("==> verify pushed index") < err.index("==> move tags")  # tags move after the read-back

    # the second build's list PUT (to IMAGE's tag) fails: no tag may move, the extra ones included
    fault = Fault("503", ("PUT",), r"^/v2/.+/manifests/1\.2\.3$")
    with FaultProxy(registry.host, [fault]) as proxy:
        rc, _, err = build(proxy.host, "two", tmp_path / "r2")
        assert rc == 1, err[-3000:]
        assert fault.fired >= 1
        # tags only: digests and the referrers fallback tags (sha256-HEX, SBOM/provenance of a pushed platform image) are no tags of IMAGE
        moved = [r.path for r in proxy.log if r.method == "PUT" and re.search(r"/manifests/(?!sha256[:-])", r.path)]
    assert [m.rsplit("/", 1)[1] for m in moved] == ["1.2.3"] * len(moved)  # only the failed list PUT(s)
    assert {t: digest_at(f"{registry.host}/{repo}:{t}") for t in tags} == dict.fromkeys(tags, first)
    assert not (tmp_path / "r2" / "IMAGE_TAGS").exists()


def test_bad_tags_are_usage_errors(tmp_path):
    from taskimage.build import inputs
    from taskimage.errors import UsageError
    from taskimage.oci.reference import parse_image

    image = parse_image("reg.example/app:1.2.3")
    got = inputs.parse_tags(["1.2", "", "1.2", "reg.example/app:1.2.3", "reg.example/other:x"], "--tag", image)
    assert [t.url for t in got] == ["reg.example/app:1.2", "reg.example/other:x"]
    with pytest.raises(UsageError, match=r"--tag \(ADDITIONAL_TAGS\): 'other.example/app:1' is on other.example"):
        inputs.parse_tags(["other.example/app:1"], "--tag", image)
    with pytest.raises(UsageError, match=r"--tag \(ADDITIONAL_TAGS\): invalid tag '-x'"):
        inputs.parse_tags(["-x"], "--tag", image)


# --- annotations ----------------------------------------------------------------------------------


@pytest.mark.emulation
def test_index_and_per_platform_annotations_land_where_buildx_puts_them(tmp_path, registry, busybox_base, storage_env):
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY Containerfile /Containerfile\n")
    image = f"{registry.host}/inputs/annotated:1"
    rc, _, err = taskimage(
        [
            "build",
            "--image",
            image,
            "--context",
            str(ctx),
            "--annotation",
            "com.example.everywhere=plain",
            "manifest:com.example.manifests=all",
            "manifest[linux/arm64]:com.example.arm=only-arm64",
            "index:org.opencontainers.image.source=https://git.example/team/app.git",
            "index:org.opencontainers.image.revision=0123abc",
            "--platform",
            "linux/amd64,linux/arm64",
        ],
        storage_env,
    )
    assert rc == 0, err[-3000:]
    index = skopeo_raw(image)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["annotations"] == {
        "org.opencontainers.image.source": "https://git.example/team/app.git",
        "org.opencontainers.image.revision": "0123abc",
    }
    got = {}
    for entry in index["manifests"]:
        manifest = skopeo_raw(f"{registry.host}/inputs/annotated@{entry['digest']}")
        got[entry["platform"]["architecture"]] = {
            k: v for k, v in manifest.get("annotations", {}).items() if k.startswith("com.example.")
        }
        assert "org.opencontainers.image.source" not in manifest.get("annotations", {})
    assert got == {
        "amd64": {"com.example.everywhere": "plain", "com.example.manifests": "all"},
        "arm64": {"com.example.everywhere": "plain", "com.example.manifests": "all", "com.example.arm": "only-arm64"},
    }


@pytest.mark.parametrize(
    "value, message",
    [
        ("manifest[linux/s390x]:k=v", "linux/s390x is not built"),
        ("index[linux/arm64]:k=v", "an index annotation takes no platforms"),
        ("index-descriptor:k=v", "index-descriptor annotations are not supported"),
        ("manifest:novalue", "is not [TYPE[PLATFORMS]:]KEY=VALUE"),
        ("manifest[linux/nosuch]:k=v", "nosuch"),
    ],
)
def test_bad_annotations_are_usage_errors(value, message):
    from taskimage.build import inputs
    from taskimage.errors import UsageError
    from taskimage.oci.platforms import normalize

    with pytest.raises(UsageError, match=r"^--annotation \(ANNOTATIONS\): .*" + re.escape(message)):
        inputs.parse_annotations([value], "--annotation", [normalize("linux/amd64"), normalize("linux/arm64")])


def test_annotation_keys_with_colons_stay_plain():
    from taskimage.build import inputs
    from taskimage.oci.platforms import normalize

    got = inputs.parse_annotations(
        ["com.example:x=a:b", "index:k=https://x"], "--annotation", [normalize("linux/amd64")]
    )
    assert got.manifest == (("com.example:x", "a:b"),) and got.index == (("k", "https://x"),)


# --- SOURCE_DATE_EPOCH ----------------------------------------------------------------------------


@pytest.mark.emulation
def test_two_cold_builds_with_one_source_date_epoch_give_identical_digests(tmp_path, registry, busybox_base):
    """Empty storage each time, no cache, RUN steps on amd64 and (under qemu) arm64: same epoch, same
    bytes; another epoch, other digests (so the first comparison can fail)."""
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text("app\n")
    (ctx / "Containerfile").write_text(
        f"FROM {busybox_base}\n"
        "ARG SOURCE_DATE_EPOCH\n"
        "RUN mkdir -p /data && echo built-at-$SOURCE_DATE_EPOCH > /data/epoch && uname -m > /data/arch\n"
        "COPY app.txt /data/app.txt\n"
    )

    def cold_build(name: str, epoch: str) -> tuple[str, dict[str, str], dict[str, dict]]:
        store = tmp_path / f"storage-{name}"
        assert not store.exists()
        env = {
            "TASKIMAGE_ROOT": str(store / "root"),
            "TASKIMAGE_RUNROOT": str(store / "run"),
            "TASKIMAGE_TLSVERIFY": "false",
            "TASKIMAGE_SOURCE_DATE_EPOCH": epoch,
        }
        image = f"{registry.host}/inputs/reproducible:{name}"
        rc, _, err = taskimage(
            ["build", "--image", image, "--context", str(ctx), "--platform", "linux/amd64,linux/arm64"], env
        )
        assert rc == 0, err[-3000:]
        assert "--source-date-epoch: one platform at a time" in err
        index = skopeo_raw(image)
        digests = {e["platform"]["architecture"]: e["digest"] for e in index["manifests"]}
        configs = {
            arch: skopeo_raw(f"{registry.host}/inputs/reproducible@{d}", config=True) for arch, d in digests.items()
        }
        return digest_at(image), digests, configs

    first = cold_build("a", "1700000000")
    second = cold_build("b", "1700000000")
    other = cold_build("c", "1700000001")
    assert second[0] == first[0]  # the index
    assert second[1] == first[1]  # every platform's manifest (so config and layers too)
    for arch in ("amd64", "arm64"):
        cfg = first[2][arch]
        assert cfg["created"] == "2023-11-14T22:13:20Z"
        ours = cfg["history"][-3:]  # ARG, RUN, COPY of this Containerfile
        assert [h["created"] for h in ours] == ["2023-11-14T22:13:20Z"] * 3
        assert other[1][arch] != first[1][arch]
    assert other[0] != first[0]


def test_bad_source_date_epoch_is_a_usage_error():
    from taskimage.build import inputs
    from taskimage.errors import UsageError

    assert inputs.parse_epoch(" 0 ", "--source-date-epoch") == 0
    assert inputs.parse_epoch("", "--source-date-epoch") is None
    with pytest.raises(UsageError, match=r"^--source-date-epoch \(SOURCE_DATE_EPOCH\): '2023-11-14' is not a number"):
        inputs.parse_epoch("2023-11-14", "--source-date-epoch")
    with pytest.raises(UsageError, match=r"^TASKIMAGE_SOURCE_DATE_EPOCH: '-5' is not a number"):
        inputs.parse_epoch("-5", "TASKIMAGE_SOURCE_DATE_EPOCH")


# --- SSH ------------------------------------------------------------------------------------------


def test_ssh_values_and_bad_ones(tmp_path):
    from taskimage.build import inputs
    from taskimage.errors import UsageError

    ws = tmp_path / "ssh"
    ws.mkdir()
    (ws / "id_ed25519").write_text("key")
    (tmp_path / "outside").write_text("x")
    assert inputs.parse_ssh(["default=id_ed25519", ""], "--ssh", ws, {}) == (f"default={ws / 'id_ed25519'}",)
    for value, env, message in [
        ("default", {}, "--ssh (SSH): ssh 'default': no SSH agent (SSH_AUTH_SOCK is unset); give default=KEYFILE"),
        ("default=../outside", {}, "--ssh (SSH): ssh 'default': '../outside' is outside the ssh-directory workspace"),
        ("git=id_rsa", {}, "--ssh (SSH): ssh 'git': no file 'id_rsa' in the ssh-directory workspace"),
    ]:
        with pytest.raises(UsageError, match="^" + re.escape(message)):
            inputs.parse_ssh([value], "--ssh", ws, env)
    with pytest.raises(UsageError, match=r"^--ssh \(SSH\): the Containerfile mounts ssh 'default', which is not given"):
        inputs.check_ssh_mounts("RUN --mount=type=ssh git clone x\n", (), "--ssh")
    inputs.check_ssh_mounts("RUN --mount=type=ssh,id=gh,required=false true\n", (), "--ssh")


@pytest.fixture
def git_over_ssh(tmp_path):
    """A real sshd on 127.0.0.1:<free port> (key login for root only) serving a bare git repository."""
    sshd = "/usr/sbin/sshd"
    need(
        os.path.exists(sshd) and have_tools("ssh-keygen", "git"), "sshd, ssh-keygen and git are needed (openssh-server)"
    )
    need(os.geteuid() == 0, "the test sshd runs as root")
    from taskimage.dev.env import free_port

    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "client", "stranger"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    content = "private-dependency-" + pysecrets.token_hex(8) + "\n"
    work = tmp_path / "dep-work"
    work.mkdir()
    (work / "dep.txt").write_text(content)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "dep.txt"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "dep"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(tmp_path / "dep.git")], check=True)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE, text=True)
    try:
        probe = ["ssh", "-i", str(d / "client"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        probe += ["-o", "BatchMode=yes", "-o", "ConnectionAttempts=30", "-p", str(port), "root@127.0.0.1", "true"]
        for _ in range(50):  # until sshd accepts connections (no fixed sleep: each try is a real login)
            if subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
                break
            assert proc.poll() is None, proc.stderr.read()
        else:
            pytest.fail("sshd never accepted the client key")
        yield {"dir": d, "port": port, "repo": str(tmp_path / "dep.git"), "content": content}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_private_git_dependency_over_ssh_builds_and_fails_clearly_without_the_key(
    tmp_path, registry, storage_env, git_over_ssh
):
    need(have_tools("mmdebstrap"), "mmdebstrap is not installed (see .ci/run)")
    from taskimage.dev import env as devenv

    base = devenv.base_image("git-ssh", ["linux/amd64"], f"{registry.host}/base/git-ssh:bookworm")
    s = git_over_ssh
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM {base}\n"
        f'ENV GIT_SSH_COMMAND="ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -p {s["port"]}"\n'
        f"RUN --mount=type=ssh git clone -q ssh://root@127.0.0.1{s['repo']} /dep && cp /dep/dep.txt /dep.txt && rm -rf /dep\n"
    )
    workspace = tmp_path / "ssh-directory"
    workspace.mkdir()
    key = (s["dir"] / "client").read_bytes()
    (workspace / "id_ed25519").write_bytes(key)
    (workspace / "stranger").write_bytes((s["dir"] / "stranger").read_bytes())
    env = dict(storage_env, TASKIMAGE_SSH_ROOT=str(workspace))
    image = f"{registry.host}/inputs/ssh:1"
    rc, out, err = taskimage(
        ["build", "--image", image, "--context", str(ctx), "--ssh", "default=id_ed25519", "--platform", "linux/amd64"],
        env,
    )
    assert rc == 0, err[-3000:]
    digest = skopeo_raw(image)["manifests"][0]["digest"]
    d = pull_dir(f"{registry.host}/inputs/ssh@{digest}", tmp_path / "pulled")
    manifest = json.loads((d / "manifest.json").read_text())
    top = layer_files((d / manifest["layers"][-1]["digest"].split(":", 1)[1]).read_bytes())
    assert top["dep.txt"].decode() == s["content"]  # fetched over SSH during the build
    key_body = b"".join(line for line in key.splitlines() if not line.startswith(b"-----"))
    for layer in manifest["layers"]:
        raw = (d / layer["digest"].split(":", 1)[1]).read_bytes()
        assert key_body not in raw and all(key_body not in f for f in layer_files(raw).values())
    assert key_body.decode() not in out + err

    # a key the server does not know: the build fails, and the log says why. In a new storage (a
    # new pod): buildah's step cache, like BuildKit's, does not key a RUN on its mounted SSH key
    fresh = {k: v.replace("/storage/", "/storage-stranger/") for k, v in env.items()}
    rc, _, err = taskimage(
        [
            "build",
            "--image",
            image + "-x",
            "--context",
            str(ctx),
            "--ssh",
            "default=stranger",
            "--platform",
            "linux/amd64",
        ],
        fresh,
    )
    assert rc == 1, err[-3000:]
    assert "Permission denied (publickey)" in err, err[-3000:]
    # no key at all: a usage error before any build
    rc, _, err = taskimage(["build", "--image", image + "-y", "--context", str(ctx), "--platform", "linux/amd64"], env)
    assert rc == 2 and "--ssh (SSH): the Containerfile mounts ssh 'default', which is not given" in err, err
