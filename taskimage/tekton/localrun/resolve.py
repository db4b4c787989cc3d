"""Finding the Task (or Pipeline) a ``taskRef``/``pipelineRef`` names, as Tekton's resolvers do.

- no resolver: ``name`` is looked up among the objects of the run's own file and ``--task`` files;
- ``resolver: bundles``: params ``bundle``, ``name``, ``kind`` (read from the registry with
  :func:`taskimage.tekton.bundle.fetch_object`);
- ``resolver: git``: params ``url``, ``revision``, ``pathInRepo``, by ``git clone`` (the user's git
  configuration applies, so ``url.<base>.insteadOf`` can redirect to a local mirror);
- ``resolver: hub``: params ``catalog``, ``kind``, ``name``, ``version`` (type ``artifact``),
  through Artifact Hub's API (``--hub-url``, default https://artifacthub.io);
- a *stand-in* (``--stand-in TASK=FILE``) replaces what a pipeline task's ref names with a local
  Task of the same interface, and says so.

Every failure is a one-line :class:`UsageError` naming the pipeline task and how to supply it, raised
before anything runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import TaskimageError, ToolError, UsageError
from taskimage.tekton.localrun.task import load_documents

DEFAULT_HUB_URL = "https://artifacthub.io"
HUB_CATALOGS = {"task": "tekton-catalog-tasks", "pipeline": "tekton-catalog-pipelines"}
TASK_KINDS = ("Task", "ClusterTask")


@dataclasses.dataclass(frozen=True)
class Resolved:
    kind: str  # "Task" or "Pipeline"
    name: str
    spec: Mapping[str, Any]
    origin: str  # what it came from, for logs


def _params(ref: Mapping) -> dict[str, Any]:
    return {str(p.get("name")): p.get("value") for p in ref.get("params") or []}


def _one(objects: Sequence[Mapping], kinds: Sequence[str], origin: str, name: str | None, where: str) -> Resolved:
    found = [
        o for o in objects if o.get("kind") in kinds and (name is None or (o.get("metadata") or {}).get("name") == name)
    ]
    if len(found) != 1:
        what = f"{kinds[0]} {name}" if name else f"one {kinds[0]}"
        raise UsageError(f"{where}: {origin} holds {len(found)} objects matching {what}")
    obj = found[0]
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: {origin}: {obj.get('kind')} has no spec")
    kind = "Task" if obj.get("kind") in TASK_KINDS else str(obj.get("kind"))
    return Resolved(kind, str((obj.get("metadata") or {}).get("name")), spec, origin)


class Resolver:
    """Resolves refs once each (a git clone or bundle read is cached for the run)."""

    def __init__(
        self,
        documents: Sequence[Mapping] = (),
        *,
        tls_verify: bool = True,
        authfile: str | None = None,
        hub_url: str | None = None,
        stand_ins: Mapping[str, str] | None = None,
    ):
        self.documents = list(documents)
        self.tls_verify = tls_verify
        self.authfile = authfile
        self.hub_url = (hub_url or os.environ.get("TASKIMAGE_HUB_URL") or DEFAULT_HUB_URL).rstrip("/")
        self.stand_ins = dict(stand_ins or {})
        self._git: dict[str, str] = {}
        self._cache: dict[str, list[dict]] = {}

    # --- public ----------------------------------------------------------------------------

    def task(self, ref: Mapping, where: str, pipeline_task: str | None = None) -> Resolved:
        if pipeline_task is not None and pipeline_task in self.stand_ins:
            path = self.stand_ins[pipeline_task]
            got = _one(load_documents(path), TASK_KINDS, path, None, where)
            log.warn(f"{where}: stand-in: using task {got.name} from {path} instead of {describe(ref)}")
            return dataclasses.replace(got, origin=f"stand-in {path}")
        if ref.get("apiVersion") and not str(ref.get("apiVersion")).startswith("tekton.dev"):
            raise UsageError(
                f"{where}: custom task {ref.get('apiVersion')}/{ref.get('kind')}: not supported: custom tasks need their controller"
            )
        return self._resolve(ref, "task", where)

    def pipeline(self, ref: Mapping, where: str) -> Resolved:
        return self._resolve(ref, "pipeline", where)

    # --- resolvers -------------------------------------------------------------------------

    def _resolve(self, ref: Mapping, kind: str, where: str) -> Resolved:
        kinds = TASK_KINDS if kind == "task" else ("Pipeline",)
        resolver = ref.get("resolver")
        hint = f"give the {kinds[0]} with --task FILE" + (
            f" or --stand-in {where.split()[-1]}=FILE" if kind == "task" else ""
        )
        if not resolver:
            if ref.get("bundle"):
                return self._bundle(str(ref["bundle"]), str(ref.get("name", "")), kind, where)
            name = ref.get("name")
            if not name:
                raise UsageError(f"{where}: {kind}Ref has neither name nor resolver")
            matches = [
                o for o in self.documents if o.get("kind") in kinds and (o.get("metadata") or {}).get("name") == name
            ]
            if not matches:
                raise UsageError(f"{where}: {kinds[0]} {name} is not in the given files: {hint}")
            return _one(matches, kinds, "the given files", str(name), where)
        params = _params(ref)
        try:
            if resolver == "bundles":
                if not params.get("bundle") or not params.get("name"):
                    raise UsageError(f"{where}: resolver bundles needs params bundle and name")
                return self._bundle(str(params["bundle"]), str(params["name"]), str(params.get("kind") or kind), where)
            if resolver == "git":
                return self._git_resolve(params, kinds, where)
            if resolver == "hub":
                return self._hub(params, kind, kinds, where)
        except TaskimageError as exc:
            if isinstance(exc, UsageError) and str(exc).startswith(where):
                raise
            tail = [line.strip() for line in getattr(exc, "tail", None) or [] if line.strip()]
            why = str(exc).splitlines()[0] + (f": {tail[-1]}" if tail else "")
            raise UsageError(f"{where}: cannot resolve {describe(ref)}: {why} ({hint})") from None
        raise UsageError(
            f"{where}: resolver {resolver!r}: not supported: taskimage run resolves bundles, git and hub ({hint})"
        )

    def _bundle(self, bundle: str, name: str, kind: str, where: str) -> Resolved:
        from taskimage.tekton.bundle import fetch_object

        obj = fetch_object(bundle, name, kind.lower(), tls_verify=self.tls_verify, authfile=self.authfile)
        kinds = TASK_KINDS if kind.lower() == "task" else (kind.capitalize(),)
        return _one([obj], kinds, f"bundle {bundle}", name, where)

    def _git_resolve(self, params: Mapping[str, Any], kinds: Sequence[str], where: str) -> Resolved:
        if params.get("repo") or params.get("org"):
            raise UsageError(f"{where}: resolver git with repo/org (the SCM API mode): not supported: give url")
        url, path = params.get("url"), params.get("pathInRepo")
        if not url or not path:
            raise UsageError(f"{where}: resolver git needs params url and pathInRepo")
        revision = str(params.get("revision") or "HEAD")
        key = f"git:{url}@{revision}:{path}"
        if key not in self._cache:
            clone = self._git.get(str(url))
            if clone is None:
                clone = tempfile.mkdtemp(prefix="taskimage-git-resolver-")
                tools.run(["git", "clone", "--quiet", "--bare", str(url), clone], stream=False, what="git clone")
                self._git[str(url)] = clone
            try:
                text = tools.run(
                    ["git", "--no-pager", "--git-dir", clone, "cat-file", "blob", f"{revision}:{path}"],
                    stream=False,
                    quiet=True,
                    what="git cat-file",
                ).stdout
            except ToolError as exc:
                raise TaskimageError(f"no {path} at revision {revision} of {url}") from exc
            self._cache[key] = _parse(text, f"{url}@{revision}:{path}")
        return _one(self._cache[key], kinds, f"git {url}@{revision}:{path}", None, where)

    def _hub(self, params: Mapping[str, Any], kind: str, kinds: Sequence[str], where: str) -> Resolved:
        if str(params.get("type") or "artifact") != "artifact":
            raise UsageError(
                f"{where}: resolver hub type {params.get('type')}: not supported: the Tekton Hub is shut down (use type artifact)"
            )
        name = params.get("name")
        if not name:
            raise UsageError(f"{where}: resolver hub needs param name")
        catalog = str(params.get("catalog") or HUB_CATALOGS[kind])
        version = params.get("version")
        url = f"{self.hub_url}/api/v1/packages/tekton-{kind}/{catalog}/{name}" + (f"/{version}" if version else "")
        if url not in self._cache:
            try:
                with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (http(s) only, from config)
                    body = json.loads(response.read().decode("utf-8"))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise TaskimageError(f"Artifact Hub {url}: {getattr(exc, 'reason', exc)}") from exc
            raw = ((body or {}).get("data") or {}).get("manifestRaw")
            if not raw:
                raise TaskimageError(f"Artifact Hub {url}: the answer holds no data.manifestRaw")
            self._cache[url] = _parse(raw, url)
        return _one(self._cache[url], kinds, f"hub {url}", str(name), where)

    def close(self) -> None:
        import shutil

        for clone in self._git.values():
            shutil.rmtree(clone, ignore_errors=True)
        self._git.clear()


def _parse(text: str, origin: str) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise TaskimageError(f"{origin}: not valid YAML") from exc
    return docs


def describe(ref: Mapping) -> str:
    """A short human description of a ref: ``bundles ghcr.io/x:1 task/foo``."""
    if ref.get("resolver"):
        params = _params(ref)
        shown = " ".join(f"{k}={v}" for k, v in params.items() if isinstance(v, str))
        return f"resolver {ref['resolver']} ({shown})"
    return f"{ref.get('kind') or 'Task'} {ref.get('name')}"
