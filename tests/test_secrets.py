"""Credentials never leak: builds and bundle pushes with known credentials against a real registry
that wants a login (htpasswd, bcrypt), then everything they produced is searched for them.

Searched: stdout, stderr, the results files, every file left in the run's TMPDIR, the container
storage, and the `--help` texts (with the credentials in the environment). Searched for: the
password, `user:password`, and its base64 form (what auth files hold). Credentials come from
`--creds`, `TASKIMAGE_CREDS`, an auth file (`--authfile` and a Tekton dockerconfig workspace),
and `REGISTRY_AUTH_FILE` (read by buildah and skopeo themselves).
"""

from __future__ import annotations

import base64
import json
import os
import secrets as pysecrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import have_tools, htpasswd_line, need, tag_exists

from taskimage.dev import env as devenv

pytestmark = [pytest.mark.tools]

USER = "ci-bot"
PASSWORD = "Pw-" + pysecrets.token_hex(12)
OTHER_TOKEN = base64.b64encode(b"someone:Other-" + pysecrets.token_hex(8).encode()).decode()  # another registry's


def forms(user: str, password: str) -> list[bytes]:
    pair = f"{user}:{password}"
    return [password.encode(), pair.encode(), base64.b64encode(pair.encode())]


SECRETS = forms(USER, PASSWORD) + [OTHER_TOKEN.encode(), base64.b64decode(OTHER_TOKEN).split(b":")[1]]


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    need(
        have_tools("docker-registry", "skopeo", "buildah"),
        "docker-registry, skopeo and buildah are needed (see .ci/run)",
    )
    need(os.geteuid() == 0, "buildah builds here run as root")
    root = tmp_path_factory.mktemp("secret-registry")
    (root / "htpasswd").write_text(htpasswd_line(USER, PASSWORD))
    reg = devenv.LocalRegistry(root, htpasswd=str(root / "htpasswd")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return tmp_path_factory.mktemp("secret-storage")


@pytest.fixture
def app(tmp_path, busybox_base):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY Containerfile /Containerfile\n")
    return ctx


def auth_json(host: str, user: str = USER, password: str = PASSWORD) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": token}, "other.example.com": {"auth": OTHER_TOKEN}}})


def leaks(*places: Path | str | bytes) -> list[str]:
    """Where any secret form shows up (file paths, or '<text>' for output)."""
    found = []
    for place in places:
        if isinstance(place, (str, bytes)) and not (isinstance(place, str) and os.path.exists(place)):
            data = place.encode() if isinstance(place, str) else place
            found += [f"output contains {s!r}" for s in SECRETS if s in data]
            continue
        path = Path(place)
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
        for f in files:
            try:
                data = f.read_bytes()
            except OSError:
                continue
            found += [f"{f} contains {s!r}" for s in SECRETS if s in data]
    return found


def run(argv, tmp_path: Path, storage: Path, env=None):
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith("TASKIMAGE_")}
    full.update(
        {
            "TMPDIR": str(tmpdir),
            "TASKIMAGE_TLSVERIFY": "false",
            "TASKIMAGE_STORAGE_DRIVER": "vfs",
            "TASKIMAGE_ROOT": str(storage / "root"),
            "TASKIMAGE_RUNROOT": str(storage / "run"),
        }
    )
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "taskimage", *argv], capture_output=True, env=full, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr, tmpdir


CASES = ["creds-flag", "creds-env", "authfile", "dockerconfig-workspace", "registry-auth-file-env"]


@pytest.mark.parametrize("how", CASES)
def test_build_with_credentials_pushes_and_leaks_nothing(tmp_path, auth_registry, storage, app, how):
    host = auth_registry.host
    image = f"{host}/secret/app:{how}"
    results = tmp_path / "results"
    results.mkdir()
    files = tmp_path / "auth"
    files.mkdir()
    (files / "auth.json").write_text(auth_json(host))
    (files / "ws").mkdir()
    (files / "ws" / ".dockerconfigjson").write_text(auth_json(host))
    argv = ["build", "--image", image, "--context", str(app), "--results-dir", str(results), "linux/amd64"]
    env: dict[str, str] = {}
    if how == "creds-flag":
        argv += ["--creds", f"{USER}:{PASSWORD}"]
    elif how == "creds-env":
        env["TASKIMAGE_CREDS"] = f"{USER}:{PASSWORD}"
    elif how == "authfile":
        argv += ["--authfile", str(files / "auth.json")]
    elif how == "dockerconfig-workspace":
        env["TASKIMAGE_AUTHFILE"] = str(files / "ws")
    else:
        env["REGISTRY_AUTH_FILE"] = str(files / "auth.json")
    rc, out, err, tmpdir = run(argv, tmp_path, storage, env)
    assert rc == 0, err.decode()[-3000:]
    assert (results / "IMAGE_URL").read_text() == image
    assert not tag_exists(image)  # anonymous read refused: the registry really wants the login
    index = json.loads(
        subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--authfile",
                str(files / "auth.json"),
                f"docker://{image}",
            ],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert index["manifests"][0]["platform"]["architecture"] == "amd64"
    assert leaks(out, err, results, tmpdir, storage) == []
    assert len(leaks(files)) == 4  # the search does find them where they are: 2 tokens x 2 auth files
    assert list(tmpdir.iterdir()) == []  # no temporary auth file (or anything else) left behind


@pytest.mark.parametrize("how", ["creds-flag", "authfile"])
def test_refused_credentials_fail_clearly_and_leak_nothing(tmp_path, auth_registry, storage, app, how):
    host = auth_registry.host
    wrong = "Wrong-" + pysecrets.token_hex(8)
    image = f"{host}/secret/refused:{how}"
    argv = ["build", "--image", image, "--context", str(app), "linux/amd64"]
    if how == "creds-flag":
        argv += ["--creds", f"{USER}:{wrong}"]
    else:
        (tmp_path / "auth.json").write_text(auth_json(host, password=wrong))
        argv += ["--authfile", str(tmp_path / "auth.json")]
    rc, out, err, tmpdir = run(argv, tmp_path, storage)
    text = err.decode()
    assert rc == 1
    assert text.strip().splitlines()[-1] == (
        f"ERROR: the registry {host} refused the credentials for {host}/secret/refused "
        "(check --authfile / the dockerconfig workspace); not retried"
    )
    assert "retrying" not in text
    for form in forms(USER, wrong):
        assert form not in out + err
    assert leaks(out, err, tmpdir) == []
    assert list(tmpdir.iterdir()) == []


def test_bundle_push_with_credentials_leaks_nothing(tmp_path, auth_registry, storage):
    host = auth_registry.host
    task = Path(__file__).parent / "data" / "bundle" / "task.yaml"
    need(task.is_file(), "tests/data/task.yaml is missing")
    (tmp_path / "auth.json").write_text(auth_json(host))
    ref = f"{host}/secret/bundle:1"
    rc, out, err, tmpdir = run(
        ["bundle", "push", "--authfile", str(tmp_path / "auth.json"), ref, str(task)], tmp_path, storage
    )
    assert rc == 0, err.decode()[-2000:]
    assert out.decode().startswith(f"{host}/secret/bundle@sha256:")
    assert leaks(out, err, tmpdir) == []
    (tmp_path / "bad.json").write_text(auth_json(host, password="Bad-" + PASSWORD))
    rc, out, err, tmpdir = run(
        ["bundle", "push", "--authfile", str(tmp_path / "bad.json"), ref, str(task)], tmp_path, storage
    )
    assert rc == 1
    assert b"Bad-" + PASSWORD.encode() not in out + err
    assert leaks(out, err, tmpdir) == []


@pytest.mark.parametrize("argv", [["--help"], ["build", "--help"], ["bundle", "push", "--help"], ["index", "--help"]])
def test_help_never_shows_credentials_from_the_environment(tmp_path, storage, argv):
    (tmp_path / "auth.json").write_text(auth_json("r.example.com"))
    env = {
        "TASKIMAGE_CREDS": f"{USER}:{PASSWORD}",
        "TASKIMAGE_AUTHFILE": str(tmp_path / "auth.json"),
        "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
    }
    rc, out, err, _ = run(argv, tmp_path, storage, env)
    assert rc == 0, err.decode()
    assert b"usage:" in out
    assert leaks(out, err) == []


def test_parsed_options_do_not_show_credentials(tmp_path):
    """The options object ends up in tracebacks and debug output: its repr holds no credentials."""
    from taskimage.build import orchestrate as build
    from taskimage.build import params

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text("FROM scratch\n")
    (tmp_path / "auth.json").write_text(auth_json("r.example.com"))
    values = {p.name: (params._default(p), p.flag) for p in params.BUILD_PARAMS}
    values.update(
        IMAGE=("r.example.com/app:1", "--image"),
        CONTEXT=(str(ctx), "--context"),
        CREDS=(f"{USER}:{PASSWORD}", "--creds"),
        AUTHFILE=(str(tmp_path / "auth.json"), "--authfile"),
    )
    opts = build.options_from_values(values)
    assert leaks(repr(opts), str(opts)) == []


def test_a_commands_secrets_are_forgotten_when_it_ends(capsys):
    """A program running several commands in one process (this suite does): a password of one
    command is not masked in a later command's output, where it may be an ordinary word. Reproduced
    by test_source_artifact, whose 'passwd' printed as '***wd' after a login registry's 'pass'."""
    from taskimage import cli, log

    with log.secrets_scope():
        log.add_secret("outer-secret")
        assert cli.main(["build", "--creds", "user:inner-secret", "--image", "Bad/Name:1"]) == 2
        err = capsys.readouterr().err
        assert "inner-secret" not in err and "ERROR: --image" in err
        assert log.redact("outer-secret inner-secret") == "*** inner-secret"  # the command's own: gone
    assert log.redact("outer-secret") == "outer-secret"
