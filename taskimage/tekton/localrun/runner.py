"""Running a :class:`~taskimage.tekton.localrun.plan.Plan`: one podman container per step, in order.

The directories a Pod shares between its steps live in one run directory (removed afterwards
unless ``keep``): ``workspace`` (/workspace), ``results`` (/tekton/results, or ``results_dir``),
``home``, ``steps`` (exit codes, for ``$(steps.step-X.exitCode.path)``), ``creds``, ``scripts``
and one directory per emptyDir workspace or volume. They are world-writable, as Kubernetes
emptyDirs are, so steps running as another user can write to them.

The first step that exits non-zero (unless its ``onError`` is ``continue``) stops the run; later
steps never start and the run's exit code is that step's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import UsageError
from taskimage.tekton.localrun import creds as creds_mod
from taskimage.tekton.localrun import podman, runtime
from taskimage.tekton.localrun import results as results_mod
from taskimage.tekton.localrun import sidecars as sidecars_mod
from taskimage.tekton.localrun.plan import RESULTS_DIR, Plan, StepPlan, Workspace

POD_DIRS = {
    "workspace": "/workspace",
    "home": "/tekton/home",
    "steps": "/tekton/steps",
    "creds": "/tekton/creds",
}


@dataclasses.dataclass(frozen=True)
class Options:
    tls_verify: bool | None = None  # None: registries.conf decides (podman's default)
    authfile: str | None = None
    keep: bool = False
    results_dir: str | None = None
    runtime: str = "runc"
    runtime_defaults: str = "containerd"  # whose default capabilities a step gets (runtime.RUNTIMES)
    log_prefix: str = ""  # before the step name in "[step]" output lines ("task : " in a Pipeline)


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    name: str
    image: str
    exit_code: int | None  # None: not run
    seconds: float
    container: str


@dataclasses.dataclass(frozen=True)
class RunReport:
    taskrun: str
    task: str
    steps: tuple[StepOutcome, ...]
    results: results_mod.Results
    exit_code: int
    results_dir: str
    run_dir: str | None  # kept with --keep

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def as_json(self) -> dict:
        return {
            "taskRun": self.taskrun,
            "task": self.task,
            "succeeded": self.succeeded,
            "exitCode": self.exit_code,
            "steps": [
                {
                    "name": s.name,
                    "image": s.image,
                    "exitCode": s.exit_code,
                    "seconds": round(s.seconds, 2),
                    "container": s.container,
                }
                for s in self.steps
            ],
            "results": dict(self.results.values),
            "problems": [{"message": p.message, "failsTaskRun": p.fails} for p in self.results.problems],
            "undeclaredResults": list(self.results.undeclared),
            "terminationMessageBytes": self.results.message_bytes,
            "resultsDir": self.results_dir,
            "runDir": self.run_dir,
        }


def _mkdir(path: Path, mode: int = 0o777) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def container_name(plan: Plan, step: StepPlan) -> str:
    return f"{plan.taskrun_name}-{step.kind}-{step.name}"[:250]


def step_mounts(plan: Plan, step: StepPlan, run_dir: Path, results_dir: Path) -> list[tuple[str, str, bool]]:
    """(host, container, read-only) for one step, parents before children.

    A step's own volumeMount or a workspace at one of the Pod's paths (``/workspace``,
    ``/tekton/home``, …) replaces the runner's mount there, as Tekton leaves the implicit one out.
    A sidecar gets none of the Pod's paths, only the workspaces (where it mounts nothing itself)
    and its own volumes."""
    own = {m.target.rstrip("/") for m in step.mounts}
    workspaces = [
        w
        for w in plan.workspaces
        if w.bound and (w.steps is None or step.name in w.steps) and w.mount_path.rstrip("/") not in own
    ]
    own |= {w.mount_path.rstrip("/") for w in workspaces}
    mounts: list[tuple[str, str, bool]] = []
    if step.kind == "step":
        mounts += [(str(run_dir / d), target, False) for d, target in POD_DIRS.items() if target not in own]
        mounts.append((str(results_dir), RESULTS_DIR, False))
    if step.script is not None:
        mounts.append((str(run_dir / "scripts"), "/tekton/scripts", True))
    for w in workspaces:
        mounts.append((workspace_host(w, run_dir), w.mount_path, w.read_only))
    home = creds_mod.step_home(dict(step.env), step.security_context)
    for entry in sorted({rel.split("/", 1)[0] for rel in plan.creds} if step.kind == "step" else ()):
        # as the entrypoint copies them to $HOME
        mounts.append((str(run_dir / "creds" / entry), f"{home.rstrip('/')}/{entry}", False))
    for m in step.mounts:
        vname = m.source.split(":", 1)[1]
        if vname in plan.workspace_volumes:  # mounted by $(workspaces.W.volume)
            ws = next(w for w in plan.workspaces if w.name == plan.workspace_volumes[vname])
            mounts.append((workspace_host(ws, run_dir), m.target, m.read_only or ws.read_only))
            continue
        host = plan.volumes.get(vname) or str(run_dir / "emptydir" / f"vol-{vname}")
        if m.sub_path:
            host = os.path.join(host, m.sub_path)
        # the kubelet mounts configMap and secret volumes read-only
        mounts.append((host, m.target, m.read_only or vname in plan.volume_files))
    return sorted(mounts, key=lambda m: m[1].rstrip("/").count("/"))


def resolve_entrypoint(step: StepPlan, options: Options) -> StepPlan:
    """A step without ``command`` (nor script) gets the image's Entrypoint, else its Cmd, as
    Tekton's entrypoint lookup does; the image is pulled first (per its pull policy) to read it."""
    if step.script is not None or step.command is not None:
        return step
    exists = tools.run(["podman", "image", "exists", step.image], check=False, quiet=True, stream=False)
    pull = step.pull_policy
    if step.pull_policy == "always" or (exists.returncode != 0 and step.pull_policy != "never"):
        tools.run(
            podman.pull_argv(step.image, options.tls_verify, options.authfile),
            prefix=f"[{step.name}] ",
            what=f"podman pull of {step.kind} {step.name}'s image",
        )
        pull = "missing"  # just pulled
    out = tools.run(podman.inspect_argv(step.image), quiet=True, stream=False, what="podman image inspect")
    command = podman.lookup_command(json.loads(out.stdout or "null"))
    if command is None:
        raise UsageError(
            f"step {step.name}: image {step.image} has neither Entrypoint nor Cmd, and the step no command"
        )
    return dataclasses.replace(step, command=tuple(command), pull_policy=pull)


def workspace_host(w: Workspace, run_dir: Path) -> str:
    """Where a bound workspace lives on this machine: the given directory, the claim's directory
    for this run (shared by every workspace naming the claim), or a fresh one."""
    if w.host_dir:
        return w.host_dir
    if w.claim and w.files is None:
        return str(run_dir / "claims" / w.claim / w.sub_path) if w.sub_path else str(run_dir / "claims" / w.claim)
    return str(run_dir / "emptydir" / f"ws-{w.name}")


def _write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    _mkdir(directory, 0o755)
    for rel, data in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o644)  # the kubelet's defaultMode


def make_working_dir(step: StepPlan, mounts: list[tuple[str, str, bool]]) -> None:
    """Create a missing workingDir that lies in a mounted directory (``/workspace``, a workspace,
    a volume), as Tekton's working-dir initializer does for /workspace. (One elsewhere in the image
    is for the runtime: containerd creates it, podman refuses to start.)"""
    wd = step.working_dir.rstrip("/")
    inside = [
        (h, t.rstrip("/"))
        for h, t, ro in mounts
        if not ro and (wd == t.rstrip("/") or wd.startswith(t.rstrip("/") + "/"))
    ]
    if not wd or not inside:
        return
    host, target = max(inside, key=lambda m: len(m[1]))
    path = Path(host)
    for part in Path(wd[len(target) :].lstrip("/")).parts:
        path = path / part
        if not path.exists():
            path.mkdir()
            os.chmod(path, 0o777)  # any step user may use it, as in an emptyDir


def step_argv(
    plan: Plan, step: StepPlan, run_dir: Path, results_dir: Path, options: Options
) -> tuple[list[str], list[str]]:
    security, warnings = podman.security_flags(step.security_context, options.runtime_defaults)
    command = [step.script_path] if step.script is not None else step.command
    mounts = step_mounts(plan, step, run_dir, results_dir)
    make_working_dir(step, mounts)
    argv = podman.run_argv(
        name=container_name(plan, step),
        image=step.image,
        command=command,
        args=step.args,
        env=step.env,
        working_dir=step.working_dir,
        mounts=mounts,
        security=security,
        pull=step.pull_policy,
        tls_verify=options.tls_verify,
        authfile=options.authfile,
        keep=options.keep,
        runtime=options.runtime,
        env_file=str(run_dir / "env" / f"{step.kind}-{step.index}.env") if step.secret_env else None,
        detach=step.kind == "sidecar",
        hostname=f"{plan.taskrun_name}-pod"[:63],
    )
    return argv, warnings


def prepare(plan: Plan, options: Options) -> tuple[Path, Path]:
    """Make the run directory (and check the results directory) before any container starts."""
    if options.results_dir:
        results_dir = Path(options.results_dir).resolve()
        if results_dir.exists() and any(results_dir.iterdir()):
            raise UsageError(f"--results-dir {options.results_dir}: not empty (stale results would be read back)")
    run_dir = Path(tempfile.mkdtemp(prefix=f"taskimage-run-{plan.taskrun_name}-"))
    os.chmod(run_dir, 0o755)
    for d in POD_DIRS:
        _mkdir(run_dir / d)
    for s in plan.steps:
        _mkdir(run_dir / "steps" / f"step-{s.name}")
        _mkdir(run_dir / "steps" / f"step-{s.name}" / "results")  # $(step.results.R.path)
        (run_dir / "steps" / str(s.index)).symlink_to(f"step-{s.name}")  # Tekton's /tekton/steps/<index>/
    results_dir = _mkdir(Path(options.results_dir).resolve()) if options.results_dir else _mkdir(run_dir / "results")
    scripts = _mkdir(run_dir / "scripts", 0o755)
    for s in (*plan.steps, *plan.sidecars):
        if s.script is not None:
            path = scripts / os.path.basename(s.script_path)
            path.write_text(s.script)
            os.chmod(path, 0o755)
    for w in plan.workspaces:
        if w.bound and w.host_dir is None:
            if w.files is not None:
                _write_files(Path(workspace_host(w, run_dir)), w.files)
            else:
                _mkdir(Path(workspace_host(w, run_dir)))
    for name, host in plan.volumes.items():
        if name in plan.volume_files:
            _write_files(run_dir / "emptydir" / f"vol-{name}", plan.volume_files[name])
        elif host is None:
            _mkdir(run_dir / "emptydir" / f"vol-{name}")
    for rel, data in plan.creds.items():
        path = run_dir / "creds" / rel
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(0o600)
        path.write_bytes(data)
    env_dir = _mkdir(run_dir / "env", 0o700)
    for s in (*plan.steps, *plan.sidecars):
        if s.secret_env:  # values from Secrets: in a file only root can read, not on podman's command line
            path = env_dir / f"{s.kind}-{s.index}.env"
            path.touch(0o600)
            path.write_text("".join(f"{k}={v}\n" for k, v in s.secret_env))
    return run_dir, results_dir


def execute(plan: Plan, options: Options) -> RunReport:
    for w in plan.warnings:
        log.warn(w)
    run_dir, results_dir = prepare(plan, options)
    outcomes: list[StepOutcome] = []
    exit_code = 0
    current = ""
    started: list[tuple[str, str]] = []  # sidecars: (container, name)
    try:
        for sidecar in plan.sidecars:
            sidecar = resolve_entrypoint(sidecar, options)
            argv, warnings = step_argv(plan, sidecar, run_dir, results_dir, options)
            for w in warnings:
                log.warn(f"sidecar {sidecar.name}: {w}")
            log.phase(f"sidecar {sidecar.name} ({sidecar.image})")
            started.append((container_name(plan, sidecar), sidecar.name))
            tools.run(argv, prefix=f"[sidecar {sidecar.name}] ", what=f"podman run of sidecar {sidecar.name}")
        for container, name in started:
            sidecar_plan = next(s for s in plan.sidecars if s.name == name)
            sidecars_mod.wait_ready(container, name, sidecar_plan.readiness)
        for step in plan.steps:
            name = container_name(plan, step)
            if exit_code != 0:
                outcomes.append(StepOutcome(step.name, step.image, None, 0.0, name))
                continue
            step = resolve_entrypoint(step, options)
            argv, warnings = step_argv(plan, step, run_dir, results_dir, options)
            for w in warnings:
                log.warn(f"step {step.name}: {w}")
            log.phase(f"step {step.name} ({step.image})")
            timer = log.Timer()
            current = name
            result = tools.run(argv, prefix=f"[{options.log_prefix}{step.name}] ", check=False, timeout=step.timeout)
            current = ""
            rc = result.returncode
            (run_dir / "steps" / f"step-{step.name}" / "exitCode").write_text(str(rc))
            outcomes.append(StepOutcome(step.name, step.image, rc, timer.seconds, name))
            if rc == 124 and step.timeout is not None:
                _remove_container(name)  # the podman client was stopped, its container may live on
            if rc != 0:
                if step.on_error == "continue":
                    log.warn(f"step {step.name} exited with {rc}; onError: continue, so the run goes on")
                else:
                    hint = runtime.missing_hint(
                        options.runtime_defaults, step.security_context, result.stdout + result.stderr
                    )
                    if hint:
                        log.error(f"step {step.name}: {hint}")
                    log.error(f"step {step.name} failed with exit code {rc}: later steps are not run")
                    exit_code = rc if rc > 0 else 1
        for task_result, (step_name, step_result) in plan.results_from_steps.items():
            source = run_dir / "steps" / f"step-{step_name}" / "results" / step_result
            if source.is_file() and not (results_dir / task_result).exists():
                shutil.copyfile(source, results_dir / task_result)
        results = results_mod.read(results_dir, plan.results)
    finally:
        for container, name in started:
            if options.keep:
                continue
            if tools.stopping():  # SIGINT/SIGTERM: remove it, no time for its log
                sidecars_mod.remove(container)
            else:
                sidecars_mod.stop(container, name)
        if current and not options.keep:
            _remove_container(current)
        if not options.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    if exit_code == 0 and any(p.fails for p in results.problems):
        exit_code = 1
    return RunReport(
        taskrun=plan.taskrun_name,
        task=plan.task_name,
        steps=tuple(outcomes),
        results=results,
        exit_code=exit_code,
        results_dir=str(results_dir) if options.results_dir or options.keep else "",  # else removed
        run_dir=str(run_dir) if options.keep else None,
    )


def _remove_container(name: str) -> None:
    """Remove our own step container, left behind when its podman client was stopped."""
    try:
        tools.run(["podman", "rm", "--force", "--ignore", name], check=False, quiet=True, stream=False, cleanup=True)
    except Exception:  # podman missing or broken: nothing more to do here
        pass
