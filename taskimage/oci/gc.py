"""Registry hygiene for one repository: delete old per-run and cache tags, never what is kept.

Every matrix run leaves a per-run tag per platform (``REPOSITORY:<TaskRun name>``), every
whole-build key a cache tag (``taskimage-build-<key>``), every source push a ``source-<commit>``
artifact. :func:`plan` decides, :func:`delete` acts:

- kept: tags matching a ``--keep`` pattern (shell globs: ``v*``, ``main``), and every manifest
  such a tag reaches: the entries of a kept index (recursively) and the subject of a kept
  referrer (an artifact with a ``subject``, e.g. a signature or an SBOM). A tag whose manifest is
  kept stays, whatever its name: the distribution API deletes manifests, not tags, and deleting
  a platform image under a live list would break the list;
- a referrers tag of the OCI 1.1 fallback (``sha256-<hex>``: the index of the artifacts attached
  to the manifest ``sha256:<hex>``, e.g. SBOMs and provenance, or the package scans taskimage
  files beside cached images) follows its subject: kept while the subject stays, deleted with it
  or when the subject is gone from the repository (it would otherwise stay for ever, having no
  creation time);
- deleted: every other tag whose manifest is older than ``--older-than``. Age is the image
  config's ``created``; an index's is its newest entry's. A manifest without a creation time
  (an artifact with an empty config, such as a source artifact) is kept and reported, its age
  being unknown, unless ``--include-undated`` (for a moment when no run is using them).
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Sequence

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import ToolError
from taskimage.oci.reference import ImageReference
from taskimage.oci.registry import Access, not_found

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
REFERRERS_TAG = re.compile(r"sha256-[0-9a-f]{64}")  # the OCI 1.1 referrers tag schema
IMAGE_CONFIG_TYPES = {
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
}


@dataclasses.dataclass(frozen=True)
class Decision:
    tag: str
    digest: str
    created: datetime.datetime | None
    delete: bool
    why: str


class Registry:
    """The few reads and the one write gc needs, through skopeo."""

    def __init__(self, repo: ImageReference, access: Access):
        self.repo = repo
        self.access = access
        self._raw: dict[str, bytes] = {}

    def _run(self, argv: list[str], what: str) -> str:
        return tools.run(argv, quiet=True, stream=False, what=what).stdout

    def tags(self) -> list[str]:
        out = self._run(
            ["skopeo", "list-tags", *self.access.flags(""), f"docker://{self.repo.name}"], "skopeo list-tags"
        )
        return sorted(json.loads(out).get("Tags") or [])

    def raw(self, ref: str) -> bytes:
        """The manifest bytes of ``ref`` (a tag or a digest of this repository)."""
        if ref not in self._raw:
            sep = "@" if ref.startswith("sha256:") else ":"
            self._raw[ref] = self._run(
                ["skopeo", "inspect", "--raw", *self.access.flags(""), f"docker://{self.repo.name}{sep}{ref}"],
                "skopeo inspect",
            ).encode()
        return self._raw[ref]

    def has(self, digest: str) -> bool:
        """Whether the repository still has the manifest ``digest`` (a 404 is the only "no")."""
        try:
            self.raw(digest)
        except ToolError as exc:
            if not_found(exc.tail):
                return False
            raise
        return True

    def config(self, manifest_digest: str) -> dict:
        """The config of the image ``manifest_digest`` (skopeo reads it through the manifest)."""
        out = self._run(
            [
                "skopeo",
                "inspect",
                "--config",
                "--raw",
                *self.access.flags(""),
                f"docker://{self.repo.name}@{manifest_digest}",
            ],
            "skopeo inspect --config",
        )
        return json.loads(out)

    def delete(self, digest: str) -> None:
        self._run(["skopeo", "delete", *self.access.flags(""), f"docker://{self.repo.name}@{digest}"], "skopeo delete")


def _digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _created(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


class _Walker:
    def __init__(self, registry: Registry):
        self.registry = registry
        self._manifests: dict[str, dict] = {}
        self._created: dict[str, datetime.datetime | None] = {}

    def manifest(self, digest: str) -> dict:
        if digest not in self._manifests:
            self._manifests[digest] = json.loads(self.registry.raw(digest))
        return self._manifests[digest]

    def reached(self, digest: str, seen: set[str] | None = None) -> set[str]:
        """``digest`` and every manifest it points to: index entries, recursively, and a subject."""
        seen = set() if seen is None else seen
        if digest in seen:
            return seen
        seen.add(digest)
        try:
            m = self.manifest(digest)
        except ToolError:
            return seen  # an entry the registry no longer has: nothing below it to protect
        for entry in m.get("manifests") or []:
            self.reached(entry.get("digest", ""), seen)
        subject = (m.get("subject") or {}).get("digest")
        if subject:
            self.reached(subject, seen)
        return seen

    def created(self, digest: str) -> datetime.datetime | None:
        if digest in self._created:
            return self._created[digest]
        m = self.manifest(digest)
        when: datetime.datetime | None = None
        if m.get("mediaType") in INDEX_TYPES or "manifests" in m:
            dates = [self.created(e["digest"]) for e in m.get("manifests") or [] if e.get("digest")]
            known = [d for d in dates if d is not None]
            when = max(known) if known and len(known) == len(dates) else None
        elif (m.get("config") or {}).get("mediaType") in IMAGE_CONFIG_TYPES:
            when = _created(self.registry.config(digest).get("created"))
        self._created[digest] = when
        return when


def plan(
    registry: Registry,
    keep: Sequence[str],
    older_than_seconds: int,
    include_undated: bool = False,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> list[Decision]:
    """What to do with every tag of the repository, in tag order."""
    walker = _Walker(registry)
    tags = registry.tags()
    digest_of = {tag: _digest(registry.raw(tag)) for tag in tags}
    for tag, digest in digest_of.items():
        walker._manifests.setdefault(digest, json.loads(registry.raw(tag)))
    kept_tags = [t for t in tags if any(fnmatch.fnmatchcase(t, pattern) for pattern in keep)]
    protected_by: dict[str, str] = {}
    for tag in kept_tags:
        for digest in walker.reached(digest_of[tag]):
            protected_by.setdefault(digest, tag)
    cutoff = now() - datetime.timedelta(seconds=older_than_seconds)
    decisions = []
    for tag in tags:
        digest = digest_of[tag]
        if tag in kept_tags:
            decisions.append(Decision(tag, digest, None, False, "kept: matches --keep"))
            continue
        if REFERRERS_TAG.fullmatch(tag):
            continue  # decided below, once the fate of its subject is known
        if digest in protected_by:
            decisions.append(Decision(tag, digest, None, False, f"kept: {protected_by[digest]} refers to it"))
            continue
        created = walker.created(digest)
        if created is None and include_undated:
            decisions.append(Decision(tag, digest, None, True, "delete (no creation time, --include-undated)"))
        elif created is None:
            decisions.append(Decision(tag, digest, None, False, "kept: no creation time to judge its age"))
        elif created > cutoff:
            decisions.append(Decision(tag, digest, created, False, "kept: newer than --older-than"))
        else:
            decisions.append(Decision(tag, digest, created, True, "delete"))
    decided = {d.tag for d in decisions}
    staying = {d.digest for d in decisions if not d.delete} | set(protected_by)
    deleting = {d.digest for d in decisions if d.delete}
    for tag in tags:
        if tag in decided:
            continue
        subject = "sha256:" + tag.removeprefix("sha256-")
        if subject in staying:
            decisions.append(Decision(tag, digest_of[tag], None, False, "kept: referrers of a kept manifest"))
        elif subject in deleting:
            decisions.append(Decision(tag, digest_of[tag], None, True, "delete (referrers of a deleted manifest)"))
        elif not registry.has(subject):
            decisions.append(Decision(tag, digest_of[tag], None, True, "delete (referrers of a manifest that is gone)"))
        else:
            decisions.append(Decision(tag, digest_of[tag], None, False, "kept: referrers of an untagged manifest"))
    order = {tag: n for n, tag in enumerate(tags)}
    return sorted(decisions, key=lambda d: order[d.tag])


def delete(registry: Registry, decisions: Sequence[Decision]) -> list[str]:
    """Delete each chosen manifest once (all its tags go with it); indexes before their entries."""
    walker = _Walker(registry)
    digests = sorted(
        {d.digest for d in decisions if d.delete},
        key=lambda dg: (0 if "manifests" in walker.manifest(dg) else 1, dg),
    )
    done = []
    for digest in digests:
        try:
            registry.delete(digest)
        except ToolError as exc:
            if any("unsupported" in line.lower() for line in exc.tail):
                raise ToolError(
                    f"{registry.repo.name}: the registry refuses deletes (distribution: storage.delete.enabled)",
                    tail=exc.tail,
                ) from None
            raise
        log.info(f"deleted {registry.repo.name}@{digest}")
        done.append(digest)
    return done
