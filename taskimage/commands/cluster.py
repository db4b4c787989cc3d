"""``taskimage cluster install``, ``taskimage pipeline start``, ``taskimage logs``: Tekton on a cluster.

The flags of ``pipeline start`` mirror ``tkn pipeline start`` where tkn has them (``-p``, ``-w``,
``-n``, ``-s/--serviceaccount``, ``--showlog``, ``--use-param-defaults``, ``--prefix-name``,
``--timeout``, ``--dry-run``), so a habit carries over. stdout gets what scripts read: the
applied objects (kubectl's ``kind.group/name action`` spelling), the PipelineRun name, and for
``logs`` the log lines; progress, results and the final status go to stderr.
"""

from __future__ import annotations

import argparse
import copy
import importlib.resources
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import taskimage
from taskimage import log
from taskimage.errors import UsageError
from taskimage.tekton import model as tekton

if TYPE_CHECKING:  # the kubernetes client takes ~0.6 s to import: only commands that talk to a cluster pay it
    from taskimage.tekton.kube.client import Kube
    from taskimage.tekton.kube.follow import Outcome

DEFAULT_TASK = "catalog/task/buildah-multiarch/0.1/buildah-multiarch.yaml"
DEFAULT_PIPELINE = "catalog/pipeline/buildah-multiarch/0.1/buildah-multiarch.yaml"
DEFAULT_BINFMT = "tekton/binfmt-daemonset.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    cluster = subparsers.add_parser("cluster", help="install taskimage's Tekton resources into a cluster")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", parser_class=type(cluster))
    install = cluster_sub.add_parser(
        "install",
        help="apply the Task, the Pipeline and the binfmt DaemonSet (idempotent)",
        description="Apply the buildah-multiarch Task and Pipeline (or, with --bundle, a Pipeline that "
        "resolves the Task from a bundle image) and the qemu binfmt DaemonSet, all running the task image "
        "--builder-image names. Existing objects are patched only when they differ; each object is reported "
        "as created, unchanged or updated.",
    )
    _connection_flags(install)
    install.add_argument(
        "--builder-image",
        metavar="REPO@DIGEST",
        help="the task image (a released one, pinned by digest) the DaemonSet runs and the Task's and Pipeline's "
        "BUILDER_IMAGE param defaults to; needed while the files name the unreleased sha256:000… placeholder",
    )
    install.add_argument(
        "--bundle", metavar="REF", help="resolve the Task from this Tekton bundle image instead of applying it"
    )
    install.add_argument(
        "--from",
        dest="root",
        metavar="DIR",
        help="repository checkout holding catalog/ and tekton/ (default: the copies shipped in the package)",
    )
    install.add_argument(
        "--task", default=DEFAULT_TASK, metavar="PATH", help=f"Task YAML, relative to --from (default: {DEFAULT_TASK})"
    )
    install.add_argument(
        "--pipeline",
        default=DEFAULT_PIPELINE,
        metavar="PATH",
        help=f"Pipeline YAML, relative to --from (default: {DEFAULT_PIPELINE})",
    )
    install.add_argument(
        "--binfmt",
        default=DEFAULT_BINFMT,
        metavar="PATH",
        help=f"binfmt DaemonSet YAML, relative to --from (default: {DEFAULT_BINFMT})",
    )
    install.add_argument(
        "--skip-binfmt",
        action="store_true",
        help="do not apply the privileged binfmt DaemonSet (nodes already have qemu handlers)",
    )
    install.add_argument(
        "--dry-run",
        action="store_true",
        help="print the objects it would apply (YAML) and contact no cluster",
    )
    install.set_defaults(func=cmd_install)
    cluster.set_defaults(func=lambda args: _missing_subcommand(cluster))

    pipeline = subparsers.add_parser("pipeline", help="start Tekton Pipelines (like tkn pipeline)")
    pipeline_sub = pipeline.add_subparsers(dest="pipeline_command", metavar="COMMAND", parser_class=type(pipeline))
    start = pipeline_sub.add_parser(
        "start",
        help="create a PipelineRun (like tkn pipeline start) and optionally follow it",
        description="Create a PipelineRun of the Pipeline NAME and print its name. With --showlog, follow "
        "each TaskRun's pod and stream its steps' logs, then show the results and the status; the exit "
        "code is non-zero when the run fails.",
    )
    start.add_argument("name", metavar="NAME", help="the Pipeline to run")
    start.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a param; arrays as comma lists (repeatable)",
    )
    start.add_argument(
        "-w",
        "--workspace",
        action="append",
        default=[],
        metavar="name=NAME,...",
        help="a workspace: claimName=, claimSize=1Gi, volumeClaimTemplateFile=, emptyDir=, config=, secret=, csiFile= (repeatable)",
    )
    start.add_argument("-s", "--serviceaccount", metavar="SA", help="service account the TaskRuns run as")
    start.add_argument("--showlog", action="store_true", help="follow the run and stream its logs")
    start.add_argument(
        "--use-param-defaults",
        action="store_true",
        help="accepted for tkn compatibility: taskimage never prompts, params not given always take the Pipeline's defaults",
    )
    start.add_argument("--prefix-name", metavar="PREFIX", help="name the run PREFIX-xxxxx (default: NAME-run-xxxxx)")
    start.add_argument(
        "--timeout", metavar="DURATION", help="the PipelineRun's timeout (spec.timeouts.pipeline), e.g. 1h30m"
    )
    start.add_argument("--dry-run", action="store_true", help="print the PipelineRun YAML instead of creating it")
    _connection_flags(start)
    start.set_defaults(func=cmd_start)
    pipeline.set_defaults(func=lambda args: _missing_subcommand(pipeline))

    logs = subparsers.add_parser(
        "logs",
        help="print the logs of a PipelineRun or TaskRun",
        description="Print the step logs of RUN (a PipelineRun, else a TaskRun) prefixed [task:step]. With -f, "
        "follow until the run ends; the exit code is non-zero when the run failed.",
    )
    logs.add_argument("run", metavar="RUN", help="PipelineRun or TaskRun name")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    _connection_flags(logs)
    logs.set_defaults(func=cmd_logs)


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n", "--namespace", metavar="NS", help="namespace (default: the kubeconfig context's, else default)"
    )
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")


def _missing_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _connect(args: argparse.Namespace) -> Kube:
    from taskimage.tekton.kube.client import Kube

    return Kube.connect(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)


def _stdout(line: str) -> None:
    sys.stdout.write(log.redact(line) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- cluster install


def default_root() -> Path:
    """The Task, Pipeline and DaemonSet shipped in the package (``taskimage/data/cluster``, the
    repository's catalog/ and tekton/ files as the catalog generator copies them): a wheel has
    them as much as a checkout."""
    return Path(str(importlib.resources.files(taskimage) / "data" / "cluster"))


def _resolve(root: Path, path: str, flag: str) -> Path:
    p = Path(path)
    p = p if p.is_absolute() else root / p
    if not p.is_file():
        raise UsageError(
            f"{flag} {path}: no such file under {root} (use --from DIR with a checkout of the taskimage repository)"
        )
    return p


def install_documents(args: argparse.Namespace) -> list[dict]:
    """The objects ``cluster install`` applies, in order: Task (unless --bundle), Pipeline, DaemonSet,
    with ``--builder-image`` set in them (:func:`with_builder_image`). A usage error when an object
    would still name the unreleased placeholder image, which no cluster can pull."""
    builder = builder_image(args.builder_image) if args.builder_image is not None else None
    root = Path(args.root) if args.root else default_root()
    if args.root and not root.is_dir():
        raise UsageError(f"--from {args.root}: not a directory")
    task_docs = tekton.load_file(_resolve(root, args.task, "--task"))
    tasks = [tekton.Task.from_dict(d) for d in task_docs]
    pipelines = [tekton.Pipeline.from_dict(d) for d in tekton.load_file(_resolve(root, args.pipeline, "--pipeline"))]
    if len(tasks) != 1 or len(pipelines) != 1:
        raise UsageError(
            f"--task/--pipeline: expected one Task and one Pipeline, got {len(tasks)} and {len(pipelines)}"
        )
    docs: list[dict] = []
    if args.bundle:
        docs.append(pipelines[0].with_bundle(args.bundle, tasks[0].name).to_dict())
    else:
        # The published Pipeline resolves the Task from the release bundle; point it at the Task
        # we apply here instead, so the cluster runs exactly these two files.
        pipeline, changed = pipelines[0].with_task_ref(tasks[0].name)
        if not changed:
            log.warn(f"Pipeline {pipeline.name} does not refer to Task {tasks[0].name}; applying both as they are")
        docs += [tasks[0].to_dict(), pipeline.to_dict()]
    if not args.skip_binfmt:
        binfmt = tekton.load_file(_resolve(root, args.binfmt, "--binfmt"))
        docs += binfmt
    if builder:
        docs = with_builder_image(docs, builder)
    refuse_placeholder(docs, builder)
    return docs


BUILDER_PARAM = "BUILDER_IMAGE"


def builder_image(value: str) -> str:
    """``--builder-image``: an image reference pinned by a sha256 digest, as ``REGISTRY/REPO@DIGEST``."""
    from taskimage.oci.reference import parse_pinned
    from taskimage.tekton.catalog import UNRELEASED_DIGEST

    ref, digest = parse_pinned(value, source="--builder-image", example="REPO@sha256:DIGEST (a released task image)")
    if digest == UNRELEASED_DIGEST:
        raise UsageError(f"--builder-image: {value!r} is the unreleased placeholder digest; give a released task image")
    return ref.with_digest(digest)


def with_builder_image(docs: list[dict], image: str) -> list[dict]:
    """Copies of ``docs`` running the task image ``image``: the default of the BUILDER_IMAGE param of
    every Task and Pipeline that declares one, and the image of every container of a DaemonSet (the
    binfmt DaemonSet runs ``taskimage binfmt install`` from the task image)."""
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        spec = doc.get("spec") or {}
        if doc.get("kind") in ("Task", "Pipeline"):
            for param in spec.get("params") or []:
                if param.get("name") == BUILDER_PARAM:
                    param["default"] = image
        elif doc.get("kind") == "DaemonSet":
            pod = (spec.get("template") or {}).get("spec") or {}
            for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
                container["image"] = image
        out.append(doc)
    return out


def refuse_placeholder(docs: list[dict], builder: str | None) -> None:
    """A usage error naming the objects that still carry the release placeholder image
    (``…@sha256:000…``, the digest of no image): applied, the DaemonSet would crash-loop on
    ImagePullBackOff and every TaskRun keeping the BUILDER_IMAGE default would fail."""
    from taskimage.tekton.catalog import UNRELEASED_DIGEST

    where = [f"{d.get('kind')} {(d.get('metadata') or {}).get('name')}" for d in docs if _names(d, UNRELEASED_DIGEST)]
    if not where:
        return
    objects = ", ".join(where)
    if builder is None:
        raise UsageError(
            f"the unreleased placeholder image …@sha256:000… (in {objects}) cannot be pulled by any cluster: "
            "pass --builder-image REPO@sha256:DIGEST (a released task image)"
        )
    raise UsageError(
        f"--builder-image {builder}: the unreleased placeholder image …@sha256:000… is still in {objects}, "
        f"outside the {BUILDER_PARAM} param defaults and DaemonSet containers --builder-image sets"
    )


def _names(value: object, digest: str) -> bool:
    if isinstance(value, str):
        return f"@{digest}" in value
    if isinstance(value, dict):
        return any(_names(v, digest) for v in value.values())
    if isinstance(value, list):
        return any(_names(v, digest) for v in value)
    return False


def cmd_install(args: argparse.Namespace) -> int:
    docs = install_documents(args)
    if args.dry_run:
        sys.stdout.write(tekton.dump_yaml(docs))
        return 0
    from taskimage.tekton.kube.apply import apply_object
    from taskimage.tekton.kube.client import TASKS

    kube = _connect(args)
    log.phase(f"install into namespace {kube.namespace} at {kube.server}")
    kube.require_tekton()
    applied = []
    for doc in docs:
        result = apply_object(kube, doc, kube.namespace)
        applied.append(result)
        _stdout(f"{result.ref} {result.action}")
    log.info(
        log.table(
            ["KIND", "NAME", "NAMESPACE", "ACTION"], [(a.kind, a.name, a.namespace or "-", a.action) for a in applied]
        )
    )
    installed = {a.name for a in applied if a.kind == "Task"}
    for doc in docs:
        if doc.get("kind") != "Pipeline":
            continue
        for task in tekton.Pipeline.from_dict(doc).tasks:
            name = task.task_name
            if name and name not in installed and kube.get(TASKS, name) is None:
                log.warn(
                    f"Pipeline {doc['metadata']['name']} refers to Task {name}, which is not in namespace {kube.namespace}: install it before starting the Pipeline"
                )
                installed.add(name)
    return 0


# --------------------------------------------------------------------------- pipeline start


def cmd_start(args: argparse.Namespace) -> int:
    from taskimage.tekton.kube.client import PIPELINERUNS, PIPELINES
    from taskimage.tekton.kube.follow import Follower

    kube = _connect(args)
    kube.require_tekton()
    doc = kube.get(PIPELINES, args.name)
    if doc is None:
        raise UsageError(
            f"pipeline start {args.name}: no Pipeline {args.name} in namespace {kube.namespace} (install it: taskimage cluster install)"
        )
    pipeline = tekton.Pipeline.from_dict(doc)
    run = tekton.build_pipeline_run(
        pipeline,
        args.param,
        args.workspace,
        namespace=kube.namespace,
        service_account=args.serviceaccount,
        timeout=args.timeout,
        prefix_name=args.prefix_name,
        base_dir=Path.cwd(),
    )
    if args.dry_run:
        sys.stdout.write(tekton.dump_yaml([run]))
        return 0
    kube.create(PIPELINERUNS, run.to_dict(), kube.namespace)
    _stdout(run.name)
    if not args.showlog:
        log.info(
            f"PipelineRun {run.name} started in namespace {kube.namespace}; follow it with: taskimage logs {run.name} -f -n {kube.namespace}"
        )
        return 0
    follower = Follower(kube, log.info, follow=True)
    final = follower.pipeline_run(run.name)
    return _report(follower.outcome(final))


def _report(outcome: Outcome) -> int:
    from taskimage.tekton.kube.follow import RunFailed

    if outcome.results:
        log.info(log.table(["RESULT", "VALUE"], [(r.name, r.text) for r in outcome.results]))
    if outcome.failure:
        if not outcome.condition.done:
            log.info(outcome.failure)
            return 0
        raise RunFailed(outcome.failure)
    log.info(f"{outcome.kind} {outcome.name} succeeded ({outcome.condition.reason or 'Succeeded'})")
    return 0


# --------------------------------------------------------------------------- logs


def cmd_logs(args: argparse.Namespace) -> int:
    from taskimage.tekton.kube.client import PIPELINERUNS, TASKRUNS
    from taskimage.tekton.kube.follow import Follower

    kube = _connect(args)
    kube.require_tekton()
    follower = Follower(kube, _stdout, follow=args.follow)
    if kube.get(PIPELINERUNS, args.run) is not None:
        final = follower.pipeline_run(args.run)
    elif kube.get(TASKRUNS, args.run) is not None:
        final = follower.task_run(args.run)
    else:
        raise UsageError(f"logs {args.run}: no PipelineRun or TaskRun {args.run} in namespace {kube.namespace}")
    return _report(follower.outcome(final))
