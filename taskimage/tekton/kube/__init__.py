"""Tekton on Kubernetes through the official ``kubernetes`` client.

- :mod:`taskimage.tekton.kube.client`: connection (kubeconfig or in-cluster), objects as dicts, watches,
  pod logs; every API failure becomes a one-line error from :mod:`taskimage.tekton.kube.errors`.
- :mod:`taskimage.tekton.kube.apply`: idempotent create-or-patch reporting created/unchanged/updated.
- :mod:`taskimage.tekton.kube.follow`: follow a run's TaskRuns, pods and step logs; its outcome.
"""

from taskimage.tekton.kube.apply import Applied, apply_object
from taskimage.tekton.kube.client import (
    DAEMONSETS,
    PIPELINERUNS,
    PIPELINES,
    PODS,
    TASKRUNS,
    TASKS,
    Kube,
    Resource,
    Timeouts,
)
from taskimage.tekton.kube.errors import (
    TEKTON_MISSING,
    AlreadyExists,
    Conflict,
    Forbidden,
    KubeError,
    NotFound,
    TektonNotInstalled,
    Timeout,
    Unauthorized,
    Unreachable,
)
from taskimage.tekton.kube.follow import Follower, Outcome

__all__ = [
    "AlreadyExists",
    "Applied",
    "Conflict",
    "DAEMONSETS",
    "Follower",
    "Forbidden",
    "Kube",
    "KubeError",
    "NotFound",
    "Outcome",
    "PIPELINERUNS",
    "PIPELINES",
    "PODS",
    "Resource",
    "TASKRUNS",
    "TASKS",
    "TEKTON_MISSING",
    "TektonNotInstalled",
    "Timeout",
    "Timeouts",
    "Unauthorized",
    "Unreachable",
    "apply_object",
]
