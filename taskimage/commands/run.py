"""``taskimage run``: run a Tekton Task on this machine, one podman container per step.

    taskimage run TASK.yaml -p NAME=VALUE … -w NAME=DIR …
    taskimage run --bundle REF --name NAME …
    taskimage run --taskrun TASKRUN.yaml [TASK.yaml]

Params, workspaces, substitution and results follow Tekton's rules (see
:mod:`taskimage.tekton.localrun`). Logs go to stderr; the results go to stdout as a table, or as JSON
with ``--output json``. The exit code is the first failing step's, else 1 when the results would
fail the TaskRun (e.g. over the 4096-byte budget), else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from taskimage import log
from taskimage.build import params
from taskimage.errors import TaskimageError, UsageError
from taskimage.tekton.localrun import Options, execute, load_documents, make_plan, pick_task, stepactions, taskrun_task
from taskimage.tekton.localrun import kubeobjects as kube
from taskimage.tekton.localrun.runtime import RUNTIMES
from taskimage.tekton.localrun.task import Loaded, bundle_ref, task_from_object

REGISTRY_PARAMS = tuple(params.BY_NAME[name] for name in ("TLSVERIFY", "AUTHFILE"))


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a Tekton Task locally with podman, by Tekton's rules",
        description="Run a Task (from a file, a bundle or a TaskRun) on this machine: each step in a "
        "podman container, in order, with Tekton's params, workspaces, substitution and results.",
    )
    p.add_argument("task", nargs="?", metavar="TASK.yaml", help="the Task (a file that may hold several documents)")
    p.add_argument("--bundle", metavar="REF", help="take the Task or Pipeline from this Tekton bundle (with --name)")
    p.add_argument("--name", metavar="NAME", help="the Task's name in the bundle (or in a multi-document file)")
    p.add_argument(
        "--taskrun",
        metavar="TASKRUN.yaml",
        help="run this TaskRun: its params, workspaces and taskSpec/taskRef (bundles resolver, or "
        "taskRef.name with TASK.yaml)",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help='a param value, as tkn takes it: arrays comma-separated (a,b), objects "k1:v1, k2:v2"',
    )
    p.add_argument(
        "-w",
        "--workspace",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="bind a workspace to a directory of this machine",
    )
    p.add_argument(
        "--configmap",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a ConfigMap the TaskRun uses (volume, workspace, env valueFrom/envFrom): each file in DIR is a key "
        "(ConfigMaps in the TaskRun's file are used too)",
    )
    p.add_argument(
        "--secret-volume",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a Kubernetes Secret the TaskRun uses, likewise (not the build's --secret); its values stay out of logs",
    )
    p.add_argument(
        "--stepaction",
        action="append",
        default=[],
        metavar="FILE",
        help="StepActions the steps refer to by name (those in the TaskRun's or Task's file are used too)",
    )
    p.add_argument("--results-dir", metavar="DIR", help="keep the results here (an empty or new directory)")
    p.add_argument("--keep", action="store_true", help="keep the step containers and the run directory")
    p.add_argument("--output", choices=("table", "json"), default="table", help="results format on stdout")
    p.add_argument(
        "--runtime-defaults",
        choices=RUNTIMES,
        default="containerd",
        help="whose default capabilities a step gets, as in a Pod on that runtime: containerd (most "
        "clusters) or crio (CRI-O, OpenShift: no MKNOD, NET_RAW, SETFCAP, AUDIT_WRITE)",
    )
    g = p.add_argument_group("Pipelines and PipelineRuns")
    g.add_argument(
        "--task",
        dest="task_files",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of Tasks (or Pipelines) that refs without a resolver name (repeatable)",
    )
    g.add_argument(
        "--stand-in",
        action="append",
        default=[],
        metavar="TASK=FILE",
        help="run the Task in FILE for pipeline task TASK instead of what its taskRef names (said in the log)",
    )
    g.add_argument(
        "--event",
        choices=("push", "pull_request"),
        default="push",
        help="Pipelines-as-Code: the event to run a .tekton/ PipelineRun for (default push)",
    )
    g.add_argument(
        "--branch",
        metavar="BRANCH",
        help="Pipelines-as-Code: the target branch (push: default the checked-out branch; pull_request: main)",
    )
    g.add_argument(
        "--repo",
        metavar="DIR",
        help="Pipelines-as-Code: the git checkout the event comes from (default: the one holding the file)",
    )
    g.add_argument("--repo-url", metavar="URL", help="Pipelines-as-Code: {{ repo_url }} (default: the origin remote)")
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve and check everything (refs, params, workspaces, references), print the plan, run nothing",
    )
    g.add_argument("--parallel", type=int, default=0, metavar="N", help="TaskRuns at a time (default: the CPU count)")
    g.add_argument(
        "--hub-url",
        metavar="URL",
        help="Artifact Hub for resolver: hub (default $TASKIMAGE_HUB_URL, else https://artifacthub.io)",
    )
    params.add_arguments(p, REGISTRY_PARAMS, positional_platforms=False)
    p.set_defaults(func=run_command)


def _fetch(ref: str, name: str, kind: str, tls_verify: bool, authfile: str | None) -> dict:
    try:
        from taskimage.tekton.bundle import fetch_object
    except ImportError as exc:
        raise TaskimageError(
            "--bundle: this taskimage has no bundle reader (taskimage.tekton.bundle.fetch_object)"
        ) from exc
    return fetch_object(ref, name, kind, tls_verify=tls_verify, authfile=authfile)


def load(args: argparse.Namespace, tls_verify: bool, authfile: str | None) -> Loaded:
    """The Task to run (and its TaskRun) from whichever source the flags name."""
    if args.bundle and (args.task or args.taskrun):
        raise UsageError("--bundle: give either --bundle REF --name NAME, TASK.yaml, or --taskrun")
    if args.bundle:
        if not args.name:
            raise UsageError("--bundle needs --name (the Task's name in the bundle)")
        obj = _fetch(args.bundle, args.name, "task", tls_verify, authfile)
        return task_from_object(obj, f"{args.bundle} ({args.name})")
    if args.taskrun:
        run_docs = load_documents(args.taskrun)
        runs = [d for d in run_docs if d.get("kind") == "TaskRun"]
        if len(runs) != 1:
            raise UsageError(f"--taskrun {args.taskrun}: expected exactly one TaskRun, found {len(runs)}")
        taskrun = runs[0]
        # the Task it names may sit in the same file (as kubectl apply -f takes them)
        task_docs = load_documents(args.task) if args.task else [d for d in run_docs if d.get("kind") == "Task"]
        ref = bundle_ref(taskrun)
        fetched = None
        from taskimage.tekton import hub

        hub_params = hub.hub_ref(taskrun)
        if hub_params and not task_docs and not (taskrun.get("spec") or {}).get("taskSpec"):
            fetched = hub.fetch(hub_params)  # resolver: hub, type artifact (Artifact Hub's API)
        if ref and not task_docs and not (taskrun.get("spec") or {}).get("taskSpec"):
            bundle, name, kind = ref
            if kind != "task":
                raise UsageError(f"--taskrun {args.taskrun}: the bundle reference is a {kind}, not a task")
            fetched = _fetch(bundle, name, kind, tls_verify, authfile)
        return taskrun_task(taskrun, args.taskrun, task_docs, fetched=fetched)
    if not args.task:
        raise UsageError("run: give TASK.yaml, --bundle REF --name NAME, or --taskrun TASKRUN.yaml")
    return pick_task(load_documents(args.task), args.task, args.name)


def _is_pipeline(args: argparse.Namespace) -> list[dict] | None:
    """The documents of TASK.yaml when it holds a Pipeline or PipelineRun (and no --taskrun)."""
    if not args.task or args.taskrun or args.bundle:
        return None
    docs = load_documents(args.task)
    kinds = {d.get("kind") for d in docs}
    return docs if kinds & {"Pipeline", "PipelineRun"} else None


def _pipelines_as_code(args: argparse.Namespace) -> list[dict] | None:
    """None: not a Pipelines-as-Code file. []: PaC would not trigger it (said in the log and on
    stdout). Else the documents with placeholders filled, plus the annotations' remote tasks."""
    import os
    from pathlib import Path

    import yaml

    from taskimage.tekton.localrun import pac
    from taskimage.tekton.localrun.resolve import DEFAULT_HUB_URL

    if not args.task or args.taskrun or args.bundle or not os.path.isfile(args.task):
        return None
    text = Path(args.task).read_text()
    if not pac.is_pac(text):
        return None
    repo = args.repo
    if not repo:
        from taskimage import proc

        found = proc.run(
            ["git", "-C", os.path.dirname(os.path.abspath(args.task)), "rev-parse", "--show-toplevel"],
            check=False,
            quiet=True,
            stream=False,
        )
        repo = found.stdout.strip() if found.returncode == 0 else "."
    event = pac.event_from_checkout(repo, args.event, args.branch, args.repo_url)
    variables = event.variables()
    filled = pac.fill(text, variables, args.task)
    try:
        docs = [d for d in yaml.safe_load_all(filled) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise UsageError(f"{args.task}: not valid YAML once its placeholders are filled: {exc}") from None
    runs = [d for d in docs if d.get("kind") == "PipelineRun"]
    if len(runs) != 1:
        raise UsageError(f"{args.task}: Pipelines-as-Code runs one PipelineRun per file, found {len(runs)}")
    annotations = {str(k): str(v) for k, v in ((runs[0].get("metadata") or {}).get("annotations") or {}).items()}
    triggered, why = pac.would_trigger(annotations, event, args.task)
    what = (
        f"{event.event_type} to {event.target_branch}"
        if event.event_type == "push"
        else (f"pull_request {event.source_branch} -> {event.target_branch}")
    )
    log.phase(f"Pipelines-as-Code, {what} at {event.revision[:12]} ({event.repo_url})")
    if not triggered:
        log.info(f"Pipelines-as-Code would not run {args.task}: {why}")
        if args.output == "json":
            sys.stdout.write(json.dumps({"triggered": False, "reason": why}) + "\n")
        return []
    log.info(f"Pipelines-as-Code would run it: {why}")
    for key in pac.IGNORED:
        if pac.PREFIX + key in annotations:
            log.warn(f"annotation {pac.PREFIX}{key}: ignored (means something only on a cluster)")
    hub = (args.hub_url or os.environ.get("TASKIMAGE_HUB_URL") or DEFAULT_HUB_URL).rstrip("/")
    if any(m.group(1) == "git_auth_secret" for m in pac.PLACEHOLDER.finditer(text)):
        log.info(
            f"Secret {variables['git_auth_secret']} ({{{{ git_auth_secret }}}}): made here without a token (-w WORKSPACE=DIR to bind your own)"
        )
        docs = docs + [pac.git_auth_secret(variables["git_auth_secret"], event.repo_url)]
    return docs + pac.remote_tasks(annotations, repo, args.task, hub)


def _bundle_has_pipeline(args: argparse.Namespace, tls_verify: bool, authfile: str | None) -> bool:
    from taskimage.oci.registry import Access
    from taskimage.tekton.bundle import list_entries

    entries = list_entries(args.bundle, Access(tls_verify=tls_verify, authfile=authfile))
    return any(e.kind == "pipeline" and e.name == args.name for e in entries)


def run_command(args: argparse.Namespace) -> int:
    values = params.resolve(args, REGISTRY_PARAMS)
    tls_verify = values["TLSVERIFY"][0]
    tls_param = params.BY_NAME["TLSVERIFY"]
    # steps' pulls follow registries.conf (as a node's do) unless --tls-verify is given
    step_tls = tls_verify if getattr(args, tls_param.dest, None) is not None or os.environ.get(tls_param.env) else None
    authfile = values["AUTHFILE"][0] or None
    if authfile:
        from taskimage.tekton import bundle

        authfile = bundle.resolve_authfile(authfile, source=values["AUTHFILE"][1])
    pac_docs = _pipelines_as_code(args)
    if pac_docs is not None:
        return run_pipeline(args, pac_docs, tls_verify, authfile, step_tls) if pac_docs else 0
    docs = _is_pipeline(args)
    if (
        docs is None
        and args.bundle
        and args.name
        and not args.taskrun
        and _bundle_has_pipeline(args, tls_verify, authfile)
    ):
        docs = [
            {
                "kind": "PipelineRun",
                "apiVersion": "tekton.dev/v1",
                "metadata": {"generateName": f"{args.name}-run-"},
                "spec": {
                    "pipelineRef": {
                        "resolver": "bundles",
                        "params": [
                            {"name": "bundle", "value": args.bundle},
                            {"name": "name", "value": args.name},
                            {"name": "kind", "value": "pipeline"},
                        ],
                    }
                },
            }
        ]
        args.task = f"{args.bundle} ({args.name})"
    if docs is not None:
        return run_pipeline(args, docs, tls_verify, authfile, step_tls)
    if args.task_files or args.stand_in:
        raise UsageError("--task and --stand-in apply to Pipelines and PipelineRuns")
    loaded = load(args, tls_verify, authfile)
    docs = [*(load_documents(args.taskrun) if args.taskrun else []), *(load_documents(args.task) if args.task else [])]
    objects = kube.with_cli(kube.from_documents(docs), args.configmap, args.secret_volume)
    actions = stepactions.collect([*docs, *(d for f in args.stepaction for d in load_documents(f))])
    plan = make_plan(
        loaded,
        cli_params=args.param,
        cli_workspaces=args.workspace,
        objects=objects,
        stepactions=actions,
        fetch_stepaction=lambda bundle, name: _fetch(bundle, name, "stepaction", tls_verify, authfile),
    )
    log.phase(f"taskrun {plan.taskrun_name} (task {plan.task_name}, {len(plan.steps)} steps)")
    report = execute(
        plan,
        Options(
            tls_verify=step_tls,
            authfile=authfile,
            keep=args.keep,
            results_dir=args.results_dir,
            runtime_defaults=args.runtime_defaults,
        ),
    )

    log.info(
        log.table(
            ("STEP", "IMAGE", "EXIT", "SECONDS"),
            [
                (s.name, s.image, "not run" if s.exit_code is None else str(s.exit_code), f"{s.seconds:.1f}")
                for s in report.steps
            ],
        )
    )
    for problem in report.results.problems:
        (log.error if problem.fails else log.warn)(problem.message)
    if report.results.undeclared:
        log.warn(
            f"files in /tekton/results that are not declared results (ignored): {', '.join(report.results.undeclared)}"
        )
    if args.keep:
        log.info(
            f"kept: containers {', '.join(s.container for s in report.steps if s.exit_code is not None)}; run dir {report.run_dir}"
        )
    if args.output == "json":
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        rows = []
        for name, value in report.results.values.items():
            rows.append((name, value if isinstance(value, str) else json.dumps(value)))
        sys.stdout.write(log.table(("RESULT", "VALUE"), rows) + "\n")
    sys.stdout.flush()
    status = "succeeded" if report.succeeded else f"failed (exit code {report.exit_code})"
    log.info(f"taskrun {report.taskrun} {status}")
    return report.exit_code


def run_pipeline(
    args: argparse.Namespace, docs: list[dict], tls_verify: bool, authfile: str | None, step_tls: bool | None
) -> int:
    from taskimage.tekton.localrun.pipeline import PipelineRunner, RunOptions, load_source
    from taskimage.tekton.localrun.resolve import Resolver

    if args.parallel < 0:
        raise UsageError(f"--parallel {args.parallel}: give a positive number (0: the CPU count)")
    stand_ins = {}
    for item in args.stand_in:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--stand-in {item}: expected TASK=FILE")
        stand_ins[name] = path
    extra = [d for f in args.task_files for d in load_documents(f)]
    resolver = Resolver(
        docs + extra, tls_verify=tls_verify, authfile=authfile, hub_url=args.hub_url, stand_ins=stand_ins
    )
    everything = [*docs, *extra]
    options = RunOptions(
        tls_verify=tls_verify,
        authfile=authfile,
        keep=args.keep,
        parallel=args.parallel,
        step_tls=step_tls,
        runtime_defaults=args.runtime_defaults,
        objects=kube.with_cli(kube.from_documents(everything), args.configmap, args.secret_volume),
        stepactions=stepactions.collect([*everything, *(d for f in args.stepaction for d in load_documents(f))]),
        fetch_stepaction=lambda bundle, name: _fetch(bundle, name, "stepaction", tls_verify, authfile),
    )
    runs = [d for d in docs if d.get("kind") == "PipelineRun"]
    others = [d for d in docs if d.get("kind") != "PipelineRun"]
    groups = [[r, *others] for r in runs] or [docs]  # several PipelineRuns in a file: one after another
    runners: list = []
    reports = []
    try:
        try:  # every run is checked (params, refs, workspaces) before the first one starts
            for group in groups:
                source = load_source(group, args.task, resolver, args.name)
                runners.append(
                    PipelineRunner(
                        source,
                        resolver,
                        options,
                        cli_params=args.param,
                        cli_workspaces=args.workspace,
                    )
                )
        except BaseException:
            for r in runners:
                r.discard()
            raise
        if args.dry_run:
            plans = [r.plan() for r in runners]
            for r in runners:
                r.discard()
            for plan in plans:
                log.info(log.table(("TASK", "TASK REF", "RUNS AFTER", "FROM"), plan["rows"]))
            out = plans[0]["json"] if len(plans) == 1 else {"pipelineRuns": [p["json"] for p in plans]}
            sys.stdout.write(json.dumps(out, indent=2) + "\n")
            return 0
        for runner in runners:
            log.phase(f"pipelinerun {runner.name} (pipeline {runner.pname}, {len(runner.tasks)} tasks)")
            reports.append(runner.run())
    finally:
        resolver.close()
    for report in reports:
        log.info(report.table())
    if args.output == "json":
        out = reports[0].as_json() if len(reports) == 1 else {"pipelineRuns": [r.as_json() for r in reports]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        rows = [(k, v if isinstance(v, str) else json.dumps(v)) for r in reports for k, v in r.results.items()]
        sys.stdout.write(log.table(("RESULT", "VALUE"), rows) + "\n")
    sys.stdout.flush()
    for report in reports:
        if report.succeeded:
            log.info(f"pipelinerun {report.name} succeeded in {report.seconds:.1f} s")
        else:
            log.error(f"pipelinerun {report.name} failed: {report.failure()}")
    return 0 if all(r.succeeded for r in reports) else 1
