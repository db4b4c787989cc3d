"""``taskimage sbom REF`` / ``taskimage provenance REF``: print the SBOM or provenance statement
attached to an image or index as an OCI referrer (by ``taskimage build``, or any tool that attaches
SPDX, CycloneDX or in-toto artifacts)."""

from __future__ import annotations

import sys

from taskimage import log
from taskimage.build import params
from taskimage.oci import auth
from taskimage.oci import registry as remote
from taskimage.oci.platforms import parse_platforms
from taskimage.supplychain import provenance, readback, referrers, sbom

ACCESS = tuple(params.BY_NAME[n] for n in ("TLSVERIFY", "AUTHFILE", "CERT_DIR", "CREDS"))
KINDS = {
    "sbom": (tuple(sbom.MEDIA_TYPES.values()), "the SBOM (SPDX or CycloneDX JSON)"),
    "provenance": ((provenance.MEDIA_TYPE,), "the in-toto provenance statement (SLSA v1)"),
}


def register(sub) -> None:
    for name, (_, what) in KINDS.items():
        p = sub.add_parser(
            name,
            help=f"print {what} attached to an image or index",
            description=f"Print {what} attached to REF as an OCI referrer to stdout. REF is REPO[:TAG] "
            "or REPO@sha256:...; an index's own unless --platform names one of its images. Referrers are "
            "found with the registry's referrers API, else the OCI 1.1 fallback tag sha256-<hex>. "
            "Exit codes: 0 ok, 1 not found or registry failure, 2 usage.",
        )
        p.add_argument("ref", metavar="REF", help="the image or index: REPO[:TAG] or REPO@sha256:...")
        p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="the platform image of an index")
        params.add_arguments(p, params=ACCESS, positional_platforms=False)
        p.set_defaults(func=_run, kind=name)


def _run(args) -> int:
    values = params.resolve(args, params=ACCESS)
    v = {k: val for k, (val, _) in values.items()}
    src = {k: s for k, (_, s) in values.items()}
    image, reference = readback.parse_ref(args.ref)
    platform = parse_platforms([args.platform], source="--platform")[0] if args.platform else None
    registry, creds = remote.access(v, src)
    with auth.with_creds(registry, image.registry, creds) as registry:
        client = referrers.Client.for_registry(registry, image.registry)
        found = readback.find(client, image, reference, platform, KINDS[args.kind][0])
    log.info(f"{found.artifact.artifact_type} attached to {found.subject} as {found.artifact.digest} ({found.how})")
    sys.stdout.write(found.content.decode())
    if not found.content.endswith(b"\n"):
        sys.stdout.write("\n")
    return 0
