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
import sys

from taskimage import log
from taskimage.build import params
from taskimage.errors import TaskimageError, UsageError
from taskimage.tekton.localrun import Options, execute, load_documents, make_plan, pick_task, taskrun_task
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
    p.add_argument("--bundle", metavar="REF", help="take the Task from this Tekton bundle (with --name)")
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
    p.add_argument("--results-dir", metavar="DIR", help="keep the results here (an empty or new directory)")
    p.add_argument("--keep", action="store_true", help="keep the step containers and the run directory")
    p.add_argument("--output", choices=("table", "json"), default="table", help="results format on stdout")
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
        runs = [d for d in load_documents(args.taskrun) if d.get("kind") == "TaskRun"]
        if len(runs) != 1:
            raise UsageError(f"--taskrun {args.taskrun}: expected exactly one TaskRun, found {len(runs)}")
        taskrun = runs[0]
        task_docs = load_documents(args.task) if args.task else []
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


def run_command(args: argparse.Namespace) -> int:
    values = params.resolve(args, REGISTRY_PARAMS)
    tls_verify = values["TLSVERIFY"][0]
    authfile = values["AUTHFILE"][0] or None
    if authfile:
        from taskimage.tekton import bundle

        authfile = bundle.resolve_authfile(authfile, source=values["AUTHFILE"][1])
    loaded = load(args, tls_verify, authfile)
    plan = make_plan(loaded, cli_params=args.param, cli_workspaces=args.workspace)
    log.phase(f"taskrun {plan.taskrun_name} (task {plan.task_name}, {len(plan.steps)} steps)")
    report = execute(
        plan, Options(tls_verify=tls_verify, authfile=authfile, keep=args.keep, results_dir=args.results_dir)
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
