"""Conformance tier: Tekton's own example TaskRuns under `taskimage run`.

Tekton's CI applies each file to a cluster and expects success; most check their own results in
their steps. Here each runs as a new user would run it (`taskimage run --taskrun FILE`), with
the public images redirected by a ``registries.conf`` to local look-alikes
(:mod:`taskimage.dev.lookalikes`) and digest pins removed in a temporary copy. The outcome is one
of: ``ok`` (exit 0), ``refused`` (exit 2 with a one-line "not supported" before any step started)
or ``wrong`` (anything else: a step failed where Tekton succeeds, or an unclear error). An example
naming an image that has no look-alike here (e.g. docker:dind, which would also pull from Docker
Hub) is skipped as ``no-image``, and says which image.

On whenever the examples exist: ``TASKIMAGE_TEKTON_EXAMPLES`` or ``../shared/tekton-examples``.
The counts are written to ``conformance-taskruns.json`` in the pytest base temp directory and
printed at the end of the session.
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
TASKRUNS = sorted((EXAMPLES / "taskruns").glob("*.yaml")) if (EXAMPLES / "taskruns").is_dir() else []
OUTCOMES: dict[str, tuple[str, str]] = {}
# examples the runner still gets wrong, with the cause; strict: one that starts to pass must leave
KNOWN_WRONG: dict[str, str] = {}
# examples whose images cannot exist on one machine without the network: documented, not wrong
NO_IMAGE = {
    "authenticating-git-commands": "a git server image (ghcr.io/tektoncd/plumbing/alpine-git-nonroot) as a sidecar",
    "dind-sidecar": "a Docker daemon (docker:dind) as a privileged sidecar",
}


@pytest.fixture(scope="session")
def lookalike_mapping(registry) -> dict[str, str]:
    need(have_tools("podman", "runc", "mmdebstrap"), "podman, runc and mmdebstrap are needed (see .ci/run)")
    return lookalikes.push_lookalikes(registry.host)


@pytest.fixture(scope="session")
def registries_conf(lookalike_mapping, registry, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lookalikes") / "registries.conf"
    return lookalikes.write_registries_conf(path, lookalike_mapping, registry.host)


@pytest.fixture(scope="session", autouse=True)
def _report(tmp_path_factory):
    yield
    if not OUTCOMES:
        return
    counts = {k: sum(1 for v in OUTCOMES.values() if v[0] == k) for k in ("ok", "refused", "wrong", "no-image")}
    report = {"counts": counts, "outcomes": {k: {"outcome": v[0], "why": v[1]} for k, v in sorted(OUTCOMES.items())}}
    out = tmp_path_factory.getbasetemp() / "conformance-taskruns.json"
    out.write_text(json.dumps(report, indent=2))
    sys.stderr.write(f"\nconformance (taskruns): {counts} — details in {out}\n")


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or [""])[-1].strip()


def classify(code: int, stderr: str) -> tuple[str, str]:
    """ok / refused / wrong, and why."""
    if code == 0:
        return "ok", ""
    last = _last_error(stderr)
    started = "$ podman run" in stderr
    if code == 2 and "not supported" in last and not started:
        return "refused", last
    return "wrong", f"exit {code}: {last}"


def test_the_example_corpus_is_here():
    """.ci/setup-host puts Tekton's examples in ../shared/tekton-examples (or downloads them)."""
    need(bool(TASKRUNS), f"no Tekton examples in {EXAMPLES} (set TASKIMAGE_TEKTON_EXAMPLES)")


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(p, marks=pytest.mark.xfail(reason=KNOWN_WRONG[p.stem], strict=True))
        if p.stem in KNOWN_WRONG
        else p
        for p in TASKRUNS
    ],
    ids=[p.stem for p in TASKRUNS],
)
def test_example_taskrun_succeeds_or_is_refused(example, registries_conf, lookalike_mapping, tmp_path):
    docs = [lookalikes.unpin(d) for d in yaml.safe_load_all(example.read_text()) if d is not None]
    missing = sorted(i for i in lookalikes.images(docs) if lookalikes.stand_in(i, lookalike_mapping) is None)
    if missing:  # the example needs an image this machine cannot have: not the runner's doing
        OUTCOMES[example.stem] = ("no-image", ", ".join(missing))
        if example.stem in NO_IMAGE:  # the one skip here: an image no machine without network can have
            pytest.skip(f"needs {NO_IMAGE[example.stem]}: no local look-alike for {', '.join(missing)}")
        pytest.fail(f"no local look-alike for {', '.join(missing)}: add one to taskimage/dev/lookalikes.py")
    copy = tmp_path / example.name
    copy.write_text(yaml.safe_dump_all(docs))
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries_conf)}
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", "run", "--taskrun", str(copy), "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    outcome, why = classify(proc.returncode, proc.stderr)
    OUTCOMES[example.stem] = (outcome, why)
    assert outcome != "wrong", f"{example.name}: {why}\n{proc.stderr[-3000:]}"
