"""The Kubernetes objects a TaskRun uses besides Tekton's: ConfigMaps, Secrets, PVCs, ServiceAccounts.

On a cluster they exist in the namespace; here they come from the same file as the TaskRun (as
Tekton's examples ship them, ``kubectl apply -f`` style) or from local directories given on the
command line (``--configmap NAME=DIR``, ``--secret-volume NAME=DIR``: each regular file in DIR is
one key). They bind configMap/secret volumes and workspaces (materialised as files in the run
directory, mounted read-only as the kubelet does), ``env.valueFrom`` and ``envFrom``, and
persistentVolumeClaim workspaces (one fresh directory per claim for the run, shared by the
workspaces that name it, so ``subPath`` works).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskimage.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Secret:
    name: str
    type: str
    annotations: Mapping[str, str]
    data: Mapping[str, bytes]


@dataclasses.dataclass(frozen=True)
class KubeObjects:
    configmaps: Mapping[str, Mapping[str, bytes]] = dataclasses.field(default_factory=dict)
    secrets: Mapping[str, Secret] = dataclasses.field(default_factory=dict)
    claims: frozenset[str] = frozenset()
    service_accounts: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def source(self, kind: str, name: str) -> Mapping[str, bytes] | None:
        """A ConfigMap's or Secret's keys, or None when there is no such object."""
        if kind == "configMap":
            return self.configmaps.get(name)
        secret = self.secrets.get(name)
        return secret.data if secret else None


def _decode(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"{where}: not base64") from exc


def from_documents(docs: Sequence[Mapping]) -> KubeObjects:
    configmaps: dict[str, dict[str, bytes]] = {}
    secrets: dict[str, Secret] = {}
    claims: set[str] = set()
    accounts: dict[str, tuple[str, ...]] = {}
    for d in docs:
        if str(d.get("apiVersion", "")) != "v1":
            continue
        kind, meta = d.get("kind"), d.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            continue
        if kind == "ConfigMap":
            data = {str(k): str(v).encode() for k, v in (d.get("data") or {}).items()}
            data.update(
                {str(k): _decode(v, f"ConfigMap {name} binaryData.{k}") for k, v in (d.get("binaryData") or {}).items()}
            )
            configmaps[name] = data
        elif kind == "Secret":
            data = {str(k): _decode(v, f"Secret {name} data.{k}") for k, v in (d.get("data") or {}).items()}
            data.update({str(k): str(v).encode() for k, v in (d.get("stringData") or {}).items()})
            secrets[name] = Secret(name, str(d.get("type") or "Opaque"), dict(meta.get("annotations") or {}), data)
        elif kind == "PersistentVolumeClaim":
            claims.add(name)
        elif kind == "ServiceAccount":
            accounts[name] = tuple(str(s.get("name")) for s in d.get("secrets") or [] if s.get("name"))
    return KubeObjects(configmaps, secrets, frozenset(claims), accounts)


def _read_dir(item: str, flag: str) -> tuple[str, dict[str, bytes]]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise UsageError(f"{flag} {item}: expected NAME=DIR")
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(full):
        raise UsageError(f"{flag} {item}: {path} is not a directory")
    return name, {p.name: p.read_bytes() for p in sorted(Path(full).iterdir()) if p.is_file()}


def with_cli(objects: KubeObjects, configmaps: Sequence[str] = (), secrets: Sequence[str] = ()) -> KubeObjects:
    """``objects`` with the ConfigMaps and Secrets given as directories added (they win)."""
    cms = dict(objects.configmaps)
    for item in configmaps:
        name, data = _read_dir(item, "--configmap")
        cms[name] = data
    secs = dict(objects.secrets)
    for item in secrets:
        name, data = _read_dir(item, "--secret-volume")
        secs[name] = Secret(name, "Opaque", {}, data)
    return dataclasses.replace(objects, configmaps=cms, secrets=secs)


def projected_files(kind: str, source: Mapping[str, Any], objects: KubeObjects, where: str) -> dict[str, bytes] | None:
    """The files a configMap/secret volume (or workspace) shows: every key, or ``items`` (key →
    path). None when the object is missing and ``optional``; a missing one otherwise is an error."""
    name = str(source.get("name") if kind == "configMap" else source.get("secretName") or "")
    data = objects.source(kind, name)
    flag = "--configmap" if kind == "configMap" else "--secret-volume"
    if data is None:
        if source.get("optional"):
            return None
        what = "ConfigMap" if kind == "configMap" else "Secret"
        raise UsageError(f"{where}: {what} {name!r} is not in the file; give it with {flag} {name}=DIR")
    items = source.get("items")
    if not items:
        return dict(data)
    out: dict[str, bytes] = {}
    for item in items:
        key = str(item.get("key"))
        if key not in data:
            if source.get("optional"):
                continue
            raise UsageError(f"{where}: {kind} {name!r} has no key {key!r}")
        out[str(item.get("path") or key)] = data[key]
    return out


def volume_files(binding: Mapping[str, Any], objects: KubeObjects, where: str) -> dict[str, bytes] | None:
    """The files of a configMap, secret or projected (configMap/secret sources) volume or
    workspace binding; None when the binding is none of these."""
    if "configMap" in binding:
        return projected_files("configMap", binding["configMap"], objects, where) or {}
    if "secret" in binding:
        return projected_files("secret", binding["secret"], objects, where) or {}
    if "projected" in binding:
        out: dict[str, bytes] = {}
        for source in (binding["projected"] or {}).get("sources") or []:
            if "configMap" in source:
                out.update(projected_files("configMap", source["configMap"], objects, where) or {})
            elif "secret" in source:
                secret = dict(source["secret"])
                secret.setdefault("secretName", secret.get("name"))
                out.update(projected_files("secret", secret, objects, where) or {})
            else:
                kind = next(iter(source), "?")
                raise UsageError(f"{where}: projected source {kind} is not supported (configMap and secret are)")
        return out
    return None


def container_env(
    env: Sequence[Mapping], env_from: Sequence[Mapping], objects: KubeObjects, where: str
) -> list[tuple[str, str, bool]]:
    """A container's environment as the kubelet builds it: ``envFrom`` first, then ``env`` in
    order, a later name replacing an earlier one; ``valueFrom`` configMapKeyRef/secretKeyRef read
    from ``objects``. Each entry is (name, value, from a Secret): secret values must never reach a
    log or a command line."""
    out: dict[str, tuple[str, bool]] = {}
    flags = {"configMap": "--configmap", "secret": "--secret-volume"}
    for src in env_from:
        prefix = str(src.get("prefix") or "")
        for kind, key in (("configMap", "configMapRef"), ("secret", "secretRef")):
            ref = src.get(key)
            if ref is None:
                continue
            data = objects.source(kind, str(ref.get("name")))
            if data is None:
                if ref.get("optional"):
                    continue
                raise UsageError(
                    f"{where}: envFrom {kind} {ref.get('name')!r} is not in the file; give it with {flags[kind]} NAME=DIR"
                )
            for k, v in data.items():
                out.pop(prefix + k, None)
                out[prefix + k] = (v.decode("utf-8", errors="replace"), kind == "secret")
    for e in env:
        name = str(e["name"])
        vf = e.get("valueFrom")
        if not vf:
            out.pop(name, None)
            out[name] = (str(e.get("value", "")), False)
            continue
        kind = next((k for k in ("configMap", "secret") if f"{k}KeyRef" in vf), "")
        if not kind:
            raise UsageError(f"{where}: env {name} valueFrom.{next(iter(vf), '?')}: not supported, it needs a cluster")
        ref = vf[f"{kind}KeyRef"]
        data = objects.source(kind, str(ref.get("name")))
        value = None if data is None else data.get(str(ref.get("key")))
        if value is None:
            if ref.get("optional"):
                continue
            raise UsageError(
                f"{where}: env {name} needs key {ref.get('key')!r} of {kind} {ref.get('name')!r}, which is not in "
                f"the file; give it with {flags[kind]} {ref.get('name')}=DIR"
            )
        out.pop(name, None)
        out[name] = (value.decode("utf-8", errors="replace"), kind == "secret")
    return [(k, v, secret) for k, (v, secret) in out.items()]
