"""`taskimage run` of a .tekton/ PipelineRun as Pipelines-as-Code would run it, from a real git
checkout: the trigger decision, the {{ }} placeholders, remote task annotations, and a run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import have_tools, need

from taskimage import cli

RUN = """\
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: pac-{{ repo_name }}
  annotations:
    pipelinesascode.tekton.dev/on-event: "[pull_request, push]"
    pipelinesascode.tekton.dev/on-target-branch: "[main, release-*]"
    pipelinesascode.tekton.dev/max-keep-runs: "3"
    pipelinesascode.tekton.dev/task: "[.tekton/tasks/report.yaml]"
spec:
  params:
    - name: url
      value: "{{ repo_url }}"
    - name: revision
      value: {{ revision }}
    - name: IMAGE
      value: set-by-the-test
  pipelineSpec:
    params:
      - name: url
      - name: revision
      - name: IMAGE
    results:
      - name: SEEN
        value: $(tasks.report.results.SEEN)
    tasks:
      - name: report
        taskRef:
          name: report
        params:
          - name: TEXT
            value: "$(params.url) $(params.revision) {{ source_branch }} {{ target_branch }} {{ event_type }} {{ repo_owner }}"
          - name: IMAGE
            value: $(params.IMAGE)
"""

TASK = """\
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: report
spec:
  params:
    - name: TEXT
    - name: IMAGE
  results:
    - name: SEEN
  steps:
    - name: say
      image: $(params.IMAGE)
      env:
        - name: TEXT
          value: $(params.TEXT)
      script: printf '%s' "$TEXT" > $(results.SEEN.path)
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), "-c", "user.name=Ann", "-c", "user.email=ann@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    need(have_tools("git"), "git is not installed")
    repo = tmp_path / "app"
    (repo / ".tekton" / "tasks").mkdir(parents=True)
    (repo / ".tekton" / "build.yaml").write_text(RUN)
    (repo / ".tekton" / "tasks" / "report.yaml").write_text(TASK)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", "https://git.example.com/team/app.git")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["run", *argv, "--tls-verify=false", "--output", "json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_push_to_an_unlisted_branch_does_not_trigger(checkout, capsys):
    _git(checkout, "checkout", "-q", "-b", "feature")
    code, out, err = run(capsys, str(checkout / ".tekton" / "build.yaml"), "--event", "push")
    assert code == 0
    assert json.loads(out) == {
        "triggered": False,
        "reason": "on-target-branch ['main', 'release-*'] does not match feature",
    }
    assert "would not run" in err


def test_cel_expression_decides(checkout, capsys):
    path = checkout / ".tekton" / "build.yaml"
    text = path.read_text().replace(
        '    pipelinesascode.tekton.dev/on-event: "[pull_request, push]"\n',
        '    pipelinesascode.tekton.dev/on-cel-expression: event == "pull_request" && target_branch == "main"\n',
    )
    path.write_text(text)
    code, out, err = run(capsys, str(path), "--event", "push")
    assert code == 0, err
    assert json.loads(out)["triggered"] is False
    assert "on-cel-expression" in json.loads(out)["reason"]


def test_unknown_placeholder_is_refused(checkout, capsys):
    path = checkout / ".tekton" / "build.yaml"
    path.write_text(path.read_text().replace("{{ repo_owner }}", "{{ repo_ownr }}"))
    code, out, err = run(capsys, str(path))
    assert code == 2 and out == ""
    assert "unknown Pipelines-as-Code placeholder {{ repo_ownr }}" in err


@pytest.mark.podman
def test_pull_request_run_fills_placeholders_and_remote_task(checkout, busybox_base, capsys):
    need(have_tools("podman", "runc"), "podman and runc are not installed")
    _git(checkout, "checkout", "-q", "-b", "fix")
    (checkout / "f").write_text("x")
    _git(checkout, "add", "f")
    _git(checkout, "commit", "-q", "-m", "fix")
    head = _git(checkout, "rev-parse", "HEAD")
    code, out, err = run(
        capsys, str(checkout / ".tekton" / "build.yaml"), "--event", "pull_request", "-p", f"IMAGE={busybox_base}"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["pipelineRun"] == "pac-app"
    assert report["results"]["SEEN"] == f"https://git.example.com/team/app.git {head} fix main pull_request team"
    assert "Pipelines-as-Code remote task: .tekton/tasks/report.yaml (report)" in err
    assert "max-keep-runs: ignored" in err
