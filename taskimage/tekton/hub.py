"""``resolver: hub`` with ``type: artifact``, as Tekton's hub resolver does it: Artifact Hub's API.

The resolver asks ``{ARTIFACT_HUB_API}/api/v1/packages/tekton-{kind}/{catalog}/{name}/{version}``
and returns the ``data.manifestRaw`` of the answer verbatim (the YAML Artifact Hub indexed). A
version with two parts (``0.1``) is completed to semver (``0.1.0``), as Artifact Hub stores it.
``ARTIFACT_HUB_API`` (default ``https://artifacthub.io``) is the resolver's own setting; tests
point it at a local server. Only ``type: artifact``: the hosted Tekton Hub is gone.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

import yaml

from taskimage.errors import TaskimageError, UsageError

DEFAULT_API = "https://artifacthub.io"
ENDPOINT = "api/v1/packages/tekton-{kind}/{catalog}/{name}/{version}"
DEFAULT_CATALOG = {"task": "tekton-catalog-tasks", "pipeline": "tekton-catalog-pipelines"}
_TWO_PARTS = re.compile(r"^\d+\.\d+$")


def hub_ref(taskrun: Mapping) -> dict[str, str] | None:
    """The hub resolver's params of a TaskRun's taskRef (with defaults), or None."""
    ref = (taskrun.get("spec") or {}).get("taskRef") or {}
    if ref.get("resolver") != "hub":
        return None
    params = {str(p.get("name")): str(p.get("value", "")) for p in ref.get("params") or []}
    kind = (params.get("kind") or "task").lower()
    if params.get("type", "artifact") != "artifact":
        raise UsageError(f"taskRef resolver hub: type {params['type']!r}: only artifact (Artifact Hub) is served now")
    if kind != "task":
        raise UsageError(f"taskRef resolver hub: kind {kind!r}: a TaskRun runs a task")
    if not params.get("name") or not params.get("version"):
        raise UsageError("taskRef resolver hub needs params name and version")
    return {
        "kind": kind,
        "catalog": params.get("catalog") or DEFAULT_CATALOG[kind],
        "name": params["name"],
        "version": params["version"] + ".0" if _TWO_PARTS.match(params["version"]) else params["version"],
    }


def url_for(ref: Mapping[str, str], api: str | None = None) -> str:
    base = (api or os.environ.get("ARTIFACT_HUB_API") or DEFAULT_API).rstrip("/")
    parts = {k: urllib.parse.quote(v, safe="") for k, v in ref.items()}
    return f"{base}/{ENDPOINT.format(**parts)}"


def fetch(ref: Mapping[str, str], api: str | None = None, timeout: float = 30) -> dict:
    """The object Artifact Hub holds for ``ref`` (what the resolver hands to Tekton), parsed."""
    url = url_for(ref, api)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise TaskimageError(f"resolver hub: {url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TaskimageError(f"resolver hub: cannot reach {url}: {exc}") from None
    except ValueError:
        raise TaskimageError(f"resolver hub: {url} did not answer JSON") from None
    raw = ((body or {}).get("data") or {}).get("manifestRaw")
    if not isinstance(raw, str) or not raw.strip():
        raise TaskimageError(f"resolver hub: {url} holds no data.manifestRaw")
    obj = yaml.safe_load(raw)
    if not isinstance(obj, dict) or obj.get("kind", "").lower() != ref["kind"]:
        raise TaskimageError(f"resolver hub: {url} holds no {ref['kind']}")
    return obj
