"""What a PipelineRun did, as ``tkn pipelinerun describe`` shows it: one row per TaskRun (status,
duration, results), the Pipeline's results, and JSON for machines."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from taskimage import log


@dataclasses.dataclass(frozen=True)
class TaskRunReport:
    name: str
    pipeline_task: str
    label: str  # "build" or "build[1]" for a matrix combination
    task: str
    succeeded: bool
    exit_code: int
    failed_step: str
    seconds: float
    results: Mapping[str, Any]
    params: Mapping[str, str]  # the matrix combination
    attempts: int = 1
    problems: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class TaskReport:
    name: str
    status: str  # succeeded failed skipped pending
    reason: str
    seconds: float
    taskruns: tuple[TaskRunReport, ...]
    results: Mapping[str, Any]
    is_finally: bool = False


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclasses.dataclass(frozen=True)
class PipelineRunReport:
    name: str
    pipeline: str
    succeeded: bool
    tasks: tuple[TaskReport, ...]
    results: Mapping[str, Any]
    seconds: float
    run_dir: str | None = None

    @property
    def failed(self) -> list[TaskReport]:
        return [t for t in self.tasks if t.status == "failed"]

    def failure(self) -> str:
        """One line naming the failed tasks, their TaskRuns and steps."""
        parts = []
        for t in self.failed:
            for r in t.taskruns:
                if not r.succeeded:
                    step = f" step {r.failed_step}" if r.failed_step else ""
                    parts.append(f"task {r.label}{step} (taskrun {r.name}, exit code {r.exit_code})")
        return "; ".join(parts)

    def table(self) -> str:
        rows = []
        for t in self.tasks:
            runs = t.taskruns or ()
            if not runs:
                rows.append(
                    (t.name + (" (finally)" if t.is_finally else ""), "-", t.status.capitalize(), "-", t.reason)
                )
            for r in runs:
                status = "Succeeded" if r.succeeded else f"Failed ({r.failed_step or 'exit ' + str(r.exit_code)})"
                results = ", ".join(f"{k}={_short(v, 40)}" for k, v in r.results.items())
                combo = ", ".join(f"{k}={v}" for k, v in r.params.items())
                rows.append(
                    (
                        r.label + (" (finally)" if t.is_finally else ""),
                        r.name,
                        status,
                        f"{r.seconds:.1f}",
                        "; ".join(x for x in (combo, results) if x),
                    )
                )
        out = log.table(("TASK", "TASKRUN", "STATUS", "SECONDS", "PARAMS / RESULTS"), rows)
        if self.results:
            out += "\n\n" + log.table(
                ("PIPELINE RESULT", "VALUE"), [(k, _short(v, 100)) for k, v in self.results.items()]
            )
        return out

    def as_json(self) -> dict:
        return {
            "pipelineRun": self.name,
            "pipeline": self.pipeline,
            "succeeded": self.succeeded,
            "seconds": round(self.seconds, 2),
            "failure": self.failure(),
            "results": dict(self.results),
            "tasks": [
                {
                    "name": t.name,
                    "finally": t.is_finally,
                    "status": t.status,
                    "reason": t.reason,
                    "seconds": round(t.seconds, 2),
                    "results": dict(t.results),
                    "taskRuns": [
                        {
                            "name": r.name,
                            "label": r.label,
                            "task": r.task,
                            "succeeded": r.succeeded,
                            "exitCode": r.exit_code,
                            "failedStep": r.failed_step,
                            "seconds": round(r.seconds, 2),
                            "params": dict(r.params),
                            "results": dict(r.results),
                            "attempts": r.attempts,
                        }
                        for r in t.taskruns
                    ],
                }
                for t in self.tasks
            ],
            "runDir": self.run_dir,
        }
