"""Read an image's attached SBOM or provenance back from the registry (``taskimage sbom`` /
``taskimage provenance``): resolve the reference (tag or digest; an index and ``--platform`` to
one platform image), list its referrers (the referrers API, else the fallback tag) and fetch the
newest artifact of the wanted type."""

from __future__ import annotations

import dataclasses
import json

from taskimage.errors import TaskimageError, UsageError
from taskimage.oci.platforms import Platform
from taskimage.oci.reference import ImageReference, parse_image
from taskimage.supplychain import referrers

INDEX_TYPES = (referrers.OCI_INDEX, referrers.DOCKER_LIST)


@dataclasses.dataclass(frozen=True)
class Found:
    subject: str  # REPOSITORY@sha256:... the artifact is attached to
    artifact: referrers.Descriptor
    how: str  # "api" or "tag sha256-..."
    content: bytes


def parse_ref(value: str, source: str = "REF") -> tuple[ImageReference, str]:
    """``REPO[:TAG]`` or ``REPO@sha256:...``: the image and the tag or digest to read."""
    name, at, digest = value.strip().partition("@")
    image = parse_image(name, source=source)
    if at:
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise UsageError(f"{source}: {value!r}: expected a digest sha256:<64 hex digits>")
        return image, digest
    return image, image.tag


def resolve(client: referrers.Client, image: ImageReference, reference: str, platform: Platform | None) -> str:
    """The digest of the manifest ``reference`` names, or with ``platform``, of that platform's image."""
    found = client.get_manifest(image.repository, reference)
    if found is None:
        raise TaskimageError(f"{image.name}:{reference} not found in the registry")
    raw, media_type = found
    digest = referrers.digest_of(raw)
    doc = json.loads(raw)
    is_index = (doc.get("mediaType") or media_type) in INDEX_TYPES or "manifests" in doc
    if platform is None:
        return digest
    if not is_index:
        return digest  # a single image is its own platform's
    for entry in doc.get("manifests", []):
        plat = entry.get("platform") or {}
        if platform.matches_config(plat.get("os"), plat.get("architecture"), plat.get("variant")):
            return entry["digest"]
    listed = ", ".join(
        "/".join(x for x in (e.get("platform", {}).get(k) for k in ("os", "architecture", "variant")) if x)
        for e in doc.get("manifests", [])
    )
    raise TaskimageError(f"--platform: {platform} is not in {image.name}@{digest} (it lists {listed})")


def find(
    client: referrers.Client, image: ImageReference, reference: str, platform: Platform | None, types: tuple[str, ...]
) -> Found:
    subject = resolve(client, image, reference, platform)
    listed, how = client.referrers(image.repository, subject)
    wanted = [d for d in listed if d.artifact_type in types]
    if not wanted:
        kinds = " or ".join(types)
        raise TaskimageError(
            f"no {kinds} is attached to {image.with_digest(subject)} (referrers looked up by {how}; "
            f"{len(listed)} other referrer(s))"
        )
    newest = max(wanted, key=lambda d: dict(d.annotations).get("org.opencontainers.image.created", ""))
    return Found(image.with_digest(subject), newest, how, referrers.fetch(client, image.repository, newest))
