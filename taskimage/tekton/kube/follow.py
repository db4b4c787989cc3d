"""Follow a PipelineRun or TaskRun: each TaskRun's pod, its step containers in order, their logs.

Why one TaskRun at a time: log lines stay grouped per task and step in the order the Pipeline
ran them, which is what a reader of CI output wants; the logs of a step that ran while we were
still printing an earlier one are not lost (a finished container keeps its log until its pod
is deleted). Every line is prefixed ``[task:step]`` like ``tkn pipelinerun logs``.

The end of a run is reported from its ``Succeeded`` condition: the results, the status, and for
a failure the failing TaskRun and step with its exit code and reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from taskimage.errors import TaskimageError
from taskimage.tekton import model as tekton
from taskimage.tekton.kube import errors
from taskimage.tekton.kube.client import PIPELINERUNS, PODS, TASKRUNS, Kube

STEP_PREFIX = "step-"


class RunFailed(TaskimageError):
    """The run ended without success; the message names the failing TaskRun, step and reason."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str
    name: str
    condition: tekton.Condition
    results: tuple[tekton.RunResult, ...]
    failure: str | None = None  # one line, set when the run did not succeed

    @property
    def exit_code(self) -> int:
        return 0 if self.condition.succeeded else 1


def _step_containers(pod: Mapping[str, Any]) -> list[str]:
    return [
        c["name"]
        for c in (pod.get("spec") or {}).get("containers") or []
        if str(c.get("name", "")).startswith(STEP_PREFIX)
    ]


def _container_state(pod: Mapping[str, Any], container: str) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return status.get("state") or {}
    return {}


def _started_or_finished(container: str) -> Callable[[Mapping[str, Any]], bool]:
    """The wait condition for one step container: it started, or the pod ended without it."""
    return lambda pod: _started(pod, container) or _pod_finished(pod)


def _started(pod: Mapping[str, Any], container: str) -> bool:
    state = _container_state(pod, container)
    return "running" in state or "terminated" in state


def _pod_finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _task_label(task_run: Mapping[str, Any]) -> str:
    labels = (task_run.get("metadata") or {}).get("labels") or {}
    return labels.get("tekton.dev/pipelineTask") or labels.get("tekton.dev/task") or task_run["metadata"]["name"]


class Follower:
    """Prints the logs of a run through ``write`` (one call per line)."""

    def __init__(self, kube: Kube, write: Callable[[str], None], *, follow: bool = True, namespace: str | None = None):
        self.kube = kube
        self.write = write
        self.follow = follow
        self.namespace = namespace or kube.namespace

    # ------------------------------------------------------------------ PipelineRun

    def pipeline_run(self, name: str) -> dict[str, Any]:
        """Print the logs of every TaskRun of the PipelineRun; return its final (or current) state."""
        run = self.kube.get(PIPELINERUNS, name, self.namespace)
        if run is None:
            raise errors.NotFound(f"PipelineRun {name!r} not found in namespace {self.namespace}", 404)
        followed: set[str] = set()
        while True:
            new = [c for c in tekton.child_runs(run) if c.name not in followed]
            for child in new:
                followed.add(child.name)
                try:
                    self.task_run(child.name, child.pipeline_task)
                except errors.NotFound as exc:  # deleted under us: say so, keep following the others
                    self.write(f"[{child.pipeline_task}] {exc}")
            if new:
                run = self.kube.get(PIPELINERUNS, name, self.namespace) or run
                continue
            if not self.follow or tekton.condition(run).done:
                return run
            run = self.kube.wait_for(
                PIPELINERUNS,
                name,
                lambda o: tekton.condition(o).done or any(c.name not in followed for c in tekton.child_runs(o)),
                self.namespace,
            )

    # ------------------------------------------------------------------ TaskRun

    def task_run(self, name: str, task: str | None = None) -> dict[str, Any]:
        """Print the logs of the TaskRun's step containers in order; return the TaskRun."""
        run = self.kube.get(TASKRUNS, name, self.namespace)
        if run is None:
            raise errors.NotFound(f"TaskRun {name!r} not found in namespace {self.namespace}", 404)
        task = task or _task_label(run)
        if self.follow:
            run = self.kube.wait_for(
                TASKRUNS,
                name,
                lambda o: bool((o.get("status") or {}).get("podName")) or tekton.condition(o).done,
                self.namespace,
            )
        pod_name = (run.get("status") or {}).get("podName")
        if not pod_name:
            return run  # failed before it got a pod (validation, resolution): nothing to print
        pod = self.kube.get_pod(pod_name, self.namespace)
        if pod is None:
            self.write(f"[{task}] pod {pod_name} is gone: no logs")
            return run
        for container in _step_containers(pod):
            if self.follow and not _started(pod, container):
                pod = self.kube.wait_for(PODS, pod_name, _started_or_finished(container), self.namespace)
            if not _started(pod, container):
                continue  # never ran (an earlier step failed, or not started yet without -f)
            prefix = f"[{task}:{container[len(STEP_PREFIX) :]}] "
            for line in self.kube.log_lines(pod_name, container, self.namespace, follow=self.follow):
                self.write(prefix + line)
        return self.kube.get(TASKRUNS, name, self.namespace) or run

    # ------------------------------------------------------------------ outcome

    def outcome(self, run: Mapping[str, Any]) -> Outcome:
        kind = str(run.get("kind") or "PipelineRun")
        name = run["metadata"]["name"]
        cond = tekton.condition(run)
        results = tuple(tekton.run_results(run))
        if cond.succeeded:
            return Outcome(kind, name, cond, results)
        if not cond.done:
            return Outcome(kind, name, cond, results, f"{kind} {name} has not finished ({cond.reason or 'Running'})")
        verb = {
            "Cancelled": "was cancelled",
            "StoppedRunFinally": "was stopped",
            "CancelledRunFinally": "was cancelled",
            "PipelineRunTimeout": "timed out",
            "TaskRunTimeout": "timed out",
        }.get(cond.reason, "failed")
        text = f"{kind} {name} {verb} ({cond.reason or 'Failed'})"
        detail = self._failure_detail(run) if kind == "PipelineRun" else self._task_failure(run, _task_label(run))
        if detail:
            text += f": {detail}"
        elif cond.message:
            text += f": {cond.message.splitlines()[0]}"
        return Outcome(kind, name, cond, results, text)

    def _failure_detail(self, run: Mapping[str, Any]) -> str | None:
        for child in tekton.child_runs(run):
            task_run = self.kube.get(TASKRUNS, child.name, self.namespace)
            if task_run is not None and tekton.condition(task_run).status == "False":
                return f"TaskRun {child.name} (task {child.pipeline_task}) " + (
                    self._task_failure(task_run, child.pipeline_task) or "failed"
                )
        return None

    @staticmethod
    def _task_failure(task_run: Mapping[str, Any], task: str) -> str | None:
        step = tekton.failed_step(task_run)
        cond = tekton.condition(task_run)
        reason = cond.message.splitlines()[0] if cond.message else cond.reason
        if step is None:
            return f"failed: {reason}" if reason else None
        text = f"step {step.step} exited with code {step.exit_code}"
        if step.reason:
            text += f" ({step.reason})"
        if reason:
            text += f": {reason}"
        return text
