"""Idempotent install through server-side apply (field manager ``taskimage``).

Why server-side apply and not a merge patch: a merge patch computed from what we read nulls or
overwrites fields other controllers own, and cannot tell a field we set last time and dropped
since from one somebody else added. With server-side apply the API server keeps per-field
ownership: we send the whole object each time, the server removes what we no longer set and
keeps what admission webhooks (Tekton's defaulting, apps/v1 DaemonSet defaults) or other
controllers added. ``force`` takes over fields another manager set by hand, as ``kubectl apply
--server-side --force-conflicts`` does: the files we install are the truth for our fields.

What we report: ``created`` when the object did not exist, ``unchanged`` when the server's
answer equals what it held before (a no-op apply changes nothing, not even resourceVersion),
else ``updated``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from taskimage.tekton.kube.client import Kube, resource_for

CREATED = "created"
UNCHANGED = "unchanged"
UPDATED = "updated"

# The parts of an object we own; status and server-managed metadata are left alone.
_MANAGED_META = ("labels", "annotations")


@dataclasses.dataclass(frozen=True)
class Applied:
    kind: str
    group: str
    name: str
    namespace: str
    action: str

    @property
    def ref(self) -> str:
        """``task.tekton.dev/buildah-multiarch``, the spelling kubectl uses in its output."""
        return f"{self.kind.lower()}.{self.group}/{self.name}" if self.group else f"{self.kind.lower()}/{self.name}"


def apply_object(kube: Kube, doc: Mapping[str, Any], namespace: str | None = None) -> Applied:
    """Server-side apply ``doc`` (the whole object, status dropped). Returns what happened."""
    res = resource_for(doc)
    body = {k: copy.deepcopy(v) for k, v in doc.items() if k != "status"}
    meta = body.setdefault("metadata", {})
    name = meta["name"]
    if res.namespaced:
        ns = meta.get("namespace") or namespace or kube.namespace
        meta["namespace"] = ns
    else:
        ns = ""
        meta.pop("namespace", None)
    before = kube.get(res, name, ns)
    after = kube.apply(res, body, ns)
    if before is None:
        action = CREATED
    else:
        action = UNCHANGED if after == before else UPDATED
    return Applied(res.kind, res.group, name, ns, action)
