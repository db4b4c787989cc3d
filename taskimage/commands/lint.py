"""``taskimage lint PATH...``: offline validation of Tekton YAML and Kubernetes objects.

Problems go to stdout, one per line (``FILE:LINE: KIND/NAME: message``); the summary goes to
the log (stderr). Exit 1 when any error, 0 otherwise (warnings alone pass), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import os

from taskimage import log

# The checks themselves (jsonschema, kubernetes-validate) are imported when the command runs,
# so that every other command starts without paying for them.
CRDS_ENV = "TASKIMAGE_CRDS"
TEKTON_LINT_ENV = "TEKTON_LINT"
DEFAULT_KUBERNETES_VERSION = "1.30"

K8S_ENV = "TASKIMAGE_KUBERNETES_VERSION"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lint",
        help="validate Tekton and Kubernetes YAML offline",
        description="Validate Tekton YAML (structure against the CRDs of your Tekton release, "
        "$(params/workspaces/results/tasks...) references, catalog hygiene) and Kubernetes "
        "objects (kubernetes-validate --strict). Directories are searched for *.yaml / *.yml.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML file or directory")
    p.add_argument(
        "--crds",
        metavar="PATH",
        help=f"the Tekton CRDs: a directory of CRD YAML files (config/300-crds of a release) or one file (a release's YAML, kubectl get crd ... -o yaml); env {CRDS_ENV}",
    )
    p.add_argument(
        "--kubernetes-version",
        metavar="X.Y",
        default=os.environ.get(K8S_ENV, DEFAULT_KUBERNETES_VERSION),
        help=f"Kubernetes schemas to check built-in kinds against (default {DEFAULT_KUBERNETES_VERSION}; env {K8S_ENV})",
    )
    p.add_argument("--quiet", action="store_true", help="print errors only, not warnings")
    p.add_argument(
        "--tekton-lint",
        action="store_true",
        help=f"also run IBM's tekton-lint (npm @ibm/tekton-lint; found on PATH or in env {TEKTON_LINT_ENV}) on the same files",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from taskimage.tekton.lint import crds_dir, lint_paths
    from taskimage.tekton.lint.kube import check_version
    from taskimage.tekton.lint.tektonlint import as_problems, run_tekton_lint

    version = check_version(args.kubernetes_version)
    report = lint_paths(args.paths, crds=crds_dir(args.crds), kubernetes_version=version)
    problems = list(report.problems)
    summary = report.summary()
    if args.tekton_lint and report.files:
        _, found = run_tekton_lint(report.files)
        second = as_problems(found)
        problems += second
        errors = sum(p.severity == "error" for p in second)
        summary += f"; tekton-lint: {errors} errors, {len(second) - errors} warnings"
    for problem in problems:
        if args.quiet and problem.severity != "error":
            continue
        print(problem)
    log.info(summary)
    return 1 if any(p.severity == "error" for p in problems) else 0
