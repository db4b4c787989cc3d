"""`taskimage run` for real: each step in a podman (runc) container with the local busybox image.

Few and fast: four runs of one to four busybox steps each (about half a second per step).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import have_tools, need

from taskimage import cli
from taskimage import proc as tools

pytestmark = pytest.mark.podman
DATA = Path(__file__).parent / "data" / "localrun"


@pytest.fixture
def image(busybox_base):
    need(have_tools("podman", "runc"), "podman and runc are not installed (see .ci/run)")
    return busybox_base


def run(capsys, *argv) -> tuple[int, dict]:
    code = cli.main(["run", *argv, "--tls-verify=false", "--output", "json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def leftover_containers(prefix: str) -> list[str]:
    names = tools.run(["podman", "ps", "-a", "--format", "{{.Names}}"], quiet=True, stream=False).stdout.split()
    return [n for n in names if n.startswith(prefix)]


def test_multi_step_task_shares_a_workspace(image, tmp_path, capsys):
    code, report = run(
        capsys,
        str(DATA / "workspace-task.yaml"),
        "-p",
        "NAMES=ann,bob",
        "-p",
        f"IMAGE={image}",
        "-w",
        f"data={tmp_path}",
    )
    assert code == 0, report
    name = report["taskRun"]
    assert name.startswith("share-workspace-run-")
    assert [s["exitCode"] for s in report["steps"]] == [0, 0, 0]
    assert report["results"] == {"COUNT": "2", "WHO": "ann", "NAMES_JSON": ["a", "b"]}
    assert report["problems"] == [{"message": "result NEVER was declared but not written", "failsTaskRun": False}]
    assert (tmp_path / "names.txt").read_text() == "ann\nbob\n"
    assert (tmp_path / "greeting.txt").read_text() == f"hello red {name} share-workspace\n"
    assert (tmp_path / "env.txt").read_text() == "template step extra-bound=false extra-path=[]\nsize=M\n"
    # run by its shebang (busybox sh gets the script path as $0); step "count" exited 0
    assert (tmp_path / "shebang.txt").read_text() == "shebang /tekton/scripts/script-2-shebang\n0"
    assert leftover_containers(name) == []


def test_failing_step_stops_the_run_with_its_exit_code(image, tmp_path, capsys):
    code, report = run(capsys, str(DATA / "failing-task.yaml"), "-p", f"IMAGE={image}", "-w", f"out={tmp_path}")
    assert code == 1
    assert [(s["name"], s["exitCode"]) for s in report["steps"]] == [("first", 0), ("fails", 1), ("never", None)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first"]  # set -e preamble: nothing after `false`
    assert leftover_containers(report["taskRun"]) == []


def test_security_context_and_read_only_workspace(image, tmp_path, capsys):
    code, report = run(capsys, str(DATA / "security-task.yaml"), "-p", f"IMAGE={image}", "-w", f"ro={tmp_path}")
    assert code == 0, report
    results = report["results"]
    assert results["PRIVILEGED_MOUNT"] == "0"
    assert results["UNPRIVILEGED_MOUNT"] not in ("", "0")
    assert results["RO_WRITE"] not in ("", "0")
    assert results["UID"] == "1234"
    assert list(tmp_path.iterdir()) == []


def test_result_over_the_termination_message_budget_fails(image, tmp_path, capsys):
    results_dir = tmp_path / "results"
    code, report = run(
        capsys, str(DATA / "big-result-task.yaml"), "-p", f"IMAGE={image}", "--results-dir", str(results_dir), "--keep"
    )
    assert code == 1
    assert report["steps"][0]["exitCode"] == 0
    assert report["terminationMessageBytes"] > 5000
    assert report["problems"][0]["failsTaskRun"] is True
    assert (results_dir / "BIG").read_text() == "x" * 5000
    kept = leftover_containers(report["taskRun"])
    assert kept == [f"{report['taskRun']}-step-write"]
    tools.run(["podman", "rm", "--force", *kept], quiet=True, stream=False)
    assert Path(report["runDir"]).is_dir()
    shutil.rmtree(report["runDir"])


def test_task_from_a_bundle(image, registry, capsys):
    ref = f"{registry.host}/localrun/bundle:1"
    assert cli.main(["bundle", "push", ref, str(DATA / "big-result-task.yaml"), "--tls-verify=false"]) == 0
    capsys.readouterr()
    code, report = run(capsys, "--bundle", ref, "--name", "big-result", "-p", f"IMAGE={image}")
    assert report["task"] == "big-result" and report["steps"][0]["exitCode"] == 0
    assert len(report["results"]["BIG"]) == 5000 and code == 1


@pytest.mark.parametrize(("profile", "mknod_default"), [("containerd", "0"), ("crio", "1")], ids=["containerd", "crio"])
def test_steps_get_the_runtime_default_capabilities_then_their_security_context(image, capsys, profile, mknod_default):
    """containerd gives a container MKNOD, CRI-O does not (podman neither); securityContext adds it
    back; drop: [ALL] leaves none. Read from what the kernel allowed inside each step."""
    code, report = run(capsys, str(DATA / "caps-task.yaml"), "-p", f"IMAGE={image}", "--runtime-defaults", profile)
    assert code == 0, report
    assert report["results"] == {
        "MKNOD_DEFAULT": mknod_default,
        "MKNOD_ADDED": "0",
        "CAPEFF_DROP_ALL": "0000000000000000",
    }


def test_runtime_defaults_refuses_an_unknown_runtime(capsys):
    assert cli.main(["run", str(DATA / "caps-task.yaml"), "--runtime-defaults", "docker"]) == 2
    assert "--runtime-defaults" in capsys.readouterr().err


def test_kube_objects_from_the_file_and_the_command_line(image, tmp_path, capsys):
    """Secret, ConfigMap and PVC from the TaskRun's file, a ConfigMap from a directory: volumes,
    workspaces (items, read-only; one claim shared with subPath), env valueFrom and envFrom. The
    Secret's value reaches the step and appears in no log line."""
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "note").write_text("from-dir")
    taskrun = str(DATA / "kube-objects.yaml")
    argv = ["run", "--taskrun", taskrun, "-p", f"IMAGE={image}", "--configmap", f"extra={extra}", "--keep"]
    code = cli.main([*argv, "--tls-verify=false", "--output", "json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0, report
    assert "podman run" in captured.err  # the log is there, and shows no secret:
    assert "s3cr3t-xyz-42" not in captured.err + captured.out
    assert report["results"] == {
        "ENV": f"hello red {len('s3cr3t-xyz-42')}",
        "FILES": "hello shared from-dir",
        "SAME_TOKEN": "yes",
        "CONF_WRITE": "1",
        "PROJECTED": "c.txt value red",  # a projected workspace: Secret keys and ConfigMap items
    }
    containers = [s["container"] for s in report["steps"]]
    try:
        inspected = tools.run(["podman", "inspect", *containers], quiet=True, stream=False).stdout
        assert "TOKEN=s3cr3t-xyz-42" in inspected  # the step had it
    finally:
        tools.run(["podman", "rm", "--force", *containers], quiet=True, stream=False)
        shutil.rmtree(report["runDir"], ignore_errors=True)


def test_missing_kube_object_is_named_before_anything_runs(image, capsys):
    code = cli.main(["run", "--taskrun", str(DATA / "kube-objects.yaml"), "-p", f"IMAGE={image}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "ConfigMap 'extra' is not in the file; give it with --configmap extra=DIR" in err
    assert "podman run" not in err


def test_sidecar_is_ready_before_the_steps_and_stopped_after(image, capsys):
    code = cli.main(
        ["run", str(DATA / "sidecar-task.yaml"), "-p", f"IMAGE={image}", "--tls-verify=false", "--output", "json"]
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0, captured.err[-2000:]
    assert report["results"] == {"SEEN": "from-sidecar"}  # written by the sidecar before it was ready
    assert "[sidecar server] sidecar-log-line" in captured.err
    assert leftover_containers(report["taskRun"]) == []  # the sleeping sidecar was stopped and removed


def test_missing_working_dir_is_created(image, tmp_path, capsys):
    code, report = run(capsys, str(DATA / "workingdir-task.yaml"), "-p", f"IMAGE={image}", "-w", f"data={tmp_path}")
    assert code == 0, report
    assert report["results"] == {"A": "/workspace/not/there/yet", "B": "/workspace/data/deeper/dir"}
    assert (tmp_path / "deeper" / "dir").is_dir()


def test_stepactions_from_a_bundle_and_by_name_with_step_results(image, registry, capsys):
    bundle = f"{registry.host}/localrun/stepactions:1"
    assert cli.main(["bundle", "push", bundle, str(DATA / "stepaction.yaml"), "--tls-verify=false"]) == 0
    capsys.readouterr()
    code, report = run(
        capsys,
        str(DATA / "stepaction-task.yaml"),
        "--stepaction",
        str(DATA / "stepaction.yaml"),
        "-p",
        f"IMAGE={image}",
        "-p",
        f"BUNDLE={bundle}",
        "-p",
        "WHO=tekton",
    )
    assert code == 0, report
    assert report["results"] == {"FROM_BUNDLE": "hello tekton", "BY_NAME": "hello world"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_every_step_and_sidecar_container(image, tmp_path, sig):
    log_path = tmp_path / "stderr"
    argv = [sys.executable, "-m", "taskimage", "run", str(DATA / "interrupt-sidecar-task.yaml")]
    argv += ["-p", f"IMAGE={image}", "--tls-verify=false"]
    with log_path.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 120
        while "step-started" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.2)
        names = leftover_containers("interrupt-sidecar-run-")
        assert any(n.endswith("-sidecar-idle") for n in names) and any(n.endswith("-step-long") for n in names)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc != 0
    assert [n for n in leftover_containers("interrupt-sidecar-run-") if n in names] == []


def test_service_account_credentials_in_the_steps_home(image, capsys):
    argv = ["run", "--taskrun", str(DATA / "creds-taskrun.yaml"), "-p", f"IMAGE={image}", "--tls-verify=false"]
    code = cli.main([*argv, "--output", "json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0, captured.err[-2000:]
    assert report["results"] == {
        "GIT": "1 1",
        "DOCKER": "1 0",  # the Secret the ServiceAccount does not name is not there
        "SSH": "not-a-real-key|1|config id_sshkey ",
    }
    assert "pw-9f3k2" not in captured.err
