"""``taskimage index``: join per-platform images, already pushed by digest, into one manifest list.

This is the last step of a fan-out build (one TaskRun per platform, possibly on native nodes).
Only skopeo is used, so the step needs no container storage and no privileges:

1. every REF must be ``repo@sha256:...``; each one's manifest and config are read from the
   registry, which tells its platform (duplicates, lists and unknown refs are usage errors);
2. images from another repository are first copied into IMAGE's repository by digest;
3. the list is written as a small ``dir:`` copy holding the list and each image's manifest and
   config, but no layers, and ``skopeo copy --all --preserve-digests`` pushes it: every layer is
   already in the repository, so nothing but manifests moves and no digest changes;
4. the tag is read back and checked (as ``build`` does); only then do ADDITIONAL_TAGS move, each a
   copy of the list by digest (:func:`move_tags`, which ``build`` uses too), and the same results
   are written. ANNOTATIONS are ``index:KEY=VALUE`` only: the images' manifests are fixed already.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from taskimage import log
from taskimage import proc as tools
from taskimage.build import buildah, inputs, results
from taskimage.build.params import BY_NAME, Param
from taskimage.errors import TaskimageError, ToolError, UsageError
from taskimage.oci import auth, media
from taskimage.oci import registry as remote
from taskimage.oci.media import (  # noqa: F401 (re-exported: callers name them as index.X)
    DOCKER_LIST,
    DOCKER_MANIFEST,
    FAMILY,
    FAMILY_OF_LIST,
    LIST_TYPE,
    OCI_INDEX,
    OCI_MANIFEST,
)
from taskimage.oci.platforms import Platform, normalize, split_values
from taskimage.oci.reference import ImageReference, parse_image

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

REFS = Param(
    "REFS",
    "--ref",
    "Per-platform images to join, each REPOSITORY@sha256:... (e.g. the IMAGES results of "
    "per-platform builds); also as positional arguments, comma lists accepted.",
    type="array",
    default=[],
    metavar="REPO@DIGEST",
)
INDEX_ANNOTATIONS = dataclasses.replace(
    BY_NAME["ANNOTATIONS"],
    description="Annotations on the manifest list (an OCI index), each index:KEY=VALUE as buildx spells "
    "it, e.g. index:org.opencontainers.image.source=URL. The images are pushed already, so other "
    "forms (KEY=VALUE, manifest:KEY=VALUE) are refused.",
    metavar="index:KEY=VALUE",
)
PARAMS: tuple[Param, ...] = (
    BY_NAME["IMAGE"],
    REFS,
    BY_NAME["ADDITIONAL_TAGS"],
    INDEX_ANNOTATIONS,
    BY_NAME["FORMAT"],
    BY_NAME["TLSVERIFY"],
    BY_NAME["RETRY"],
    BY_NAME["RETRY_DELAY"],
    BY_NAME["AUTHFILE"],
    BY_NAME["CERT_DIR"],
    BY_NAME["CREDS"],
    BY_NAME["RESULTS_DIR"],
)


@dataclasses.dataclass(frozen=True)
class SourceRef:
    """One REF as given: where it lives and its digest."""

    text: str
    image: ImageReference  # registry/repository (tag ignored)
    digest: str

    @property
    def pinned(self) -> str:
        return self.image.with_digest(self.digest)


@dataclasses.dataclass(frozen=True)
class IndexOptions:
    image: ImageReference
    refs: tuple[SourceRef, ...]
    registry: remote.Access
    format: str = "oci"
    retry: int = 3
    retry_delay: float = 2.0
    results_dir: Path | None = None
    creds: str | None = dataclasses.field(default=None, repr=False)
    tags: tuple[ImageReference, ...] = ()  # ADDITIONAL_TAGS: moved after the list is read back
    annotations: tuple[tuple[str, str], ...] = ()  # ANNOTATIONS index:KEY=VALUE


@dataclasses.dataclass(frozen=True)
class Instance:
    """A per-platform image as the registry describes it."""

    ref: SourceRef
    platform: Platform
    media_type: str
    manifest: bytes = dataclasses.field(repr=False)
    config: bytes = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class IndexOutcome:
    image: ImageReference
    digest: str
    images: tuple[tuple[Platform, str], ...]
    results: dict


# --- input --------------------------------------------------------------------------------


def parse_ref(value: str, source: str) -> SourceRef:
    """``[registry/]repo[:tag]@sha256:<64 hex>``; anything else is a usage error."""
    text = value.strip()
    if text.startswith("docker://"):
        text = text[len("docker://") :]
    name, sep, digest = text.partition("@")
    if not sep:
        raise UsageError(
            f"{source}: {value!r} is not a digest reference; give REPOSITORY@sha256:... "
            "(a tag can move, the list must name exact images)"
        )
    if not _DIGEST_RE.match(digest):
        raise UsageError(f"{source}: {value!r} has an invalid digest {digest!r}; expected sha256: and 64 hex digits")
    image = parse_image(name, source=source)
    return SourceRef(text=value.strip(), image=image, digest=digest)


def options_from_values(values: dict) -> IndexOptions:
    """Validate every input before any registry is contacted."""
    v = {k: val for k, (val, _) in values.items()}
    src = {k: s for k, (_, s) in values.items()}
    if not v["IMAGE"]:
        raise UsageError(
            f"{src['IMAGE']}: the list's destination is required (e.g. --image registry.example.com/team/app:1.0)"
        )
    image = parse_image(v["IMAGE"], source=src["IMAGE"])
    refs: list[SourceRef] = []
    seen: dict[str, str] = {}
    for item in split_values(v["REFS"]):
        ref = parse_ref(item, src["REFS"])
        key = ref.pinned
        if key in seen:
            raise UsageError(f"{src['REFS']}: {item!r} is given twice (also as {seen[key]!r})")
        seen[key] = item
        refs.append(ref)
    if not refs:
        raise UsageError(
            f"{src['REFS']}: no per-platform images given; pass REPOSITORY@sha256:... references "
            "as arguments or with --ref"
        )
    for ref in refs:
        if ref.image.registry != image.registry:
            raise UsageError(
                f"{src['REFS']}: {ref.text!r} is on {ref.image.registry}, not on {image.registry} "
                f"where {image.url} goes; copy it there first"
            )
    tags = inputs.parse_tags(v["ADDITIONAL_TAGS"], src["ADDITIONAL_TAGS"], image)
    annotations = inputs.parse_index_annotations(v["ANNOTATIONS"], src["ANNOTATIONS"], v["FORMAT"])
    registry, creds = remote.access(v, src)
    return IndexOptions(
        image=image,
        refs=tuple(refs),
        registry=registry,
        format=v["FORMAT"],
        retry=v["RETRY"],
        retry_delay=float(v["RETRY_DELAY"]),
        results_dir=results.check_dir(v["RESULTS_DIR"], src["RESULTS_DIR"]),
        creds=creds,
        tags=tags,
        annotations=annotations,
    )


# --- pure pieces ------------------------------------------------------------------------------


def platform_of(config: dict, where: str) -> Platform:
    """The platform an image config declares (normalized like --platform values)."""
    os_, arch, variant = config.get("os"), config.get("architecture"), config.get("variant")
    if not os_ or not arch:
        raise UsageError(f"{where}: its image config names no os/architecture")
    return normalize(f"{os_}/{arch}" + (f"/{variant}" if variant else ""), source=where)


def list_media_type(instances: Sequence[Instance], fmt: str) -> str:
    """The list's type: ``fmt``, unless every image is of the other family.

    Converting an image between docker and OCI changes its digest, and a docker list cannot name
    OCI images; so images decide when they agree, FORMAT decides for a mix (an OCI index).
    """
    families = {FAMILY[i.media_type] for i in instances}
    if len(families) == 1:
        family = families.pop()
        if family != fmt:
            log.info(
                f"the images are {family} manifests: the list is a {family} list too (--format {fmt} would "
                "change their digests)"
            )
        return LIST_TYPE[family]
    if fmt == "docker":
        log.warn("the images mix docker and OCI manifests: pushing an OCI index (a docker list cannot name OCI images)")
    return OCI_INDEX


def index_document(
    instances: Sequence[Instance], media_type: str, annotations: Sequence[tuple[str, str]] = ()
) -> bytes:
    """The manifest list naming each image by digest, size and platform, in the order given, with
    ``annotations`` (an OCI index only: a docker list has no such field)."""
    manifests = []
    for i in instances:
        platform = {"architecture": i.platform.arch, "os": i.platform.os}
        if i.platform.variant:
            platform["variant"] = i.platform.variant
        manifests.append(
            {"mediaType": i.media_type, "digest": i.ref.digest, "size": len(i.manifest), "platform": platform}
        )
    doc: dict = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    if annotations:
        if media_type != OCI_INDEX:
            raise TaskimageError("index annotations need an OCI index; the images are docker manifests")
        doc["annotations"] = dict(annotations)
    return json.dumps(doc, indent=None, separators=(",", ":")).encode()


def write_list_dir(directory: Path, instances: Sequence[Instance], document: bytes) -> str:
    """A ``dir:`` copy of the list: the list, each image's manifest and config, no layers (they are
    in the repository already, so skopeo only checks them); returns the list digest.

    Not an OCI layout: skopeo reads only OCI-typed entries from one, and a docker list is not.
    """
    directory.mkdir(parents=True)
    (directory / "version").write_text("Directory Transport Version: 1.1\n")
    (directory / "manifest.json").write_bytes(document)
    for i in instances:
        (directory / f"{i.ref.digest.partition(':')[2]}.manifest.json").write_bytes(i.manifest)
        config = json.loads(i.manifest)["config"]["digest"]
        (directory / config.partition(":")[2]).write_bytes(i.config)
    return "sha256:" + hashlib.sha256(document).hexdigest()


# --- the run ------------------------------------------------------------------------------


def push_list(
    registry: remote.Access,
    image: ImageReference,
    instances: Sequence[Instance],
    fmt: str,
    workdir: Path,
    retry: int,
    retry_delay: float,
    annotations: Sequence[tuple[str, str]] = (),
) -> tuple[str, tuple[tuple[Platform, str], ...]]:
    """Push the list naming ``instances`` (already in ``image``'s repository by digest) to its tag.

    The tag is the one thing written here that anybody reads by name, and it is written last, in
    one manifest PUT. The list is read back from the registry and must name exactly the given
    images; returns its digest and each platform's image digest.
    """
    log.phase(f"push {image.url}")
    media_type = list_media_type(instances, fmt)
    document = index_document(instances, media_type, annotations)
    digest = write_list_dir(workdir / "list", instances, document)
    family = FAMILY_OF_LIST[media_type]
    uniform = all(FAMILY[i.media_type] == family for i in instances)
    argv = buildah.skopeo_push_list_dir(registry, workdir / "list", image.url, family if uniform else "")
    remote.with_retry(
        lambda: tools.run(argv, what="skopeo copy"),
        what=f"pushing {image.url}",
        image=image,
        retry=retry,
        retry_delay=retry_delay,
    )
    log.phase("verify pushed index")
    digest, images = remote.read_back_index(
        registry, image, [i.platform for i in instances], digest, retry, retry_delay
    )
    for (p, pushed), i in zip(images, instances, strict=True):
        if pushed != i.ref.digest:
            raise TaskimageError(f"the pushed index names {pushed} for {p}, not the given {i.ref.digest}")
    return digest, images


def move_tags(
    registry: remote.Access,
    image: ImageReference,
    tags: Sequence[ImageReference],
    digest: str,
    retry: int,
    retry_delay: float,
) -> None:
    """Point every ADDITIONAL_TAGS tag at the list just pushed to ``image`` and read back, and check each.

    Runs only after IMAGE's tag holds the verified list (build and index alike); the list is copied
    by digest, so every tag names exactly that list (a failure here leaves IMAGE moved and names the
    tags not moved).
    """
    if not tags:
        return
    log.phase("move tags")
    source = image.with_digest(digest)
    for i, tag in enumerate(tags):
        argv = buildah.skopeo_copy_list(registry, source, tag.url)
        try:
            remote.with_retry(
                lambda argv=argv: tools.run(argv, what="skopeo copy"),
                what=f"tagging {tag.url}",
                image=tag,
                retry=retry,
                retry_delay=retry_delay,
            )
            raw = remote.inspect_raw(registry, tag.url, retry, retry_delay)
        except TaskimageError:
            left = ", ".join(t.url for t in tags[i:])
            log.warn(f"{image.url} names the new list; not moved: {left}")
            raise
        got = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
        if got != digest:
            raise TaskimageError(f"{tag.url} names {got} after tagging, not the pushed list {digest}")
        log.info(f"{tag.url} = {source}")


def read_instance(opts: IndexOptions, registry: remote.Access, ref: SourceRef) -> Instance:
    """Read one REF's manifest and config; refuse lists and unknown references."""
    try:
        raw = remote.inspect_raw(registry, ref.pinned, opts.retry, opts.retry_delay, retry_not_found=False)
    except ToolError as exc:
        if remote.not_found(exc.tail):
            raise UsageError(f"--ref: {ref.text!r} does not exist in the registry") from exc
        raise
    manifest = raw.encode()
    if "sha256:" + hashlib.sha256(manifest).hexdigest() != ref.digest:
        raise TaskimageError(f"the registry answered {ref.pinned} with a manifest of another digest")
    doc = json.loads(manifest)
    media_type = media.media_type_of(doc)
    if media_type in (OCI_INDEX, DOCKER_LIST):
        raise UsageError(
            f"--ref: {ref.text!r} is a manifest list, not one platform's image; give its entries "
            "(the IMAGES result of build), each REPOSITORY@sha256:..."
        )
    if media_type not in FAMILY:
        raise UsageError(f"--ref: {ref.text!r} is a {media_type}, not a container image manifest")
    config = remote.inspect_raw(registry, ref.pinned, opts.retry, opts.retry_delay, config=True).encode()
    platform = platform_of(json.loads(config), f"--ref {ref.text}")
    return Instance(ref, platform, media_type, manifest, config)


def check_platforms(instances: Sequence[Instance]) -> None:
    seen: dict[Platform, Instance] = {}
    for i in instances:
        if i.platform in seen:
            raise UsageError(
                f"--ref: {seen[i.platform].ref.text!r} and {i.ref.text!r} are both {i.platform}; "
                "a list holds one image per platform"
            )
        seen[i.platform] = i


def run(opts: IndexOptions) -> IndexOutcome:
    total = log.Timer()
    workdir = Path(tempfile.mkdtemp(prefix="taskimage-index-"))
    try:
        with auth.with_creds(opts.registry, opts.image.registry, opts.creds) as registry:
            log.phase("read per-platform images")
            instances = [read_instance(opts, registry, ref) for ref in opts.refs]
            check_platforms(instances)
            if opts.annotations and all(FAMILY[i.media_type] == "docker" for i in instances):
                # refused before anything is copied or pushed, as every other usage error
                raise UsageError(
                    "--annotation (ANNOTATIONS): index: annotations need an OCI index; the images are docker "
                    "manifests, so the list is a docker list, which has no annotations"
                )
            log.info(
                log.table(
                    ("PLATFORM", "TYPE", "IMAGE"),
                    [(str(i.platform), FAMILY[i.media_type], i.ref.pinned) for i in instances],
                )
            )

            foreign = [i for i in instances if i.ref.image.name != opts.image.name]
            if foreign:
                log.phase(f"copy into {opts.image.name}")
            for i in foreign:
                target = opts.image.with_digest(i.ref.digest)
                argv = buildah.skopeo_copy_image(registry, i.ref.pinned, target)
                remote.with_retry(
                    lambda argv=argv: tools.run(argv, what="skopeo copy"),
                    what=f"copying {i.ref.pinned}",
                    image=opts.image,
                    retry=opts.retry,
                    retry_delay=opts.retry_delay,
                )

            digest, images = push_list(
                registry,
                opts.image,
                instances,
                opts.format,
                workdir,
                opts.retry,
                opts.retry_delay,
                annotations=opts.annotations,
            )
            move_tags(registry, opts.image, opts.tags, digest, opts.retry, opts.retry_delay)
            out = remote.results_for(opts.image, digest, images, opts.tags)
            # the Tasks share one results list; joining attaches nothing (the platform builds did)
            out.update({"SBOM_BLOB_URL": "", "ATTESTATIONS": ""})
            if opts.results_dir:
                results.write(opts.results_dir, out)
                log.info(f"results written to {opts.results_dir}")
            log.phase("summary")
            log.info(log.table(("PLATFORM", "DIGEST"), [(str(p), d) for p, d in images]))
            log.info(f"pushed {opts.image.url} = {opts.image.with_digest(digest)}")
            log.info(f"total {total.seconds:.1f} s")
            return IndexOutcome(opts.image, digest, images, out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
