"""Registry access shared by ``build`` and ``index``: the access options, retries, read-back, results.

Both commands write to a registry the same way (transient errors retried with backoff, refused
credentials never), read what they pushed back from the registry instead of trusting a local
digest, and describe the pushed list with the same four Tekton results.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

from taskimage import log
from taskimage import proc as tools
from taskimage.build import buildah
from taskimage.errors import RegistryAuthError, TaskimageError, ToolError, UsageError
from taskimage.oci import auth
from taskimage.oci.platforms import Platform
from taskimage.oci.reference import ImageReference

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
# As words, never inside a digest: a bare "401" matched the hex of sha256 digests in buildah's
# output and turned a 503 into "credentials refused" (seen through tests/faultproxy.py).
_AUTH_RE = re.compile(
    r"unauthorized|authentication required|\bdenied\b|\bforbidden\b|(?<![0-9a-f:])40[13](?![0-9a-f])", re.IGNORECASE
)
PERMANENT_MARKERS = (
    "manifest invalid",
    "name invalid",
    "invalid reference",
    "blob unknown to registry",
    "name unknown",
    "unsupported",
    "no such host",
)
NOT_FOUND_MARKERS = ("manifest unknown", "not found", "name unknown")


def auth_refused(lines: Sequence[str]) -> bool:
    """Does a registry tool's output say the credentials were refused (401/403)?"""
    return any(_AUTH_RE.search(line) for line in lines)


def access(v: dict, src: dict) -> tuple[buildah.Registry, str | None]:
    """TLSVERIFY, AUTHFILE, CERT_DIR and CREDS checked (as build and index take them)."""
    authfile = auth.resolve_authfile(v["AUTHFILE"], src["AUTHFILE"])
    creds = v["CREDS"] or None
    if creds:
        auth.split_creds(creds, src["CREDS"])
    cert_dir = v["CERT_DIR"] or None
    if cert_dir and not Path(cert_dir).is_dir():
        raise UsageError(f"{src['CERT_DIR']}: {cert_dir!r} is not a directory")
    return buildah.Registry(v["TLSVERIFY"], str(authfile) if authfile else None, cert_dir), creds


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
            text = " ".join(exc.tail).lower()
            if auth_refused(exc.tail):
                raise RegistryAuthError(
                    f"the registry {image.registry} refused the credentials for {image.name} "
                    f"(check --authfile / the dockerconfig workspace); not retried",
                    tail=exc.tail,
                ) from exc
            if any(m in text for m in PERMANENT_MARKERS) or attempt == attempts:
                raise ToolError(
                    f"{what} failed after {attempt} attempt(s): {exc.tail[-1] if exc.tail else exc}", tail=exc.tail
                ) from exc
            delay = retry_delay * (2 ** (attempt - 1))
            log.warn(
                f"{what}: attempt {attempt} of {attempts} failed ({exc.tail[-1] if exc.tail else exc}); retrying in {delay:g} s"
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def inspect_raw(
    registry: buildah.Registry,
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
            text = " ".join(exc.tail).lower()
            not_found = not retry_not_found and any(m in text for m in NOT_FOUND_MARKERS)
            if auth_refused(exc.tail) or not_found or attempt > retry:
                raise
            time.sleep(delay * (2 ** (attempt - 1)))
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
    registry: buildah.Registry,
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
