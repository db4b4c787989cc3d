"""Registry access shared by ``build``, ``index`` and ``bundle``: options, retries, error kinds,
read-back, results.

Every command writes to a registry the same way (transient errors retried with backoff, refused
credentials never), decides what a failure was by :func:`classify` (the HTTP status or the
distribution error code the tool printed, never a word anywhere in its output), reads what it
pushed back from the registry instead of trusting a local digest, and describes the pushed list
with the same four Tekton results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from taskimage import log
from taskimage import proc as tools
from taskimage.build import buildah
from taskimage.errors import RegistryAuthError, TaskimageError, ToolError, UsageError
from taskimage.oci import auth, media
from taskimage.oci.platforms import Platform
from taskimage.oci.reference import ImageReference

INDEX_TYPES = media.INDEX_TYPES
# What went wrong, decided from what the registry answered as skopeo/buildah (containers/image)
# print it: an HTTP status ("received unexpected HTTP status: 503 Service Unavailable") or a
# distribution error code ("unauthorized: ...", "denied: ...", "manifest unknown: ..."), each
# after ": " or at the start. Never from a word anywhere: a local "permission denied" is not a
# refused login, and "401"/"404" inside a digest or a port is no status.
AUTH, NOT_FOUND, PERMANENT, LOCAL, TRANSIENT = "auth", "not-found", "permanent", "local", "transient"
_STATUS = re.compile(
    r"unexpected HTTP status: (\d{3})|status ?code(?: from registry)?:? (\d{3})|\b(\d{3}) \(?(?:Unauthorized|Forbidden|Not Found)\b",
    re.IGNORECASE,
)
_CODES = {
    "unauthorized": AUTH,
    "authentication required": AUTH,
    "denied": AUTH,
    "manifest unknown": NOT_FOUND,
    "name unknown": NOT_FOUND,
    "blob unknown": PERMANENT,
    "manifest blob unknown": PERMANENT,
    "manifest invalid": PERMANENT,
    "manifest unverified": PERMANENT,
    "name invalid": PERMANENT,
    "tag invalid": PERMANENT,
    "digest invalid": PERMANENT,
    "size invalid": PERMANENT,
    "unsupported": PERMANENT,
    "toomanyrequests": TRANSIENT,
}
_CODE = re.compile(r"(?:^|: |msg=\")(" + "|".join(sorted(map(re.escape, _CODES), key=len, reverse=True)) + r")\b")
_LOCAL = re.compile(
    r"permission denied|operation not permitted|read-only file system|no such file or directory|is a directory"
)
_NO_HOST = re.compile(r"no such host|invalid reference format")


@dataclasses.dataclass(frozen=True)
class Access:
    """Registry access options (--tls-verify, --authfile, --cert-dir), the one shape that buildah,
    skopeo, ``build``, ``index``, ``bundle``, ``source`` and ``gc`` take."""

    tls_verify: bool = True
    authfile: str | None = None
    cert_dir: str | None = None

    def buildah_args(self) -> list[str]:
        out = [f"--tls-verify={'true' if self.tls_verify else 'false'}"]
        if self.authfile:
            out += ["--authfile", self.authfile]
        if self.cert_dir:
            out += ["--cert-dir", self.cert_dir]
        return out

    def skopeo_args(self) -> list[str]:
        # skopeo inspect spells them like buildah
        return self.buildah_args()

    def flags(self, side: str) -> list[str]:
        """Flags for one side of a skopeo command: '' (inspect), 'src-' or 'dest-'."""
        out = [f"--{side}tls-verify={'true' if self.tls_verify else 'false'}"]
        if self.authfile:
            out.append(f"--{side}authfile={self.authfile}")
        if self.cert_dir:
            out.append(f"--{side}cert-dir={self.cert_dir}")
        return out


def status_kind(status: int) -> str:
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status in (408, 429) or status >= 500:
        return TRANSIENT
    return PERMANENT


def classify(lines: Sequence[str]) -> str:
    """The kind of a registry tool's failure (AUTH, NOT_FOUND, PERMANENT, LOCAL or TRANSIENT),
    from its last lines: the last line that carries a status or an error code decides."""
    for line in reversed(lines):
        found = _STATUS.search(line)
        if found:
            return status_kind(int(next(g for g in found.groups() if g)))
        code = _CODE.search(line)
        if code:
            return _CODES[code.group(1)]
        if _NO_HOST.search(line):
            return PERMANENT
        if _LOCAL.search(line):
            return LOCAL
    return TRANSIENT


def auth_refused(lines: Sequence[str]) -> bool:
    """Did the registry refuse the credentials (401/403, "unauthorized", "denied: ...")?"""
    return classify(lines) == AUTH


def not_found(lines: Sequence[str]) -> bool:
    return classify(lines) == NOT_FOUND


def checked_access(values: dict) -> Access:
    """TLSVERIFY, CERT_DIR and AUTHFILE as ``params.resolve`` gives them ((value, source) each),
    checked in that order (as ``bundle``, ``source`` and ``gc`` take them)."""
    cert_dir, cert_source = values["CERT_DIR"]
    if cert_dir and not os.path.isdir(cert_dir):
        raise UsageError(f"{cert_source}: {cert_dir!r} is not a directory")
    path = auth.resolve_authfile(*values["AUTHFILE"])
    return Access(values["TLSVERIFY"][0], str(path) if path else None, cert_dir or None)


def access(v: dict, src: dict) -> tuple[Access, str | None]:
    """TLSVERIFY, AUTHFILE, CERT_DIR and CREDS checked (as build and index take them)."""
    authfile = auth.resolve_authfile(v["AUTHFILE"], src["AUTHFILE"])
    creds = v["CREDS"] or None
    if creds:
        auth.split_creds(creds, src["CREDS"])
    cert_dir = v["CERT_DIR"] or None
    if cert_dir and not Path(cert_dir).is_dir():
        raise UsageError(f"{src['CERT_DIR']}: {cert_dir!r} is not a directory")
    return Access(v["TLSVERIFY"], str(authfile) if authfile else None, cert_dir), creds


def with_retry(action, *, what: str, image: ImageReference, retry: int, retry_delay: float):
    """Run ``action()`` (a registry write), retrying transient errors with backoff.

    Authentication errors are never retried (a wrong password stays wrong, and retrying may lock
    the account); errors that cannot heal (invalid manifest, unknown name) end at once.
    """
    attempts = retry + 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ToolError as exc:
            kind = classify(exc.tail)
            if kind == AUTH:
                raise RegistryAuthError(
                    f"the registry {image.registry} refused the credentials for {image.name} "
                    f"(check --authfile / the dockerconfig workspace); not retried",
                    tail=exc.tail,
                ) from exc
            if kind in (PERMANENT, NOT_FOUND, LOCAL) or attempt == attempts:
                raise ToolError(
                    f"{what} failed after {attempt} attempt(s): {exc.tail[-1] if exc.tail else exc}", tail=exc.tail
                ) from exc
            delay = retry_delay * (2 ** (attempt - 1))
            log.warn(
                f"{what}: attempt {attempt} of {attempts} failed ({exc.tail[-1] if exc.tail else exc}); retrying in {delay:g} s"
            )
            tools.sleep(delay)
    raise AssertionError("unreachable")


def inspect_raw(
    registry: Access,
    ref: str,
    retry: int,
    delay: float,
    *,
    config: bool = False,
    retry_not_found: bool = True,
) -> str:
    """``skopeo inspect --raw`` (or the config) of ``ref``, retried; auth errors are not.

    "Not found" is retried by default (a registry on eventually consistent storage may not show a
    fresh push at once); callers checking user input pass ``retry_not_found=False``.
    """
    for attempt in range(1, retry + 2):
        try:
            return tools.run(
                buildah.skopeo_inspect_raw(registry, ref, config=config),
                quiet=True,
                stream=False,
                what="skopeo inspect",
            ).stdout
        except ToolError as exc:
            kind = classify(exc.tail)
            if kind in (AUTH, PERMANENT, LOCAL) or (kind == NOT_FOUND and not retry_not_found) or attempt > retry:
                raise
            tools.sleep(delay * (2 ** (attempt - 1)))
    raise AssertionError("unreachable")


def results_for(image: ImageReference, digest: str, images, tags: Sequence[ImageReference] = ()) -> dict[str, str]:
    """The Tekton results of a pushed list (build and index write the same)."""
    return {
        "IMAGE_DIGEST": digest,
        "IMAGE_URL": image.url,
        "IMAGE_REF": image.with_digest(digest),
        "IMAGES": ",".join(image.with_digest(d) for _, d in images),
        "IMAGE_TAGS": ",".join([image.url, *(t.url for t in tags)]),
    }


def read_back_index(
    registry: Access,
    image: ImageReference,
    platforms: Sequence[Platform],
    pushed_digest: str,
    retry: int,
    retry_delay: float,
) -> tuple[str, tuple[tuple[Platform, str], ...]]:
    """Read the index at ``image``'s tag from the registry; check every platform's entry and config.

    ``pushed_digest`` is what we believe we pushed (may be empty: then the tag's digest is taken).
    Returns the index digest and each platform's manifest digest, in ``platforms`` order.
    """
    raw_by_tag = inspect_raw(registry, image.url, retry, retry_delay)
    tag_digest = "sha256:" + hashlib.sha256(raw_by_tag.encode()).hexdigest()
    digest = pushed_digest if pushed_digest.startswith("sha256:") else tag_digest
    if digest != tag_digest:
        log.warn(
            f"the tag {image.url} now points at {tag_digest}, not at what we pushed ({digest}): "
            "another push raced ours; results name what we pushed"
        )
        raw = inspect_raw(registry, image.with_digest(digest), retry, retry_delay)
    else:
        raw = raw_by_tag
    index = json.loads(raw)
    if index.get("mediaType") not in INDEX_TYPES and "manifests" not in index:
        raise TaskimageError(f"the registry returned a {index.get('mediaType')} for {image.url}, not a manifest list")
    listed: dict[Platform, str] = {}
    for entry in index.get("manifests", []):
        plat = entry.get("platform") or {}
        for p in platforms:
            if p.matches_config(plat.get("os"), plat.get("architecture"), plat.get("variant")):
                listed[p] = entry["digest"]
    missing = [str(p) for p in platforms if p not in listed]
    if missing:
        raise TaskimageError(f"the pushed index {image.with_digest(digest)} lacks {', '.join(missing)}")
    for p, entry_digest in listed.items():
        cfg = json.loads(inspect_raw(registry, image.with_digest(entry_digest), retry, retry_delay, config=True))
        if not p.matches_config(cfg.get("os"), cfg.get("architecture"), cfg.get("variant")):
            raise TaskimageError(
                f"the pushed image for {p} ({entry_digest}) has a config for {cfg.get('architecture')}"
            )
    return digest, tuple((p, listed[p]) for p in platforms)
