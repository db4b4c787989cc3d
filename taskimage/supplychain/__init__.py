"""Supply chain: what is in an image (SBOM) and how it was made (provenance), attached to the
pushed images as OCI referrers.

- :mod:`.packages`: static readers of package databases in an image's file system (no emulation);
- :mod:`.gobuildinfo`: the build information the Go linker embeds in every Go binary;
- :mod:`.sbom`: SPDX 2.3 and CycloneDX 1.6 documents, written with the formats' own libraries;
- :mod:`.provenance`: an in-toto statement with a SLSA v1 provenance predicate;
- :mod:`.referrers`: OCI 1.1 referrers (artifact manifests with a ``subject``), with the
  referrers tag schema where a registry has no referrers API.
"""
