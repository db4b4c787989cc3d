"""The one declaration of build parameters: CLI parsing, env fallback, Tekton shapes."""

import argparse

import pytest

from taskimage import cli
from taskimage.build import params
from taskimage.errors import UsageError


def parse(argv, env=None):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["build"]
    return params.resolve(sub.parse_intermixed_args(argv), env=env or {})


def test_platforms_from_flags_commas_and_positionals_in_order():
    values = parse(
        ["--image", "r.io/a", "--platform", "linux/amd64,linux/arm64", "linux/s390x", "--platform", "linux/ppc64le", ""]
    )
    assert values["PLATFORMS"] == (["linux/amd64,linux/arm64", "linux/ppc64le", "linux/s390x", ""], "--platform")


def test_tekton_step_args_parse():
    # what a Tekton step receives for the default Task params after substitution
    argv = ["linux/amd64", "linux/arm64", "--build-arg", "A=1", "B=x=y", "--label", "--annotation"]
    values = parse(argv, env={"TASKIMAGE_IMAGE": "r.io/a:1"})
    assert values["PLATFORMS"][0] == ["linux/amd64", "linux/arm64"]
    assert values["BUILD_ARGS"][0] == ["A=1", "B=x=y"]
    assert values["LABELS"][0] == []
    assert values["IMAGE"] == ("r.io/a:1", "TASKIMAGE_IMAGE")


def test_env_fallback_and_empty_env_means_default():
    values = parse([], env={"TASKIMAGE_TLSVERIFY": "false", "TASKIMAGE_FORMAT": "", "TASKIMAGE_JOBS": "2"})
    assert values["TLSVERIFY"] == (False, "TASKIMAGE_TLSVERIFY")
    assert values["FORMAT"] == ("oci", "--format")
    assert values["JOBS"] == (2, "TASKIMAGE_JOBS")


def test_flag_wins_over_env():
    values = parse(["--tls-verify=true"], env={"TASKIMAGE_TLSVERIFY": "false"})
    assert values["TLSVERIFY"] == (True, "--tls-verify")
    assert parse(["--tls-verify"])["TLSVERIFY"][0] is True


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--tls-verify=maybe"], {}, "--tls-verify: invalid boolean 'maybe': use true or false"),
        ([], {"TASKIMAGE_SKIP_PUSH": "yes please"}, "TASKIMAGE_SKIP_PUSH: invalid boolean 'yes please'"),
        (["--format", "v2s3"], {}, "--format: invalid value 'v2s3'; accepted: oci, docker"),
        (["--jobs", "two"], {}, "--jobs: invalid number 'two'"),
        (["--retry", "-1"], {}, "--retry: must not be negative, got '-1'"),
        (
            [],
            {"TASKIMAGE_STORAGE_DRIVER": "btrfs"},
            "TASKIMAGE_STORAGE_DRIVER: invalid value 'btrfs'; accepted: auto, overlay, vfs",
        ),
    ],
)
def test_bad_values_name_flag_and_value(argv, env, message):
    with pytest.raises(UsageError) as err:
        parse(argv, env)
    assert str(err.value).startswith(message)


def test_task_params_are_the_cli_params():
    task = {p["name"]: p for p in params.task_params()}
    cli_only = {p.name for p in params.BUILD_PARAMS if not p.in_task}
    assert set(task) == {p.name for p in params.BUILD_PARAMS} - cli_only
    assert task["PLATFORMS"] == {
        "name": "PLATFORMS",
        "type": "array",
        "description": params.BY_NAME["PLATFORMS"].description,
        "default": ["linux/amd64", "linux/arm64"],
    }
    assert "default" not in task["IMAGE"]
    assert task["TLSVERIFY"]["default"] == "true"
    assert all(p["description"] for p in task.values())
    # secrets never become Task params
    assert "CREDS" not in task


def test_step_args_and_env_shapes():
    args = params.step_args()
    assert args[:2] == ["build", "$(params.PLATFORMS[*])"]
    assert args[2:] == [
        "--tag",
        "$(params.ADDITIONAL_TAGS[*])",
        "--build-arg",
        "$(params.BUILD_ARGS[*])",
        "--label",
        "$(params.LABELS[*])",
        "--annotation",
        "$(params.ANNOTATIONS[*])",
        "--secret",
        "$(params.SECRETS[*])",
        "--ssh",
        "$(params.SSH[*])",
    ]
    env = {e["name"]: e["value"] for e in params.step_env()}
    assert env["TASKIMAGE_IMAGE"] == "$(params.IMAGE)"
    assert env["TASKIMAGE_AUTHFILE"] == "$(workspaces.dockerconfig.path)"
    assert env["TASKIMAGE_SOURCE_ROOT"] == "$(workspaces.source.path)"
    assert "TASKIMAGE_CREDS" not in env
    assert not any("[*]" in v for v in env.values())


def test_help_shows_every_flag_and_env(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["build", "--help"])
    out = capsys.readouterr().out
    for p in params.BUILD_PARAMS:
        assert p.flag in out
        assert p.env in out


def test_readme_flag_table_is_generated_from_the_declaration():
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert params.render_readme(readme) == readme, "run: python -m taskimage.build.params --readme"
    for p in params.BUILD_PARAMS:
        assert f"| `{p.flag}` | `{p.env}` |" in readme


def test_run_limits_follow_this_process_and_never_exceed_caps():
    import resource

    from taskimage.build import buildah

    limits = {
        resource.RLIMIT_NOFILE: (1024, 4096),
        resource.RLIMIT_NPROC: (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
    }
    assert buildah.run_limits(limits.__getitem__) == ("nofile=1024:4096", "nproc=32768:32768")
    limits = {
        resource.RLIMIT_NOFILE: (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
        resource.RLIMIT_NPROC: (5000, 10000),
    }
    assert buildah.run_limits(limits.__getitem__) == ("nofile=1048576:1048576", "nproc=5000:10000")
