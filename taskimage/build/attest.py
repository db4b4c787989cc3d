"""The build's supply-chain step: an SBOM and a provenance statement for every pushed platform
image and for the index, attached as OCI referrers (see :mod:`taskimage.supplychain`).

A platform's SBOM is made from its image while it is still in the storage (mounted, read, never
run: an emulated platform costs what a native one does), right after its push and before
``--evict`` removes it. An image reused by the whole-build key is not in the storage: its SBOM is
made from its layers read back from the registry.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
import random
import string
import tarfile
import tempfile
from collections.abc import Sequence

from taskimage import log
from taskimage import proc as tools
from taskimage.build import buildah
from taskimage.build import key as buildkey
from taskimage.errors import TaskimageError
from taskimage.oci import registry as remote
from taskimage.oci.platforms import Platform
from taskimage.oci.reference import ImageReference, parse_image
from taskimage.supplychain import packages, provenance, referrers, sbom


@dataclasses.dataclass(frozen=True)
class Attached:
    kind: str  # spdx | cyclonedx | provenance
    subject: str  # "index" or the platform
    subject_digest: str
    manifest: referrers.Descriptor
    blob: str  # digest of the content blob


def facts(
    spec: buildah.BuildSpec,
    registry: remote.Access,
    platforms: Sequence[Platform],
    started: datetime.datetime,
    keys: dict | None = None,
) -> provenance.BuildFacts:
    """What the provenance records about the build's inputs (read once, before the builds)."""
    containerfile = spec.containerfile
    try:
        shown = str(containerfile.relative_to(spec.context))
    except ValueError:
        shown = str(containerfile)
    version = tools.run(["buildah", "--version"], quiet=True, stream=False, check=False).stdout.strip()
    return provenance.BuildFacts(
        containerfile=shown,
        containerfile_digest="sha256:" + hashlib.sha256(containerfile.read_bytes()).hexdigest(),
        context_digest=buildkey.context_digest(spec.context),
        build_args=spec.build_args,
        labels=spec.labels,
        target=spec.target,
        fmt=spec.format,
        base_images=(),
        buildah_version=version.removeprefix("buildah version ").split(" ")[0],
        started=started,
        finished=started,
        build_keys={str(p): k for p, k in (keys or {}).items()},
        platform_bases=platform_bases(spec, registry, platforms),
    )


def platform_bases(
    spec: buildah.BuildSpec, registry: remote.Access, platforms: Sequence[Platform]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each platform's FROM images with the digest of that platform's manifest, as the registry
    has them now (the annotation buildah 1.28 writes, org.opencontainers.image.base.digest, names
    neither the list nor the platform's manifest, so it is not used). Unresolvable images are
    recorded without a digest."""
    text = spec.containerfile.read_text(errors="replace")
    raw: dict[str, str | None] = {}
    out = {}
    for p in platforms:
        bases = []
        for image in buildkey.external_images(text, dict(spec.build_args), p) or []:
            if image not in raw:
                try:
                    raw[image] = remote.inspect_raw(registry, image, 1, 1, retry_not_found=False)
                except TaskimageError as exc:
                    log.warn(f"provenance: the base image {image} could not be read ({exc}); recorded without digest")
                    raw[image] = None
            text_or_none = raw[image]
            digest = ""
            if text_or_none is not None:
                doc = json.loads(text_or_none)
                if "manifests" not in doc:
                    digest = "sha256:" + hashlib.sha256(text_or_none.encode()).hexdigest()  # a single image
                for entry in doc.get("manifests", []):
                    plat = entry.get("platform") or {}
                    if p.matches_config(plat.get("os"), plat.get("architecture"), plat.get("variant")):
                        digest = entry["digest"]
            bases.append((image, digest))
        out[str(p)] = tuple(bases)
    return out


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _client(registry: remote.Access, image: ImageReference, retry: tuple[int, float]) -> referrers.Client:
    return referrers.Client.for_registry(registry, image.registry, *retry)


def _scan_storage(store: buildah.Storage, image_id: str) -> packages.Scan:
    name = "taskimage-sbom-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    tools.run(buildah.from_image(store, image_id, name), quiet=True, stream=False)
    try:
        mountpoint = tools.run(buildah.mount(store, name), quiet=True, stream=False).stdout.strip()
        return packages.scan(mountpoint)
    finally:
        tools.run(buildah.remove_container(store, name), quiet=True, stream=False, check=False)


def _scan_registry(client: referrers.Client, repo: str, manifest: bytes) -> packages.Scan:
    """Unpack the image's layers from the registry into a temporary root (whiteouts applied;
    device nodes, owners and special files skipped: only file contents are read) and scan it."""
    with tempfile.TemporaryDirectory(prefix="taskimage-sbom-") as root:
        for layer in json.loads(manifest).get("layers", []):
            data = client.get_blob(repo, layer["digest"])
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            elif data[:4] == b"\x28\xb5\x2f\xfd":
                import zstandard  # type: ignore[import-not-found]  # only zstd layers need it

                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                members = []
                for m in tar:
                    base = os.path.basename(m.name)
                    target = os.path.normpath(os.path.join(root, m.name))
                    if not target.startswith(root + os.sep):
                        continue
                    if base.startswith(".wh."):
                        victim = os.path.join(os.path.dirname(target), base[4:])
                        if base == ".wh..wh..opq":
                            for entry in (
                                os.listdir(os.path.dirname(target)) if os.path.isdir(os.path.dirname(target)) else []
                            ):
                                _remove(os.path.join(os.path.dirname(target), entry))
                        else:
                            _remove(victim)
                        continue
                    if m.isfile() or m.isdir() or m.issym() or m.islnk():
                        if os.path.lexists(target) and not os.path.isdir(target):
                            os.unlink(target)
                        members.append(m)
                tar.extractall(root, members=members, filter="tar")  # type: ignore[call-arg]
        return packages.scan(root)


def _remove(path: str) -> None:
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


SCAN_TYPE = "application/vnd.taskimage.package-scan.v1+json"  # a package scan filed in a layer cache


def attach_platform(
    image: ImageReference,
    registry: remote.Access,
    p: Platform,
    digest: str,
    manifest: bytes,
    media_type: str,
    sbom_format: str,
    build_facts: provenance.BuildFacts | None,
    store: buildah.Storage | None = None,
    image_id: str = "",
    retry: tuple[int, float] = (3, 2.0),
    cache_repo: str = "",
) -> tuple[Attached, ...]:
    """SBOM and provenance of one pushed platform image, attached to it.

    ``cache_repo`` holds the same image (same digest) under its whole-build key. The package scan
    behind a platform's SBOM is filed there as a referrer of that image, so that a later run that
    reuses the image in another repository makes its SBOM from the scan (a few kilobytes) instead
    of downloading and unpacking the image's layers; a reused image that has none (filed by an
    older version) is scanned from its layers once and the scan is filed then."""
    prefix = f"[{p}] "
    timer = log.Timer()
    client = _client(registry, image, retry)
    subject = referrers.Descriptor(media_type, digest, len(manifest))
    built = store is not None and bool(image_id)
    out = []
    existing = None if built else _attached_sbom(client, image, digest, sbom_format)
    if existing is not None:
        out.append(existing)
        log.info(f"{prefix}SBOM ({sbom_format}): the reused image's, attached by the run that built it")
    elif sbom_format != "none":
        cache = _cache(registry, cache_repo, retry) if cache_repo else None
        scan, how = None, ""
        if store is not None and built:
            scan, how = _scan_storage(store, image_id), "read from the storage"
        elif cache is not None:
            scan, how = _cached_scan(cache, digest, prefix), f"the scan filed in {cache_repo} when it was built"
            cache = cache if scan is None else None  # filed already
        if scan is None:
            scan, how = _scan_registry(client, image.repository, manifest), "read from its layers in the registry"
        if cache is not None:
            _file_scan(cache, subject, scan, p, prefix)
        doc = sbom.image_document(sbom_format, sbom.Subject(image.name, digest, str(p), media_type), scan)
        out.append(_attach(client, image, subject, sbom_format, str(p), doc))
        warned = f"; {'; '.join(scan.warnings)}" if scan.warnings else ""
        log.info(f"{prefix}SBOM ({sbom_format}): {len(scan.packages)} packages, {how}{warned}")
    if build_facts is not None:
        bases = build_facts.platform_bases.get(str(p), ())
        f = dataclasses.replace(build_facts, base_images=bases, finished=now())
        doc = provenance.statement([(image.name, digest)], f, [str(p)])
        out.append(_attach(client, image, subject, "provenance", str(p), doc))
    if out:
        log.info(
            f"{prefix}attached {', '.join(a.kind for a in out)} to {image.with_digest(digest)} in {timer.seconds:.1f} s"
        )
    return tuple(out)


def _cache(registry: remote.Access, cache_repo: str, retry: tuple[int, float]) -> tuple[referrers.Client, str]:
    ref = parse_image(cache_repo, source="--cache-repo")
    return _client(registry, ref, retry), ref.repository


def _cached_scan(cache: tuple[referrers.Client, str], digest: str, prefix: str) -> packages.Scan | None:
    """The package scan filed in the layer cache for the image ``digest``, or None (never fatal:
    the image's layers are read instead)."""
    client, repository = cache
    try:
        listed, _ = client.referrers(repository, digest)
        for desc in listed:
            if desc.artifact_type == SCAN_TYPE:
                return packages.Scan.from_json(referrers.fetch(client, repository, desc))
    except (referrers.RegistryError, ValueError) as exc:
        log.info(f"{prefix}the layer cache's package scan could not be read ({exc}); reading the image's layers")
    return None


def _file_scan(
    cache: tuple[referrers.Client, str], subject: referrers.Descriptor, scan: packages.Scan, p: Platform, prefix: str
) -> None:
    """File ``scan`` in the layer cache as a referrer of the image ``subject`` (never fatal)."""
    client, repository = cache
    try:
        referrers.attach(client, repository, subject, SCAN_TYPE, scan.to_json(), {"vnd.taskimage.platform": str(p)})
    except referrers.RegistryError as exc:
        log.warn(
            f"{prefix}the package scan could not be filed in the layer cache: {exc}; a reuse elsewhere reads the layers"
        )


def _attached_sbom(client: referrers.Client, image: ImageReference, digest: str, fmt: str) -> Attached | None:
    """An SBOM of ``fmt`` already attached to ``digest`` in this repository (an image reused by
    the whole-build key was built, scanned and attached by an earlier run), or None."""
    if fmt == "none":
        return None
    listed, _ = client.referrers(image.repository, digest)
    for desc in listed:
        if desc.artifact_type == sbom.MEDIA_TYPES[fmt]:
            found = client.get_manifest(image.repository, desc.digest)
            layers = json.loads(found[0]).get("layers") if found else None
            if layers:
                platform = dict(desc.annotations).get("vnd.taskimage.platform", "")
                return Attached(fmt, platform, digest, desc, layers[0]["digest"])
    return None


def attach_index(
    image: ImageReference,
    registry: remote.Access,
    digest: str,
    images: Sequence[tuple[Platform, str]],
    sbom_format: str,
    build_facts: provenance.BuildFacts | None,
    bases: Sequence[tuple[str, str]] = (),
    retry: tuple[int, float] = (3, 2.0),
) -> tuple[Attached, ...]:
    """The index SBOM (each platform image by digest) and the index provenance, attached to it."""
    timer = log.Timer()
    client = _client(registry, image, retry)
    found = client.get_manifest(image.repository, digest)
    if found is None:
        raise referrers.RegistryError(f"{image.with_digest(digest)}: the index just pushed is not there", 404)
    raw, media_type = found
    subject = referrers.Descriptor(media_type, digest, len(raw))
    out = []
    if sbom_format != "none":
        children = [sbom.Subject(image.name, d, str(p)) for p, d in images]
        doc = sbom.index_document(sbom_format, sbom.Subject(image.name, digest, "", media_type), children)
        out.append(_attach(client, image, subject, sbom_format, "index", doc))
    if build_facts is not None:
        f = dataclasses.replace(build_facts, base_images=tuple(dict.fromkeys(bases)), finished=now())
        subjects = [(image.name, digest)] + [(image.name, d) for _, d in images]
        doc = provenance.statement(subjects, f, [str(p) for p, _ in images])
        out.append(_attach(client, image, subject, "provenance", "index", doc))
    if out:
        log.info(
            f"attached {', '.join(a.kind for a in out)} to the index {image.with_digest(digest)} in {timer.seconds:.1f} s"
        )
    return tuple(out)


def _attach(
    client: referrers.Client, image: ImageReference, subject: referrers.Descriptor, kind: str, what: str, doc: bytes
) -> Attached:
    if kind == "provenance":
        artifact_type = provenance.MEDIA_TYPE
        notes = {provenance.PREDICATE_ANNOTATION: provenance.SLSA}
    else:
        artifact_type = sbom.MEDIA_TYPES[kind]
        notes = {}
    notes["org.opencontainers.image.created"] = now().replace(microsecond=0).isoformat().replace("+00:00", "Z")
    if what != "index":
        notes["vnd.taskimage.platform"] = what
    desc = referrers.attach(client, image.repository, subject, artifact_type, doc, notes)
    return Attached(kind, what, subject.digest, desc, referrers.digest_of(doc))


def results_for(image: ImageReference, attached: Sequence[Attached]) -> dict[str, str]:
    """SBOM_BLOB_URL (the index SBOM's blob, by digest) and ATTESTATIONS (KIND:SUBJECT:DIGEST of
    every referrer manifest attached, comma-separated; the repository is IMAGE_URL's)."""
    index_sbom = next((a for a in attached if a.subject == "index" and a.kind != "provenance"), None)
    return {
        "SBOM_BLOB_URL": image.with_digest(index_sbom.blob) if index_sbom else "",
        "ATTESTATIONS": ",".join(f"{a.kind}:{a.subject}:{a.manifest.digest}" for a in attached),
    }
