"""A thin client over the official ``kubernetes`` package: config, objects as dicts, errors.

Why dicts and not the generated models: Tekton objects are custom resources (no models), and the
generated models validate strictly (pydantic), so one missing optional field in a Pod would
crash a log follower. Every call asks for the raw JSON (``_preload_content=False``) and every
failure goes through :mod:`taskimage.tekton.kube.errors`, so callers only ever see one-line messages.

Kinds are addressed through ``CustomObjectsApi`` when they live in an API group (Tekton objects,
``apps/v1`` DaemonSets: the URL scheme is the same) and through ``CoreV1Api`` for pods, logs and
namespaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.config.config_exception import ConfigException

from taskimage import log
from taskimage.errors import UsageError
from taskimage.tekton.kube import errors
from taskimage.tekton.kube.errors import Call, KubeError

IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


TASKS = Resource("tekton.dev", "v1", "tasks", "Task")
PIPELINES = Resource("tekton.dev", "v1", "pipelines", "Pipeline")
PIPELINERUNS = Resource("tekton.dev", "v1", "pipelineruns", "PipelineRun")
TASKRUNS = Resource("tekton.dev", "v1", "taskruns", "TaskRun")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
PODS = Resource("", "v1", "pods", "Pod")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)

_BY_KIND = {(r.api_version, r.kind): r for r in (TASKS, PIPELINES, PIPELINERUNS, TASKRUNS, DAEMONSETS, NAMESPACES)}


def resource_for(doc: Mapping[str, Any]) -> Resource:
    """The resource of an object we know how to apply (Tekton v1 objects, DaemonSet, Namespace)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in _BY_KIND:
        known = ", ".join(f"{a} {k}" for a, k in _BY_KIND)
        raise UsageError(
            f"cannot apply {key[0]} {key[1]} {doc.get('metadata', {}).get('name')!r}: supported kinds are {known}"
        )
    return _BY_KIND[key]


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds. ``watch`` is how long one watch request may stay open before we re-open it."""

    connect: float = 10.0
    read: float = 60.0
    watch: int = 50


class Kube:
    """One cluster connection: a namespace default plus CustomObjectsApi and CoreV1Api."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str = "default", timeouts: Timeouts = Timeouts()):
        self.api_client = api_client
        self.namespace = namespace
        self.timeouts = timeouts
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    # ------------------------------------------------------------------ connection

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> Kube:
        """Kubeconfig (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``), else in-cluster config.

        The namespace is ``namespace``, else the context's namespace, else the pod's own
        namespace in a cluster, else ``default`` (what kubectl and tkn do).
        """
        configuration = k8s.Configuration()
        config_file = (
            kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser(k8s_config.KUBE_CONFIG_DEFAULT_LOCATION)
        )
        use_kubeconfig = bool(kubeconfig) or any(Path(p).is_file() for p in config_file.split(os.pathsep))
        default_ns = "default"
        if use_kubeconfig:
            if kubeconfig and not Path(kubeconfig).is_file():
                raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
            try:
                k8s_config.load_kube_config(
                    config_file=config_file, context=context, client_configuration=configuration, persist_config=False
                )
                contexts, current = k8s_config.list_kube_config_contexts(config_file)
            except ConfigException as exc:
                flag = (
                    f"--context {context}"
                    if context and "context" in str(exc).lower()
                    else f"--kubeconfig {config_file}"
                )
                raise UsageError(f"{flag}: {str(exc).splitlines()[0]}") from exc
            chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
            default_ns = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            if context:
                raise UsageError(
                    f"--context {context}: no kubeconfig found (running with the in-cluster service account)"
                )
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except ConfigException as exc:
                raise UsageError(f"in-cluster Kubernetes config: {str(exc).splitlines()[0]}") from exc
            with contextlib.suppress(OSError):
                default_ns = Path(IN_CLUSTER_NAMESPACE_FILE).read_text().strip() or "default"
        else:
            raise UsageError(f"--kubeconfig: no kubeconfig at {config_file} and not running inside a cluster")
        token = (configuration.api_key or {}).get("BearerToken") or (configuration.api_key or {}).get("authorization")
        if token:
            log.add_secret(str(token).removeprefix("Bearer ").strip())
        return cls(k8s.ApiClient(configuration), namespace or default_ns, timeouts)

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _translate(self, call: Call) -> Iterator[None]:
        try:
            yield
        except k8s.ApiException as exc:
            raise errors.from_api_exception(exc, call, self.server) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise errors.from_transport_error(exc, call, self.server) from exc

    def _request_timeout(self) -> tuple[float, float]:
        return (self.timeouts.connect, self.timeouts.read)

    @staticmethod
    def _json(response: Any) -> Any:
        data = response.data
        return json.loads(data) if data else {}

    def _ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    # ------------------------------------------------------------------ discovery

    def require_tekton(self) -> None:
        """Fail with "Tekton Pipelines is not installed" unless the ``tekton.dev/v1`` API exists."""
        call = Call("discover", "tekton.dev", "v1 API")
        try:
            with self._translate(call):
                data = self._json(
                    self.custom.get_api_resources(
                        "tekton.dev", "v1", _preload_content=False, _request_timeout=self._request_timeout()
                    )
                )
        except KubeError as exc:
            if exc.status == 404:
                raise errors.TektonNotInstalled(
                    f"{errors.TEKTON_MISSING} (no tekton.dev/v1 API at {self.server}; Tekton Pipelines >= v0.44 is needed)",
                    404,
                ) from exc
            raise
        names = {r.get("name") for r in data.get("resources") or []}
        missing = [p for p in ("tasks", "pipelines", "pipelineruns", "taskruns") if p not in names]
        if missing:
            raise errors.TektonNotInstalled(
                f"{errors.TEKTON_MISSING} (tekton.dev/v1 at {self.server} lacks {', '.join(missing)})", 404
            )

    # ------------------------------------------------------------------ objects (CustomObjectsApi)

    def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        if res is NAMESPACES:
            try:
                with self._translate(Call("get", "", "namespaces", name)):
                    return self._json(
                        self.core.read_namespace(name, _preload_content=False, _request_timeout=self._request_timeout())
                    )
            except errors.NotFound:
                return None
        ns = self._ns(namespace)
        try:
            with self._translate(Call("get", res.group, res.plural, name, ns)):
                return self._json(
                    self.custom.get_namespaced_custom_object(
                        res.group,
                        res.version,
                        ns,
                        res.plural,
                        name,
                        _preload_content=False,
                        _request_timeout=self._request_timeout(),
                    )
                )
        except errors.NotFound:
            return None

    def create(self, res: Resource, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name")
        if res is NAMESPACES:
            with self._translate(Call("create", "", "namespaces", name)):
                return self._json(
                    self.core.create_namespace(
                        cast(Any, dict(body)), _preload_content=False, _request_timeout=self._request_timeout()
                    )
                )
        ns = self._ns(namespace)
        with self._translate(Call("create", res.group, res.plural, name, ns)):
            return self._json(
                self.custom.create_namespaced_custom_object(
                    res.group,
                    res.version,
                    ns,
                    res.plural,
                    dict(body),
                    _preload_content=False,
                    _request_timeout=self._request_timeout(),
                )
            )

    def patch(self, res: Resource, name: str, patch: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): dicts merge, lists replace, None deletes."""
        if res is NAMESPACES:
            with self._translate(Call("patch", "", "namespaces", name)):
                return self._json(
                    self.core.patch_namespace(
                        name,
                        dict(patch),
                        _content_type="application/merge-patch+json",
                        _preload_content=False,
                        _request_timeout=self._request_timeout(),
                    )
                )
        ns = self._ns(namespace)
        with self._translate(Call("patch", res.group, res.plural, name, ns)):
            return self._json(
                self.custom.patch_namespaced_custom_object(
                    res.group,
                    res.version,
                    ns,
                    res.plural,
                    name,
                    dict(patch),
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=self._request_timeout(),
                )
            )

    def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        ns = self._ns(namespace)
        kwargs: dict[str, Any] = {"label_selector": label_selector} if label_selector else {}
        with self._translate(Call("list", res.group, res.plural, None, ns)):
            data = self._json(
                self.custom.list_namespaced_custom_object(
                    res.group,
                    res.version,
                    ns,
                    res.plural,
                    _preload_content=False,
                    _request_timeout=self._request_timeout(),
                    **kwargs,
                )
            )
        return list(data.get("items") or [])

    # ------------------------------------------------------------------ watching

    def wait_for(
        self,
        res: Resource,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Watch one object until ``predicate(obj)`` holds; return that state of the object.

        A watch shows the current state first (an ADDED event), then every change. Watches are
        re-opened when the server ends them (``timeoutSeconds``) or the connection goes quiet.
        The field selector narrows the stream on a real server; the name is checked here too.
        """
        ns = self._ns(namespace)
        call = Call("watch", res.group, res.plural, name, ns)
        if res is PODS:
            list_fn: Callable[..., Any] = self.core.list_namespaced_pod
            args: tuple[Any, ...] = (ns,)
        else:
            list_fn = self.custom.list_namespaced_custom_object
            args = (res.group, res.version, ns, res.plural)
        while True:
            watcher = k8s_watch.Watch()
            try:
                with self._translate(call):
                    for event in watcher.stream(
                        list_fn,
                        *args,
                        field_selector=f"metadata.name={name}",
                        timeout_seconds=self.timeouts.watch,
                        _request_timeout=(self.timeouts.connect, self.timeouts.watch + 10),
                        deserialize=False,
                    ):
                        obj = event.get("object") or {}
                        if (obj.get("metadata") or {}).get("name") != name:
                            continue
                        if event.get("type") == "DELETED":
                            raise errors.NotFound(f"{res.kind} {name!r} was deleted in namespace {ns}", 404)
                        if predicate(obj):
                            watcher.stop()
                            return obj
            except errors.Timeout:
                continue  # a quiet watch: open a new one
            except KubeError as exc:
                if exc.status == 410:  # resourceVersion too old: start over from the current state
                    continue
                raise

    # ------------------------------------------------------------------ pods and logs

    def get_pod(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = self._ns(namespace)
        try:
            with self._translate(Call("get", "", "pods", name, ns)):
                return self._json(
                    self.core.read_namespaced_pod(
                        name, ns, _preload_content=False, _request_timeout=self._request_timeout()
                    )
                )
        except errors.NotFound:
            return None

    def log_lines(self, pod: str, container: str, namespace: str | None = None, follow: bool = False) -> Iterator[str]:
        """The lines of one container's log; with ``follow`` until the container ends."""
        ns = self._ns(namespace)
        call = Call("get", "", "pods/log", f"{pod}/{container}", ns)
        with self._translate(call):
            # A followed log stays quiet while the step works: no read timeout then.
            timeout: dict[str, Any] = {} if follow else {"_request_timeout": self._request_timeout()}
            response: Any = self.core.read_namespaced_pod_log(
                pod, ns, container=container, follow=follow, _preload_content=False, **timeout
            )
            try:
                pending = b""
                for chunk in response.stream(4096, decode_content=True):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield line.decode("utf-8", "replace")
                if pending:
                    yield pending.decode("utf-8", "replace")
            finally:
                response.release_conn()
