"""Everything about a TaskRun decided before anything runs: params, workspaces, substituted steps.

:func:`make_plan` is pure apart from checking that the directories it is given exist, so every
error a Task or an invocation can have (missing params, wrong types, unknown references,
unsupported features) shows up before the first container starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton.localrun import creds as creds_mod
from taskimage.tekton.localrun import kubeobjects as kube
from taskimage.tekton.localrun import params as params_mod
from taskimage.tekton.localrun import results as results_mod
from taskimage.tekton.localrun import stepactions as stepactions_mod
from taskimage.tekton.localrun import substitute as sub
from taskimage.tekton.localrun.task import Loaded, merge_step_template, step_name

DEFAULT_SCRIPT_PREAMBLE = "#!/bin/sh\nset -e\n"  # Tekton's, for a script without a shebang
SCRIPTS_DIR = "/tekton/scripts"
RESULTS_DIR = "/tekton/results"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclasses.dataclass(frozen=True)
class Workspace:
    name: str
    mount_path: str  # in the container ("" when not bound)
    host_dir: str | None  # None: a fresh emptyDir made at run time (or unbound when not bound)
    read_only: bool
    bound: bool
    claim: str = ""
    steps: tuple[str, ...] | None = None  # isolated workspace: only these steps mount it
    files: Mapping[str, bytes] | None = None  # a configMap/secret binding: its files
    sub_path: str = ""  # in the claim's directory (persistentVolumeClaim bindings)


@dataclasses.dataclass(frozen=True)
class Mount:
    source: str  # "vol:NAME" (Task volume) — workspaces and /tekton dirs are added by the runner
    target: str
    read_only: bool = False
    sub_path: str = ""


@dataclasses.dataclass(frozen=True)
class StepPlan:
    index: int
    name: str
    image: str
    command: tuple[str, ...] | None  # None: the image's entrypoint
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    working_dir: str
    script: str | None  # the script file's content, preamble included
    security_context: Mapping[str, Any]
    pull_policy: str  # podman's --pull value
    timeout: float | None
    on_error: str  # "stopAndFail" | "continue"
    mounts: tuple[Mount, ...] = ()
    secret_env: tuple[tuple[str, str], ...] = ()  # from Secrets: passed in a file, never on a command line
    kind: str = "step"  # or "sidecar"
    readiness: tuple[str, ...] | None = None  # a sidecar's readinessProbe/startupProbe exec command

    @property
    def script_path(self) -> str:
        prefix = "script" if self.kind == "step" else "sidecar-script"
        return f"{SCRIPTS_DIR}/{prefix}-{self.index}-{self.name}"


@dataclasses.dataclass(frozen=True)
class Plan:
    task_name: str
    taskrun_name: str
    namespace: str
    uid: str
    params: Mapping[str, sub.ParamValue]
    workspaces: tuple[Workspace, ...]
    volumes: Mapping[str, str | None]  # Task volume -> host dir (None: emptyDir)
    results: tuple[results_mod.ResultSpec, ...]
    steps: tuple[StepPlan, ...]
    warnings: tuple[str, ...] = ()
    sidecars: tuple[StepPlan, ...] = ()
    workspace_volumes: Mapping[str, str] = dataclasses.field(default_factory=dict)  # volume name -> workspace
    volume_files: Mapping[str, Mapping[str, bytes]] = dataclasses.field(default_factory=dict)  # configMap/secret
    creds: Mapping[str, bytes] = dataclasses.field(default_factory=dict)  # ServiceAccount credentials, $HOME-relative
    results_from_steps: Mapping[str, tuple[str, str]] = dataclasses.field(
        default_factory=dict
    )  # result -> (step, its result)


def parse_duration(text: str, where: str) -> float:
    """A Go duration (``90s``, ``1h30m``) in seconds."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise UsageError(f"{where}: {text!r} is not a duration like 90s or 1h30m")
    return total


def pull_policy(image: str, declared: str | None) -> str:
    """Kubernetes' imagePullPolicy, as podman's ``--pull``: Always for ``:latest`` or no tag."""
    if declared:
        table = {"Always": "always", "IfNotPresent": "missing", "Never": "never"}
        if declared not in table:
            raise UsageError(f"imagePullPolicy {declared!r}: accepted: Always, IfNotPresent, Never")
        return table[declared]
    if "@" in image:
        return "missing"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "always" if tag == "latest" else "missing"


def _random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def _taskrun_identity(loaded: Loaded) -> tuple[str, str, str]:
    meta = (loaded.taskrun or {}).get("metadata") or {}
    name = meta.get("name")
    if not name:
        prefix = meta.get("generateName") or f"{loaded.task_name}-run-"
        name = f"{prefix}{_random_suffix()}"
    return str(name), str(meta.get("namespace") or "default"), str(meta.get("uid") or uuid.uuid4())


def cli_workspaces(items: Sequence[str], declared: Mapping[str, Mapping], owner: str) -> dict[str, str]:
    """``-w NAME=DIR`` arguments as {NAME: absolute DIR}, each NAME one that ``owner`` ("the task",
    "pipeline NAME") declares and each DIR an existing directory."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"-w {item}: expected NAME=DIR")
        if name not in declared:
            raise UsageError(
                f"-w {name}: {owner} declares no workspace {name} (declared: {', '.join(sorted(declared)) or 'none'})"
            )
        full = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(full):
            raise UsageError(f"-w {name}={path}: not a directory")
        out[name] = full
    return out


def _workspaces(
    spec: Mapping, loaded: Loaded, cli: Sequence[str], steps: Sequence[Mapping], objects: kube.KubeObjects
) -> tuple[Workspace, ...]:
    declared = {str(w["name"]): w for w in spec.get("workspaces") or []}
    given = cli_workspaces(cli, declared, "the task")
    bindings = {str(b.get("name")): b for b in ((loaded.taskrun or {}).get("spec") or {}).get("workspaces") or []}
    isolated: dict[str, list[str]] = {}
    for i, s in enumerate(steps):
        for w in s.get("workspaces") or []:
            isolated.setdefault(str(w.get("name")), []).append(step_name(s, i))
    out: list[Workspace] = []
    missing: list[str] = []
    for name, decl in declared.items():
        binding = bindings.get(name, {})
        claim = str((binding.get("persistentVolumeClaim") or {}).get("claimName", ""))
        host: str | None
        files: Mapping[str, bytes] | None = None
        read_only = bool(decl.get("readOnly"))
        if name in given:
            host = given[name]
        elif binding:
            projected = kube.volume_files(binding, objects, f"workspace {name}")
            if "emptyDir" in binding or "volumeClaimTemplate" in binding:
                host = None
            elif claim and claim in objects.claims:
                host = None  # the claim's directory for this run
            elif projected is not None:
                host, read_only, files = None, True, projected
            else:
                kind = next((k for k in binding if k not in ("name", "subPath")), "binding")
                raise UsageError(
                    f"workspace {name} is bound to a {kind} in the TaskRun: give a directory with -w {name}=DIR"
                )
        else:
            if not decl.get("optional"):
                missing.append(name)
            out.append(Workspace(name, "", None, bool(decl.get("readOnly")), False))
            continue
        if host is not None and binding.get("subPath"):
            host = os.path.join(host, str(binding["subPath"]))
            os.makedirs(host, exist_ok=True)
        mount = str(decl.get("mountPath") or f"/workspace/{name}")
        out.append(
            Workspace(
                name,
                mount,
                host,
                read_only,
                True,
                claim,
                tuple(isolated[name]) if name in isolated else None,
                files,
                str(binding.get("subPath") or "") if host is None and claim else "",
            )
        )
    if missing:
        raise UsageError(f"missing workspaces: {', '.join(missing)} (give them with -w NAME=DIR)")
    return tuple(out)


def _volumes(
    spec: Mapping, taskrun: Mapping | None, objects: kube.KubeObjects, files: dict[str, Mapping[str, bytes]]
) -> dict[str, str | None]:
    """The Pod's volumes: the Task's and the TaskRun's ``podTemplate.volumes`` (Tekton adds both).
    configMap and secret volumes become directories holding their files (into ``files``)."""
    out: dict[str, str | None] = {}
    pod_template = ((taskrun or {}).get("spec") or {}).get("podTemplate") or {}
    for v in [*(spec.get("volumes") or []), *(pod_template.get("volumes") or [])]:
        name = str(v.get("name"))
        if "emptyDir" in v:
            out[name] = None
        elif any(k in v for k in ("configMap", "secret", "projected")):
            files[name] = kube.volume_files(v, objects, f"volume {name}") or {}
            out[name] = None
        elif "hostPath" in v:
            out[name] = str(v["hostPath"].get("path"))
        else:
            kind = next((k for k in v if k != "name"), "?")
            out[name] = f"!{kind}"  # an error only when a step mounts it
    return out


def _unsupported(spec: Mapping, steps: Sequence[Mapping]) -> None:
    for i, s in enumerate(steps):
        where = f"steps[{i}] ({step_name(s, i)})"
        if not s.get("image"):
            raise UsageError(f"{where}: no image")
        if s.get("script") and s.get("command"):
            raise UsageError(f"{where}: script cannot be used with command")


def script_content(script: str) -> str:
    """The script file Tekton writes: the default preamble unless the first non-blank text is a shebang."""
    return script if script.strip().startswith("#!") else DEFAULT_SCRIPT_PREAMBLE + script


def make_plan(
    loaded: Loaded,
    *,
    cli_params: Sequence[str] = (),
    cli_workspaces: Sequence[str] = (),
    objects: kube.KubeObjects | None = None,
    stepactions: Mapping[str, Mapping] | None = None,
    fetch_stepaction: Callable[[str, str], Mapping] | None = None,
) -> Plan:
    objects = objects or kube.KubeObjects()
    spec = loaded.spec
    task = loaded.task_name
    warnings: list[str] = []
    names = [step_name(s, i) for i, s in enumerate(spec.get("steps") or [])]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"task {task}: step names must be unique: {', '.join(dup)}")

    specs = params_mod.parse_specs(spec.get("params"), task)
    given: dict[str, Any] = {}
    for p in ((loaded.taskrun or {}).get("spec") or {}).get("params") or []:
        given[str(p.get("name"))] = p.get("value")
    given.update(params_mod.parse_cli(cli_params, specs, task))
    values = params_mod.resolve(specs, given, task, warnings=warnings)
    params_only = sub.Variables(
        params=values, param_types={s.name: s.type for s in specs}, context={}, workspaces={}, results={}
    )
    resolved = stepactions_mod.resolve(
        spec.get("steps") or [], stepactions or {}, params_only, warnings, fetch_stepaction
    )
    raw_steps = merge_step_template(spec.get("stepTemplate"), resolved)
    _unsupported(spec, raw_steps)

    run_name, namespace, uid = _taskrun_identity(loaded)
    result_specs = results_mod.parse_specs(spec.get("results"))
    workspaces = _workspaces(spec, loaded, cli_workspaces, raw_steps, objects)
    base_vars = sub.Variables(
        params=values,
        param_types={s.name: s.type for s in specs},
        context={
            "taskRun.name": run_name,
            "taskRun.namespace": namespace,
            "taskRun.uid": uid,
            "task.name": task,
            # retries so far: a Pipeline's retried TaskRun carries them in status.retriesStatus
            "task.retry-count": str(len(((loaded.taskrun or {}).get("status") or {}).get("retriesStatus") or [])),
        },
        workspaces={},
        results={r.name: f"{RESULTS_DIR}/{r.name}" for r in result_specs},
        step_names=tuple(f"step-{n}" for n in names),
    )
    # a workspace's mountPath may itself use params
    sub.validate([(f"workspaces[{w.name}].mountPath", w.mount_path, False) for w in workspaces], base_vars)
    workspaces = tuple(
        dataclasses.replace(w, mount_path=sub.substitute_string(w.mount_path, base_vars)) for w in workspaces
    )
    variables = dataclasses.replace(
        base_vars,
        workspaces={
            w.name: {
                "path": w.mount_path,
                "bound": "true" if w.bound else "false",
                "claim": w.claim,
                "volume": f"ws-{_random_suffix()}" if w.bound else "",
            }
            for w in workspaces
        },
    )

    raw_sidecars = [dict(c) for c in spec.get("sidecars") or []]
    sidecar_names = [str(c.get("name") or f"sidecar-{i}") for i, c in enumerate(raw_sidecars)]
    for i, c in enumerate(raw_sidecars):
        if not c.get("image"):
            raise UsageError(f"sidecars[{i}] ({sidecar_names[i]}): no image")
    fields = [f for i, s in enumerate(raw_steps) for f in sub.step_fields(s, f"steps[{i}] ({names[i]})")]
    fields += [f for i, c in enumerate(raw_sidecars) for f in sub.step_fields(c, f"sidecars[{i}] ({sidecar_names[i]})")]
    sub.validate(fields, variables)

    volume_files: dict[str, Mapping[str, bytes]] = {}
    volumes = _volumes(spec, loaded.taskrun, objects, volume_files)
    pod_sc = (((loaded.taskrun or {}).get("spec") or {}).get("podTemplate") or {}).get("securityContext") or {}
    tr_spec = (loaded.taskrun or {}).get("spec") or {}
    creds = creds_mod.credential_files(str(tr_spec.get("serviceAccountName") or ""), objects, warnings)
    if tr_spec.get("timeout"):
        warnings.append("the TaskRun's timeout is not enforced by taskimage run (step timeouts are)")
    # a workspace's volume, by the name $(workspaces.W.volume) gives it, can be mounted by name
    for w in workspaces:
        if w.bound:
            volumes[str(variables.workspaces[w.name]["volume"])] = f"ws:{w.name}"
    steps: list[StepPlan] = []
    sidecars: list[StepPlan] = []
    containers = [("step", i, raw, names[i]) for i, raw in enumerate(raw_steps)]
    containers += [("sidecar", i, raw, sidecar_names[i]) for i, raw in enumerate(raw_sidecars)]
    for what, i, raw, name in containers:
        leftovers: list[str] = []
        s = sub.substitute_step(raw, variables, leftovers)
        for text in sorted(set(leftovers)):
            warnings.append(f"{what} {name}: {text} came from a param value and is passed literally (as Tekton does)")
        all_env = kube.container_env(s.get("env") or [], s.get("envFrom") or [], objects, f"{what} {name}")
        env = [(k, v) for k, v, secret in all_env if not secret]
        secret_env = [(k, v) for k, v, secret in all_env if secret]
        for k, v in secret_env:
            if "\n" in v:
                raise UsageError(f"{what} {name}: env {k}: a multi-line value from a Secret is not supported")
        command = [str(c) for c in s["command"]] if s.get("command") else None
        args = [str(a) for a in s.get("args") or []]
        script = script_content(s["script"]) if s.get("script") else None
        env, command, args = sub.kube_expand_container(env, command, args)
        if script is not None:
            command = None  # set to the script file by the runner
        mounts: list[Mount] = []
        for vm in s.get("volumeMounts") or []:
            vname = str(vm.get("name"))
            if vname not in volumes:
                raise UsageError(f"{what} {name}: volumeMount {vname} names no volume of the task")
            kind = volumes[vname] or ""
            if kind.startswith("!"):
                raise UsageError(
                    f"{what} {name}: volume {vname} is a {kind[1:]}: not supported by taskimage run "
                    "(emptyDir, hostPath, configMap and secret volumes are)"
                )
            mounts.append(
                Mount(f"vol:{vname}", str(vm["mountPath"]), bool(vm.get("readOnly")), str(vm.get("subPath") or ""))
            )
        sc = {
            **{k: v for k, v in pod_sc.items() if k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")},
            **(s.get("securityContext") or {}),
        }
        if sc.get("runAsNonRoot") and sc.get("runAsUser") == 0:
            raise UsageError(f"{what} {name}: securityContext has runAsNonRoot and runAsUser 0")
        timeout = parse_duration(str(s["timeout"]), f"{what} {name} timeout") if s.get("timeout") else None
        on_error = str(s.get("onError") or "stopAndFail")
        if on_error not in ("continue", "stopAndFail"):
            raise UsageError(f"{what} {name}: onError {on_error!r}: accepted: continue, stopAndFail")
        probe = (s.get("readinessProbe") or s.get("startupProbe") or {}) if what == "sidecar" else {}
        if probe and not (probe.get("exec") or {}).get("command"):
            raise UsageError(f"{what} {name}: readiness and startup probes other than exec are not supported")
        (steps if what == "step" else sidecars).append(
            StepPlan(
                index=i,
                name=name,
                image=str(s["image"]),
                command=tuple(command) if command is not None else None,
                args=tuple(args),
                env=tuple(env),
                working_dir=str(s.get("workingDir") or ""),
                script=script,
                security_context=sc,
                pull_policy=pull_policy(str(s["image"]), s.get("imagePullPolicy")),
                timeout=timeout,
                on_error=on_error,
                mounts=tuple(mounts),
                secret_env=tuple(secret_env),
                kind=what,
                readiness=tuple(str(c) for c in probe["exec"]["command"]) if probe else None,
            )
        )
    return Plan(
        task_name=task,
        taskrun_name=run_name,
        namespace=namespace,
        uid=uid,
        params=values,
        workspaces=workspaces,
        volumes={k: v for k, v in volumes.items() if not (v or "").startswith(("!", "ws:"))},
        workspace_volumes={k: str(v)[3:] for k, v in volumes.items() if (v or "").startswith("ws:")},
        results=result_specs,
        steps=tuple(steps),
        warnings=tuple(warnings),
        sidecars=tuple(sidecars),
        volume_files=volume_files,
        creds=creds,
        results_from_steps=stepactions_mod.results_from_steps(spec.get("results") or []),
    )
