"""``taskimage lint``: offline validation of Tekton YAML and the Kubernetes objects beside it.

Per document: YAML syntax (with its line), metadata.name, structure (tekton.dev kinds against
the CRDs' openAPIV3Schema made strict, see :mod:`.schema`; Kubernetes kinds through
kubernetes-validate, see :mod:`.kube`) and references (see :mod:`.refs`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton.lint.jsonerrors import describe
from taskimage.tekton.lint.kube import DEFAULT_KUBERNETES_VERSION, check_kubernetes
from taskimage.tekton.lint.loader import Document, SyntaxProblem, find_files, iter_documents
from taskimage.tekton.lint.problems import ERROR, WARNING, Problem, dotted
from taskimage.tekton.lint.refs import check_references
from taskimage.tekton.lint.schema import TEKTON_GROUP, CrdSet
from taskimage.tekton.lint.tektonlint import run_tekton_lint, tekton_lint_argv

__all__ = [
    "CRDS_ENV",
    "DEFAULT_KUBERNETES_VERSION",
    "CrdSet",
    "Problem",
    "Report",
    "crds_dir",
    "lint_document",
    "lint_paths",
    "run_tekton_lint",
    "tekton_lint_argv",
]

CRDS_ENV = "TASKIMAGE_CRDS"
# Kinds created with metadata.generateName (kubectl create, tkn ... start, Pipelines-as-Code).
GENERATE_NAME_KINDS = {"PipelineRun", "TaskRun", "CustomRun", "Pod", "Job"}


@dataclasses.dataclass(frozen=True)
class Report:
    files: tuple[str, ...]
    documents: int
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> int:
        return sum(p.severity == ERROR for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == WARNING for p in self.problems)

    def summary(self) -> str:
        return (
            f"lint: {len(self.files)} files, {self.documents} documents: {self.errors} errors, {self.warnings} warnings"
        )


def crds_dir(flag: str | None) -> str | None:
    """The CRD directory: ``--crds``, else $TASKIMAGE_CRDS, else None (never a guessed path)."""
    return flag or os.environ.get(CRDS_ENV) or None


def lint_paths(
    paths: list[str],
    *,
    crds: str | CrdSet | None = None,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
) -> Report:
    """Lint files / directories. Raises UsageError for a bad path, or when tekton.dev documents
    are present and no CRD directory was given."""
    files = find_files(paths)
    items = list(iter_documents(files))
    docs = [i for i in items if isinstance(i, Document)]
    crd_set = crds if isinstance(crds, CrdSet) or crds is None else CrdSet(crds)
    if crd_set is None and any(_group(d) == TEKTON_GROUP for d in docs):
        raise UsageError(
            f"lint: tekton.dev documents need the CRDs of your Tekton release: pass --crds PATH or set {CRDS_ENV}"
        )
    problems: list[Problem] = []
    for item in items:
        if isinstance(item, SyntaxProblem):
            problems.append(Problem(item.file, item.line, "", "", item.message))
        else:
            problems.extend(lint_document(item, crd_set, kubernetes_version))
    problems.sort(key=lambda p: (p.file, p.line))
    return Report(tuple(str(f) for f in files), len(docs), tuple(problems))


def _group(doc: Document) -> str:
    return doc.api_version.rsplit("/", 1)[0] if "/" in doc.api_version else ""


def lint_document(doc: Document, crds: CrdSet | None, kubernetes_version: str) -> list[Problem]:
    def problem(path: tuple, message: str, severity: str = ERROR) -> Problem:
        return Problem(doc.file, doc.line(path, key=True), doc.kind, doc.name, message, severity)

    if not isinstance(doc.data, dict):
        return [problem((), f"document is a {type(doc.data).__name__}, not a Kubernetes object")]
    missing = [f for f in ("apiVersion", "kind") if not isinstance(doc.data.get(f), str) or not doc.data.get(f)]
    if missing:
        return [problem((), f"missing {' and '.join(missing)}")]
    out: list[Problem] = []
    for path in doc.duplicates:  # strict field validation: "json: duplicate field"
        out.append(problem(path, f'duplicate field "{dotted(path)}" (YAML keeps only the last one)'))
    meta = doc.data.get("metadata")
    if not isinstance(meta, dict) or not (meta.get("name") or meta.get("generateName")):
        out.append(
            problem(
                ("metadata",),
                "missing metadata.name" + (" (or metadata.generateName)" if doc.kind in GENERATE_NAME_KINDS else ""),
            )
        )
    elif not meta.get("name") and doc.kind not in GENERATE_NAME_KINDS:
        out.append(
            problem(
                ("metadata", "generateName"),
                f"metadata.generateName without metadata.name: {doc.kind} needs a fixed name to be applied and referenced",
            )
        )
    data, nulls = _drop_nulls(doc.data, ())
    for path in nulls:
        out.append(
            problem(path, f"{dotted(path)} is null; the API server drops it (remove it or give a value)", WARNING)
        )
    clean = dataclasses.replace(doc, data=data)
    group = _group(doc)
    crd = crds.find(group, doc.kind) if crds else None
    if crds is not None and crd is not None:
        version = doc.api_version.rsplit("/", 1)[1]
        validator = crds.validator(group, doc.kind, version)
        if validator is None:
            out.append(
                problem(
                    ("apiVersion",),
                    f"{doc.api_version} {doc.kind} is not served by the CRDs in {crds.directory} (versions: {', '.join(crd.versions)})",
                )
            )
        else:
            for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
                out.extend(describe(error, clean))
        if group == TEKTON_GROUP:
            out.extend(check_references(clean))
    elif group == TEKTON_GROUP:
        out.append(
            problem(
                ("kind",), f"kind {doc.kind} is not defined by the Tekton CRDs in {crds.directory if crds else '?'}"
            )
        )
    else:
        out.extend(check_kubernetes(clean, kubernetes_version))
    return out


def _drop_nulls(node: Any, path: tuple) -> tuple[Any, list[tuple]]:
    """``node`` without null mapping values (as the API server prunes them), and their paths."""
    nulls: list[tuple] = []
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if value is None:
                nulls.append(path + (key,))
                continue
            out[key], sub = _drop_nulls(value, path + (key,))
            nulls.extend(sub)
        return out, nulls
    if isinstance(node, list):
        items = []
        for i, value in enumerate(node):
            item, sub = _drop_nulls(value, path + (i,))
            items.append(item)
            nulls.extend(sub)
        return items, nulls
    return node, nulls
