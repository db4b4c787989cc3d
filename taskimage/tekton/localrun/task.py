"""Reading Tasks and TaskRuns (tekton.dev/v1 and v1beta1) and merging ``stepTemplate`` into steps.

The stepTemplate merge follows Tekton v1 (``MergeStepsWithStepTemplate``), a Kubernetes
strategic merge of the template container with each step: a field set in the step wins, nested
objects (``securityContext``, ``computeResources``) merge field by field, ``env`` merges by
``name``, ``volumeMounts`` by ``mountPath``, and other lists (``command``, ``args``, ``envFrom``)
are replaced whole. ``script`` is never taken from the template.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton import yamlio

_MERGE_KEYS = {"env": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath", "ports": "containerPort"}


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A Task's name and spec, and the TaskRun around it when there is one."""

    task_name: str
    spec: Mapping[str, Any]
    taskrun: Mapping[str, Any] | None = None
    source: str = ""


def load_documents(path: str) -> list[dict]:
    """The objects in a YAML or JSON file (several YAML documents allowed), read by yamlio."""
    docs = [d for d in yamlio.load_file(path) if d is not None]
    for d in docs:
        if not isinstance(d, dict):
            raise UsageError(f"{path}: every document must be a mapping (a Tekton object)")
    return docs


def _kind(obj: Mapping) -> str:
    return str(obj.get("kind", ""))


def _check_api(obj: Mapping, source: str) -> None:
    api = str(obj.get("apiVersion", ""))
    if not api.startswith("tekton.dev/"):
        raise UsageError(
            f"{source}: {obj.get('kind') or 'object'} has apiVersion {api!r}, not tekton.dev/v1 or v1beta1"
        )


def task_from_object(obj: Mapping, source: str) -> Loaded:
    _check_api(obj, source)
    if _kind(obj) not in ("Task", "ClusterTask"):
        raise UsageError(f"{source}: expected a Task, found kind {_kind(obj) or '(none)'}")
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        raise UsageError(f"{source}: the Task has no metadata.name")
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not spec.get("steps"):
        raise UsageError(f"{source}: task {name} has no spec.steps")
    return Loaded(name, spec, None, source)


def pick_task(docs: Sequence[Mapping], source: str, name: str | None = None) -> Loaded:
    """The one Task in a file (or the one called ``name``)."""
    tasks = [d for d in docs if _kind(d) in ("Task", "ClusterTask")]
    if name:
        tasks = [t for t in tasks if (t.get("metadata") or {}).get("name") == name]
    if len(tasks) != 1:
        found = ", ".join(str((t.get("metadata") or {}).get("name")) for t in tasks) or "none"
        wanted = f" named {name}" if name else ""
        raise UsageError(f"{source}: expected exactly one Task{wanted}, found {len(tasks)} ({found})")
    return task_from_object(tasks[0], source)


def bundle_ref(taskrun: Mapping) -> tuple[str, str, str] | None:
    """(bundle, name, kind) when the TaskRun's taskRef uses the bundles resolver (or v1beta1's
    ``taskRef.bundle``), else None."""
    ref = (taskrun.get("spec") or {}).get("taskRef") or {}
    if ref.get("bundle"):
        return str(ref["bundle"]), str(ref.get("name", "")), "task"
    if ref.get("resolver") == "bundles":
        params = {p.get("name"): p.get("value") for p in ref.get("params") or []}
        if not params.get("bundle") or not params.get("name"):
            raise UsageError("taskRef with resolver: bundles needs params bundle and name")
        return str(params["bundle"]), str(params["name"]), str(params.get("kind") or "task").lower()
    return None


def propagate(task_spec: Mapping, run_spec: Mapping) -> dict:
    """An inline taskSpec with the TaskRun's params and workspaces it does not declare added, as
    Tekton propagates them into embedded specs (a param's type follows its value)."""
    out = dict(task_spec)
    declared = {p.get("name") for p in task_spec.get("params") or []}
    extra = [
        {"name": p["name"], "type": _value_type(p.get("value"))}
        for p in run_spec.get("params") or []
        if p.get("name") and p["name"] not in declared
    ]
    if extra:
        out["params"] = [*(task_spec.get("params") or []), *extra]
    declared_ws = {w.get("name") for w in task_spec.get("workspaces") or []}
    extra_ws = [{"name": w["name"]} for w in run_spec.get("workspaces") or [] if w.get("name") not in declared_ws]
    if extra_ws:
        out["workspaces"] = [*(task_spec.get("workspaces") or []), *extra_ws]
    return out


def _value_type(value: Any) -> str:
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else "string"


def taskrun_task(
    taskrun: Mapping, source: str, task_docs: Sequence[Mapping] = (), *, fetched: Mapping | None = None
) -> Loaded:
    """The Task a TaskRun runs: its inline ``taskSpec``, a Task from ``task_docs`` named by
    ``taskRef.name``, or ``fetched`` (the object a bundle resolver returned)."""
    _check_api(taskrun, source)
    if _kind(taskrun) != "TaskRun":
        raise UsageError(f"{source}: expected a TaskRun, found kind {_kind(taskrun) or '(none)'}")
    spec = taskrun.get("spec") or {}
    if spec.get("taskSpec"):
        meta = taskrun.get("metadata") or {}
        name = meta.get("name") or str(meta.get("generateName", "task")).rstrip("-")
        if not spec["taskSpec"].get("steps"):
            raise UsageError(f"{source}: taskSpec has no steps")
        return Loaded(name, propagate(spec["taskSpec"], spec), taskrun, source)
    if fetched is not None:
        return dataclasses.replace(task_from_object(fetched, source), taskrun=taskrun)
    ref = spec.get("taskRef") or {}
    if ref.get("resolver") and ref.get("resolver") != "bundles":
        raise UsageError(
            f"{source}: taskRef resolver {ref['resolver']!r} is not supported (bundles is; or give the Task file)"
        )
    if not ref.get("name"):
        raise UsageError(f"{source}: the TaskRun has neither taskSpec nor taskRef.name")
    if not task_docs:
        raise UsageError(
            f"{source}: the TaskRun refers to task {ref['name']}: give its file too (taskimage run TASK.yaml --taskrun ...)"
        )
    return dataclasses.replace(pick_task(task_docs, source, ref["name"]), taskrun=taskrun)


# --- stepTemplate --------------------------------------------------------------------------


def _merge_list(template: list, step: list, key: str) -> list:
    out = [dict(x) for x in template]
    index = {x.get(key): i for i, x in enumerate(out)}
    for item in step:
        k = item.get(key)
        if k in index:
            merged = {**out[index[k]], **item}
            if key == "name":  # an env var has value or valueFrom, never both: the step's wins
                if "valueFrom" in item:
                    merged.pop("value", None)
                elif "value" in item:
                    merged.pop("valueFrom", None)
            out[index[k]] = merged
        else:
            index[k] = len(out)
            out.append(dict(item))
    return out


def _merge(template: Mapping, step: Mapping) -> dict:
    out: dict = {k: v for k, v in template.items()}
    for k, v in step.items():
        if k in _MERGE_KEYS and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = _merge_list(out[k], v, _MERGE_KEYS[k])
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def merge_step_template(template: Mapping | None, steps: Sequence[Mapping]) -> list[dict]:
    if not template:
        return [dict(s) for s in steps]
    base = {k: v for k, v in template.items() if k != "script"}
    return [_merge(base, s) for s in steps]


def step_name(step: Mapping, index: int) -> str:
    return str(step.get("name") or f"unnamed-{index}")
