"""Image references: ``[registry[:port]/]repo[:tag]`` as the distribution spec defines them."""

from __future__ import annotations

import dataclasses
import re

from taskimage.errors import UsageError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_HOST_RE = re.compile(
    r"^(?:localhost|(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?))*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)
DEFAULT_REGISTRY = "docker.io"


@dataclasses.dataclass(frozen=True)
class ImageReference:
    registry: str
    repository: str
    tag: str = "latest"

    @property
    def name(self) -> str:
        """registry/repository, without tag."""
        return f"{self.registry}/{self.repository}"

    @property
    def url(self) -> str:
        """registry/repository:tag — Tekton's IMAGE_URL."""
        return f"{self.name}:{self.tag}"

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"

    def with_tag(self, tag: str) -> ImageReference:
        return dataclasses.replace(self, tag=tag)

    def __str__(self) -> str:
        return self.url


def parse_image(value: str, *, source: str = "--image", allow_digest: bool = False) -> ImageReference:
    """Parse ``value``; no tag means ``latest``; a digest is a usage error (we push to a tag)."""
    raw = value
    value = (value or "").strip()
    if not value:
        raise UsageError(f"{source}: an image reference is required (e.g. registry.example.com/team/app:1.0)")
    if value.startswith("docker://"):
        value = value[len("docker://") :]
    if "@" in value:
        if not allow_digest:
            raise UsageError(f"{source}: {raw!r} is a digest reference; give a tag (repo[:tag]) to push to")
        value = value.split("@", 1)[0]
    registry = DEFAULT_REGISTRY
    rest = value
    first, sep, remainder = value.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, rest = first, remainder
        if not _HOST_RE.fullmatch(registry):
            raise UsageError(f"{source}: invalid registry host in {raw!r}")
    tag = "latest"
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise UsageError(f"{source}: invalid tag {tag!r} in {raw!r} (letters, digits, '_', '.', '-'; at most 128)")
    if rest != rest.lower() and _PATH_RE.fullmatch(rest.lower()):
        raise UsageError(f"{source}: invalid image name {raw!r}: repository names must be lower-case")
    if not _PATH_RE.fullmatch(rest):
        raise UsageError(
            f"{source}: invalid image name {raw!r}: expected [registry/]name[:tag] with lower-case name components"
        )
    if registry == DEFAULT_REGISTRY and "/" not in rest:
        rest = f"library/{rest}"
    if len(f"{registry}/{rest}") > 255:
        raise UsageError(f"{source}: image name {raw!r} is longer than 255 characters")
    return ImageReference(registry, rest, tag)


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def parse_pinned(value: str, *, source: str, example: str = "REPO@sha256:<64 hex>") -> tuple[ImageReference, str]:
    """``[docker://]REPO[:TAG]@sha256:HEX`` -> (reference, digest). What a cluster pulls must be
    pinned: a tag alone, or anything after ``@`` that is not a sha256 digest, is a usage error."""
    raw = value
    _, at, digest = (value or "").strip().removeprefix("docker://").partition("@")
    if not at:
        raise UsageError(f"{source}: {raw!r} names no digest (a tag can be moved): give {example}")
    if not _DIGEST_RE.fullmatch(digest):
        raise UsageError(f"{source}: {digest!r} in {raw!r} is not a sha256 digest (sha256: and 64 hex digits)")
    return parse_image(value, source=source, allow_digest=True), digest
