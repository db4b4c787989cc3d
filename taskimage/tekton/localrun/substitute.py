"""Tekton's variable substitution for Task steps, as the controller does it, plus kubelet's
``$(VAR)`` expansion of command/args/env that the Pod then gets.

Why these rules (tektoncd/pipeline docs/variables.md, docs/tasks.md and its reconciler):

- References look like ``$(params.X)``, ``$(params["X"])``, ``$(params['X'])``, with ``[*]`` (whole
  array), ``[i]`` (one element) or ``.key`` (one key of an object param) after the name.
- The controller substitutes in passes: params, then context, then workspaces, then results, step
  exit-code paths and the credentials path. One pass is a single-pass string replacement, so a
  param *value* holding ``$(params.Y)`` stays literal, while a param value holding
  ``$(context.taskRun.name)`` is replaced by the later context pass.
- An array param (``$(params.A)`` or ``$(params.A[*])``) expands only as a whole element of
  ``command``/``args``; anywhere else it is invalid. A whole object param is invalid in steps.
- Every reference written in the Task must resolve, else the Task is invalid: checked here
  before anything runs (stricter than Tekton for ``$(results.R.path)`` outside ``script`` and for
  ``[*]`` on a string param, which Tekton would leave literal).

Shell's own ``$(command)`` is untouched: only the roots Tekton knows are references.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from taskimage.errors import UsageError

ParamValue = str | list[str] | dict[str, str]

#: Roots Tekton substitutes in a Task, in the order of the controller's passes.
PASSES = ("params", "context", "workspaces", "results", "steps", "credentials")
#: Roots that only exist elsewhere (Pipelines, removed PipelineResources).
FOREIGN = ("tasks", "resources", "inputs", "outputs", "finally", "step")

_REF = re.compile(r"\$\((?P<root>" + "|".join(PASSES + FOREIGN) + r")(?P<rest>[.\[][^()]*)\)")
_BRACKET = re.compile(r"""\[(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<idx>\d+)|(?P<star>\*))\]""")
_IDENT = re.compile(r"\.(?P<name>[^.\[\]]+)")


class SubstitutionError(UsageError):
    """A reference in the Task that cannot be resolved or is not allowed where it stands."""


@dataclasses.dataclass(frozen=True)
class Ref:
    """One parsed reference: ``$(root<segments>)``."""

    text: str  # the whole "$(...)"
    root: str
    segments: tuple[str | int, ...]  # names (str), indexes (int), "*" for [*]
    star: bool = False

    @property
    def whole(self) -> bool:
        return self.star


def parse_ref(text: str, root: str, rest: str) -> Ref | None:
    """Split ``rest`` (what follows the root) into segments; None when it is not well formed."""
    segments: list[str | int] = []
    pos = 0
    star = False
    while pos < len(rest):
        if star:
            return None  # nothing may follow [*]
        m = _IDENT.match(rest, pos)
        if m:
            segments.append(m.group("name"))
            pos = m.end()
            continue
        m = _BRACKET.match(rest, pos)
        if not m:
            return None
        if m.group("star"):
            star = True
        elif m.group("idx") is not None:
            segments.append(int(m.group("idx")))
        else:
            segments.append(m.group("dq") if m.group("dq") is not None else m.group("sq"))
        pos = m.end()
    return Ref(text, root, tuple(segments), star)


def find_refs(value: str) -> list[Ref | str]:
    """Every Tekton-looking reference in ``value``: a :class:`Ref`, or the raw text when malformed."""
    found: list[Ref | str] = []
    for m in _REF.finditer(value):
        ref = parse_ref(m.group(0), m.group("root"), m.group("rest"))
        found.append(ref if ref is not None else m.group(0))
    return found


@dataclasses.dataclass(frozen=True)
class Variables:
    """Everything a Task's references can resolve to in one TaskRun."""

    params: Mapping[str, ParamValue]
    param_types: Mapping[str, str]
    context: Mapping[str, str]  # "taskRun.name" -> value, "task.retry-count" -> "0", ...
    workspaces: Mapping[str, Mapping[str, str]]  # name -> {"path", "bound", "claim", "volume"}
    results: Mapping[str, str]  # name -> path in the container
    step_names: Sequence[str] = ()  # "step-<name>" / "step-unnamed-<i>" accepted in $(steps...)
    steps_dir: str = "/tekton/steps"
    credentials_path: str = "/tekton/creds"


class _Unresolved(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _names(items: Iterable[str]) -> str:
    items = sorted(items)
    return ", ".join(items) if items else "none"


def _param_name(ref: Ref, v: Variables) -> tuple[str, list[str | int]]:
    """The param a reference names and the segments after it. In the dotted form a declared
    name containing dots wins (Tekton's replacement map has ``params.a.b`` for param "a.b"),
    else ``$(params.a.b)`` is key "b" of object param "a"; the bracket form names it whole."""
    segs = list(ref.segments)
    if not segs or not isinstance(segs[0], str):
        raise _Unresolved("expected a param name")
    if ref.text.startswith("$(params."):
        for cut in range(len(segs), 1, -1):
            head = segs[:cut]
            if all(isinstance(s, str) for s in head) and ".".join(head) in v.param_types:  # type: ignore[arg-type]
                return ".".join(head), segs[cut:]  # type: ignore[arg-type]
    return segs[0], segs[1:]


def resolve_param(ref: Ref, v: Variables, *, whole_array_ok: bool) -> ParamValue:
    name, rest = _param_name(ref, v)
    if name not in v.param_types:
        raise _Unresolved(f"no param {name!r} is declared (declared: {_names(v.param_types)})")
    kind = v.param_types[name]
    value = v.params[name]
    if kind == "string":
        if rest or ref.star:
            raise _Unresolved(f"param {name!r} is a string: it takes no [*], [i] or .key")
        return value
    if kind == "array":
        assert isinstance(value, list)
        if not rest:
            if not whole_array_ok:
                raise _Unresolved(
                    f"array param {name!r} can only be used as a whole element of command or args "
                    f'("$(params.{name}[*])"), or one element with [i]'
                )
            return value
        if len(rest) == 1 and isinstance(rest[0], int) and not ref.star:
            if rest[0] >= len(value):
                raise _Unresolved(f"index {rest[0]} out of bounds for array param {name!r} of length {len(value)}")
            return value[rest[0]]
        raise _Unresolved(f"array param {name!r} takes [*] or [i], not {ref.text}")
    # object
    assert isinstance(value, dict)
    if not rest:
        raise _Unresolved(f"a whole object param ({name!r}) cannot be used in a Task step; use $(params.{name}.KEY)")
    if len(rest) == 1 and isinstance(rest[0], str) and not ref.star:
        if rest[0] not in value:
            raise _Unresolved(f"object param {name!r} has no key {rest[0]!r} (keys: {_names(value)})")
        return value[rest[0]]
    raise _Unresolved(f"object param {name!r} takes .KEY, not {ref.text}")


def resolve_other(ref: Ref, v: Variables) -> str:
    """Resolve a non-param reference to its string value."""
    segs = ref.segments
    if ref.star:
        raise _Unresolved("[*] applies only to array params")
    if ref.root == "context":
        key = ".".join(str(s) for s in segs)
        if key not in v.context:
            raise _Unresolved(f"unknown context variable (known: {_names(v.context)})")
        return v.context[key]
    if ref.root == "workspaces":
        if len(segs) != 2 or not all(isinstance(s, str) for s in segs):
            raise _Unresolved("expected $(workspaces.NAME.path|bound|claim|volume)")
        name, attr = str(segs[0]), str(segs[1])
        if name not in v.workspaces:
            raise _Unresolved(f"no workspace {name!r} is declared (declared: {_names(v.workspaces)})")
        if attr not in v.workspaces[name]:
            raise _Unresolved(f"workspaces take .path, .bound, .claim or .volume, not .{attr}")
        return v.workspaces[name][attr]
    if ref.root == "results":
        if len(segs) != 2 or segs[1] != "path" or not isinstance(segs[0], str):
            raise _Unresolved("expected $(results.NAME.path)")
        if segs[0] not in v.results:
            raise _Unresolved(f"no result {segs[0]!r} is declared (declared: {_names(v.results)})")
        return v.results[segs[0]]
    if ref.root == "steps":
        if len(segs) == 3 and segs[1:] == ("exitCode", "path") and isinstance(segs[0], str):
            if segs[0] not in v.step_names:
                raise _Unresolved(f"no step {segs[0]!r} (steps: {_names(v.step_names)})")
            return f"{v.steps_dir}/{segs[0]}/exitCode"
        raise _Unresolved("only $(steps.step-NAME.exitCode.path) is supported")
    if ref.root == "credentials":
        if segs == ("path",):
            return v.credentials_path
        raise _Unresolved("expected $(credentials.path)")
    if ref.root == "tasks":
        raise _Unresolved("$(tasks...) references exist only in a Pipeline")
    if ref.root == "step":
        raise _Unresolved("step results ($(step.results...)) are not supported by taskimage run")
    raise _Unresolved(f"$({ref.root}...) is not available in a v1 Task (PipelineResources were removed)")


# --- validation: every reference written in the Task must resolve -------------------------


def _check_string(value: str, where: str, v: Variables, errors: list[str], *, isolated_array_ok: bool) -> None:
    for ref in find_refs(value):
        if isinstance(ref, str):
            errors.append(f"{where}: malformed reference {ref}")
            continue
        whole = isolated_array_ok and value == ref.text
        try:
            if ref.root == "params":
                resolve_param(ref, v, whole_array_ok=whole)
            else:
                resolve_other(ref, v)
        except _Unresolved as exc:
            errors.append(f"{where}: {ref.text}: {exc.reason}")


def step_fields(step: Mapping, label: str) -> Iterable[tuple[str, str, bool]]:
    """(where, value, may-hold-a-whole-array) for every field Tekton substitutes in a step."""
    for field in ("image", "workingDir", "script", "imagePullPolicy", "onError"):
        if isinstance(step.get(field), str):
            yield f"{label}.{field}", step[field], False
    for field in ("command", "args"):
        for i, item in enumerate(step.get(field) or []):
            yield f"{label}.{field}[{i}]", str(item), True
    for env in step.get("env") or []:
        if isinstance(env.get("value"), str):
            yield f"{label}.env[{env.get('name')}]", env["value"], False
    for i, vm in enumerate(step.get("volumeMounts") or []):
        for field in ("name", "mountPath", "subPath"):
            if isinstance(vm.get(field), str):
                yield f"{label}.volumeMounts[{i}].{field}", vm[field], False


def validate(fields: Iterable[tuple[str, str, bool]], v: Variables) -> None:
    """Raise one :class:`SubstitutionError` listing every unresolvable or misplaced reference."""
    errors: list[str] = []
    for where, value, array_ok in fields:
        _check_string(value, where, v, errors, isolated_array_ok=array_ok)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise SubstitutionError("invalid references: " + "; ".join(errors[:3]) + more)


# --- substitution --------------------------------------------------------------------------


def _replace_pass(value: str, root: str, v: Variables, leftovers: list[str]) -> str:
    def one(m: re.Match) -> str:
        if m.group("root") != root:
            return m.group(0)
        ref = parse_ref(m.group(0), m.group("root"), m.group("rest"))
        try:
            if ref is None:
                raise _Unresolved("malformed")
            out = resolve_param(ref, v, whole_array_ok=False) if root == "params" else resolve_other(ref, v)
        except _Unresolved:
            leftovers.append(m.group(0))
            return m.group(0)
        assert isinstance(out, str)
        return out

    return _REF.sub(one, value)


def substitute_string(value: str, v: Variables, leftovers: list[str] | None = None) -> str:
    """All passes over one string field (call :func:`validate` first)."""
    leftovers = [] if leftovers is None else leftovers
    for root in PASSES:
        value = _replace_pass(value, root, v, leftovers)
    return value


def _whole_array(item: str, v: Variables) -> list[str] | None:
    m = _REF.fullmatch(item)
    if not m or m.group("root") != "params":
        return None
    ref = parse_ref(item, "params", m.group("rest"))
    if ref is None:
        return None
    try:
        out = resolve_param(ref, v, whole_array_ok=True)
    except _Unresolved:
        return None
    return list(out) if isinstance(out, list) else None


def substitute_list(items: Sequence[str], v: Variables, leftovers: list[str] | None = None) -> list[str]:
    """command/args: a whole-element array reference expands in place, the rest as strings."""
    out: list[str] = []
    for item in items:
        expanded = _whole_array(str(item), v)
        if expanded is not None:
            out.extend(_after_params(e, v, leftovers) for e in expanded)
        else:
            out.append(substitute_string(str(item), v, leftovers))
    return out


def _after_params(value: str, v: Variables, leftovers: list[str] | None) -> str:
    """Passes after the params pass: array elements are values, so ``$(params..)`` in them stays."""
    leftovers = [] if leftovers is None else leftovers
    for root in PASSES[1:]:
        value = _replace_pass(value, root, v, leftovers)
    return value


def substitute_step(step: Mapping, v: Variables, leftovers: list[str] | None = None) -> dict:
    """A copy of ``step`` with every substitutable field substituted."""
    out = dict(step)
    for field in ("image", "workingDir", "script", "imagePullPolicy", "onError"):
        if isinstance(out.get(field), str):
            out[field] = substitute_string(out[field], v, leftovers)
    for field in ("command", "args"):
        if out.get(field) is not None:
            out[field] = substitute_list([str(x) for x in out[field]], v, leftovers)
    if out.get("env"):
        out["env"] = [
            {**e, "value": substitute_string(e["value"], v, leftovers)} if isinstance(e.get("value"), str) else dict(e)
            for e in out["env"]
        ]
    if out.get("volumeMounts"):
        out["volumeMounts"] = [
            {
                k: substitute_string(x, v, leftovers)
                if isinstance(x, str) and k in ("name", "mountPath", "subPath")
                else x
                for k, x in vm.items()
            }
            for vm in out["volumeMounts"]
        ]
    return out


# --- kubelet's $(VAR) expansion ------------------------------------------------------------


def kube_expand(value: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' expansion of ``$(VAR)`` in command, args and env values: a defined VAR is
    replaced, an undefined one stays as written, ``$$`` becomes ``$``."""
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == "$" and i + 1 < n:
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = value.find(")", i + 2)
                if close == -1:
                    out.append("$(")
                    i += 2
                    continue
                name = value[i + 2 : close]
                found = lookup(name)
                out.append(found if found is not None else f"$({name})")
                i = close + 1
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def kube_expand_container(env: Sequence[tuple[str, str]], command: Sequence[str] | None, args: Sequence[str]):
    """Env values expand against the variables defined before them; command and args against all."""
    defined: dict[str, str] = {}
    new_env: list[tuple[str, str]] = []
    for name, value in env:
        expanded = kube_expand(value, defined.get)
        defined[name] = expanded
        new_env.append((name, expanded))
    new_command = [kube_expand(c, defined.get) for c in command] if command is not None else None
    new_args = [kube_expand(a, defined.get) for a in args]
    return new_env, new_command, new_args
