"""Provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, one per platform image
and one for the index.

What it records: the builder (``TASKIMAGE_BUILDER_ID``, else taskimage's own URN), the
Containerfile and build context by digest, the build arguments, labels, target and platform, the
base images by digest, the whole-build key, the taskimage and buildah versions, and when the build
started and finished. Never a credential or a secret: only build arguments, which are not secret
by definition (buildah bakes them into the image's history), are recorded, and the finished
statement is passed through the log's redaction of every registered secret (passwords, tokens,
auth file entries) before it leaves this module.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from collections.abc import Mapping, Sequence

from taskimage import __version__, log

STATEMENT = "https://in-toto.io/Statement/v1"
SLSA = "https://slsa.dev/provenance/v1"
MEDIA_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://taskimage.invalid/buildtypes/buildah-multiarch/v1"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"


def builder_id() -> str:
    return os.environ.get("TASKIMAGE_BUILDER_ID", "").strip() or f"urn:taskimage:builder:{__version__}"


@dataclasses.dataclass(frozen=True)
class BuildFacts:
    """What one build knew about itself (filled by the orchestrator)."""

    containerfile: str  # path relative to the context when inside it
    containerfile_digest: str
    context_digest: str
    build_args: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    target: str
    fmt: str
    base_images: tuple[tuple[str, str], ...]  # (reference as written, sha256:... digest)
    buildah_version: str
    started: datetime.datetime
    finished: datetime.datetime
    build_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)  # platform -> whole-build key
    invocation: str = ""  # e.g. the TaskRun / pod name
    # platform -> (FROM image, digest of its manifest for that platform), read from the registry
    platform_bases: Mapping[str, tuple[tuple[str, str], ...]] = dataclasses.field(default_factory=dict)


def _digest(d: str) -> dict[str, str]:
    alg, _, hexdigest = d.partition(":")
    return {alg: hexdigest}


def _time(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def statement(subjects: Sequence[tuple[str, str]], facts: BuildFacts, platforms: Sequence[str]) -> bytes:
    """The statement for ``subjects`` ((name, digest) pairs) built for ``platforms``."""
    deps = [
        {"uri": f"file:{facts.containerfile}", "digest": _digest(facts.containerfile_digest)},
        {"uri": "file:.", "digest": _digest(facts.context_digest), "name": "build context"},
    ]
    deps += [{"uri": f"oci://{ref}", "digest": _digest(digest)} for ref, digest in facts.base_images if digest]
    internal: dict = {"format": facts.fmt}
    keys = {p: facts.build_keys[p] for p in platforms if p in facts.build_keys}
    if keys:
        internal["wholeBuildKeys"] = keys
    doc = {
        "_type": STATEMENT,
        "subject": [{"name": name, "digest": _digest(digest)} for name, digest in subjects],
        "predicateType": SLSA,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "platforms": list(platforms),
                    "containerfile": facts.containerfile,
                    "buildArgs": dict(facts.build_args),
                    "labels": dict(facts.labels),
                    "target": facts.target,
                },
                "internalParameters": internal,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": builder_id(),
                    "version": {"taskimage": __version__, "buildah": facts.buildah_version},
                },
                "metadata": {
                    "invocationId": facts.invocation,
                    "startedOn": _time(facts.started),
                    "finishedOn": _time(facts.finished),
                },
            },
        },
    }
    return log.redact(json.dumps(doc, indent=2, sort_keys=True)).encode()
