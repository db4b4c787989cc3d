"""Conformance tier: Tekton's own example PipelineRuns under `taskimage run`.

As the TaskRun tier (tests/test_conformance_taskruns.py): each example runs as a new user would
run it (`taskimage run FILE`), public images redirected to local look-alikes
(:mod:`taskimage.dev.lookalikes`) by a registries.conf, digest pins removed in a temporary copy.
Outcome ``ok`` (exit 0), ``refused`` (exit 2, one-line "not supported" before any step started)
or ``wrong`` (anything else). Counts go to ``conformance-pipelineruns.json`` in pytest's base
temp directory and to the end of the session's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import have_tools, need

from taskimage.dev import lookalikes

pytestmark = pytest.mark.podman

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = Path(os.environ.get("TASKIMAGE_TEKTON_EXAMPLES") or ROOT.parent / "shared" / "tekton-examples")
RUNS = sorted((EXAMPLES / "pipelineruns").glob("*.yaml")) if (EXAMPLES / "pipelineruns").is_dir() else []
OUTCOMES: dict[str, tuple[str, str]] = {}
# examples that fail here for want of an image, with the cause; strict: one that passes must leave
KNOWN_WRONG = {
    "optional-workspaces": "needs mirror.gcr.io/node: no local look-alike",
    "pipelinerun": "clones github.com with ghcr.io's git-clone image and builds with gcr.io's kaniko",
}


@pytest.fixture(scope="session")
def registries_conf_pr(registry, tmp_path_factory) -> Path:
    need(have_tools("podman", "runc", "mmdebstrap"), "podman, runc and mmdebstrap are needed (see .ci/run)")
    mapping = lookalikes.push_lookalikes(registry.host)
    path = tmp_path_factory.mktemp("lookalikes-pr") / "registries.conf"
    return lookalikes.write_registries_conf(path, mapping, registry.host)


@pytest.fixture(scope="session", autouse=True)
def _report(tmp_path_factory):
    yield
    if not OUTCOMES:
        return
    counts = {k: sum(1 for v in OUTCOMES.values() if v[0] == k) for k in ("ok", "refused", "wrong")}
    report = {"counts": counts, "outcomes": {k: {"outcome": v[0], "why": v[1]} for k, v in sorted(OUTCOMES.items())}}
    out = tmp_path_factory.getbasetemp() / "conformance-pipelineruns.json"
    out.write_text(json.dumps(report, indent=2))
    sys.stderr.write(f"\nconformance (pipelineruns): {counts} — details in {out}\n")


def classify(code: int, stderr: str) -> tuple[str, str]:
    if code == 0:
        return "ok", ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = ([line for line in lines if "ERROR" in line] or lines or [""])[-1].strip()
    if code == 2 and "not supported" in last and "$ podman run" not in stderr:
        return "refused", last
    return "wrong", f"exit {code}: {last}"


def test_the_example_corpus_is_here():
    """.ci/setup-host puts Tekton's examples in ../shared/tekton-examples (or downloads them)."""
    need(bool(RUNS), f"no Tekton examples in {EXAMPLES} (set TASKIMAGE_TEKTON_EXAMPLES)")


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason=KNOWN_WRONG[p.stem], strict=True))
        if p.stem in KNOWN_WRONG
        else p
        for p in RUNS
    ],
    ids=[p.stem for p in RUNS],
)
def test_example_pipelinerun_succeeds_or_is_refused(example, registries_conf_pr, tmp_path):
    docs = [lookalikes.unpin(d) for d in yaml.safe_load_all(example.read_text()) if d is not None]
    copy = tmp_path / example.name
    copy.write_text(yaml.safe_dump_all(docs))
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries_conf_pr)}
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", "run", str(copy), "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    outcome, why = classify(proc.returncode, proc.stderr)
    OUTCOMES[example.stem] = (outcome, why)
    assert outcome != "wrong", f"{example.name}: {why}\n{proc.stderr[-3000:]}"
