"""OCI 1.1 referrers: artifacts (an SBOM, a provenance statement) attached to an image or an index
by a manifest whose ``subject`` names it, never as entries inside the index.

skopeo and buildah cannot push a manifest with a ``subject`` (nor a non-image config), so this
module speaks the distribution API itself (urllib): blob uploads, manifest PUT/GET, the
referrers API, and, where the registry has no referrers API (the distribution registry 2.x used in
tests, many others), the referrers tag schema: the tag ``sha256-<hex of the subject digest>``
holds an index listing the subject's referrers, updated by the client (read, add, put).

Credentials come from the same auth file as buildah's and skopeo's (``--authfile``, ``--creds``
merged into it); basic and bearer-token authentication as registries answer with
``WWW-Authenticate``. Tokens are registered as secrets, never logged.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from taskimage import log, proc
from taskimage.errors import RegistryAuthError, TaskimageError
from taskimage.oci import auth

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))


class RegistryError(TaskimageError):
    """A registry answered an API call with an error (status and reason in the message)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str = ""
    annotations: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, d: Mapping) -> Descriptor:
        return cls(
            d.get("mediaType", ""),
            d["digest"],
            int(d.get("size", 0)),
            d.get("artifactType", ""),
            tuple(sorted((d.get("annotations") or {}).items())),
        )


def default_authfiles() -> list[str]:
    """Where buildah and skopeo look for credentials when no --authfile is given
    (containers-auth.json(5)), in their order."""
    env = os.environ
    out = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        out.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    out.append(os.path.join(env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "containers", "auth.json"))
    out.append(os.path.join(env.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json"))
    return out


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for ``digest``: ``<alg>-<hex>``."""
    alg, _, hexdigest = digest.partition(":")
    return f"{alg}-{hexdigest}"[:128]


class Client:
    """The distribution API of one registry host, with the auth file and TLS options of buildah."""

    def __init__(
        self,
        host: str,
        *,
        tls_verify: bool = True,
        authfile: str | None = None,
        cert_dir: str | None = None,
        timeout: float = 60,
        retry: int = 3,
        retry_delay: float = 2.0,
    ):
        self.host = host
        self.timeout = timeout
        self.retry = retry
        self.retry_delay = retry_delay
        self.tls_verify = tls_verify
        self.context = ssl.create_default_context()
        if cert_dir:
            for ca in sorted(Path(cert_dir).glob("*.crt")):
                self.context.load_verify_locations(cafile=str(ca))
        if not tls_verify:
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE
        self.scheme = "https"
        self.basic = self._basic(authfile)
        self.tokens: dict[str, str] = {}  # scope -> bearer token

    @classmethod
    def for_registry(cls, registry, host: str, retry: int = 3, retry_delay: float = 2.0) -> Client:
        """From a :class:`taskimage.oci.registry.Access` (the build's access options)."""
        return cls(
            host,
            tls_verify=registry.tls_verify,
            authfile=registry.authfile,
            cert_dir=registry.cert_dir,
            retry=retry,
            retry_delay=retry_delay,
        )

    def _basic(self, authfile: str | None) -> str | None:
        for candidate in [authfile] if authfile else default_authfiles():
            found = self._basic_from(candidate)
            if found:
                return found
        return None

    def _basic_from(self, authfile: str) -> str | None:
        if not Path(authfile).is_file():
            return None
        auths = auth.load_auths(Path(authfile))
        for key, entry in auths.items():
            name = key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
            if name == self.host or (self.host == "docker.io" and name in ("index.docker.io", "registry-1.docker.io")):
                if entry.get("auth"):
                    return str(entry["auth"])
                if entry.get("username") and entry.get("password"):
                    return base64.b64encode(f"{entry['username']}:{entry['password']}".encode()).decode()
        return None

    # --- HTTP ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        host = "registry-1.docker.io" if self.host == "docker.io" else self.host
        return f"{self.scheme}://{host}{path}"

    def _open(self, req: urllib.request.Request):
        return urllib.request.urlopen(req, timeout=self.timeout, context=self.context)

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        scope: str = "",
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One API call; returns (status, headers, body). 404 is returned, not raised. Transient
        errors (429, 5xx, a reset connection) are retried ``retry`` times with doubling delays,
        refused credentials never."""
        headers = dict(headers or {})
        authenticated = False
        attempt = 0
        while True:
            if scope in self.tokens:
                headers["Authorization"] = f"Bearer {self.tokens[scope]}"
            elif self.basic:
                headers["Authorization"] = f"Basic {self.basic}"
            req = urllib.request.Request(self._url(path), data=data, headers=headers, method=method)
            try:
                with self._open(req) as resp:
                    return resp.status, dict(resp.headers), resp.read()
            except urllib.error.HTTPError as exc:
                body = exc.read()
                if (
                    exc.code == 401
                    and not authenticated
                    and self._authenticate(exc.headers.get("WWW-Authenticate", ""), scope)
                ):
                    authenticated = True  # once: refused credentials are not tried again
                    continue
                if exc.code in (401, 403):
                    raise RegistryAuthError(f"the registry {self.host} refused access ({exc.code}) to {path}") from None
                if exc.code == 404:
                    return 404, dict(exc.headers), body
                if exc.code in (429, 500, 502, 503, 504) and attempt < self.retry:
                    attempt += 1
                    self._wait(attempt, f"{method} {path}: {exc.code}")
                    continue
                raise RegistryError(
                    f"{method} {path} on {self.host}: {exc.code} {_reason(body) or exc.reason}", exc.code
                ) from None
            except urllib.error.URLError as exc:
                if (
                    self.scheme == "https"
                    and not self.tls_verify
                    and isinstance(exc.reason, ssl.SSLError | ConnectionError)
                ):
                    self.scheme = "http"  # as skopeo with --tls-verify=false: plain HTTP when TLS is not spoken
                    continue
                if attempt < self.retry and not isinstance(exc.reason, ssl.SSLError):
                    attempt += 1
                    self._wait(attempt, f"{method} {path}: {exc.reason}")
                    continue
                raise RegistryError(f"{method} {path} on {self.host}: {exc.reason}") from None

    def _wait(self, attempt: int, what: str) -> None:
        delay = self.retry_delay * (2 ** (attempt - 1))
        log.warn(f"{self.host}: {what}; retrying in {delay:g} s ({attempt} of {self.retry})")
        proc.sleep(delay)  # a stop of the run ends the wait

    def _authenticate(self, challenge: str, scope: str) -> bool:
        if challenge.lower().startswith("basic"):
            return bool(self.basic)
        if not challenge.lower().startswith("bearer"):
            return False
        params = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (part.partition("=") for part in _split_challenge(challenge[len("bearer") :]))
        )
        realm = params.pop("realm", "")
        if not realm:
            return False
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        if scope and "scope" not in query:
            query["scope"] = scope
        headers = {"Authorization": f"Basic {self.basic}"} if self.basic else {}
        req = urllib.request.Request(realm + "?" + urllib.parse.urlencode(query), headers=headers)
        try:
            with self._open(req) as resp:
                doc = json.loads(resp.read())
        except (urllib.error.URLError, ValueError) as exc:
            raise RegistryAuthError(f"the registry {self.host}'s token service refused: {exc}") from None
        token = doc.get("token") or doc.get("access_token")
        if not token:
            return False
        log.add_secret(token)
        self.tokens[scope] = token
        return True

    # --- the API ------------------------------------------------------------------------

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str] | None:
        status, headers, body = self.request(
            "GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}, scope=f"repository:{repo}:pull"
        )
        if status == 404:
            return None
        return body, _header(headers, "Content-Type")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> Mapping[str, str]:
        _, headers, _ = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            data=data,
            headers={"Content-Type": media_type},
            scope=f"repository:{repo}:pull,push",
        )
        return headers

    def get_blob(self, repo: str, digest: str) -> bytes:
        status, _, body = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        if status == 404:
            raise RegistryError(f"{repo}@{digest}: blob not found", 404)
        if digest_of(body) != digest:
            raise RegistryError(f"{repo}@{digest}: the registry returned other content")
        return body

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        scope = f"repository:{repo}:pull,push"
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope)
        if status == 200:
            return digest
        _, headers, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"", scope=scope)
        location = _header(headers, "Location")
        if not location:
            raise RegistryError(f"{self.host} gave no upload location for {repo}")
        parsed = urllib.parse.urlsplit(location)
        query = urllib.parse.parse_qsl(parsed.query) + [("digest", digest)]
        path = parsed.path + "?" + urllib.parse.urlencode(query)
        self.request("PUT", path, data=data, headers={"Content-Type": "application/octet-stream"}, scope=scope)
        return digest

    def referrers(self, repo: str, subject: str) -> tuple[list[Descriptor], str]:
        """The referrers of ``subject`` and how they were found ("api" or the fallback tag)."""
        try:
            status, headers, body = self.request(
                "GET", f"/v2/{repo}/referrers/{subject}", headers={"Accept": OCI_INDEX}, scope=f"repository:{repo}:pull"
            )
        except RegistryError:
            status, headers, body = 404, {}, b""
        if status == 200 and _header(headers, "Content-Type").startswith(OCI_INDEX):
            return [Descriptor.from_json(d) for d in json.loads(body).get("manifests", [])], "api"
        tag = fallback_tag(subject)
        found = self.get_manifest(repo, tag)
        if found is None:
            return [], f"tag {tag}"
        return [Descriptor.from_json(d) for d in json.loads(found[0]).get("manifests", [])], f"tag {tag}"


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return ""


def _reason(body: bytes) -> str:
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
    except (ValueError, AttributeError):
        return ""


def _split_challenge(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def attach(
    client: Client,
    repo: str,
    subject: Descriptor,
    artifact_type: str,
    content: bytes,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """Push ``content`` as an artifact whose ``subject`` is ``subject``; return its manifest's
    descriptor. Where the registry did not take the subject (no ``OCI-Subject`` header in its
    answer), the subject's fallback tag index gets the artifact added."""
    client.push_blob(repo, EMPTY)
    layer = client.push_blob(repo, content)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_CONFIG, "digest": digest_of(EMPTY), "size": len(EMPTY), "data": "e30="},
        "layers": [{"mediaType": artifact_type, "digest": layer, "size": len(content)}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    data = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    digest = digest_of(data)
    headers = client.put_manifest(repo, digest, data, OCI_MANIFEST)
    desc = Descriptor(OCI_MANIFEST, digest, len(data), artifact_type, tuple(sorted((annotations or {}).items())))
    if _header(headers, "OCI-Subject") != subject.digest:
        _add_to_fallback(client, repo, subject.digest, desc)
    return desc


def _add_to_fallback(client: Client, repo: str, subject: str, desc: Descriptor) -> None:
    tag = fallback_tag(subject)
    found = client.get_manifest(repo, tag)
    index: dict = json.loads(found[0]) if found else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    entries = [d for d in index.get("manifests") or [] if d.get("digest") != desc.digest]
    entries.append(desc.to_json())
    index["manifests"] = entries
    client.put_manifest(repo, tag, json.dumps(index, separators=(",", ":")).encode(), OCI_INDEX)


def fetch(client: Client, repo: str, desc: Descriptor) -> bytes:
    """The content (first layer) of an artifact a referrers listing names."""
    found = client.get_manifest(repo, desc.digest)
    if found is None:
        raise RegistryError(f"{repo}@{desc.digest}: the referrer's manifest is gone", 404)
    layers = json.loads(found[0]).get("layers") or []
    if not layers:
        raise RegistryError(f"{repo}@{desc.digest}: the referrer has no content")
    return client.get_blob(repo, layers[0]["digest"])
