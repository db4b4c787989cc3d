"""Input validation of `taskimage build`: every bad input is a one-line usage error, before anything runs."""

import json
import os

import pytest
from conftest import need

from taskimage.build import orchestrate as build
from taskimage.build import params
from taskimage.errors import UsageError


def values(tmp_path, **overrides):
    ctx = tmp_path / "src"
    ctx.mkdir(exist_ok=True)
    (ctx / "Containerfile").write_text("FROM scratch\n")
    v = {p.name: (params._default(p), p.flag) for p in params.BUILD_PARAMS}
    v["IMAGE"] = ("127.0.0.1:5000/app:1", "--image")
    v["CONTEXT"] = (str(ctx), "--context")
    for k, val in overrides.items():
        v[k] = (val, params.BY_NAME[k].flag)
    return v


def test_good_input(tmp_path):
    opts = build.options_from_values(
        values(tmp_path, PLATFORMS=["linux/x86_64", "linux/arm64/v8"], BUILD_ARGS=["A=1", "B="])
    )
    assert [str(p) for p in opts.platforms] == ["linux/amd64", "linux/arm64"]
    assert opts.spec.containerfile.name == "Containerfile"
    assert opts.spec.build_args == (("A", "1"), ("B", ""))
    assert opts.image.url == "127.0.0.1:5000/app:1"


def test_dockerfile_fallback(tmp_path):
    v = values(tmp_path)
    ctx = tmp_path / "src"
    (ctx / "Containerfile").unlink()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    assert build.options_from_values(v).spec.containerfile == (ctx / "Dockerfile").resolve()


def test_default_platform_is_the_host(tmp_path):
    from taskimage.oci.platforms import host_platform

    assert build.options_from_values(values(tmp_path)).platforms == (host_platform(),)


def write_auth(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"IMAGE": ""}, "--image: an image to push is required"),
        (
            {"IMAGE": "127.0.0.1:5000/App:1"},
            "--image: invalid image name '127.0.0.1:5000/App:1': repository names must be lower-case",
        ),
        ({"IMAGE": "127.0.0.1:5000/app@sha256:" + "0" * 64}, "--image: '127.0.0.1:5000/app@sha256:"),
        ({"PLATFORMS": ["linux/amd64", "linux/x86_64"]}, "--platform: duplicate platform 'linux/x86_64'"),
        ({"PLATFORMS": ["linux/m68k"]}, "--platform: unknown platform 'linux/m68k'; accepted:"),
        ({"CONTEXT": "/nonexistent/dir"}, "--context: build context '/nonexistent/dir' is not a directory"),
        ({"DOCKERFILE": "Missingfile"}, "--file: 'Missingfile' not found in the context"),
        ({"BUILD_ARGS": ["NOEQUALS"]}, "--build-arg: 'NOEQUALS' is not KEY=VALUE"),
        ({"BUILD_ARGS": ["=value"]}, "--build-arg: '=value' is not KEY=VALUE"),
        ({"LABELS": ["x"]}, "--label: 'x' is not KEY=VALUE"),
        ({"RESULTS_DIR": "/nonexistent/results"}, "--results-dir: '/nonexistent/results' is not a directory"),
        ({"AUTHFILE": "/nonexistent/auth.json"}, "--authfile: '/nonexistent/auth.json' does not exist"),
        ({"CERT_DIR": "/nonexistent/certs"}, "--cert-dir: '/nonexistent/certs' is not a directory"),
        (
            {"CACHE_REPO": "127.0.0.1:5000/cache:tag"},
            "--cache-repo: '127.0.0.1:5000/cache:tag': a cache repository takes no tag",
        ),
        ({"CREDS": "nopassword"}, "--creds: expected USERNAME:PASSWORD"),
    ],
)
def test_bad_input(tmp_path, overrides, message):
    with pytest.raises(UsageError) as err:
        build.options_from_values(values(tmp_path, **overrides))
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_context_outside_source_workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    v = values(tmp_path, SOURCE_ROOT=str(ws), CONTEXT="../src")
    with pytest.raises(UsageError, match=r"^--context: '\.\./src' is outside the source workspace"):
        build.options_from_values(v)


def test_context_relative_to_source_workspace(tmp_path):
    ws = tmp_path / "ws"
    (ws / "app").mkdir(parents=True)
    (ws / "app" / "Dockerfile").write_text("FROM scratch\n")
    opts = build.options_from_values(values(tmp_path, SOURCE_ROOT=str(ws), CONTEXT="app"))
    assert opts.spec.context == (ws / "app").resolve()


def test_malformed_auth_json_is_named_without_echoing_it(tmp_path):
    secret = "s3cr3t-password-value"
    path = write_auth(tmp_path / "config.json", '{"auths": {"r.io": {"auth": "' + secret)
    with pytest.raises(UsageError) as err:
        build.options_from_values(values(tmp_path, AUTHFILE=path))
    assert str(err.value).startswith(f"--authfile: {path} is not valid JSON (line 1")
    assert secret not in str(err.value)


def test_auth_directory_like_tekton_dockerconfig_workspace(tmp_path):
    ws = tmp_path / "dockerconfig"
    ws.mkdir()
    (ws / ".dockerconfigjson").write_text(json.dumps({"auths": {"r.io": {"auth": "dXNlcjpwYXNz"}}}))
    opts = build.options_from_values(values(tmp_path, AUTHFILE=str(ws)))
    assert opts.registry.authfile == str(ws / ".dockerconfigjson")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds none of config.json, .dockerconfigjson"):
        build.options_from_values(values(tmp_path, AUTHFILE=str(empty)))


def test_unwritable_results_dir(tmp_path):
    """A read-only results directory (as Tekton would never give, but a user might) fails up front."""
    import subprocess

    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)]).returncode == 0
        need(mounted, "cannot mount a read-only tmpfs here (mount -t tmpfs -o ro)")
    else:
        d.chmod(0o500)
    try:
        with pytest.raises(
            UsageError,
            match=r"^--results-dir: cannot write to '.*': Read-only file system|^--results-dir: cannot write to '.*': Permission denied",
        ):
            build.options_from_values(values(tmp_path, RESULTS_DIR=str(d)))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(d)])


def test_results_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UsageError, match=r"^--results-dir: '.*file' is not a directory"):
        build.options_from_values(values(tmp_path, RESULTS_DIR=str(f)))
