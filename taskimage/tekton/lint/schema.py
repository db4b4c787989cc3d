"""Structure checks of Tekton objects against the openAPIV3Schema of their CRDs.

The CRDs of a Tekton release (``config/300-crds`` or ``kubectl get crd ... -o yaml``) carry the
schema the API server validates with, but three things make it too lax or too strict offline:

- ``x-kubernetes-preserve-unknown-fields`` hides inline ``taskSpec`` / ``pipelineSpec``: we put
  the Task / Pipeline spec schemas of the same version back there (``$defs`` + ``$ref``);
- the API server's strict field validation rejects unknown fields, which a JSON schema only does
  with ``additionalProperties: false``: we add it wherever a schema lists ``properties`` and does
  not preserve unknown fields;
- ``required`` lists ``steps[].name`` and ``workspaces[].mountPath``, which the server defaults:
  we drop those two.
``nullable: true`` becomes a JSON-schema null type, and ``metadata`` (just ``type: object`` in the
CRDs) gets a small ObjectMeta schema so that a typo there or a non-string label is caught too.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from taskimage.errors import UsageError

TEKTON_GROUP = "tekton.dev"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are 1.4 MB

# Fields the CRDs mark required but the API server fills in (defaulting): (list name, field).
DEFAULTED_REQUIRED = {("steps", "name"), ("workspaces", "mountPath")}

_STR = {"type": "string"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": _STR,
        "generateName": _STR,
        "namespace": _STR,
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
        "uid": _STR,
        "resourceVersion": _STR,
        "generation": {"type": "integer"},
        "creationTimestamp": {},
        "deletionTimestamp": {},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "finalizers": {"type": "array", "items": _STR},
        "ownerReferences": {"type": "array"},
        "managedFields": {"type": "array"},
        "selfLink": _STR,
    },
    "additionalProperties": False,
}
# An inline taskSpec in a Pipeline is an EmbeddedTask: a TaskSpec plus these (custom tasks).
EMBEDDED_TASK_EXTRA = {
    "apiVersion": _STR,
    "kind": _STR,
    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    "metadata": {
        "type": "object",
        "properties": {"labels": _STR_MAP, "annotations": _STR_MAP},
        "additionalProperties": False,
    },
}


@dataclasses.dataclass(frozen=True)
class Crd:
    group: str
    kind: str
    versions: dict[str, dict]  # version -> openAPIV3Schema
    file: str


class CrdSet:
    """The CRDs found in a directory (or one multi-document file, such as a release's YAML or
    ``kubectl get crd ... -o yaml``), and compiled strict validators for them (cached)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator | None] = {}
        if self.directory.is_dir():
            candidates = sorted(
                p for p in self.directory.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.is_file()
            )
        elif self.directory.is_file():  # a release's YAML, or the output of kubectl get crd -o yaml
            candidates = [self.directory]
        else:
            raise UsageError(f"lint: --crds {str(directory)!r} is neither a directory nor a file")
        self.crds: dict[tuple[str, str], Crd] = {}
        for path in candidates:
            try:
                docs = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_LOADER))
            except yaml.YAMLError as exc:
                raise UsageError(f"lint: --crds file {str(path)!r} is not valid YAML: {exc}") from exc
            for doc in docs:
                for crd in _crds_in(doc):
                    self.crds[(crd["spec"]["group"], crd["spec"]["names"]["kind"])] = Crd(
                        group=crd["spec"]["group"],
                        kind=crd["spec"]["names"]["kind"],
                        versions={
                            v["name"]: v["schema"]["openAPIV3Schema"]
                            for v in crd["spec"].get("versions", [])
                            if v.get("served", True) and isinstance(v.get("schema", {}).get("openAPIV3Schema"), dict)
                        },
                        file=str(path),
                    )
        if not self.crds:
            raise UsageError(f"lint: --crds {str(directory)!r} holds no CustomResourceDefinition")

    def find(self, group: str, kind: str) -> Crd | None:
        return self.crds.get((group, kind))

    def validator(self, group: str, kind: str, version: str) -> jsonschema.protocols.Validator | None:
        key = (group, kind, version)
        if key not in self._validators:
            crd = self.find(group, kind)
            if crd is None or version not in crd.versions:
                self._validators[key] = None
            else:
                self._validators[key] = jsonschema.Draft202012Validator(self._root_schema(crd, version))
        return self._validators[key]

    def _spec(self, kind: str, version: str) -> dict | None:
        crd = self.find(TEKTON_GROUP, kind)
        if crd is None or version not in crd.versions:
            return None
        return crd.versions[version].get("properties", {}).get("spec")

    def _root_schema(self, crd: Crd, version: str) -> dict:
        root = strict(crd.versions[version])
        root.setdefault("properties", {})["metadata"] = OBJECT_META
        if crd.group != TEKTON_GROUP:
            return root
        defs: dict[str, Any] = {}
        task_spec = self._spec("Task", version)
        pipeline_spec = self._spec("Pipeline", version)
        if task_spec is not None:
            defs["taskSpec"] = strict(task_spec)
            embedded = copy.deepcopy(defs["taskSpec"])
            embedded.setdefault("properties", {}).update(copy.deepcopy(EMBEDDED_TASK_EXTRA))
            defs["embeddedTask"] = embedded
        if pipeline_spec is not None:
            spec = strict(pipeline_spec)
            for section in ("tasks", "finally"):
                item = spec.get("properties", {}).get(section, {}).get("items", {}).get("properties", {})
                if "taskSpec" in item and "embeddedTask" in defs:
                    item["taskSpec"] = {"$ref": "#/$defs/embeddedTask"}
                if "pipelineSpec" in item:
                    item["pipelineSpec"] = {"$ref": "#/$defs/pipelineSpec"}
            defs["pipelineSpec"] = spec
        props = root.get("properties", {})
        spec_props = props.get("spec", {}).get("properties", {})
        if crd.kind == "Task" and "taskSpec" in defs:
            props["spec"] = {"$ref": "#/$defs/taskSpec"}
        elif crd.kind == "Pipeline" and "pipelineSpec" in defs:
            props["spec"] = {"$ref": "#/$defs/pipelineSpec"}
        if "taskSpec" in spec_props and "taskSpec" in defs:  # TaskRun
            spec_props["taskSpec"] = {"$ref": "#/$defs/taskSpec"}
        if "pipelineSpec" in spec_props and "pipelineSpec" in defs:  # PipelineRun
            spec_props["pipelineSpec"] = {"$ref": "#/$defs/pipelineSpec"}
        root["$defs"] = defs
        return root


def _crds_in(doc: Any) -> list[dict]:
    if not isinstance(doc, dict):
        return []
    if doc.get("kind") == "List":
        return [d for item in doc.get("items") or [] for d in _crds_in(item)]
    if doc.get("kind") == "CustomResourceDefinition" and isinstance(doc.get("spec"), dict):
        return [doc]
    return []


def strict(schema: dict) -> dict:
    """A copy of an openAPIV3 ``schema`` that rejects unknown fields like the API server does."""
    return _strict(copy.deepcopy(schema), None)


def _strict(node: Any, name: str | None = None, list_name: str | None = None) -> Any:
    """Make ``node`` strict in place. ``name``: its property name; ``list_name``: the list it is an item of."""
    if not isinstance(node, dict):
        return node
    if node.get("nullable") is True and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        node["additionalProperties"] = False
    if list_name and isinstance(node.get("required"), list):
        node["required"] = [r for r in node["required"] if (list_name, r) not in DEFAULTED_REQUIRED]
    for key, child in node.get("properties", {}).items():
        _strict(child, key)
    if isinstance(node.get("items"), dict):
        _strict(node["items"], None, name)
    if isinstance(node.get("additionalProperties"), dict):
        _strict(node["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        for option in node.get(key) or []:
            _strict(option, name, list_name)
    return node
