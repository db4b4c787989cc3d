"""Params and workspaces of `taskimage run` as Tekton and tkn resolve them (pure, fast)."""

from __future__ import annotations

import pytest

from taskimage.errors import UsageError
from taskimage.tekton.localrun import params as P
from taskimage.tekton.localrun.plan import make_plan
from taskimage.tekton.localrun.task import Loaded

SPECS = P.parse_specs(
    [
        {"name": "IMAGE"},
        {"name": "PLATFORMS", "type": "array", "default": ["linux/amd64"]},
        {"name": "OBJ", "properties": {"k1": {"type": "string"}, "k2": {"type": "string"}}},
        {"name": "MODE", "default": "fast", "enum": ["fast", "slow"]},
        {"name": "FLAG", "default": True},
    ],
    "t",
)


def test_types_follow_declaration_default_or_properties():
    assert [(s.name, s.type) for s in SPECS] == [
        ("IMAGE", "string"),
        ("PLATFORMS", "array"),
        ("OBJ", "object"),
        ("MODE", "string"),
        ("FLAG", "string"),
    ]
    assert SPECS[4].default == "true"


def test_cli_values_parsed_as_tkn_does():
    values = P.parse_cli(
        ["IMAGE=r/x:1,2", "PLATFORMS=linux/amd64,linux/arm64", "OBJ=k1:v1, k2: v:2", "MODE=slow"], SPECS, "t"
    )
    assert values == {
        "IMAGE": "r/x:1,2",
        "PLATFORMS": ["linux/amd64", "linux/arm64"],
        "OBJ": {"k1": "v1", "k2": "v:2"},
        "MODE": "slow",
    }
    assert P.parse_cli(["PLATFORMS="], SPECS, "t") == {"PLATFORMS": []}


def test_resolve_defaults_and_given():
    values = P.resolve(SPECS, {"IMAGE": "r/x", "OBJ": {"k1": "a", "k2": "b"}}, "t")
    assert values == {
        "IMAGE": "r/x",
        "PLATFORMS": ["linux/amd64"],
        "OBJ": {"k1": "a", "k2": "b"},
        "MODE": "fast",
        "FLAG": "true",
    }


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda: P.parse_cli(["NOPE=1"], SPECS, "t"),
            "-p NOPE: task t declares no param NOPE (declared: FLAG, IMAGE, MODE, OBJ, PLATFORMS)",
        ),
        (lambda: P.parse_cli(["IMAGE"], SPECS, "t"), "-p IMAGE: expected NAME=VALUE"),
        (lambda: P.parse_cli(["OBJ=k1"], SPECS, "t"), '-p OBJ=k1: object params take "key1:value1, key2:value2"'),
        (
            lambda: P.resolve(SPECS, {}, "t"),
            "task t: missing values for params without a default: IMAGE, OBJ (give them with -p NAME=VALUE)",
        ),
        (
            lambda: P.resolve(SPECS, {"IMAGE": ["a", "b"], "PLATFORMS": "linux/amd64", "OBJ": {}}, "t"),
            "task t: param type mismatch: IMAGE (declared string, given array), PLATFORMS (declared array, given string)",
        ),
        (
            lambda: P.resolve(SPECS, {"IMAGE": "x", "OBJ": {"k1": "a"}, "MODE": "medium"}, "t"),
            "task t: invalid param values: OBJ lacks keys k2; MODE='medium' is not in its enum [fast, slow]",
        ),
        (
            lambda: P.parse_specs([{"name": "A", "type": "array", "default": "x"}], "t"),
            "task t: param A is declared array but its default is string",
        ),
        (
            lambda: P.parse_specs([{"name": "A", "type": "int"}], "t"),
            "task t: param A has type 'int'; accepted: string, array, object",
        ),
    ],
)
def test_param_errors(call, message):
    with pytest.raises(UsageError) as exc:
        call()
    assert str(exc.value) == message


def test_default_referencing_another_param_is_literal_with_a_warning():
    specs = P.parse_specs([{"name": "A", "default": "a"}, {"name": "B", "default": "$(params.A)-b"}], "t")
    warnings: list[str] = []
    assert P.resolve(specs, {}, "t", warnings=warnings)["B"] == "$(params.A)-b"
    assert warnings == [
        "param B: its default holds $(params.A); Tekton does not substitute params inside param values, so the steps get it literally"
    ]


def test_extra_taskrun_param_is_ignored_with_a_warning():
    warnings: list[str] = []
    P.resolve(SPECS, {"IMAGE": "x", "OBJ": {"k1": "a", "k2": "b"}, "EXTRA": "1"}, "t", warnings=warnings)
    assert warnings == ["param EXTRA is given but task t does not declare it (ignored, as Tekton does)"]


def _plan(spec, workspaces=(), taskrun_ws=None):
    tr = None
    if taskrun_ws is not None:
        tr = {
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": {"name": "r"},
            "spec": {"workspaces": taskrun_ws},
        }
    return make_plan(Loaded("t", spec, tr), cli_workspaces=list(workspaces))


WS_SPEC = {
    "workspaces": [
        {"name": "source"},
        {"name": "conf", "readOnly": True, "mountPath": "/etc/conf"},
        {"name": "cache", "optional": True},
    ],
    "steps": [{"image": "x.example/y:1"}],
}


def test_workspaces_bound_paths_and_modes(tmp_path):
    plan = _plan(WS_SPEC, [f"source={tmp_path}", f"conf={tmp_path}"])
    got = {w.name: (w.mount_path, w.host_dir, w.read_only, w.bound) for w in plan.workspaces}
    assert got == {
        "source": ("/workspace/source", str(tmp_path), False, True),
        "conf": ("/etc/conf", str(tmp_path), True, True),
        "cache": ("", None, False, False),
    }


def test_taskrun_emptydir_binding_and_cli_override(tmp_path):
    plan = _plan(
        WS_SPEC,
        [f"conf={tmp_path}"],
        [{"name": "source", "emptyDir": {}}, {"name": "conf", "persistentVolumeClaim": {"claimName": "pvc1"}}],
    )
    got = {w.name: (w.host_dir, w.claim) for w in plan.workspaces}
    assert got["source"] == (None, "") and got["conf"] == (str(tmp_path), "pvc1")


@pytest.mark.parametrize(
    "workspaces,taskrun_ws,message",
    [
        ([], None, "missing workspaces: source, conf (give them with -w NAME=DIR)"),
        (["nope=/tmp"], None, "-w nope: the task declares no workspace nope (declared: cache, conf, source)"),
        (["source=/does/not/exist"], None, "-w source=/does/not/exist: not a directory"),
        (["source"], None, "-w source: expected NAME=DIR"),
        (
            ["source=/tmp"],
            [{"name": "conf", "secret": {"secretName": "s"}}],
            "workspace conf: Secret 's' is not in the file; give it with --secret-volume s=DIR",
        ),
    ],
)
def test_workspace_errors(workspaces, taskrun_ws, message):
    with pytest.raises(UsageError) as exc:
        _plan(WS_SPEC, workspaces, taskrun_ws)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            {"steps": [{"image": "i.example/x:1", "script": "echo", "command": ["sh"]}]},
            "steps[0] (unnamed-0): script cannot be used with command",
        ),
        ({"steps": [{"name": "a"}]}, "steps[0] (a): no image"),
        ({"steps": [{"name": "a", "image": "i"}, {"name": "a", "image": "i"}]}, "task t: step names must be unique: a"),
        (
            {
                "steps": [
                    {
                        "name": "a",
                        "image": "i",
                        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                    }
                ]
            },
            "step a: env T needs key 'k' of secret 's', which is not in the file; give it with --secret-volume s=DIR",
        ),
        (
            {
                "sidecars": [{"name": "s", "image": "i", "readinessProbe": {"httpGet": {"port": 80}}}],
                "steps": [{"image": "i"}],
            },
            "sidecar s: readiness and startup probes other than exec are not supported",
        ),
        (
            {"steps": [{"name": "a", "image": "i", "timeout": "5 minutes"}]},
            "step a timeout: '5 minutes' is not a duration like 90s or 1h30m",
        ),
    ],
)
def test_unsupported_or_invalid_steps(spec, message):
    with pytest.raises(UsageError) as exc:
        _plan(spec)
    assert str(exc.value) == message


def test_pull_policy_timeout_and_security_flags():
    from taskimage.tekton.localrun.plan import parse_duration, pull_policy
    from taskimage.tekton.localrun.podman import security_flags, ulimit_flags

    assert [pull_policy(i, None) for i in ("busybox", "r:5000/b:latest", "r:5000/b:1", "b@sha256:ab")] == [
        "always",
        "always",
        "missing",
        "missing",
    ]
    assert pull_policy("b:1", "Always") == "always"
    assert parse_duration("1h30m5s", "x") == 5405.0
    flags, _ = security_flags(
        {
            "privileged": True,
            "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
        }
    )
    assert flags == [  # privileged: every capability, add/drop ignored (as containerd's CRI does)
        "--privileged",
        "--user",
        "1000:1000",
        "--read-only",
        "--security-opt",
        "no-new-privileges",
    ]
    flags, _ = security_flags({"capabilities": {"add": ["SYS_ADMIN", "CAP_NET_ADMIN"], "drop": ["MKNOD"]}}, "crio")
    crio = "CHOWN DAC_OVERRIDE FOWNER FSETID KILL NET_ADMIN NET_BIND_SERVICE SETGID SETPCAP SETUID SYS_ADMIN SYS_CHROOT"
    assert flags == ["--cap-drop", "all", *[f for c in crio.split() for f in ("--cap-add", c)]]
    flags, _ = security_flags({"capabilities": {"add": ["ALL"], "drop": ["NET_RAW"]}})
    assert flags == ["--cap-add", "all", "--cap-drop", "NET_RAW"]
    assert ulimit_flags(20000, 96365) == ["--ulimit", "nofile=10000:10000", "--ulimit", "nproc=10000:10000"]
    assert ulimit_flags(4096, 500) == ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=500:500"]


def test_taskrun_file_with_inline_spec(tmp_path):
    from pathlib import Path

    from taskimage.tekton.localrun.task import load_documents, taskrun_task

    path = Path(__file__).parent / "data" / "localrun" / "taskrun-inline.yaml"
    loaded = taskrun_task(load_documents(str(path))[0], str(path))
    plan = make_plan(loaded, cli_params=["IMAGE=other.example/bb:2"])
    assert plan.taskrun_name.startswith("inline-") and len(plan.taskrun_name) == len("inline-") + 5
    step = plan.steps[0]
    assert step.image == "other.example/bb:2"
    assert step.args == ("a", "b", "builds", "/workspace/scratch")
    assert [(w.name, w.bound, w.host_dir) for w in plan.workspaces] == [("scratch", True, None)]


def test_step_pulls_follow_registries_conf_unless_tls_verify_is_given():
    from taskimage.tekton.localrun import podman

    common = dict(
        name="n", image="i", command=None, args=(), env=(), working_dir="", mounts=(), security=(), pull="missing"
    )
    assert not [a for a in podman.run_argv(tls_verify=None, **common) if a.startswith("--tls-verify")]
    assert "--tls-verify=false" in podman.run_argv(tls_verify=False, **common)
