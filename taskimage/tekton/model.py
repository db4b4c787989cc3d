"""A small typed layer over the Tekton v1 objects taskimage uses: Task, Pipeline, PipelineRun.

Why not the full schema: we only need what ``tkn pipeline start`` needs (params with their types
and defaults, workspace declarations, results) and what following a run needs (conditions,
child TaskRuns, step states, results). Every object keeps its whole YAML document in ``raw``,
so loading and dumping never loses fields this layer does not model.

``-p``/``-w`` arguments are parsed the way ``tkn pipeline start`` parses them:

- ``-p NAME=VALUE``: an array param takes a comma list (``-p PLATFORMS=linux/amd64,linux/arm64``),
  an object param takes ``key:value`` pairs (``-p META=team:build,tier:ci``).
- ``-w name=source,claimName=pvc[,subPath=dir]``, ``-w name=source,claimSize=1Gi``
  (a volumeClaimTemplate; optional ``storageClass=``, ``accessMode=``),
  ``-w name=x,volumeClaimTemplateFile=pvc.yaml``, ``-w name=x,emptyDir=`` (or ``emptyDir=Memory``),
  ``-w name=x,config=cm[,item=key=path]``, ``-w name=x,secret=s[,item=key=path]``,
  ``-w name=x,csiFile=csi.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from taskimage.errors import UsageError

GROUP = "tekton.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

ParamValue = str | tuple[str, ...] | Mapping[str, str]

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
# The alphabet Kubernetes uses for generateName suffixes (no vowels, no look-alike digits).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


# --------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """A declared param of a Task or Pipeline."""

    name: str
    type: str = "string"  # string | array | object
    default: ParamValue | None = None
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParamSpec:
        default = data.get("default")
        kind = data.get("type") or (
            "array" if isinstance(default, list) else "object" if isinstance(default, dict) else "string"
        )
        return cls(
            name=str(data["name"]),
            type=str(kind),
            default=_freeze_value(default) if default is not None else None,
            description=str(data.get("description", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.description:
            out["description"] = self.description
        if self.default is not None:
            out["default"] = _thaw_value(self.default)
        return out


@dataclasses.dataclass(frozen=True)
class Param:
    """A param value passed to a run."""

    name: str
    value: ParamValue

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _thaw_value(self.value)}


@dataclasses.dataclass(frozen=True)
class WorkspaceDeclaration:
    name: str
    optional: bool = False
    description: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkspaceDeclaration:
        return cls(str(data["name"]), bool(data.get("optional", False)), str(data.get("description", "")))


@dataclasses.dataclass(frozen=True)
class ResultSpec:
    name: str
    type: str = "string"
    description: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResultSpec:
        return cls(str(data["name"]), str(data.get("type", "string")), str(data.get("description", "")))


@dataclasses.dataclass(frozen=True)
class PipelineTask:
    """One entry of ``spec.tasks`` (or ``spec.finally``): its name and how it refers to a Task."""

    name: str
    task_ref: Mapping[str, Any] | None

    @property
    def task_name(self) -> str | None:
        """The referenced Task's name when it is a plain cluster reference (no resolver)."""
        if self.task_ref and not self.task_ref.get("resolver"):
            return self.task_ref.get("name")
        return None


@dataclasses.dataclass(frozen=True)
class _Definition:
    """What Task and Pipeline share: metadata, params, workspaces, results, the raw document."""

    name: str
    namespace: str | None
    params: tuple[ParamSpec, ...]
    workspaces: tuple[WorkspaceDeclaration, ...]
    results: tuple[ResultSpec, ...]
    raw: Mapping[str, Any] = dataclasses.field(repr=False, compare=False)

    kind = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]):
        _check_kind(doc, cls.kind)
        spec = doc.get("spec") or {}
        meta = doc.get("metadata") or {}
        if not meta.get("name"):
            raise UsageError(f"{cls.kind} without metadata.name")
        return cls(
            name=str(meta["name"]),
            namespace=meta.get("namespace"),
            params=tuple(ParamSpec.from_dict(p) for p in spec.get("params") or []),
            workspaces=tuple(WorkspaceDeclaration.from_dict(w) for w in spec.get("workspaces") or []),
            results=tuple(ResultSpec.from_dict(r) for r in spec.get("results") or []),
            raw=copy.deepcopy(dict(doc)),
            **cls._extra(spec),
        )

    @classmethod
    def _extra(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def param(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.raw))


@dataclasses.dataclass(frozen=True)
class Task(_Definition):
    kind = "Task"


@dataclasses.dataclass(frozen=True)
class Pipeline(_Definition):
    tasks: tuple[PipelineTask, ...] = ()

    kind = "Pipeline"

    @classmethod
    def _extra(cls, spec: Mapping[str, Any]) -> dict[str, Any]:
        entries = list(spec.get("tasks") or []) + list(spec.get("finally") or [])
        return {"tasks": tuple(PipelineTask(str(t.get("name")), t.get("taskRef")) for t in entries)}

    def with_task_ref(self, task_name: str, bundle: str | None = None) -> tuple[Pipeline, int]:
        """This Pipeline with every reference to Task ``task_name`` pointed at what we install.

        A reference is a plain ``taskRef: {name: task_name}`` or a bundles-resolver reference
        whose ``name`` param is ``task_name`` (how the published Pipeline refers to the Task).
        With ``bundle`` they become ``resolver: bundles`` on that image (``taskRef.bundle`` is gone
        in v1); without, a plain reference to the Task in the cluster, which ``cluster install``
        applies next to the Pipeline. Returns the new Pipeline and how many references changed.
        """
        doc = self.to_dict()
        changed = 0
        for section in ("tasks", "finally"):
            for entry in doc.get("spec", {}).get(section) or []:
                if not _refers_to(entry.get("taskRef") or {}, task_name):
                    continue
                if bundle:
                    entry["taskRef"] = {
                        "resolver": "bundles",
                        "params": [
                            {"name": "bundle", "value": bundle},
                            {"name": "name", "value": task_name},
                            {"name": "kind", "value": "task"},
                        ],
                    }
                else:
                    entry["taskRef"] = {"name": task_name, "kind": "Task"}
                changed += 1
        return Pipeline.from_dict(doc), changed

    def with_bundle(self, bundle: str, task_name: str) -> Pipeline:
        pipeline, changed = self.with_task_ref(task_name, bundle)
        if not changed:
            raise UsageError(f"--bundle: Pipeline {self.name} has no task referring to Task {task_name}")
        return pipeline


def _refers_to(ref: Mapping[str, Any], task_name: str) -> bool:
    if not ref.get("resolver"):
        return ref.get("name") == task_name and ref.get("kind", "Task") == "Task"
    if ref.get("resolver") != "bundles":
        return False
    params = {p.get("name"): p.get("value") for p in ref.get("params") or []}
    return params.get("name") == task_name and str(params.get("kind", "task")).lower() == "task"


# --------------------------------------------------------------------------- YAML


def load_documents(text: str, source: str = "<yaml>") -> list[dict[str, Any]]:
    """All non-empty YAML documents in ``text`` (``---`` separated)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise UsageError(f"{source}: every document needs apiVersion and kind")
    return docs


def load_file(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from exc
    return load_documents(text, str(path))


def from_dict(doc: Mapping[str, Any]) -> Task | Pipeline:
    kind = doc.get("kind")
    if kind == "Task":
        return Task.from_dict(doc)
    if kind == "Pipeline":
        return Pipeline.from_dict(doc)
    raise UsageError(f"not a Tekton Task or Pipeline: {doc.get('apiVersion')} {kind}")


def dump_yaml(objects: Iterable[Mapping[str, Any] | _Definition | PipelineRun]) -> str:
    docs = [o.to_dict() if hasattr(o, "to_dict") else dict(o) for o in objects]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def _check_kind(doc: Mapping[str, Any], kind: str) -> None:
    if doc.get("kind") != kind:
        raise UsageError(f"expected a {kind}, got kind {doc.get('kind')!r}")
    if doc.get("apiVersion") != API_VERSION:
        raise UsageError(
            f"{kind} {doc.get('metadata', {}).get('name')}: apiVersion must be {API_VERSION}, got {doc.get('apiVersion')!r}"
        )


# --------------------------------------------------------------------------- -p / -w


def parse_param(text: str, pipeline: _Definition) -> Param:
    """``-p NAME=VALUE`` typed by the Pipeline's declaration of NAME."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f"-p {text!r}: expected NAME=VALUE")
    spec = pipeline.param(name)
    if spec is None:
        known = ", ".join(p.name for p in pipeline.params) or "none"
        raise UsageError(f"-p {name}: {pipeline.kind} {pipeline.name} has no param {name} (params: {known})")
    if spec.type == "array":
        return Param(name, tuple(v for v in value.split(",")) if value else ())
    if spec.type == "object":
        items: dict[str, str] = {}
        for pair in filter(None, value.split(",")):
            key, colon, val = pair.partition(":")
            if not colon or not key:
                raise UsageError(f"-p {name}={value}: object params take key:value pairs separated by commas")
            items[key] = val
        return Param(name, items)
    return Param(name, value)


@dataclasses.dataclass(frozen=True)
class WorkspaceBinding:
    """One ``spec.workspaces`` entry of a run; exactly one volume source is set."""

    name: str
    sub_path: str | None = None
    claim_name: str | None = None
    claim_template: Mapping[str, Any] | None = None
    empty_dir: Mapping[str, Any] | None = None
    config_map: Mapping[str, Any] | None = None
    secret: Mapping[str, Any] | None = None
    csi: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.sub_path:
            out["subPath"] = self.sub_path
        if self.claim_name:
            out["persistentVolumeClaim"] = {"claimName": self.claim_name}
        if self.claim_template is not None:
            out["volumeClaimTemplate"] = copy.deepcopy(dict(self.claim_template))
        if self.empty_dir is not None:
            out["emptyDir"] = dict(self.empty_dir)
        if self.config_map is not None:
            out["configMap"] = copy.deepcopy(dict(self.config_map))
        if self.secret is not None:
            out["secret"] = copy.deepcopy(dict(self.secret))
        if self.csi is not None:
            out["csi"] = copy.deepcopy(dict(self.csi))
        return out


_WS_SOURCES = ("claimName", "claimSize", "volumeClaimTemplateFile", "emptyDir", "config", "secret", "csiFile")
_WS_KEYS = set(_WS_SOURCES) | {"name", "subPath", "item", "storageClass", "accessMode"}


def parse_workspace(text: str, base_dir: Path | None = None) -> WorkspaceBinding:
    """``-w name=NAME,<source>=...`` as ``tkn pipeline start -w`` takes it (plus ``claimSize=``)."""
    flag = f"-w {text}"
    fields: dict[str, str] = {}
    items: list[dict[str, str]] = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"{flag}: expected key=value pairs separated by commas, got {part!r}")
        if key not in _WS_KEYS:
            raise UsageError(f"{flag}: unknown key {key!r} (known: {', '.join(sorted(_WS_KEYS))})")
        if key == "item":
            item_key, eq, item_path = value.partition("=")
            if not eq or not item_key or not item_path:
                raise UsageError(f"{flag}: item takes KEY=PATH, got {value!r}")
            items.append({"key": item_key, "path": item_path})
            continue
        if key in fields:
            raise UsageError(f"{flag}: {key} given twice")
        fields[key] = value
    name = fields.get("name", "")
    if not name:
        raise UsageError(f"{flag}: name= is required")
    sources = [k for k in _WS_SOURCES if k in fields]
    if len(sources) != 1:
        raise UsageError(f"{flag}: give exactly one of {', '.join(_WS_SOURCES)} (got {', '.join(sources) or 'none'})")
    source = sources[0]
    if items and source not in ("config", "secret"):
        raise UsageError(f"{flag}: item= only goes with config= or secret=")
    if ("storageClass" in fields or "accessMode" in fields) and source != "claimSize":
        raise UsageError(f"{flag}: storageClass= and accessMode= only go with claimSize=")
    value = fields[source]
    if source not in ("emptyDir",) and not value:
        raise UsageError(f"{flag}: {source}= needs a value")
    kwargs: dict[str, Any] = {"name": name, "sub_path": fields.get("subPath") or None}
    if source == "claimName":
        kwargs["claim_name"] = value
    elif source == "claimSize":
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?([KMGTPE]i?|[mkMGTPE])?", value):
            raise UsageError(f"{flag}: claimSize must be a Kubernetes quantity like 1Gi, got {value!r}")
        spec: dict[str, Any] = {
            "accessModes": [fields.get("accessMode") or "ReadWriteOnce"],
            "resources": {"requests": {"storage": value}},
        }
        if fields.get("storageClass"):
            spec["storageClassName"] = fields["storageClass"]
        kwargs["claim_template"] = {"spec": spec}
    elif source in ("volumeClaimTemplateFile", "csiFile"):
        path = Path(value) if base_dir is None or Path(value).is_absolute() else base_dir / value
        docs = load_documents_plain(path, flag)
        kwargs["claim_template" if source == "volumeClaimTemplateFile" else "csi"] = docs
    elif source == "emptyDir":
        kwargs["empty_dir"] = {"medium": value} if value else {}
    elif source == "config":
        kwargs["config_map"] = {"name": value, **({"items": items} if items else {})}
    elif source == "secret":
        kwargs["secret"] = {"secretName": value, **({"items": items} if items else {})}
    return WorkspaceBinding(**kwargs)


def load_documents_plain(path: Path, flag: str) -> dict[str, Any]:
    """One YAML mapping from a file named in a flag (volumeClaimTemplateFile=, csiFile=)."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{flag}: {path} is not valid YAML") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{flag}: {path} must hold a YAML mapping")
    return data


# --------------------------------------------------------------------------- PipelineRun


@dataclasses.dataclass(frozen=True)
class PipelineRun:
    name: str
    pipeline: str
    namespace: str | None = None
    params: tuple[Param, ...] = ()
    workspaces: tuple[WorkspaceBinding, ...] = ()
    service_account: str | None = None
    timeout: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        meta["labels"] = {"tekton.dev/pipeline": self.pipeline, **dict(self.labels)}
        spec: dict[str, Any] = {"pipelineRef": {"name": self.pipeline}}
        if self.params:
            spec["params"] = [p.to_dict() for p in self.params]
        if self.workspaces:
            spec["workspaces"] = [w.to_dict() for w in self.workspaces]
        if self.service_account:
            spec["taskRunTemplate"] = {"serviceAccountName": self.service_account}
        if self.timeout:
            spec["timeouts"] = {"pipeline": self.timeout}
        return {"apiVersion": API_VERSION, "kind": "PipelineRun", "metadata": meta, "spec": spec}


def run_name(prefix: str) -> str:
    """``<prefix>-<5 chars>``, the shape ``generateName`` gives (tkn uses ``<pipeline>-run-``).

    We pick the name ourselves so the command can print it before the server answers and
    follow the run by name.
    """
    return f"{prefix}-{''.join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))}"


def build_pipeline_run(
    pipeline: Pipeline,
    params: Sequence[str] = (),
    workspaces: Sequence[str] = (),
    *,
    namespace: str | None = None,
    service_account: str | None = None,
    timeout: str | None = None,
    prefix_name: str | None = None,
    base_dir: Path | None = None,
) -> PipelineRun:
    """A PipelineRun of ``pipeline`` from ``-p``/``-w`` arguments, checked against its declarations.

    Params the user does not give keep the Pipeline's default (Tekton applies it); a param
    without a default and a non-optional workspace must be given.
    """
    parsed: dict[str, Param] = {}
    for text in params:
        p = parse_param(text, pipeline)
        if p.name in parsed:
            raise UsageError(f"-p {p.name}: given twice")
        parsed[p.name] = p
    missing = [s.name for s in pipeline.params if s.required and s.name not in parsed]
    if missing:
        raise UsageError(
            f"-p {missing[0]}: Pipeline {pipeline.name} requires it (no default); missing: {', '.join(missing)}"
        )
    bindings: dict[str, WorkspaceBinding] = {}
    declared = {w.name: w for w in pipeline.workspaces}
    for text in workspaces:
        w = parse_workspace(text, base_dir)
        if w.name not in declared:
            known = ", ".join(declared) or "none"
            raise UsageError(
                f"-w name={w.name}: Pipeline {pipeline.name} has no workspace {w.name} (workspaces: {known})"
            )
        if w.name in bindings:
            raise UsageError(f"-w name={w.name}: given twice")
        bindings[w.name] = w
    unbound = [w.name for w in pipeline.workspaces if not w.optional and w.name not in bindings]
    if unbound:
        raise UsageError(
            f"-w name={unbound[0]}: Pipeline {pipeline.name} requires this workspace; missing: {', '.join(unbound)}"
        )
    if timeout is not None and not _DURATION_RE.fullmatch(timeout):
        raise UsageError(f"--timeout {timeout!r}: expected a duration like 1h30m or 45m")
    prefix = prefix_name if prefix_name is not None else f"{pipeline.name}-run"
    if not _NAME_RE.fullmatch(prefix) or len(prefix) > 57:
        raise UsageError(f"--prefix-name {prefix!r}: use lowercase letters, digits and '-', at most 57 characters")
    return PipelineRun(
        name=run_name(prefix),
        pipeline=pipeline.name,
        namespace=namespace,
        params=tuple(parsed[s.name] for s in pipeline.params if s.name in parsed),
        workspaces=tuple(bindings[w.name] for w in pipeline.workspaces if w.name in bindings),
        service_account=service_account,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- run status


@dataclasses.dataclass(frozen=True)
class Condition:
    """The ``Succeeded`` condition of a run: status True / False / Unknown."""

    status: str
    reason: str = ""
    message: str = ""

    @property
    def done(self) -> bool:
        return self.status in ("True", "False")

    @property
    def succeeded(self) -> bool:
        return self.status == "True"


def condition(obj: Mapping[str, Any]) -> Condition:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Succeeded":
            return Condition(str(c.get("status", "Unknown")), str(c.get("reason", "")), str(c.get("message", "")))
    return Condition("Unknown", "Pending", "")


@dataclasses.dataclass(frozen=True)
class ChildRun:
    name: str
    pipeline_task: str
    kind: str = "TaskRun"


def child_runs(pipeline_run: Mapping[str, Any]) -> list[ChildRun]:
    """The TaskRuns of a PipelineRun in the order the controller created them."""
    out = []
    for ref in (pipeline_run.get("status") or {}).get("childReferences") or []:
        if ref.get("kind", "TaskRun") == "TaskRun" and ref.get("name"):
            out.append(ChildRun(str(ref["name"]), str(ref.get("pipelineTaskName", ref["name"]))))
    return out


@dataclasses.dataclass(frozen=True)
class StepFailure:
    step: str
    exit_code: int | None
    reason: str
    message: str = ""


def failed_step(task_run: Mapping[str, Any]) -> StepFailure | None:
    """The first step of a TaskRun that terminated with a non-zero exit code."""
    for step in (task_run.get("status") or {}).get("steps") or []:
        term = step.get("terminated") or {}
        code = term.get("exitCode")
        if term and code not in (0, None):
            return StepFailure(
                str(step.get("name", "?")), int(code), str(term.get("reason", "")), str(term.get("message", ""))
            )
    return None


@dataclasses.dataclass(frozen=True)
class RunResult:
    name: str
    value: Any

    @property
    def text(self) -> str:
        if isinstance(self.value, list):
            return ",".join(map(str, self.value))
        if isinstance(self.value, dict):
            return ",".join(f"{k}:{v}" for k, v in self.value.items())
        return str(self.value)


def run_results(obj: Mapping[str, Any]) -> list[RunResult]:
    """``status.results`` of a PipelineRun or TaskRun (v1 names both ``results``)."""
    status = obj.get("status") or {}
    entries = status.get("results") or status.get("pipelineResults") or status.get("taskResults") or []
    return [RunResult(str(r.get("name")), r.get("value")) for r in entries]


# --------------------------------------------------------------------------- helpers


def _freeze_value(value: Any) -> ParamValue:
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return str(value)


def _thaw_value(value: ParamValue) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value
