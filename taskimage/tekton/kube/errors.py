"""Kubernetes API failures as one-line :class:`TaskimageError` messages.

Why a translation layer: ``ApiException`` carries a multi-line HTTP dump (headers, JSON body)
that tells a user little. What they need is the verb and resource that failed and what to do:
Tekton missing, credentials refused, not allowed to ``create pipelineruns``, someone else
changed the object, the API server did not answer in time.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from taskimage.errors import TaskimageError

TEKTON_MISSING = "Tekton Pipelines is not installed in this cluster"


class KubeError(TaskimageError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class TektonNotInstalled(KubeError):
    pass


class Unauthorized(KubeError):
    pass


class Forbidden(KubeError):
    pass


class NotFound(KubeError):
    pass


class AlreadyExists(KubeError):
    pass


class Conflict(KubeError):
    pass


class Timeout(KubeError):
    pass


class Unreachable(KubeError):
    pass


@dataclasses.dataclass(frozen=True)
class Call:
    """What we were doing, for the message: ``create pipelineruns.tekton.dev "x" in namespace ci``."""

    verb: str
    group: str
    plural: str
    name: str | None = None
    namespace: str | None = None

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def describe(self) -> str:
        text = f"{self.verb} {self.resource}"
        if self.name:
            text += f" {self.name!r}"
        if self.namespace:
            text += f" in namespace {self.namespace}"
        return text


def _status_body(body: Any) -> dict[str, Any] | None:
    """The ``Status`` object of an error response, or None (e.g. a plain ``404 page not found``)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body.strip():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("kind") == "Status" else None


def _server_message(status: dict[str, Any] | None) -> str:
    if not status:
        return ""
    message = str(status.get("message") or status.get("reason") or "").strip()
    return message.splitlines()[0] if message else ""


def from_api_exception(exc: Any, call: Call, server: str = "") -> KubeError:
    """An ``ApiException`` (status, reason, body) as a one-line error naming the call."""
    code = getattr(exc, "status", None) or 0
    status = _status_body(getattr(exc, "body", None))
    detail = _server_message(status)
    suffix = f": {detail}" if detail else ""
    what = call.describe()
    if code == 401:
        return Unauthorized(
            f"the Kubernetes API{(' at ' + server) if server else ''} refused our credentials (401 Unauthorized) "
            f"when trying to {what}; check --kubeconfig/--context or log in again",
            code,
        )
    if code == 403:
        return Forbidden(f"not allowed to {what} (403 Forbidden){suffix}", code)
    if code == 404:
        # A named object that is missing comes back as a JSON Status; an unknown resource type
        # (no CRD) as plain text "404 page not found", or as a Status without the object's name
        # on collection URLs (create/list/watch).
        if call.name and status is not None and call.verb in ("get", "patch", "update", "delete"):
            kind = call.resource
            where = f" in namespace {call.namespace}" if call.namespace else ""
            return NotFound(f"{kind} {call.name!r} not found{where}", code)
        if call.group == "tekton.dev":
            return TektonNotInstalled(
                f"{TEKTON_MISSING} (the API server has no {call.resource}; could not {what})", code
            )
        return NotFound(f"the API server has no {call.resource} (could not {what}){suffix}", code)
    if code == 409:
        if call.verb == "create":
            where = f" in namespace {call.namespace}" if call.namespace else ""
            return AlreadyExists(f"{call.resource} {call.name!r} already exists{where} (409 Conflict)", code)
        return Conflict(
            f"conflict: {call.resource} {call.name!r} was changed by someone else while we tried to {call.verb} it "
            f"(409 Conflict); run the command again{suffix}",
            code,
        )
    if code in (408, 504):
        return Timeout(f"the Kubernetes API timed out ({code}) when trying to {what}{suffix}", code)
    if code == 422 or code == 400:
        return KubeError(f"the Kubernetes API rejected the request to {what} ({code}){suffix}", code)
    reason = getattr(exc, "reason", "") or ""
    return KubeError(f"could not {what}: HTTP {code} {reason}{suffix}".rstrip(), code)


def from_transport_error(exc: BaseException, call: Call, server: str) -> KubeError:
    """urllib3 / socket failures: no HTTP answer at all."""
    name = type(exc).__name__
    text = str(exc)
    if "Timeout" in name or "timed out" in text.lower():
        return Timeout(f"timed out talking to the Kubernetes API at {server} when trying to {call.describe()}")
    if "refused" in text.lower():
        return Unreachable(
            f"cannot reach the Kubernetes API at {server} (connection refused) when trying to {call.describe()}"
        )
    short = text.splitlines()[0] if text else name
    return Unreachable(f"cannot reach the Kubernetes API at {server} when trying to {call.describe()}: {short}")
