"""Resolving a pipeline task's taskRef for real: git (a local repository reached through the
user's `url.<base>.insteadOf`, as a mirror would be), hub (an Artifact Hub API answered by a local
HTTP server), and the one-line errors for what cannot be resolved, before anything runs."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import have_tools, need

from taskimage import cli

TASK = """\
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: echo
spec:
  params:
    - name: IMAGE
    - name: WORD
  results:
    - name: SAID
  steps:
    - name: say
      image: $(params.IMAGE)
      script: printf '%s from {origin}' "$(params.WORD)" > $(results.SAID.path)
"""

PIPELINE = """\
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: resolved
spec:
  params:
    - name: IMAGE
  results:
    - name: SAID
      value: $(tasks.one.results.SAID)
  tasks:
    - name: one
      taskRef:
        {ref}
      params:
        - name: IMAGE
          value: $(params.IMAGE)
        - name: WORD
          value: hi
"""


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["run", *argv, "--tls-verify=false", "--output", "json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_pipeline(tmp_path: Path, ref: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE.format(ref=ref.replace("\n", "\n        ")))
    return path


@pytest.mark.podman
def test_git_resolver_clones_through_insteadof(busybox_base, tmp_path, capsys, monkeypatch):
    need(have_tools("git", "podman", "runc"), "git, podman and runc are needed")
    repo = tmp_path / "catalog"
    (repo / "task" / "echo").mkdir(parents=True)
    (repo / "task" / "echo" / "echo.yaml").write_text(TASK.format(origin="git"))

    def git(*args: str) -> str:
        argv = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "echo")
    commit = git("rev-parse", "HEAD")
    (repo / "task" / "echo" / "echo.yaml").write_text("not: the pinned one\n")
    git("commit", "-q", "-am", "later")  # the resolver must take the pinned revision, not HEAD
    remote = "https://git.example.invalid/tektoncd/catalog.git"
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{repo}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", remote)
    ref = (
        "resolver: git\nparams:\n  - name: url\n    value: "
        + remote
        + "\n  - name: revision\n    value: "
        + commit
        + "\n  - name: pathInRepo\n    value: task/echo/echo.yaml"
    )
    code, out, err = run(capsys, str(write_pipeline(tmp_path, ref)), "-p", f"IMAGE={busybox_base}")
    assert code == 0, err
    assert json.loads(out)["results"] == {"SAID": "hi from git"}


@pytest.fixture
def hub():
    served: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = served.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write((body or "{}").encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()


@pytest.mark.podman
def test_hub_resolver_reads_artifact_hub(busybox_base, hub, tmp_path, capsys):
    need(have_tools("podman", "runc"), "podman and runc are needed")
    url, served = hub
    served["/api/v1/packages/tekton-task/my-catalog/echo/0.2"] = json.dumps(
        {"data": {"manifestRaw": TASK.format(origin="hub")}}
    )
    ref = (
        "resolver: hub\nparams:\n  - name: catalog\n    value: my-catalog\n  - name: kind\n    value: task\n"
        '  - name: name\n    value: echo\n  - name: version\n    value: "0.2"'
    )
    code, out, err = run(capsys, str(write_pipeline(tmp_path, ref)), "-p", f"IMAGE={busybox_base}", "--hub-url", url)
    assert code == 0, err
    assert json.loads(out)["results"] == {"SAID": "hi from hub"}


@pytest.mark.parametrize(
    "ref, message",
    [
        (
            "name: nowhere",
            "pipeline resolved task one: Task nowhere is not in the given files: give the Task with --task FILE",
        ),
        (
            "resolver: cluster\nparams:\n  - name: name\n    value: echo",
            "resolver 'cluster': not supported",
        ),
        (
            "resolver: bundles\nparams:\n  - name: bundle\n    value: 127.0.0.1:9/none/tasks:1\n  - name: name\n    value: echo",
            "pipeline resolved task one: cannot resolve resolver bundles",
        ),
    ],
)
def test_unresolvable_refs_fail_before_anything_runs(ref, message, tmp_path, capsys):
    code, out, err = run(capsys, str(write_pipeline(tmp_path, ref)), "-p", "IMAGE=busybox")
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and message in lines[0], err
    assert "--stand-in one=FILE" in lines[0]
    assert "==> taskrun" not in err


def test_task_from_a_task_file(tmp_path, capsys):
    """`--task FILE` supplies a taskRef by name; a wrong param name is caught before anything runs."""
    (tmp_path / "echo.yaml").write_text(TASK.format(origin="file"))
    path = write_pipeline(tmp_path, "name: echo")
    path.write_text(path.read_text().replace("name: WORD", "name: WORDS"))
    code, out, err = run(capsys, str(path), "--task", str(tmp_path / "echo.yaml"), "-p", "IMAGE=busybox")
    assert code == 2
    assert "missing values for params without a default: WORD" in err
