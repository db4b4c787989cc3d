"""Idempotent apply: create, else compare with what the cluster holds and patch the difference.

Why "contained in" instead of "equal": admission webhooks (Tekton's defaulting webhook, the
apps/v1 defaults of a DaemonSet) add fields to what we send (``type: string`` on params,
``revisionHistoryLimit``, ...). Our object is unchanged when every field we set has the value
we set; extra fields the server added do not count. Lists compare element by element and must
have the same length, so removing a step or a param is an update.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from taskimage.tekton.kube import errors
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


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of ``desired`` is in ``live`` with the same value."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return live == desired


def merge_patch(live: Any, desired: Any) -> Any:
    """The JSON merge patch turning ``live`` into ``desired`` (keys only in ``live`` become None)."""
    if not isinstance(desired, Mapping) or not isinstance(live, Mapping):
        return copy.deepcopy(desired)
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if key not in live:
            patch[key] = copy.deepcopy(value)
        elif live[key] != value:
            patch[key] = merge_patch(live[key], value) if isinstance(value, Mapping) else copy.deepcopy(value)
    for key in live:
        if key not in desired:
            patch[key] = None
    return patch


def _managed(doc: Mapping[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata") or {}
    out: dict[str, Any] = {"metadata": {k: dict(meta[k]) for k in _MANAGED_META if meta.get(k)}}
    for key, value in doc.items():
        if key not in ("apiVersion", "kind", "metadata", "status"):
            out[key] = copy.deepcopy(value)
    return out


def apply_object(kube: Kube, doc: Mapping[str, Any], namespace: str | None = None) -> Applied:
    """Create ``doc``; if it exists, patch it when our fields differ. Returns what happened."""
    res = resource_for(doc)
    body = copy.deepcopy(dict(doc))
    meta = body.setdefault("metadata", {})
    name = meta["name"]
    if res.namespaced:
        ns = meta.get("namespace") or namespace or kube.namespace
        meta["namespace"] = ns
    else:
        ns = ""
        meta.pop("namespace", None)
    try:
        kube.create(res, body, ns)
        return Applied(res.kind, res.group, name, ns, CREATED)
    except errors.AlreadyExists:
        pass
    live = kube.get(res, name, ns)
    if live is None:  # deleted between our create and get: create again
        kube.create(res, body, ns)
        return Applied(res.kind, res.group, name, ns, CREATED)
    desired = _managed(body)
    if contains(live, desired):
        return Applied(res.kind, res.group, name, ns, UNCHANGED)
    patch: dict[str, Any] = {}
    live_meta = live.get("metadata") or {}
    meta_patch = {
        k: desired["metadata"][k]
        for k in _MANAGED_META
        if k in desired["metadata"] and not contains(live_meta.get(k), desired["metadata"][k])
    }
    if meta_patch:
        patch["metadata"] = meta_patch  # merged: labels/annotations others set stay
    for key, value in desired.items():
        if key != "metadata" and not contains(live.get(key), value):
            patch[key] = merge_patch(live.get(key), value)
    kube.patch(res, name, patch, ns)
    return Applied(res.kind, res.group, name, ns, UPDATED)
