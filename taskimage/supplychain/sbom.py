"""SBOM documents for a platform image (its packages) and for an index (its platform images by
digest), in SPDX 2.3 JSON (spdx-tools) or CycloneDX 1.6 JSON (cyclonedx-python-lib).

The format libraries are imported lazily: only a build that writes an SBOM needs them, and each
document is checked with the library's own validator before it leaves this module.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re
import threading
import uuid
from collections.abc import Sequence

from taskimage import __version__
from taskimage.errors import TaskimageError
from taskimage.supplychain.packages import Package, Scan

FORMATS = ("spdx", "cyclonedx")
MEDIA_TYPES = {"spdx": "application/spdx+json", "cyclonedx": "application/vnd.cyclonedx+json"}
TOOL = f"taskimage-{__version__}"
# license-expression's tokenizer (shared by spdx-tools' validator and ours) is not thread-safe:
# two platforms' SBOMs written at once failed with "'object' object has no attribute 'children'".
_LIBRARY = threading.RLock()


class SbomError(TaskimageError):
    """An SBOM could not be written (a missing library, or a document its validator refuses)."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """What a document describes: an image (``platform`` set) or an index, by digest."""

    repository: str  # registry/name, e.g. registry.example.com/team/app
    digest: str
    platform: str = ""  # os/arch[/variant]; "" for an index
    media_type: str = ""

    @property
    def purl(self) -> str:
        from packageurl import PackageURL

        qualifiers = {"repository_url": self.repository}
        if self.platform:
            qualifiers["arch"] = self.platform.split("/")[1]
        return PackageURL(
            "oci", name=self.repository.rsplit("/", 1)[-1].lower(), version=self.digest, qualifiers=qualifiers
        ).to_string()

    @property
    def title(self) -> str:
        return f"{self.repository}@{self.digest}" + (f" ({self.platform})" if self.platform else " (index)")


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SbomError(
            f"writing the SBOM needs the Python package {package} (pip install 'taskimage[supplychain]'); "
            "or build with --sbom none"
        ) from None


def _spdx_id(kind: str, n: int) -> str:
    return f"SPDXRef-{re.sub(r'[^A-Za-z0-9.-]', '-', kind)}-{n}"


@functools.cache
def _licensing():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()  # builds a table of every SPDX licence: once


@functools.cache
def _spdx_licence(text: str):
    """A valid SPDX expression for ``text``, or None (the text then goes into the licence comment)."""
    if not text:
        return None
    licensing = _licensing()
    try:
        info = licensing.validate(text, strict=True)
    except Exception:
        return None
    if info.errors or info.invalid_symbols:
        return None
    return licensing.parse(text)


def _created(created: datetime.datetime | None) -> datetime.datetime:
    return (created or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)


# --- SPDX 2.3 --------------------------------------------------------------------------------


def _spdx(subject: Subject, children: Sequence[tuple[str, object]], created, comment: str) -> bytes:
    """``children``: (SPDX id kind, spdx Package) pairs the subject CONTAINS."""
    _need("spdx_tools", "spdx-tools")
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        Checksum,
        ChecksumAlgorithm,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        PackagePurpose,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.model import Package as SpdxPackage
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    name = subject.title
    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name=name,
        document_namespace=f"https://spdx.org/spdxdocs/{re.sub(r'[^A-Za-z0-9.-]', '-', subject.repository)}-{uuid.uuid4()}",
        creators=[Actor(ActorType.TOOL, TOOL)],
        created=_created(created),
        creator_comment=comment or None,
    )
    root_id = "SPDXRef-image" if subject.platform else "SPDXRef-index"
    algorithm, _, hexdigest = subject.digest.partition(":")
    root = SpdxPackage(
        spdx_id=root_id,
        name=subject.repository,
        download_location=SpdxNoAssertion(),
        version=subject.digest,
        files_analyzed=False,
        checksums=[Checksum(ChecksumAlgorithm[algorithm.upper()], hexdigest)] if hexdigest else [],
        primary_package_purpose=PackagePurpose.CONTAINER,
        external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", subject.purl)],
        comment=f"platform {subject.platform}" if subject.platform else "image index",
    )
    packages = [root]
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, root_id)]
    for kind_id, pkg in children:
        packages.append(pkg)  # type: ignore[arg-type]
        relationships.append(Relationship(root_id, RelationshipType.CONTAINS, kind_id))
    doc = Document(info, packages=packages, relationships=relationships)
    errors = validate_full_spdx_document(doc)
    if errors:
        raise SbomError(f"the SPDX document for {name} does not validate: {errors[0].validation_message}")
    import io

    out = io.StringIO()
    write_document_to_stream(doc, out, validate=False)
    return out.getvalue().encode()


def _spdx_package(n: int, pkg: Package):
    from spdx_tools.spdx.model import ExternalPackageRef, ExternalPackageRefCategory, SpdxNoAssertion
    from spdx_tools.spdx.model import Package as SpdxPackage

    spdx_id = _spdx_id(pkg.type, n)
    licence = _spdx_licence(pkg.license)
    comment = []
    if pkg.arch:
        comment.append(f"architecture {pkg.arch}")
    if pkg.location:
        comment.append(f"found in {pkg.location}")
    return spdx_id, SpdxPackage(
        spdx_id=spdx_id,
        name=pkg.name if not pkg.namespace or pkg.type != "npm" else f"{pkg.namespace}/{pkg.name}",
        download_location=SpdxNoAssertion(),
        version=pkg.version or None,
        files_analyzed=False,
        license_declared=licence if licence is not None else SpdxNoAssertion(),
        license_concluded=SpdxNoAssertion(),
        license_comment=f"declared in the package metadata as: {pkg.license}"
        if pkg.license and licence is None
        else None,
        copyright_text=SpdxNoAssertion(),
        external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", pkg.purl)],
        comment="; ".join(comment) or None,
    )


# --- CycloneDX 1.6 ---------------------------------------------------------------------------


def _cyclonedx(subject: Subject, components: list, created) -> bytes:
    _need("cyclonedx", "cyclonedx-python-lib")
    from cyclonedx.model import HashAlgorithm, HashType
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    algorithm, _, hexdigest = subject.digest.partition(":")
    root = Component(
        name=subject.repository,
        version=subject.digest,
        type=ComponentType.CONTAINER,
        bom_ref=subject.purl,
        purl=PackageURL.from_string(subject.purl),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)] if algorithm == "sha256" else None,
        description=f"platform {subject.platform}" if subject.platform else "image index",
    )
    bom = Bom(metadata=BomMetaData(component=root, timestamp=_created(created)))
    from cyclonedx.model.tool import Tool

    bom.metadata.tools.tools.add(Tool(vendor="taskimage", name="taskimage", version=__version__))
    for c in components:
        bom.components.add(c)
        bom.register_dependency(root, [c])
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    problem = validate("cyclonedx", text.encode())
    if problem:
        raise SbomError(f"the CycloneDX document for {subject.title} does not validate: {problem}")
    return text.encode()


def _cyclonedx_component(pkg: Package):
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from packageurl import PackageURL

    licences: list = []
    if pkg.license:
        licences = (
            [LicenseExpression(pkg.license)]
            if _spdx_licence(pkg.license) is not None
            else [DisjunctiveLicense(name=pkg.license)]
        )
    props = [Property(name="taskimage:package:type", value=pkg.type)]
    if pkg.arch:
        props.append(Property(name="taskimage:package:architecture", value=pkg.arch))
    if pkg.location:
        props.append(Property(name="taskimage:package:location", value=pkg.location))
    return Component(
        name=pkg.name,
        group=pkg.namespace or None if pkg.type == "npm" else None,
        version=pkg.version or None,
        type=ComponentType.APPLICATION if pkg.type == "golang" and pkg.name != "stdlib" else ComponentType.LIBRARY,
        purl=PackageURL.from_string(pkg.purl),
        bom_ref=f"{pkg.purl}#{pkg.location}",
        licenses=licences,
        properties=props,
    )


# --- the two documents -----------------------------------------------------------------------


def image_document(fmt: str, subject: Subject, scan: Scan, created: datetime.datetime | None = None) -> bytes:
    """The SBOM of one platform image: every package ``scan`` found."""
    with _LIBRARY:
        return _image_document(fmt, subject, scan, created)


def _image_document(fmt: str, subject: Subject, scan: Scan, created: datetime.datetime | None) -> bytes:
    unique = list(dict.fromkeys(scan.packages))
    comment = f"operating system: {scan.os_name or scan.os_id or 'unknown'}"
    if scan.warnings:
        comment += "; not listed: " + "; ".join(scan.warnings)
    if fmt == "spdx":
        return _spdx(subject, [_spdx_package(n, p) for n, p in enumerate(unique, 1)], created, comment)
    if fmt == "cyclonedx":
        return _cyclonedx(subject, [_cyclonedx_component(p) for p in unique], created)
    raise SbomError(f"unknown SBOM format {fmt!r}")


def index_document(
    fmt: str, subject: Subject, images: Sequence[Subject], created: datetime.datetime | None = None
) -> bytes:
    """The SBOM of an index: each platform image, by digest."""
    with _LIBRARY:
        return _index_document(fmt, subject, images, created)


def _index_document(fmt: str, subject: Subject, images: Sequence[Subject], created: datetime.datetime | None) -> bytes:
    if fmt == "spdx":
        children = []
        for n, image in enumerate(images, 1):
            from spdx_tools.spdx.model import (
                Checksum,
                ChecksumAlgorithm,
                ExternalPackageRef,
                ExternalPackageRefCategory,
                PackagePurpose,
                SpdxNoAssertion,
            )
            from spdx_tools.spdx.model import Package as SpdxPackage

            spdx_id = _spdx_id("image", n)
            algorithm, _, hexdigest = image.digest.partition(":")
            children.append(
                (
                    spdx_id,
                    SpdxPackage(
                        spdx_id=spdx_id,
                        name=image.repository,
                        download_location=SpdxNoAssertion(),
                        version=image.digest,
                        files_analyzed=False,
                        checksums=[Checksum(ChecksumAlgorithm[algorithm.upper()], hexdigest)],
                        primary_package_purpose=PackagePurpose.CONTAINER,
                        external_references=[
                            ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", image.purl)
                        ],
                        comment=f"platform {image.platform}",
                    ),
                )
            )
        return _spdx(subject, children, created, f"{len(images)} platform image(s)")
    if fmt == "cyclonedx":
        from cyclonedx.model.component import Component, ComponentType
        from packageurl import PackageURL

        components = [
            Component(
                name=i.repository,
                version=i.digest,
                type=ComponentType.CONTAINER,
                purl=PackageURL.from_string(i.purl),
                bom_ref=i.purl,
                description=f"platform {i.platform}",
            )
            for i in images
        ]
        return _cyclonedx(subject, components, created)
    raise SbomError(f"unknown SBOM format {fmt!r}")


def validate(fmt: str, data: bytes) -> str:
    """What the format library's validator says about a document ("" when it is valid)."""
    with _LIBRARY:
        return _validate(fmt, data)


def _validate(fmt: str, data: bytes) -> str:
    if fmt == "cyclonedx":
        _need("cyclonedx", "cyclonedx-python-lib")
        from cyclonedx.schema import SchemaVersion
        from cyclonedx.validation.json import JsonStrictValidator

        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode())
        return str(error) if error else ""
    if fmt == "spdx":
        _need("spdx_tools", "spdx-tools")
        from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
        from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

        try:
            doc = JsonLikeDictParser().parse(json.loads(data))
        except Exception as exc:
            return f"not a parsable SPDX document: {exc}"
        errors = validate_full_spdx_document(doc)
        return errors[0].validation_message if errors else ""
    return f"unknown SBOM format {fmt!r}"
