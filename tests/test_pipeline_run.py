"""`taskimage run` of Pipelines and PipelineRuns for real: busybox steps in podman containers.

What is checked is read back from the world: files the steps wrote into the workspace, results
the steps wrote, podman's container list. Parallelism is proved by a barrier (each matrix
TaskRun waits until every other one has started), not by timing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import have_tools, need

from taskimage import cli
from taskimage import proc as tools

pytestmark = pytest.mark.podman
DATA = Path(__file__).parent / "data" / "pipeline"


@pytest.fixture
def image(busybox_base):
    need(have_tools("podman", "runc"), "podman and runc are not installed (see .ci/run)")
    return busybox_base


def run(capsys, *argv) -> tuple[int, dict, str]:
    code = cli.main(["run", *argv, "--tls-verify=false", "--output", "json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def containers(prefix: str) -> list[str]:
    names = tools.run(["podman", "ps", "-a", "--format", "{{.Names}}"], quiet=True, stream=False).stdout.split()
    return [n for n in names if n.startswith(prefix)]


def by_name(report: dict) -> dict[str, dict]:
    return {t["name"]: t for t in report["tasks"]}


def test_dag_results_when_finally_and_workspaces(image, tmp_path, capsys):
    code, report, err = run(capsys, str(DATA / "dag.yaml"), "-p", f"IMAGE={image}", "-w", f"shared={tmp_path}")
    assert code == 0, err
    tasks = by_name(report)
    assert {n: t["status"] for n, t in tasks.items()} == {
        "first": "succeeded",
        "second": "succeeded",
        "skipped": "skipped",
        "cel-skipped": "skipped",
        "after-skipped": "succeeded",  # a when-skipped parent does not skip its runAfter dependant
        "report": "succeeded",
    }
    assert tasks["skipped"]["reason"].startswith("WhenExpressionsSkip")
    assert tasks["cel-skipped"]["reason"] == (
        "WhenExpressionsSkip: cel \"'fast' == 'slow' || 'ann' != 'ann'\" is false"
    )
    # the array param expanded into args of an embedded taskSpec (params propagated), subPath honoured
    assert (tmp_path / "first" / "names").read_text() == "ann\nbob\n"
    # second got first's result through a param; second and after-skipped appended to one file
    assert sorted((tmp_path / "log").read_text().splitlines()) == ["after-skipped", "hello ann"]
    assert (tmp_path / "final").read_text() == "Completed Succeeded None\n"
    assert report["results"] == {"WHO": "ann", "ECHOED": "echoed hello ann"}  # NEVER left out
    assert f"names: ann bob run {report['pipelineRun']}" in err
    assert "[first : names] names: ann bob" in err  # tkn-style prefixes
    assert containers(report["pipelineRun"]) == []


def test_failing_task_skips_dependants_and_finally_runs(image, capsys):
    code, report, err = run(capsys, str(DATA / "fail.yaml"), "-p", f"IMAGE={image}")
    assert code == 1
    tasks = by_name(report)
    assert tasks["breaks"]["status"] == "failed"
    assert tasks["breaks"]["taskRuns"][0]["failedStep"] == "boom"
    assert tasks["breaks"]["taskRuns"][0]["exitCode"] == 3
    assert tasks["dependant"]["status"] == "skipped" and tasks["later"]["status"] == "skipped"
    # finally saw the failure, and that neither skipped task wrote its file into the shared volume
    assert tasks["cleanup"]["status"] == "succeeded"
    assert tasks["cleanup"]["results"]["SEEN"] == "Failed Failed "
    assert "task breaks step boom" in report["failure"]
    assert f"pipelinerun {report['pipelineRun']} failed: task breaks step boom" in err
    assert containers(report["pipelineRun"]) == []


def test_matrix_runs_every_combination_in_parallel_and_aggregates_results(image, tmp_path, capsys):
    code, report, err = run(
        capsys, str(DATA / "matrix.yaml"), "-p", f"IMAGE={image}", "-w", f"shared={tmp_path}", "--parallel", "3"
    )
    assert code == 0, err
    build = by_name(report)["build"]
    combos = [r["params"] for r in build["taskRuns"]]
    assert combos == [
        {"PLATFORM": "amd64"},
        {"PLATFORM": "arm64", "FLAVOR": "-slim"},
        {"PLATFORM": "riscv64"},
    ]
    assert [r["name"] for r in build["taskRuns"]] == [f"{report['pipelineRun']}-build-{i}" for i in range(3)]
    # every TaskRun saw all three started before any finished: they ran at the same time
    events = (tmp_path / "events").read_text().splitlines()
    assert sorted(events[:3]) == ["amd64 started", "arm64 started", "riscv64 started"], events
    assert len(events) == 6
    images = ["img-amd64", "img-arm64-slim", "img-riscv64"]
    assert build["results"] == {"IMAGE": images}
    assert report["results"] == {"IMAGES": images}
    assert (tmp_path / "index").read_text() == "3 " + " ".join(images) + "\n"


SLEEPERS = """\
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: {name}
spec:
  params:
    - name: IMAGE
      value: {image}
  pipelineSpec:
    params:
      - name: IMAGE
    workspaces:
      - name: w
    tasks:
      - name: one
        taskSpec:
          steps:
            - name: sleep
              image: $(params.IMAGE)
              script: touch $(workspaces.w.path)/started-one; exec sleep 600
      - name: two
        taskSpec:
          steps:
            - name: sleep
              image: $(params.IMAGE)
              script: touch $(workspaces.w.path)/started-two; exec sleep 600
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_every_running_step_container(image, tmp_path, sig):
    name = f"sig{int(sig)}-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "run.yaml"
    path.write_text(SLEEPERS.format(name=name, image=image))
    ws = tmp_path / "w"
    ws.mkdir()
    argv = [
        sys.executable,
        "-m",
        "taskimage",
        "run",
        str(path),
        "-w",
        f"w={ws}",
        "--tls-verify=false",
        "--parallel",
        "2",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180  # generous: only bounds a hang, never decides the outcome
        while not ((ws / "started-one").exists() and (ws / "started-two").exists()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the two steps never both started"
            time.sleep(0.2)
        assert len(containers(name)) == 2
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, None)
    assert "stopping" in err
    assert containers(name) == []


def test_retries_and_task_timeout(image, tmp_path, capsys):
    code, report, err = run(capsys, str(DATA / "retries.yaml"), "-p", f"IMAGE={image}", "-w", f"w={tmp_path}")
    assert code == 1
    tasks = by_name(report)
    flaky = tasks["flaky"]["taskRuns"][0]
    assert flaky["succeeded"] and flaky["attempts"] == 2 and flaky["results"] == {"TRIES": "2 of 2 (retry 1)"}
    assert (tmp_path / "count").read_text() == "2\n"
    slow = tasks["slow"]["taskRuns"][0]
    assert not slow["succeeded"] and slow["failedStep"] == "sleep (timed out after 5 s)"
    assert tasks["after"]["results"] == {"SEEN": "Failed Succeeded"}
    assert "task slow step sleep (timed out after 5 s)" in report["failure"]
    assert containers(report["pipelineRun"]) == []
