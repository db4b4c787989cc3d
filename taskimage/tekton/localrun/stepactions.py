"""StepActions (``steps[].ref``) and step results, resolved as Tekton resolves them.

A step with ``ref: {name: N}`` takes the StepAction N (from the same file as the TaskRun or Task,
or a ``--stepaction FILE``; with ``resolver: bundles``, from a Tekton bundle, through ``fetch``): its image, command, args, script, env, workingDir, securityContext,
volumeMounts and results; the step keeps its name, onError, timeout, workspaces and the
stepTemplate's fields that the StepAction leaves unset. The step's ``params`` are first
substituted with the Task's params (a whole ``$(params.X[*])`` gives an array or object), then
laid over the StepAction's declared defaults (object keys merged) and substituted into the
StepAction's fields. A value that stays an unresolved reference (``[*]`` of a string param, which
Tekton leaves literal) does not override the default.

Step results live in ``/tekton/steps/step-<name>/results/<result>``
(``$(step.results.R.path)``); a Task result declared with ``value: $(steps.S.results.R)`` is
taken from there once the steps are done.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton.localrun import params as params_mod
from taskimage.tekton.localrun import substitute as sub

STEPS_DIR = "/tekton/steps"
_STEP_RESULT_PATH = re.compile(r"\$\(step\.results\.([^.()]+)\.path\)")
_TASK_RESULT_FROM_STEP = re.compile(r"^\$\(steps\.([^.()]+)\.results\.([^.()]+)\)$")
_FROM_ACTION = (
    "image",
    "command",
    "args",
    "script",
    "env",
    "workingDir",
    "securityContext",
    "volumeMounts",
    "results",
)


def bundle_ref(ref: Mapping, task_vars: sub.Variables, where: str) -> tuple[str, str] | None:
    """(bundle, name) for a ``ref`` through the bundles resolver, the Task's params substituted
    in its params (as Tekton does before resolving), else None."""
    if ref.get("resolver") != "bundles":
        return None
    params = {
        p.get("name"): sub.substitute_string(str(p.get("value") or ""), task_vars) for p in ref.get("params") or []
    }
    if not params.get("bundle") or not params.get("name"):
        raise UsageError(f"{where}: a StepAction ref with resolver bundles needs params bundle and name")
    if params.get("kind", "stepaction").lower() != "stepaction":
        raise UsageError(f"{where}: the bundle ref names a {params['kind']}, not a stepaction")
    return params["bundle"], params["name"]


def step_results_dir(step_name: str) -> str:
    return f"{STEPS_DIR}/step-{step_name}/results"


def collect(docs: Sequence[Mapping]) -> dict[str, Mapping]:
    """StepActions by name, from Tekton documents."""
    out: dict[str, Mapping] = {}
    for d in docs:
        if d.get("kind") == "StepAction" and str(d.get("apiVersion", "")).startswith("tekton.dev/"):
            name = str((d.get("metadata") or {}).get("name") or "")
            if name:
                out[name] = d.get("spec") or {}
    return out


_WHOLE_PARAM = re.compile(r"^\$\(params\.([^.\[\]()]+)(?:\[\*\])?\)$")


def _whole(value: str, v: sub.Variables) -> sub.ParamValue | None:
    """The whole value of a param named alone (``$(params.X[*])``, also an object), else None."""
    obj = _WHOLE_PARAM.match(value)
    if obj and v.param_types.get(obj.group(1)) == "object":
        return dict(v.params[obj.group(1)])  # type: ignore[arg-type]
    m = sub._REF.fullmatch(value)
    if not m or m.group("root") != "params":
        return None
    ref = sub.parse_ref(value, "params", m.group("rest"))
    if ref is None:
        return None
    try:
        return sub.resolve_param(ref, v, whole_array_ok=True)
    except sub._Unresolved:
        return None


def _given(raw: Sequence[Mapping], task_vars: sub.Variables) -> dict[str, Any]:
    """The step's params with the Task's params substituted; unresolved references dropped."""
    out: dict[str, Any] = {}
    for p in raw:
        name, value = str(p.get("name")), p.get("value")
        if isinstance(value, str):
            whole = _whole(value, task_vars)
            if whole is not None:
                out[name] = whole
                continue
            leftovers: list[str] = []
            text = sub.substitute_string(value, task_vars, leftovers)
            if not any(x.startswith("$(params") for x in leftovers):
                out[name] = text
        elif isinstance(value, list):
            out[name] = sub.substitute_list([str(x) for x in value], task_vars)
        elif isinstance(value, dict):
            out[name] = {str(k): sub.substitute_string(str(x), task_vars) for k, x in value.items()}
    return out


def resolve(
    steps: Sequence[Mapping],
    actions: Mapping[str, Mapping],
    task_vars: sub.Variables,
    warnings: list[str],
    fetch: Callable[[str, str], Mapping] | None = None,
) -> list[dict]:
    """``steps`` with every ``ref`` replaced by its StepAction, and ``$(step.results.R.path)``
    replaced in every step."""
    out: list[dict] = []
    for i, step in enumerate(steps):
        name = str(step.get("name") or f"unnamed-{i}")
        ref = step.get("ref")
        if not ref:
            out.append(_step_results(dict(step), name))
            continue
        where = f"steps[{i}] ({name})"
        from_bundle = bundle_ref(ref, task_vars, where)
        if ref.get("resolver") and from_bundle is None:
            raise UsageError(
                f"{where}: a StepAction from resolver {ref.get('resolver')!r} is not supported "
                "(bundles is; or give it with --stepaction FILE)"
            )
        if from_bundle is not None:
            if fetch is None:
                raise UsageError(f"{where}: StepActions from bundles need a registry client here")
            action: Mapping | None = fetch(*from_bundle).get("spec") or {}
        else:
            action = actions.get(str(ref.get("name")))
        if action is None:
            raise UsageError(
                f"{where}: StepAction {ref.get('name')!r} is not in the file (known: {', '.join(sorted(actions)) or 'none'})"
            )
        clash = [f for f in _FROM_ACTION if f in step and f != "env"]
        if clash:
            raise UsageError(f"{where}: a step with ref cannot set {', '.join(clash)}")
        specs = params_mod.parse_specs(action.get("params"), f"StepAction {ref.get('name')}")
        types = {s.name: s.type for s in specs}
        given = _given(step.get("params") or [], task_vars)
        for k in list(given):
            if k in types and params_mod.value_type(given[k]) != types[k]:
                warnings.append(
                    f"{where}: param {k} is given a {params_mod.value_type(given[k])}, declared {types[k]}: its default is used"
                )
                del given[k]
        values = params_mod.resolve(specs, given, f"StepAction {ref.get('name')}", warnings=warnings)
        action_vars = sub.Variables(params=values, param_types=types, context={}, workspaces={}, results={})
        resolved = {k: v for k, v in step.items() if k not in ("ref", "params")}
        for field in _FROM_ACTION:
            if field in action:
                resolved[field] = action[field]
        resolved = sub.substitute_step(resolved, action_vars, [])
        out.append(_step_results(resolved, name))
    return out


def _step_results(step: dict, name: str) -> dict:
    """``$(step.results.R.path)`` → the step's result file, in every field that may hold it."""
    declared = {str(r.get("name")) for r in step.get("results") or []}

    def fix(text: str) -> str:
        def one(m: re.Match) -> str:
            if m.group(1) not in declared:
                raise UsageError(f"step {name}: $(step.results.{m.group(1)}.path) names no result of the step")
            return f"{step_results_dir(name)}/{m.group(1)}"

        return _STEP_RESULT_PATH.sub(one, text)

    for field in ("script", "workingDir"):
        if isinstance(step.get(field), str):
            step[field] = fix(step[field])
    for field in ("command", "args"):
        if step.get(field):
            step[field] = [fix(str(x)) for x in step[field]]
    if step.get("env"):
        step["env"] = [{**e, "value": fix(e["value"])} if isinstance(e.get("value"), str) else e for e in step["env"]]
    return step


def results_from_steps(task_results: Sequence[Mapping]) -> dict[str, tuple[str, str]]:
    """Task result -> (step name, step result) for results declared ``value: $(steps.S.results.R)``."""
    out: dict[str, tuple[str, str]] = {}
    for r in task_results:
        value = r.get("value")
        if isinstance(value, str):
            m = _TASK_RESULT_FROM_STEP.match(value.strip())
            if m:
                out[str(r["name"])] = (m.group(1), m.group(2))
    return out
