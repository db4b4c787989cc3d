"""Kubernetes kinds (DaemonSet, ServiceAccount, Secret, ...) through ``kubernetes-validate``.

It ships the JSON schemas of each Kubernetes minor version, with a ``-strict`` variant that
rejects unknown fields the way ``kubectl apply --validate=strict`` does. Its ``validate`` stops at
the first error of a document; that is the one reported.
"""

from __future__ import annotations

from taskimage.errors import UsageError
from taskimage.tekton.lint.jsonerrors import describe
from taskimage.tekton.lint.loader import Document
from taskimage.tekton.lint.problems import WARNING, Problem

# Tekton Pipelines v1.x supports Kubernetes >= 1.28; kubernetes-validate >= 1.30 ships 1.30.
DEFAULT_KUBERNETES_VERSION = "1.30"
# API groups served by Kubernetes itself: an unknown kind there is a typo, not a custom resource.
BUILTIN_SUFFIX = ".k8s.io"
BUILTIN_GROUPS = {"", "apps", "batch", "autoscaling", "policy", "extensions"}


def available() -> bool:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        return False
    return True


def check_version(version: str) -> str:
    """Reject a Kubernetes version kubernetes-validate has no schemas for (usage error)."""
    if not available():
        return version.lstrip("v")
    import kubernetes_validate
    from kubernetes_validate.utils import all_versions, major_minor

    known = [major_minor(v) for v in all_versions()]
    if major_minor(version.lstrip("v")) not in known:
        raise UsageError(
            f"lint: --kubernetes-version {version!r} is not known to kubernetes-validate {kubernetes_validate.__version__} (known: {known[0]} .. {known[-1]})"
        )
    return version.lstrip("v")


def is_builtin(group: str) -> bool:
    return group in BUILTIN_GROUPS or group.endswith(BUILTIN_SUFFIX)


def check_kubernetes(doc: Document, version: str) -> list[Problem]:
    if not available():
        return [
            Problem(
                doc.file,
                doc.start_line,
                doc.kind,
                doc.name,
                "not checked: the kubernetes-validate package is not installed",
                WARNING,
            )
        ]
    import kubernetes_validate

    group = doc.api_version.rsplit("/", 1)[0] if "/" in doc.api_version else ""
    try:
        kubernetes_validate.validate(doc.data, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return describe(exc, doc)
    except kubernetes_validate.SchemaNotFoundError:
        where = f"{doc.api_version} {doc.kind}"
        if is_builtin(group):
            return [Problem(doc.file, doc.start_line, doc.kind, doc.name, f"Kubernetes {version} has no kind {where}")]
        return [
            Problem(
                doc.file,
                doc.start_line,
                doc.kind,
                doc.name,
                f"custom kind {where} not checked (no CRD for it)",
                WARNING,
            )
        ]
    return []
