"""Reference checks: every ``$(...)`` a Tekton object uses must name something it declares.

The CRD schema cannot see inside strings, yet most broken Tasks fail there: a misspelt param,
an array param pasted into a string, ``[*]`` in a script, a result or workspace never declared,
``$(tasks.T.results.R)`` of a task that is not in the Pipeline. The Tekton webhook rejects
(or, worse, silently leaves unreplaced) these only once applied; we find them offline.

Also the catalog's hygiene rules: no ``$(params...)`` in a step ``script`` (values go through
``env`` / ``args``, so they are never parsed as shell), no step image tagged ``:latest``.

Propagation is honoured: inline specs (TaskRun.taskSpec, PipelineRun.pipelineSpec, a Pipeline's
inline taskSpec) may use the params and workspaces of their parent without declaring them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from taskimage.tekton.lint.loader import Document, PathKey
from taskimage.tekton.lint.problems import ERROR, WARNING, Problem, dotted
from taskimage.tekton.params import infer_type, value_type
from taskimage.tekton.variables import Ref, iter_refs, whole

WORKSPACE_ATTRS = {"path", "bound", "claim", "volume"}
STAR_HINT = "[*] is allowed only as a whole element of args/command, param values, matrix values or when values"


@dataclasses.dataclass(frozen=True)
class Scope:
    """What a spec may reference. ``None`` means "cannot know, do not check"."""

    params: dict[str, str]  # name -> string | array | object
    param_keys: dict[str, frozenset[str]]  # object param -> declared keys
    workspaces: frozenset[str] | None
    results: frozenset[str] | None = None
    tasks: dict[str, frozenset[str] | None] | None = None  # pipeline task -> its results (None: unknown)
    finally_tasks: dict[str, frozenset[str] | None] | None = None
    step_results: frozenset[str] | None = None
    steps: frozenset[str] | None = None
    where: str = "Task"


def declared_params(decls: Any) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    params: dict[str, str] = {}
    keys: dict[str, frozenset[str]] = {}
    for decl in _list(decls):
        if isinstance(decl, dict) and isinstance(decl.get("name"), str):
            params[decl["name"]] = infer_type(decl)
            if isinstance(decl.get("properties"), dict):
                keys[decl["name"]] = frozenset(decl["properties"])
    return params, keys


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _run_params(spec: dict) -> dict:
    """A TaskRun's or PipelineRun's params: {name: type of the value given}."""
    return {
        p["name"]: value_type(p.get("value")) for p in _list(spec.get("params")) if isinstance(p, dict) and "name" in p
    }


def _names(items: Any) -> frozenset[str]:
    return frozenset(i["name"] for i in _list(items) if isinstance(i, dict) and isinstance(i.get("name"), str))


def _star_allowed(path: PathKey) -> bool:
    """Where Tekton accepts a whole-array (or whole-object) reference such as $(params.X[*])."""
    p = [x for x in path]
    if len(p) >= 2 and isinstance(p[-1], int) and p[-2] in ("args", "command", "values"):
        return True
    if len(p) >= 3 and p[-1] == "value" and isinstance(p[-2], int) and p[-3] == "params":
        return True
    if len(p) >= 4 and isinstance(p[-1], int) and p[-2] == "value" and p[-4] == "params":
        return True
    # Pipeline results: value: $(tasks.T.results.R[*]) or a list of such.
    return len(p) >= 3 and p[-1] == "value" and p[-3] == "results"


class Checker:
    """Collects problems of one document."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.problems: list[Problem] = []
        self._line: int | None = None  # line of the variable being checked, inside a multi-line string

    def add(self, path: PathKey, message: str, severity: str = ERROR, *, line: int | None = None) -> None:
        line = line or self._line or self.doc.line(path)
        self.problems.append(Problem(self.doc.file, line, self.doc.kind, self.doc.name, message, severity))

    # --- strings -------------------------------------------------------------------------------

    def scan(self, node: Any, path: PathKey, scope: Scope, skip: Callable[[PathKey], bool] = lambda p: False) -> None:
        for spath, text in _strings(node, path, skip):
            for ref in iter_refs(text):
                whole = ref.start == 0 and ref.end == len(text)
                self._line = self.doc.text_line(spath, text.count("\n", 0, ref.start))
                self.variable(ref, spath, scope, whole=whole, script=spath[-1] == "script")
            self._line = None

    def variable(self, ref: Ref, path: PathKey, scope: Scope, *, whole: bool, script: bool) -> None:
        where = dotted(path)
        expr = ref.expr
        if ref.star and script:
            self.add(path, f"$({expr}) in script: {STAR_HINT}")
        elif ref.star and not (whole and _star_allowed(path)):
            self.add(path, f"$({expr}) in {where}: {STAR_HINT}")
        if ref.root == "params":
            self._param(ref, path, scope, script=script, where=where)
        elif ref.root == "workspaces":
            self._workspace(ref, path, scope)
        elif ref.root == "results":
            self._result(ref, path, scope)
        elif ref.root in ("tasks", "finally"):
            self._task(ref, path, scope)
        elif ref.root == "step":
            segs = ref.segments
            if ref.malformed or ref.star or len(segs) != 3 or segs[0] != "results" or segs[2] != "path":
                self.add(path, f"$({expr}): malformed step reference (expected $(step.results.NAME.path))")
            elif scope.step_results is not None and segs[1] not in scope.step_results:
                self.add(path, f"$({expr}): step result {segs[1]!r} is not declared in this step's results")
        elif ref.root == "steps":
            # $(steps.step-NAME.exitCode.path) or $(steps.NAME.results.R)
            step = str(ref.segments[0]) if len(ref.segments) > 1 else ""
            if scope.steps and step not in scope.steps and step.removeprefix("step-") not in scope.steps:
                self.add(path, f"$({expr}): no step named {step!r} in this Task")
        # context.*, credentials.*: provided by Tekton.

    def _param(self, ref: Ref, path: PathKey, scope: Scope, *, script: bool, where: str) -> None:
        expr = ref.expr
        if ref.malformed or not isinstance(ref.segments[0], str):
            self.add(path, f"$({expr}): malformed param reference")
            return
        name, rest = ref.param_name(scope.params)
        if script:
            self.add(path, f"$({expr}) in script: pass the value through env or args, never paste it into a script")
        if name not in scope.params:
            declared = ", ".join(sorted(scope.params)) or "none"
            self.add(path, f"$({expr}): param {name!r} is not declared in the {scope.where} (declared: {declared})")
            return
        ptype = scope.params[name]
        if not rest and not ref.star:
            if ptype == "array":
                self.add(
                    path,
                    f"$({expr}): array param {name!r} used as a string in {where}; use $(params.{name}[*]) as a whole element of args/command",
                )
            elif ptype == "object":
                self.add(
                    path, f"$({expr}): object param {name!r} used as a string in {where}; use $(params.{name}.KEY)"
                )
        elif not rest:
            if ptype == "string":
                self.add(path, f"$({expr}): param {name!r} is a string; [*] applies to array and object params")
        elif len(rest) == 1 and isinstance(rest[0], int) and not ref.star:
            if ptype != "array":
                self.add(path, f"$({expr}): param {name!r} is a {ptype}; only array params can be indexed")
        elif len(rest) == 1 and ptype == "object" and not ref.star:
            keys = scope.param_keys.get(name)
            if keys is not None and rest[0] not in keys:
                self.add(
                    path, f"$({expr}): object param {name!r} has no key {rest[0]!r} (keys: {', '.join(sorted(keys))})"
                )
        else:
            self.add(path, f"$({expr}): malformed reference to {ptype} param {name!r}")

    def _workspace(self, ref: Ref, path: PathKey, scope: Scope) -> None:
        segs = ref.segments
        if ref.malformed or ref.star or len(segs) != 2 or segs[1] not in WORKSPACE_ATTRS:
            self.add(
                path,
                f"$({ref.expr}): malformed workspace reference (expected $(workspaces.NAME.path|bound|claim|volume))",
            )
            return
        if scope.workspaces is not None and segs[0] not in scope.workspaces:
            declared = ", ".join(sorted(scope.workspaces)) or "none"
            self.add(
                path,
                f"$({ref.expr}): workspace {segs[0]!r} is not declared in the {scope.where} (declared: {declared})",
            )

    def _result(self, ref: Ref, path: PathKey, scope: Scope) -> None:
        segs = ref.segments
        if ref.malformed or ref.star or len(segs) != 2 or segs[1] != "path" or not isinstance(segs[0], str):
            self.add(path, f"$({ref.expr}): malformed result reference (expected $(results.NAME.path))")
            return
        if scope.results is not None and segs[0] not in scope.results:
            declared = ", ".join(sorted(scope.results)) or "none"
            self.add(
                path, f"$({ref.expr}): result {segs[0]!r} is not declared in the {scope.where} (declared: {declared})"
            )

    def _task(self, ref: Ref, path: PathKey, scope: Scope) -> None:
        expr, segs = ref.expr, ref.segments
        if ref.root == "tasks" and segs == ("status",) and not ref.star:
            return
        if ref.malformed or len(segs) < 2 or segs[1] not in ("results", "status", "reason"):
            self.add(path, f"$({expr}): malformed task reference (expected $(tasks.TASK.results.RESULT))")
            return
        if scope.tasks is None:
            self.add(path, f"$({expr}): task results can only be used in a Pipeline")
            return
        table = scope.tasks if ref.root == "tasks" else (scope.finally_tasks or {})
        task = str(segs[0])
        if task not in table:
            self.add(path, f"$({expr}): no pipeline task named {task!r} in {ref.root}")
            return
        if segs[1] != "results":
            return
        if len(segs) < 3 or not isinstance(segs[2], str):
            self.add(path, f"$({expr}): malformed task result reference")
            return
        results = table[task]
        name = segs[2]
        if results is not None and name not in results:
            declared = ", ".join(sorted(results)) or "none"
            self.add(path, f"$({expr}): task {task!r} declares no result {name!r} (declared: {declared})")

    # --- images ------------------------------------------------------------------------------

    def image(self, value: Any, path: PathKey, defaults: dict[str, Any] | None = None) -> None:
        """``:latest`` is an error, no tag a warning; ``$(params.X)`` is judged by X's default."""
        if not isinstance(value, str):
            return
        ref = whole(value)
        if ref is not None and ref.root == "params" and defaults is not None:
            name = None if ref.malformed else ref.param_name(defaults)[0]
            if name in defaults and isinstance(defaults[name], str) and "$(" not in defaults[name]:
                self._judge_image(defaults[name], path, f" (default of param {name!r})")
            return
        if "$(" not in value:
            self._judge_image(value, path, "")

    def _judge_image(self, value: str, path: PathKey, origin: str) -> None:
        name = value.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else None
        if tag == "latest":
            self.add(path, f"image {value!r}{origin} is tagged :latest; pin a version tag or a digest")
        elif tag is None and "@" not in value:
            self.add(
                path, f"image {value!r}{origin} has no tag (means :latest); pin a version tag or a digest", WARNING
            )

    # --- specs -------------------------------------------------------------------------------

    def task_spec(
        self,
        spec: Any,
        path: PathKey,
        *,
        extra_params: dict[str, str] | None = None,
        extra_workspaces: frozenset[str] = frozenset(),
        outer: Scope | None = None,
        where: str = "Task",
    ) -> None:
        if not isinstance(spec, dict):
            return
        params, keys = declared_params(spec.get("params"))
        merged = dict(extra_params or {})
        merged.update(params)
        defaults = {
            d["name"]: d.get("default")
            for d in _list(spec.get("params"))
            if isinstance(d, dict) and isinstance(d.get("name"), str)
        }
        steps = _list(spec.get("steps"))
        scope = Scope(
            params=merged,
            param_keys=keys,
            workspaces=_names(spec.get("workspaces")) | extra_workspaces,
            results=_names(spec.get("results")),
            tasks=outer.tasks if outer else None,
            finally_tasks=outer.finally_tasks if outer else None,
            steps=frozenset(s["name"] for s in steps if isinstance(s, dict) and isinstance(s.get("name"), str)),
            where=where,
        )

        def skip_steps(p: PathKey) -> bool:
            return len(p) > len(path) + 1 and p[len(path)] == "steps"

        self.scan(spec, path, scope, skip=skip_steps)
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            step_scope = dataclasses.replace(scope, step_results=_names(step.get("results")))
            self.scan(step, path + ("steps", i), step_scope)
            self.image(step.get("image"), path + ("steps", i, "image"), defaults)
        for i, sidecar in enumerate(_list(spec.get("sidecars"))):
            if isinstance(sidecar, dict):
                self.image(sidecar.get("image"), path + ("sidecars", i, "image"), defaults)
        if isinstance(spec.get("stepTemplate"), dict):
            self.image(spec["stepTemplate"].get("image"), path + ("stepTemplate", "image"), defaults)

    def step_action(self, spec: Any, path: PathKey) -> None:
        if not isinstance(spec, dict):
            return
        params, keys = declared_params(spec.get("params"))
        scope = Scope(
            params=params,
            param_keys=keys,
            workspaces=None,
            results=frozenset(),
            step_results=_names(spec.get("results")),
            where="StepAction",
        )
        self.scan(spec, path, scope)
        defaults = {
            d["name"]: d.get("default")
            for d in _list(spec.get("params"))
            if isinstance(d, dict) and isinstance(d.get("name"), str)
        }
        self.image(spec.get("image"), path + ("image",), defaults)

    def pipeline_spec(
        self,
        spec: Any,
        path: PathKey,
        *,
        extra_params: dict[str, str] | None = None,
        extra_workspaces: frozenset[str] = frozenset(),
    ) -> None:
        if not isinstance(spec, dict):
            return
        params, keys = declared_params(spec.get("params"))
        merged = dict(extra_params or {})
        merged.update(params)
        workspaces = _names(spec.get("workspaces")) | extra_workspaces
        sections = {s: [t for t in _list(spec.get(s))] for s in ("tasks", "finally")}
        tables: dict[str, dict[str, frozenset[str] | None]] = {"tasks": {}, "finally": {}}
        for section, tasks in sections.items():
            for i, task in enumerate(tasks):
                if not isinstance(task, dict) or not isinstance(task.get("name"), str):
                    continue
                name = task["name"]
                if name in tables["tasks"] or name in tables["finally"]:
                    self.add(path + (section, i, "name"), f"pipeline task name {name!r} is used twice")
                inline = task.get("taskSpec")
                tables[section][name] = (
                    _names(inline.get("results")) if isinstance(inline, dict) and not inline.get("spec") else None
                )
        scope = Scope(
            params=merged,
            param_keys=keys,
            workspaces=workspaces,
            tasks=tables["tasks"],
            finally_tasks=tables["finally"],
            where="Pipeline",
        )

        def inline_path(p: PathKey) -> bool:
            return (
                len(p) >= len(path) + 3
                and p[len(path)] in ("tasks", "finally")
                and p[len(path) + 2] in ("taskSpec", "pipelineSpec")
            )

        # $(finally.T.results.R) is for the Pipeline's results only; tasks cannot see finally tasks.
        no_finally = dataclasses.replace(scope, finally_tasks={})
        for key, value in spec.items():
            self.scan({key: value}, path, scope if key in ("finally", "results") else no_finally, skip=inline_path)
        for section, tasks in sections.items():
            for i, task in enumerate(tasks):
                if isinstance(task, dict):
                    self._pipeline_task(task, path + (section, i), scope, section)

    def _pipeline_task(self, task: dict, path: PathKey, scope: Scope, section: str) -> None:
        name = task.get("name", "?")
        bound: set[str] = set()
        for j, ws in enumerate(_list(task.get("workspaces"))):
            if not isinstance(ws, dict):
                continue
            target = ws.get("workspace") or ws.get("name")
            bound.add(str(ws.get("name")))
            if scope.workspaces is not None and target not in scope.workspaces:
                declared = ", ".join(sorted(scope.workspaces)) or "none"
                self.add(
                    path + ("workspaces", j),
                    f"pipeline task {name!r} binds workspace {target!r}, which the Pipeline does not declare (declared: {declared})",
                )
        for j, after in enumerate(_list(task.get("runAfter"))):
            if section == "finally":
                self.add(path + ("runAfter", j), f"finally task {name!r} cannot use runAfter")
            elif scope.tasks is not None and after not in scope.tasks:
                self.add(
                    path + ("runAfter", j),
                    f"pipeline task {name!r} runs after {after!r}, which is not a task of this Pipeline",
                )
        inline = task.get("taskSpec")
        if not isinstance(inline, dict) or inline.get("spec"):
            return
        passed = {p.get("name") for p in _list(task.get("params")) if isinstance(p, dict)}
        matrix = task.get("matrix")
        if not isinstance(matrix, dict):
            matrix = {}
        passed |= {p.get("name") for p in _list(matrix.get("params")) if isinstance(p, dict)}
        for inc in _list(matrix.get("include")):
            if isinstance(inc, dict):
                passed |= {p.get("name") for p in _list(inc.get("params")) if isinstance(p, dict)}
        for j, decl in enumerate(_list(inline.get("params"))):
            if (
                isinstance(decl, dict)
                and isinstance(decl.get("name"), str)
                and "default" not in decl
                and decl["name"] not in passed | set(scope.params)
            ):
                self.add(
                    path + ("taskSpec", "params", j),
                    f"pipeline task {name!r} does not pass param {decl.get('name')!r}, which its taskSpec requires (no default)",
                )
        for j, decl in enumerate(_list(inline.get("workspaces"))):
            if isinstance(decl, dict) and not decl.get("optional") and decl.get("name") not in bound:
                self.add(
                    path + ("taskSpec", "workspaces", j),
                    f"pipeline task {name!r} does not bind workspace {decl.get('name')!r}, which its taskSpec requires",
                )
        self.task_spec(
            inline,
            path + ("taskSpec",),
            extra_params=scope.params,
            # Pipeline workspaces propagate into inline taskSpecs (tektoncd/pipeline
            # examples/v1/pipelineruns/propagating-workspaces-in-pipelines.yaml).
            extra_workspaces=frozenset(bound) | (scope.workspaces or frozenset()),
            outer=scope,
            where=f"taskSpec of pipeline task {name!r}",
        )


def _strings(node: Any, path: PathKey, skip: Callable[[PathKey], bool]) -> Iterator[tuple[PathKey, str]]:
    if skip(path):
        return
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue  # prose; Tekton does not substitute it
            yield from _strings(value, path + (key,), skip)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, path + (i,), skip)


def check_references(doc: Document) -> list[Problem]:
    """Reference and hygiene problems of a tekton.dev document (structure is checked elsewhere)."""
    data = doc.data
    checker = Checker(doc)
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        return []
    kind = doc.kind
    if kind == "Task":
        checker.task_spec(spec, ("spec",))
    elif kind == "StepAction":
        checker.step_action(spec, ("spec",))
    elif kind == "Pipeline":
        checker.pipeline_spec(spec, ("spec",))
    elif kind == "TaskRun" and isinstance(spec.get("taskSpec"), dict):
        params = _run_params(spec)
        checker.task_spec(
            spec["taskSpec"],
            ("spec", "taskSpec"),
            extra_params=params,
            extra_workspaces=_names(spec.get("workspaces")),
            where="taskSpec",
        )
    elif kind == "PipelineRun" and isinstance(spec.get("pipelineSpec"), dict):
        params = _run_params(spec)
        checker.pipeline_spec(
            spec["pipelineSpec"],
            ("spec", "pipelineSpec"),
            extra_params=params,
            extra_workspaces=_names(spec.get("workspaces")),
        )
    return checker.problems
