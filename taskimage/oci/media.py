"""The one table of OCI and Docker media types, and the one digest helper."""

from __future__ import annotations

import hashlib

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
FAMILY = {OCI_MANIFEST: "oci", DOCKER_MANIFEST: "docker"}  # a manifest's format (--format)
FAMILY_OF_LIST = {OCI_INDEX: "oci", DOCKER_LIST: "docker"}
LIST_TYPE = {"oci": OCI_INDEX, "docker": DOCKER_LIST}


def digest(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data`` (a manifest, config or blob, byte for byte)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def media_type_of(doc: dict) -> str:
    """A manifest's media type; one without the field is an OCI index (it has ``manifests``) or
    an OCI manifest, as the OCI spec reads it."""
    return doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
