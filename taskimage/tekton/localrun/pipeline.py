"""Running a Pipeline (or a PipelineRun) on one machine, as Tekton's PipelineRun reconciler would.

What happens, in Tekton v1's terms (tektoncd/pipeline pkg/reconciler/pipelinerun):

- Everything that can be checked is checked before the first container starts: params (defaults,
  types, enum), workspaces, every ``taskRef`` resolved (:mod:`.resolve`), every ``$(…)`` reference
  of a pipeline task (a param that is declared, a result the referenced Task declares), the graph
  (:mod:`.dag`), ``when`` operators, matrix sizes.
- Each pipeline task becomes one TaskRun (one per combination with ``matrix``, :mod:`.matrix`), run
  by the TaskRun runner (:func:`~taskimage.tekton.localrun.runner.execute`); TaskRuns whose
  dependencies are done run in parallel, at most ``parallel`` at a time.
- A pipeline task is skipped (and its TaskRun never made) when the run is stopping because a task
  failed, when a parent was skipped for any reason but its own ``when`` expressions (Tekton's
  ``scope-when-expressions-to-task``), when a result it consumes is missing, or when its ``when``
  expressions are false. ``finally`` tasks run after every other task, even after a failure, and
  can read ``$(tasks.T.status)`` and ``$(tasks.status)``.
- Pipeline params are propagated into embedded ``taskSpec`` (names the taskSpec does not declare),
  and so are workspaces used there but not mapped; ``$(context.pipelineRun.*)``,
  ``$(context.pipeline.name)`` and ``$(context.pipelineTask.retries)`` are replaced everywhere.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import os
import re
import secrets
import shutil
import string
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import Interrupted, UsageError
from taskimage.tekton.localrun import dag, matrix, when
from taskimage.tekton.localrun import params as params_mod
from taskimage.tekton.localrun.plan import cli_workspaces, make_plan, parse_duration
from taskimage.tekton.localrun.report import PipelineRunReport, TaskReport, TaskRunReport
from taskimage.tekton.localrun.resolve import Resolved, Resolver
from taskimage.tekton.localrun.runner import Options, execute
from taskimage.tekton.localrun.substitute import ParamValue, Ref, find_refs
from taskimage.tekton.localrun.task import Loaded

PIPELINE_CONTEXT = ("pipelineRun.name", "pipelineRun.namespace", "pipelineRun.uid", "pipeline.name")
# podTemplate / TaskRun fields that mean nothing on one machine (reported, never silently dropped)
IGNORED_POD_FIELDS = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "schedulerName",
    "priorityClassName",
    "runtimeClassName",
    "imagePullSecrets",
    "hostAliases",
    "dnsPolicy",
    "dnsConfig",
    "topologySpreadConstraints",
    "enableServiceLinks",
    "automountServiceAccountToken",
)


class MissingResult(Exception):
    """A result a task consumes was not produced: the task is skipped, as Tekton does."""


@dataclasses.dataclass
class PTask:
    """One pipeline task, resolved."""

    name: str
    raw: dict
    resolved: Resolved
    is_finally: bool
    deps: tuple[str, ...] = ()
    retries: int = 0
    timeout: float | None = None
    ws_mapping: tuple[tuple[str, str, str], ...] = ()  # (task workspace, pipeline workspace, subPath)


@dataclasses.dataclass
class WsBinding:
    kind: str  # "dir" (a host directory shared by every TaskRun) or "emptyDir" (fresh per TaskRun)
    host: str = ""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    tls_verify: bool = True  # resolving refs (bundles)
    authfile: str | None = None
    keep: bool = False
    parallel: int = 0  # 0: the CPU count
    runtime: str = "runc"
    step_tls: bool | None = None  # step image pulls (None: registries.conf decides)
    runtime_defaults: str = "containerd"
    objects: Any = None  # kubeobjects.KubeObjects: ConfigMaps/Secrets/PVCs for the TaskRuns
    stepactions: Mapping[str, Mapping] | None = None
    fetch_stepaction: Callable[[str, str], Mapping] | None = None


@dataclasses.dataclass
class _State:
    status: str = "pending"  # pending running succeeded failed skipped
    reason: str = ""
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    taskruns: list[TaskRunReport] = dataclasses.field(default_factory=list)
    units: int = 0
    seconds: float = 0.0
    combos: list[dict[str, str]] = dataclasses.field(default_factory=list)
    timer: log.Timer | None = None


def _suffix(n: int = 5) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


# --- substitution at the pipeline level -----------------------------------------------------


@dataclasses.dataclass
class Scope:
    params: Mapping[str, ParamValue]
    param_types: Mapping[str, str]
    context: Mapping[str, str]
    workspaces_bound: Mapping[str, bool]
    results: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    statuses: Mapping[str, str] | None = None  # finally only
    finally_results: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    matrix_lengths: Mapping[str, int] = dataclasses.field(default_factory=dict)


def _resolve(ref: Ref, scope: Scope, where: str) -> ParamValue:
    segs = ref.segments
    if ref.root == "params":
        name = str(segs[0]) if segs else ""
        rest = list(segs[1:])
        if ref.text.startswith("$(params.") and name not in scope.param_types:
            for cut in range(len(segs), 1, -1):
                if ".".join(map(str, segs[:cut])) in scope.param_types:
                    name, rest = ".".join(map(str, segs[:cut])), list(segs)[cut:]
                    break
        if name not in scope.param_types:
            raise UsageError(f"{where}: {ref.text}: the pipeline declares no param {name!r}")
        value = scope.params[name]
        if not rest:
            return value
        if isinstance(value, list) and len(rest) == 1 and isinstance(rest[0], int):
            if rest[0] >= len(value):
                raise UsageError(f"{where}: {ref.text}: index out of bounds (length {len(value)})")
            return value[rest[0]]
        if isinstance(value, dict) and len(rest) == 1 and isinstance(rest[0], str):
            if rest[0] not in value:
                raise UsageError(f"{where}: {ref.text}: object param {name} has no key {rest[0]!r}")
            return value[rest[0]]
        raise UsageError(f"{where}: {ref.text}: not a valid reference to param {name}")
    if ref.root == "context":
        key = ".".join(map(str, segs))
        if key not in scope.context:
            raise UsageError(
                f"{where}: {ref.text}: unknown context variable (known: {', '.join(sorted(scope.context))})"
            )
        return scope.context[key]
    if ref.root == "workspaces":
        if len(segs) == 2 and segs[1] == "bound" and segs[0] in scope.workspaces_bound:
            return "true" if scope.workspaces_bound[str(segs[0])] else "false"
        raise UsageError(f"{where}: {ref.text}: a pipeline knows only $(workspaces.NAME.bound) of its workspaces")
    if ref.root in ("tasks", "finally"):
        if ref.root == "tasks" and segs == ("status",):
            if scope.statuses is None:
                raise UsageError(f"{where}: $(tasks.status) can only be used in finally tasks")
            return aggregate_status(scope.statuses)
        if ref.root == "tasks" and len(segs) == 2 and segs[1] in ("status", "reason"):
            if scope.statuses is None:
                raise UsageError(f"{where}: {ref.text} can only be used in finally tasks")
            if segs[0] not in scope.statuses:
                raise UsageError(f"{where}: {ref.text}: no task {segs[0]!r} in the pipeline")
            return scope.statuses[str(segs[0])]
        if ref.root == "tasks" and len(segs) in (2, 3) and segs[1] == "matrix" and segs[-1] == "length":
            return str(scope.matrix_lengths.get(str(segs[0]), 1))
        if len(segs) >= 3 and segs[1] == "results":
            table = scope.results if ref.root == "tasks" else scope.finally_results
            task, result = str(segs[0]), str(segs[2])
            produced = table.get(task, {})
            if result not in produced:
                raise MissingResult(f"{ref.root} {task} produced no result {result}")
            value = produced[result]
            tail = segs[3:]
            if not tail:
                return value
            if isinstance(value, list) and len(tail) == 1 and isinstance(tail[0], int) and tail[0] < len(value):
                return value[tail[0]]
            if isinstance(value, dict) and len(tail) == 1 and str(tail[0]) in value:
                return value[str(tail[0])]
            raise MissingResult(f"{ref.text}: no such element in result {result} of {task}")
        raise UsageError(f"{where}: {ref.text}: expected $(tasks.NAME.results.RESULT) or (in finally) .status")
    raise UsageError(f"{where}: {ref.text}: $({ref.root}...) is not available in a Pipeline")


def aggregate_status(statuses: Mapping[str, str]) -> str:
    """``$(tasks.status)``: Failed if any failed, Completed if some were skipped, else Succeeded."""
    values = set(statuses.values())
    if "Failed" in values:
        return "Failed"
    if "None" in values:
        return "Completed"
    return "Succeeded"


Keep = Callable[[Ref], bool]


def _as_string(value: ParamValue, ref: Ref, where: str) -> str:
    if isinstance(value, str):
        return value
    raise UsageError(
        f"{where}: {ref.text} is an {'array' if isinstance(value, list) else 'object'}: use it as a whole array element with [*]"
    )


PASSES = ("params", "context", "workspaces", "tasks", "finally")


def _task_level(ref: Ref) -> bool:
    """``$(workspaces.W.path)`` (and .claim, .volume) in a pipeline task's param value is left for
    the TaskRun, where W is the Task's workspace (Tekton passes it through literally)."""
    return ref.root == "workspaces" and not (len(ref.segments) == 2 and ref.segments[1] == "bound")


def subst_string(text: str, scope: Scope, where: str, keep: Keep | None = None) -> str:
    """One pass per root in the controller's order (params, then context, …): a param value
    holding ``$(context.pipelineRun.name)`` is replaced by the later pass, one holding
    ``$(params.Y)`` is not."""
    for root in PASSES:
        for ref in find_refs(text):
            if isinstance(ref, str):
                if keep is None:
                    raise UsageError(f"{where}: {ref}: not a well-formed reference")
                continue
            if ref.root != root or (keep is not None and not keep(ref)) or _task_level(ref):
                continue
            text = text.replace(ref.text, _as_string(_resolve(ref, scope, where), ref, where))
    return text


def _whole(text: str) -> Ref | None:
    refs = find_refs(text)
    if len(refs) == 1 and isinstance(refs[0], Ref) and refs[0].text == text.strip():
        return refs[0]
    return None


def subst_value(value: Any, scope: Scope, where: str, keep: Keep | None = None) -> Any:
    """A param value (or any YAML value) with references replaced; a list element that is a whole
    ``[*]`` reference to an array expands into several elements, as in Tekton."""
    if isinstance(value, str):
        ref = _whole(value)
        if ref is not None and (keep is None or keep(ref)) and not _task_level(ref):
            got = _resolve(ref, scope, where)
            if isinstance(got, (list, dict)) and (ref.star or ref.root in ("tasks", "finally")):
                return copy.deepcopy(got)
        return subst_string(value, scope, where, keep)
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if isinstance(item, str):
                ref = _whole(item)
                if ref is not None and (keep is None or keep(ref)) and not _task_level(ref):
                    got = _resolve(ref, scope, where)
                    if isinstance(got, list):
                        out.extend(got)
                        continue
            out.append(subst_value(item, scope, where, keep))
        return out
    if isinstance(value, dict):
        return {k: subst_value(v, scope, where, keep) for k, v in value.items()}
    return value


def _refs(value: Any) -> list[Ref | str]:
    if isinstance(value, str):
        return find_refs(value)
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    return []


# --- loading --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """A Pipeline to run and the PipelineRun around it (a synthetic one for a bare Pipeline)."""

    pipeline_name: str
    spec: Mapping[str, Any]
    run: Mapping[str, Any]
    origin: str


def propagate_from_run(pipeline_spec: Mapping, run_spec: Mapping) -> dict:
    """An embedded pipelineSpec gets the PipelineRun's params and workspaces it does not declare
    (Tekton's propagation for inlined specs)."""
    out = copy.deepcopy(dict(pipeline_spec))
    declared = {str(p.get("name")) for p in out.get("params") or []}
    for p in run_spec.get("params") or []:
        if str(p.get("name")) not in declared:
            out.setdefault("params", []).append({"name": p.get("name"), "type": params_mod.value_type(p.get("value"))})
    declared_ws = {str(w.get("name")) for w in out.get("workspaces") or []}
    for w in run_spec.get("workspaces") or []:
        if str(w.get("name")) not in declared_ws:
            out.setdefault("workspaces", []).append({"name": w.get("name")})
    return out


def load_source(docs: Sequence[Mapping], origin: str, resolver: Resolver, name: str | None = None) -> Source:
    runs = [d for d in docs if d.get("kind") == "PipelineRun"]
    if runs:
        if len(runs) > 1:
            raise UsageError(f"{origin}: holds {len(runs)} PipelineRuns; one at a time")
        run = runs[0]
        spec = run.get("spec") or {}
        if spec.get("pipelineSpec"):
            meta = run.get("metadata") or {}
            pname = str(meta.get("name") or str(meta.get("generateName") or "pipeline").rstrip("-"))
            return Source(pname, propagate_from_run(spec["pipelineSpec"], spec), run, origin)
        if not spec.get("pipelineRef"):
            raise UsageError(f"{origin}: the PipelineRun has neither pipelineSpec nor pipelineRef")
        got = resolver.pipeline(spec["pipelineRef"], f"{origin}: pipelineRef")
        return Source(got.name, got.spec, run, got.origin)
    pipelines = [d for d in docs if d.get("kind") == "Pipeline"]
    if name:
        pipelines = [p for p in pipelines if (p.get("metadata") or {}).get("name") == name]
    if len(pipelines) != 1:
        raise UsageError(
            f"{origin}: expected one Pipeline{' named ' + name if name else ''} or PipelineRun, found {len(pipelines)}"
        )
    p = pipelines[0]
    pname = str((p.get("metadata") or {}).get("name"))
    return Source(pname, p.get("spec") or {}, {"metadata": {"generateName": f"{pname}-run-"}, "spec": {}}, origin)


# --- the engine -----------------------------------------------------------------------------


class PipelineRunner:
    def __init__(
        self,
        source: Source,
        resolver: Resolver,
        options: RunOptions,
        *,
        cli_params: Sequence[str] = (),
        cli_workspaces: Sequence[str] = (),
    ):
        self.source = source
        self.resolver = resolver
        self.options = options
        self.warnings: list[str] = []
        self.pname = source.pipeline_name
        spec = source.spec
        run_spec = source.run.get("spec") or {}
        meta = source.run.get("metadata") or {}
        self.name = str(meta.get("name") or f"{meta.get('generateName') or self.pname + '-run-'}{_suffix()}")
        self.namespace = str(meta.get("namespace") or "default")
        self.uid = str(meta.get("uid") or uuid.uuid4())
        where = f"pipeline {self.pname}"
        for key in ("pipelineRef", "pipelineSpec"):
            for t in list(spec.get("tasks") or []) + list(spec.get("finally") or []):
                if t.get(key):
                    raise UsageError(f"{where}: task {t.get('name')}: {key} (pipelines in pipelines): not supported")
        # params
        pspecs = params_mod.parse_specs(spec.get("params"), f"pipeline {self.pname}")
        given: dict[str, Any] = {str(p.get("name")): p.get("value") for p in run_spec.get("params") or []}
        given.update(_parse_cli_params(cli_params, pspecs, self.pname))
        self.params = params_mod.resolve(pspecs, given, f"pipeline {self.pname}", warnings=self.warnings)
        self.param_types = {s.name: s.type for s in pspecs}
        # workspaces
        self.run_dir = tempfile.mkdtemp(prefix=f"taskimage-pipelinerun-{self.name}-")
        os.chmod(self.run_dir, 0o755)
        try:
            self.workspaces = self._workspaces(spec, run_spec, cli_workspaces)
            self.tasks = self._tasks(spec)
            self._run_settings(run_spec)
            self._preflight()
        except BaseException:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    # --- checks before anything runs ------------------------------------------------------

    def _workspaces(self, spec: Mapping, run_spec: Mapping, cli: Sequence[str]) -> dict[str, WsBinding | None]:
        declared = {str(w.get("name")): w for w in spec.get("workspaces") or []}
        given = cli_workspaces(cli, declared, f"pipeline {self.pname}")
        bindings = {str(b.get("name")): b for b in run_spec.get("workspaces") or []}
        out: dict[str, WsBinding | None] = {}
        missing = []
        for name, decl in declared.items():
            b = bindings.get(name)
            if name in given:
                host = given[name]
                if b and b.get("subPath"):
                    host = os.path.join(host, str(b["subPath"]))
                    os.makedirs(host, exist_ok=True)
                out[name] = WsBinding("dir", host)
            elif b and "emptyDir" in b:
                out[name] = WsBinding("emptyDir")
            elif b and "volumeClaimTemplate" in b:
                host = os.path.join(self.run_dir, "workspaces", name)
                os.makedirs(host, mode=0o777)
                os.chmod(host, 0o777)  # a fresh volume, writable by steps running as any user
                if b.get("subPath"):
                    host = os.path.join(host, str(b["subPath"]))
                    os.makedirs(host, exist_ok=True)
                out[name] = WsBinding("dir", host)
            elif b and any(k in b for k in ("configMap", "secret", "projected", "persistentVolumeClaim")):
                host = self._from_objects(name, b)
                if b.get("subPath"):
                    host = os.path.join(host, str(b["subPath"]))
                    os.makedirs(host, exist_ok=True)
                out[name] = WsBinding("dir", host)
            elif b:
                kind = next((k for k in b if k not in ("name", "subPath")), "binding")
                detail = (b.get(kind) or {}) if isinstance(b.get(kind), dict) else {}
                what = detail.get("secretName") or detail.get("claimName") or detail.get("name") or ""
                raise UsageError(
                    f"workspace {name} is bound to {kind} {what}".rstrip()
                    + f" in the PipelineRun: give a directory with -w {name}=DIR"
                )
            elif decl.get("optional"):
                out[name] = None
            else:
                missing.append(name)
        if missing:
            raise UsageError(
                f"pipeline {self.pname}: missing workspaces: {', '.join(missing)} (give them with -w NAME=DIR)"
            )
        return out

    def _object(self, kind: str, name: str, ws: str) -> Mapping:
        for o in self.resolver.documents:
            if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name:
                return o
        raise UsageError(
            f"workspace {ws} is bound to {kind} {name}, which is not in the given files: "
            f"give a directory with -w {ws}=DIR (or the {kind} with --task FILE)"
        )

    def _from_objects(self, ws: str, binding: Mapping) -> str:
        """A directory holding what Kubernetes would mount for a configMap, secret, projected or
        persistentVolumeClaim binding, from the ConfigMap/Secret/PVC objects in the given files
        (Tekton's CI applies them from the same file). One directory per claim, shared."""
        import base64

        if "persistentVolumeClaim" in binding:
            claim = str((binding["persistentVolumeClaim"] or {}).get("claimName"))
            self._object("PersistentVolumeClaim", claim, ws)
            host = os.path.join(self.run_dir, "claims", claim)
            os.makedirs(host, mode=0o777, exist_ok=True)
            os.chmod(host, 0o777)
            return host
        sources = (binding.get("projected") or {}).get("sources") or [] if "projected" in binding else [binding]
        host = os.path.join(self.run_dir, "volumes", ws)
        os.makedirs(host, exist_ok=True)
        for src in sources:
            if "configMap" in src:
                ref = src["configMap"] or {}
                obj = self._object("ConfigMap", str(ref.get("name")), ws)
                data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
                data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            elif "secret" in src:
                ref = src["secret"] or {}
                obj = self._object("Secret", str(ref.get("secretName") or ref.get("name")), ws)
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
                data.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
                for value in data.values():
                    log.add_secret(value.decode("utf-8", "replace"))
            else:
                kind = next((k for k in src if k != "name"), "?")
                raise UsageError(f"workspace {ws}: a {kind} volume source: not supported by taskimage run")
            items = ref.get("items")
            chosen = {str(i["key"]): str(i["path"]) for i in items} if items else {k: k for k in data}
            for key, path in chosen.items():
                if key not in data:
                    raise UsageError(
                        f"workspace {ws}: key {key} is not in the {'ConfigMap' if 'configMap' in src else 'Secret'}"
                    )
                target = os.path.join(host, path)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write(data[key])
        return host

    def _tasks(self, spec: Mapping) -> dict[str, PTask]:
        tasks: dict[str, PTask] = {}
        raw_all = [(t, False) for t in spec.get("tasks") or []] + [(t, True) for t in spec.get("finally") or []]
        if not spec.get("tasks"):
            raise UsageError(f"pipeline {self.pname} has no tasks")
        for raw, is_finally in raw_all:
            name = str(raw.get("name") or "")
            if not name:
                raise UsageError(f"pipeline {self.pname}: a task without a name")
            if name in tasks:
                raise UsageError(f"pipeline {self.pname}: task name {name} is used twice")
            where = f"pipeline {self.pname} task {name}"
            if raw.get("taskSpec"):
                ts = raw["taskSpec"]
                if ts.get("apiVersion") or ts.get("kind"):
                    raise UsageError(
                        f"{where}: embedded custom task {ts.get('apiVersion')}/{ts.get('kind')}: not supported"
                    )
                resolved = Resolved("Task", name, ts, "embedded")
            elif raw.get("taskRef"):
                resolved = self.resolver.task(raw["taskRef"], where, name)
            else:
                raise UsageError(f"{where}: has neither taskRef nor taskSpec")
            if not resolved.spec.get("steps"):
                raise UsageError(f"{where}: task {resolved.name} has no steps")
            if is_finally and raw.get("runAfter"):
                raise UsageError(f"{where}: finally tasks cannot use runAfter")
            retries = int(raw.get("retries") or 0)
            timeout = parse_duration(str(raw["timeout"]), f"{where} timeout") if raw.get("timeout") else None
            mapping = []
            task_ws = {str(w.get("name")) for w in resolved.spec.get("workspaces") or []}
            for w in raw.get("workspaces") or []:
                wname, pw = str(w.get("name")), str(w.get("workspace") or w.get("name"))
                if wname not in task_ws:
                    raise UsageError(
                        f"{where}: workspace {wname} is not declared by task {resolved.name} (declared: {', '.join(sorted(task_ws)) or 'none'})"
                    )
                if pw not in self.workspaces:
                    raise UsageError(f"{where}: workspace {wname} maps to {pw}, which the pipeline does not declare")
                mapping.append((wname, pw, str(w.get("subPath") or "")))
            tasks[name] = PTask(name, dict(raw), resolved, is_finally, (), retries, timeout, tuple(mapping))
        self._propagate(tasks)
        # dependencies: runAfter and result references
        deps: dict[str, list[str]] = {}
        for t in tasks.values():
            where = f"pipeline {self.pname} task {t.name}"
            before = [str(x) for x in t.raw.get("runAfter") or []]
            for r in _refs([t.raw.get("params"), t.raw.get("when"), t.raw.get("matrix"), t.raw.get("displayName")]):
                if isinstance(r, str):
                    raise UsageError(f"{where}: {r}: not a well-formed reference")
                if r.root == "finally":
                    raise UsageError(f"{where}: {r.text}: finally results can only be used in pipeline results")
                if r.root != "tasks" or r.segments == ("status",):
                    continue
                other = str(r.segments[0])
                if other not in tasks:
                    raise UsageError(f"{where}: {r.text}: no task {other!r} in the pipeline")
                if tasks[other].is_finally:
                    raise UsageError(f"{where}: {r.text}: cannot use a finally task's results")
                if len(r.segments) >= 2 and r.segments[1] in ("status", "reason") and not t.is_finally:
                    raise UsageError(f"{where}: {r.text}: task status can only be used in finally tasks")
                if len(r.segments) >= 3 and r.segments[1] == "results":
                    declared = {str(x.get("name")) for x in tasks[other].resolved.spec.get("results") or []}
                    if str(r.segments[2]) not in declared:
                        raise UsageError(
                            f"{where}: {r.text}: task {tasks[other].resolved.name} declares no result {r.segments[2]} "
                            f"(declared: {', '.join(sorted(declared)) or 'none'})"
                        )
                    if not t.is_finally:
                        before.append(other)
            if not t.is_finally:
                deps[t.name] = before
        graph = dag.build(deps, self.pname)
        for n, d in graph.items():
            tasks[n].deps = d
        return tasks

    def _propagate(self, tasks: Mapping[str, PTask]) -> None:
        """Pipeline params and workspaces into embedded taskSpecs (Tekton's propagation)."""
        for t in tasks.values():
            if t.resolved.origin != "embedded":
                continue
            spec = copy.deepcopy(dict(t.resolved.spec))
            declared_ws = {str(w.get("name")) for w in spec.get("workspaces") or []}
            mapped = {m[0] for m in t.ws_mapping}
            used = set(re.findall(r"\$\(workspaces\.([^.)\s]+)\.", repr(spec)))
            extra = []
            for w in sorted(used - declared_ws - mapped):
                if w in self.workspaces:
                    spec.setdefault("workspaces", []).append({"name": w})
                    extra.append((w, w, ""))
            t.ws_mapping = t.ws_mapping + tuple(extra)
            t.resolved = dataclasses.replace(t.resolved, spec=spec)

    def _run_settings(self, run_spec: Mapping) -> None:
        template = run_spec.get("taskRunTemplate") or {}
        self.pod_template: dict = dict(template.get("podTemplate") or {})
        if template.get("serviceAccountName"):
            self.warnings.append(
                f"taskRunTemplate.serviceAccountName {template['serviceAccountName']}: ignored (no cluster credentials here)"
            )
        self.task_pod_templates: dict[str, dict] = {}
        for trs in run_spec.get("taskRunSpecs") or []:
            pt = str(trs.get("pipelineTaskName"))
            if pt not in self.tasks:
                raise UsageError(f"taskRunSpecs: pipelineTaskName {pt} is not a task of pipeline {self.pname}")
            for key in trs:
                if key in ("pipelineTaskName", "podTemplate"):
                    continue
                self.warnings.append(f"taskRunSpecs[{pt}].{key}: ignored by taskimage run")
            if trs.get("podTemplate"):
                self.task_pod_templates[pt] = {**self.pod_template, **trs["podTemplate"]}
        for where, tmpl in [("taskRunTemplate.podTemplate", self.pod_template)] + [
            (f"taskRunSpecs[{k}].podTemplate", v) for k, v in self.task_pod_templates.items()
        ]:
            for key in tmpl:
                if key in IGNORED_POD_FIELDS or key not in ("securityContext", "volumes"):  # the TaskRun runner's
                    self.warnings.append(f"{where}.{key}: ignored (means nothing on one machine)")
            for key in tmpl.get("securityContext") or {}:
                if key not in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile"):
                    self.warnings.append(f"{where}.securityContext.{key}: ignored by taskimage run")
        timeouts = run_spec.get("timeouts") or {}
        if run_spec.get("timeout"):
            timeouts = {"pipeline": run_spec["timeout"]}
        self.timeouts = {k: parse_duration(str(v), f"timeouts.{k}") for k, v in timeouts.items() if v}
        for k in self.timeouts:
            if k not in ("pipeline", "tasks", "finally"):
                raise UsageError(f"timeouts.{k}: accepted: pipeline, tasks, finally")
        if "pipeline" in self.timeouts:
            self.warnings.append(
                "timeouts.pipeline is not enforced by taskimage run (tasks, finally and step timeouts are)"
            )

    def _scope(
        self, task: PTask | None, results: Mapping[str, Mapping[str, Any]], statuses=None, lengths=None
    ) -> Scope:
        context = {
            "pipelineRun.name": self.name,
            "pipelineRun.namespace": self.namespace,
            "pipelineRun.uid": self.uid,
            "pipeline.name": self.pname,
        }
        if task is not None:
            context["pipelineTask.retries"] = str(task.retries)
        return Scope(
            self.params,
            self.param_types,
            context,
            {k: v is not None for k, v in self.workspaces.items()},
            results,
            statuses,
            {},
            lengths or {},
        )

    def _preflight(self) -> None:
        """Substitute what can be known now, so bad references and bad when operators fail early,
        and plan every TaskRun whose params do not depend on results (missing params, types)."""
        dummy_status = {n: "Succeeded" for n, t in self.tasks.items() if not t.is_finally}
        for t in self.tasks.values():
            where = f"pipeline {self.pname} task {t.name}"
            for w in t.raw.get("when") or []:
                when.check(w, where)
            uses_results = any(
                isinstance(r, Ref) and r.root == "tasks" and len(r.segments) >= 2 and r.segments[1] == "results"
                for r in _refs([t.raw.get("params"), t.raw.get("when"), t.raw.get("matrix")])
            )
            if uses_results:
                continue
            scope = self._scope(t, {}, dummy_status if t.is_finally else None)
            combos = self._combos(t, scope)
            for i, combo in enumerate(combos or [{}]):
                loaded, cli_ws = self._taskrun(t, scope, combo, i if combos else None, f"{self.name}-{t.name}")
                self._plan(loaded, cli_ws)

    # --- making TaskRuns ----------------------------------------------------------------------

    def _combos(self, t: PTask, scope: Scope) -> list[dict[str, str]]:
        m = t.raw.get("matrix")
        if not m:
            return []
        where = f"pipeline {self.pname} task {t.name} matrix"
        params = []
        for p in m.get("params") or []:
            value = subst_value(p.get("value"), scope, where)
            if not isinstance(value, list):
                raise UsageError(f"{where}: param {p.get('name')} must be an array")
            params.append((str(p.get("name")), [str(x) for x in value]))
        include = []
        for inc in m.get("include") or []:
            entry = {}
            for p in inc.get("params") or []:
                v = subst_value(p.get("value"), scope, where)
                if not isinstance(v, str):
                    raise UsageError(f"{where}: include param {p.get('name')} must be a string")
                entry[str(p.get("name"))] = v
            include.append(entry)
        return matrix.fan_out(params, include, where)

    def _taskrun(
        self, t: PTask, scope: Scope, combo: Mapping[str, str], index: int | None, trname: str
    ) -> tuple[Loaded, list[str]]:
        where = f"pipeline {self.pname} task {t.name}"
        spec = copy.deepcopy(dict(t.resolved.spec))
        declared = {str(p.get("name")) for p in spec.get("params") or []}

        def propagated(ref: Ref) -> bool:  # what the pipeline replaces inside an embedded taskSpec
            if ref.root == "context":
                return ".".join(map(str, ref.segments)) in (*PIPELINE_CONTEXT, "pipelineTask.retries")
            if ref.root == "params":
                return (
                    bool(ref.segments)
                    and str(ref.segments[0]) not in declared
                    and str(ref.segments[0]) in scope.param_types
                )
            return False

        if t.resolved.origin == "embedded":
            spec = subst_value(spec, scope, where, keep=propagated)
        params = []
        for p in t.raw.get("params") or []:
            params.append({"name": str(p.get("name")), "value": subst_value(p.get("value"), scope, where)})
        params += [{"name": k, "value": v} for k, v in combo.items()]
        cli_ws: list[str] = []
        bindings: list[dict] = []
        for tw, pw, sub_path in t.ws_mapping:
            b = self.workspaces.get(pw)
            if b is None:
                continue  # optional and unbound: the task's workspace stays unbound
            if b.kind == "emptyDir":
                bindings.append({"name": tw, "emptyDir": {}})
            else:
                sub_path = subst_string(sub_path, scope, where)  # subPath may use params and results
                host = os.path.join(b.host, sub_path) if sub_path else b.host
                os.makedirs(host, exist_ok=True)
                cli_ws.append(f"{tw}={host}")
        pod = self.task_pod_templates.get(t.name, self.pod_template)
        taskrun = {
            "apiVersion": "tekton.dev/v1",
            "kind": "TaskRun",
            "metadata": {
                "name": trname,
                "namespace": self.namespace,
                "labels": {"tekton.dev/pipelineRun": self.name, "tekton.dev/pipelineTask": t.name},
            },
            "spec": {"params": params, "workspaces": bindings, "podTemplate": pod},
        }
        return Loaded(t.resolved.name, spec, taskrun, f"{self.source.origin} task {t.name}"), cli_ws

    def plan(self) -> dict:
        """What would run (for --dry-run): every pipeline task, its Task and where it came from."""
        rows, tasks = [], []
        for t in self.tasks.values():
            after = "(finally)" if t.is_finally else ", ".join(t.deps) or "-"
            rows.append((t.name, t.resolved.name, after, t.resolved.origin))
            tasks.append(
                {
                    "name": t.name,
                    "task": t.resolved.name,
                    "from": t.resolved.origin,
                    "runAfter": list(t.deps),
                    "finally": t.is_finally,
                    "matrix": bool(t.raw.get("matrix")),
                }
            )
        return {
            "rows": rows,
            "json": {"pipelineRun": self.name, "pipeline": self.pname, "params": dict(self.params), "tasks": tasks},
        }

    def discard(self) -> None:
        """Forget a run that will not start (another one in the same file was invalid)."""
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- running --------------------------------------------------------------------------------

    def run(self) -> PipelineRunReport:
        for w in self.warnings:
            log.warn(w)
        timer = log.Timer()
        states = {n: _State() for n in self.tasks}
        workers = self.options.parallel or os.cpu_count() or 1
        interrupted: BaseException | None = None
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="taskrun") as pool:
                try:
                    self._phase(pool, states, finally_phase=False)
                    self._phase(pool, states, finally_phase=True)
                except (Interrupted, KeyboardInterrupt) as exc:
                    interrupted = exc
                    # the podman clients the workers wait on: SIGTERM (forwarded to the step),
                    # then SIGKILL; the containers they leave are removed below
                    tools.stop_all(grace=5.0)
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if interrupted is not None:
                self._remove_leftovers()
            if not self.options.keep:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        if interrupted is not None:
            raise interrupted
        return self._report(states, timer.seconds)

    def _phase(self, pool, states: dict[str, _State], *, finally_phase: bool) -> None:
        names = [n for n, t in self.tasks.items() if t.is_finally == finally_phase]
        deps = {n: self.tasks[n].deps for n in names}
        futures: dict[concurrent.futures.Future, tuple[str, int]] = {}
        stopping = any(s.status == "failed" and not self._continues(n) for n, s in states.items())
        while True:
            done = {n for n in names if states[n].status in ("succeeded", "failed", "skipped")}
            started = {n for n in names if states[n].status != "pending"}
            for n in dag.ready(deps, done, started):
                if finally_phase:
                    self._start_finally(pool, n, states, futures)
                else:
                    self._start(pool, n, states, futures, stopping)
            if not futures:
                if all(states[n].status != "pending" for n in names):
                    return
                if not dag.ready(
                    deps,
                    {n for n in names if states[n].status in ("succeeded", "failed", "skipped")},
                    {n for n in names if states[n].status != "pending"},
                ):
                    return  # nothing can start (cannot happen with a valid graph)
                continue
            finished, _ = concurrent.futures.wait(list(futures), return_when=concurrent.futures.FIRST_COMPLETED)
            for f in finished:
                name, index = futures.pop(f)
                report = f.result()  # an Interrupted in a worker surfaces here
                st = states[name]
                st.taskruns.append(report)
                st.units -= 1
                if st.units == 0:
                    self._finish(name, st)
                    if st.status == "failed" and not finally_phase and not self._continues(name):
                        stopping = True

    def _continues(self, name: str) -> bool:
        return str(self.tasks[name].raw.get("onError") or "stopAndFail") == "continue"

    def _skip(self, name: str, st: _State, reason: str) -> None:
        st.status, st.reason = "skipped", reason
        log.info(f"task {name} skipped: {reason}")

    def _start(self, pool, name: str, states: dict[str, _State], futures, stopping: bool) -> None:
        t, st = self.tasks[name], states[name]
        if stopping:
            return self._skip(name, st, "PipelineRunStopping: a task failed")
        for d in t.deps:
            if states[d].status == "skipped" and not states[d].reason.startswith("WhenExpressionsSkip"):
                return self._skip(name, st, f"ParentTasksSkip: {d} was skipped")
        results = {n: s.results for n, s in states.items() if s.status in ("succeeded", "failed")}
        lengths = {n: len(s.combos) for n, s in states.items() if s.combos}
        self._launch(pool, t, st, self._scope(t, results, None, lengths), futures)

    def _start_finally(self, pool, name: str, states: dict[str, _State], futures) -> None:
        t, st = self.tasks[name], states[name]
        statuses = {
            n: {"succeeded": "Succeeded", "failed": "Failed"}.get(s.status, "None")
            for n, s in states.items()
            if not self.tasks[n].is_finally
        }
        results = {n: s.results for n, s in states.items() if s.status in ("succeeded", "failed")}
        self._launch(pool, t, st, self._scope(t, results, statuses), futures)

    def _launch(self, pool, t: PTask, st: _State, scope: Scope, futures) -> None:
        where = f"pipeline {self.pname} task {t.name}"
        try:
            for w in t.raw.get("when") or []:
                if "cel" in w:
                    expr = subst_string(str(w["cel"]), scope, where)
                    ok = when.cel(expr, where)
                    shown = f"cel {expr!r}"
                else:
                    value = subst_string(str(w.get("input", "")), scope, where)
                    values = [str(x) for x in subst_value(list(w.get("values") or []), scope, where)]
                    ok = when.evaluate(value, str(w.get("operator")), values)
                    shown = f"{value!r} {w.get('operator')} {values}"
                if not ok:
                    return self._skip(t.name, st, f"WhenExpressionsSkip: {shown} is false")
            combos = self._combos(t, scope)
            units = []
            for i, combo in enumerate(combos or [{}]):
                trname = f"{self.name}-{t.name}" + (f"-{i}" if combos else "")
                units.append((i, combo, *self._taskrun(t, scope, combo, i if combos else None, trname)))
        except MissingResult as exc:
            return self._skip(t.name, st, f"ResultsMissing: {exc}")
        st.status, st.combos, st.units, st.timer = "running", list(combos), len(units), log.Timer()
        for i, combo, loaded, cli_ws in units:
            label = t.name + (f"[{i}]" if combos else "")
            futures[tools.submit(pool, self._run_one, t, label, combo, loaded, cli_ws)] = (t.name, i)

    def _plan(self, loaded: Loaded, cli_ws: list[str]):
        o = self.options
        return make_plan(
            loaded,
            cli_workspaces=cli_ws,
            objects=o.objects,
            stepactions=o.stepactions,
            fetch_stepaction=o.fetch_stepaction,
        )

    def _run_one(
        self, t: PTask, label: str, combo: Mapping[str, str], loaded: Loaded, cli_ws: list[str]
    ) -> TaskRunReport:
        attempts = t.retries + 1
        for attempt in range(attempts):
            if attempt:  # Tekton keeps each failed attempt in status.retriesStatus
                taskrun = dict(loaded.taskrun or {})
                taskrun["status"] = {"retriesStatus": [{"attempt": i} for i in range(attempt)]}
                loaded = dataclasses.replace(loaded, taskrun=taskrun)
            plan = self._plan(loaded, cli_ws)
            shown = ", ".join(f"{k}={v}" for k, v in combo.items())
            retry = f", retry {attempt}/{t.retries}" if attempt else ""
            log.phase(
                f"taskrun {plan.taskrun_name} (pipeline task {label}: task {plan.task_name}{', ' + shown if shown else ''}{retry})"
            )
            timeout = t.timeout or self.timeouts.get("finally" if t.is_finally else "tasks")
            expired, done = threading.Event(), threading.Event()
            if timeout:
                threading.Thread(
                    target=self._watch, args=(plan.taskrun_name, timeout, expired, done), daemon=True
                ).start()
            try:
                report = execute(
                    plan,
                    Options(
                        tls_verify=self.options.step_tls,
                        authfile=self.options.authfile,
                        keep=self.options.keep,
                        runtime=self.options.runtime,
                        runtime_defaults=self.options.runtime_defaults,
                        log_prefix=f"{label} : ",
                    ),
                )
            finally:
                done.set()
            failed_step = next((s.name for s in report.steps if s.exit_code not in (0, None)), "")
            if expired.is_set():
                failed_step = f"{failed_step or '?'} (timed out after {timeout:g} s)"
            out = TaskRunReport(
                name=report.taskrun,
                pipeline_task=t.name,
                label=label,
                task=report.task,
                succeeded=report.succeeded,
                exit_code=report.exit_code,
                failed_step=failed_step,
                seconds=sum(s.seconds for s in report.steps),
                results=dict(report.results.values),
                params=dict(combo),
                attempts=attempt + 1,
                problems=[p.message for p in report.results.problems if p.fails],
            )
            if out.succeeded or attempt == attempts - 1:
                return out
            log.warn(
                f"taskrun {report.taskrun} failed (step {failed_step or '?'}): retrying ({attempt + 1}/{t.retries})"
            )
        raise AssertionError("unreachable")

    def _watch(self, taskrun: str, timeout: float, expired: threading.Event, done: threading.Event) -> None:
        """A TaskRun's timeout: once it passes, its step containers are removed (again each second,
        for a step that was still starting) until the TaskRun returns, so the step fails."""
        if done.wait(timeout):
            return
        expired.set()
        log.error(f"taskrun {taskrun} timed out after {timeout:g} s: stopping its step")
        while not done.is_set():
            names = tools.run(
                ["podman", "ps", "-a", "--filter", f"name=^{taskrun}-step-", "--format", "{{.Names}}"],
                check=False,
                quiet=True,
                stream=False,
            ).stdout.split()
            if names:
                tools.run(["podman", "rm", "--force", "--time", "1", *names], check=False, quiet=True, stream=False)
            done.wait(1.0)

    def _finish(self, name: str, st: _State) -> None:
        t = self.tasks[name]
        st.seconds = st.timer.seconds if st.timer else 0.0
        runs = st.taskruns
        ok = all(r.succeeded for r in runs)
        st.status = "succeeded" if ok else "failed"
        if st.combos:
            order = sorted(runs, key=lambda r: int(r.label.rsplit("[", 1)[1].rstrip("]")))
            declared = [x for x in t.resolved.spec.get("results") or []]
            for r in declared:
                rname = str(r.get("name"))
                if str(r.get("type") or "string") != "string":
                    continue  # Tekton aggregates only string results of matrixed tasks
                values = [run.results.get(rname) for run in order]
                if all(isinstance(v, str) for v in values):
                    st.results[rname] = values
        else:
            st.results = dict(runs[0].results) if runs else {}
        if st.status == "failed":
            bad = next(r for r in runs if not r.succeeded)
            step = f" step {bad.failed_step}" if bad.failed_step else ""
            st.reason = f"taskrun {bad.name}{step} failed (exit code {bad.exit_code})"
            log.error(f"task {name} failed: {st.reason}")

    # --- after the run --------------------------------------------------------------------------

    def _report(self, states: Mapping[str, _State], seconds: float) -> PipelineRunReport:
        finally_results = {n: s.results for n, s in states.items() if self.tasks[n].is_finally}
        results = {n: s.results for n, s in states.items() if not self.tasks[n].is_finally}
        scope = self._scope(None, results)
        scope.finally_results = finally_results
        out_results: dict[str, Any] = {}
        for r in self.source.spec.get("results") or []:
            rname = str(r.get("name"))
            try:
                out_results[rname] = subst_value(r.get("value"), scope, f"pipeline {self.pname} result {rname}")
            except MissingResult as exc:
                log.warn(f"pipeline result {rname} is left out: {exc}")
        tasks = [
            TaskReport(
                n,
                s.status,
                s.reason,
                s.seconds,
                tuple(sorted(s.taskruns, key=lambda r: r.label)),
                s.results,
                self.tasks[n].is_finally,
            )
            for n, s in states.items()
        ]
        failed = [t for t in tasks if t.status == "failed" and not self._continues(t.name)]
        return PipelineRunReport(
            name=self.name,
            pipeline=self.pname,
            succeeded=not failed,
            tasks=tuple(tasks),
            results=out_results,
            seconds=seconds,
            run_dir=self.run_dir if self.options.keep else None,
        )

    def _remove_leftovers(self) -> None:
        """After an interrupt: no step container of this run may outlive it (clean-up commands
        run while the stop is in force; nothing else may start)."""
        names = tools.run(
            ["podman", "ps", "-a", "--filter", f"name=^{self.name}-", "--format", "{{.Names}}"],
            check=False,
            quiet=True,
            stream=False,
            cleanup=True,
        ).stdout.split()
        if names:
            log.info(f"removing step containers left by the interrupt: {', '.join(names)}")
            tools.run(
                ["podman", "rm", "--force", "--time", "2", *names], check=False, quiet=True, stream=False, cleanup=True
            )


def _parse_cli_params(items: Sequence[str], specs, pname: str) -> dict[str, ParamValue]:
    try:
        return params_mod.parse_cli(items, specs, f"pipeline {pname}")
    except UsageError as exc:
        raise UsageError(str(exc).replace("task pipeline", "pipeline")) from None
