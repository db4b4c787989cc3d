"""``taskimage bundle push REF FILE…`` and ``taskimage bundle list REF``: Tekton bundles
without ``tkn``, for the ``bundles`` resolver (see :mod:`taskimage.tekton.bundle`)."""

from __future__ import annotations

import argparse
import sys

from taskimage import log
from taskimage.build import params, results
from taskimage.oci import registry as remote
from taskimage.oci.reference import parse_image
from taskimage.tekton import bundle

REGISTRY_PARAMS = tuple(params.BY_NAME[name] for name in ("TLSVERIFY", "AUTHFILE", "CERT_DIR"))


def _registry_flags(parser: argparse.ArgumentParser) -> None:
    """The registry flags of ``build`` (same declarations, so same spelling and env fallbacks:
    TASKIMAGE_TLSVERIFY, TASKIMAGE_AUTHFILE, TASKIMAGE_CERT_DIR)."""
    params.add_arguments(parser, REGISTRY_PARAMS, positional_platforms=False)


def _options(args: argparse.Namespace) -> remote.Access:
    return remote.checked_access(params.resolve(args, REGISTRY_PARAMS))


def push_command(args: argparse.Namespace) -> int:
    ref = parse_image(args.ref, source="bundle push REF")
    options = _options(args)
    objects = bundle.load_objects(args.files)
    built = bundle.build_bundle(objects)
    log.phase(f"bundle push {ref.url}")
    log.info(
        log.table(
            ["KIND", "APIVERSION", "NAME", "FROM"],
            [(o.kind_annotation, o.api_version, o.name, o.where) for o in objects],
        )
    )
    digest = bundle.push(built, ref, options)
    pushed = ref.with_digest(digest)
    log.info(f"pushed {len(objects)} object(s) as {pushed}")
    if args.digestfile:
        results.write_digestfile(args.digestfile, digest)
    sys.stdout.write(pushed + "\n")
    sys.stdout.flush()
    return 0


def list_command(args: argparse.Namespace) -> int:
    parse_image(args.ref, source="bundle list REF", allow_digest=True)
    entries = bundle.list_entries(args.ref, _options(args))
    sys.stdout.write(
        log.table(["KIND", "APIVERSION", "NAME"], [(e.kind, e.api_version, e.name) for e in entries]) + "\n"
    )
    sys.stdout.flush()
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bundle",
        help="push and list Tekton bundles (OCI images of Tasks and Pipelines)",
        description="Tekton bundles as `tkn bundle push` writes them, for `resolver: bundles`.",
    )
    commands = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND", parser_class=type(parser))
    parser.set_defaults(func=lambda args: parser.error("a subcommand is required: push or list"))

    push = commands.add_parser(
        "push",
        help="build a bundle from Tekton YAML/JSON files and push it",
        description="One layer per Tekton object (at most 20); prints REPO@sha256:… on stdout.",
    )
    push.add_argument("ref", metavar="REF", help="where to push: registry/repository[:tag]")
    push.add_argument(
        "files", metavar="FILE", nargs="+", help="YAML or JSON files of tekton.dev objects ('-' for stdin)"
    )
    _registry_flags(push)
    push.add_argument("--digestfile", metavar="PATH", help="also write the manifest digest to PATH")
    push.set_defaults(func=push_command)

    listing = commands.add_parser("list", help="list the objects of a bundle (kind, apiVersion, name)")
    listing.add_argument("ref", metavar="REF", help="the bundle: registry/repository[:tag|@digest]")
    _registry_flags(listing)
    listing.set_defaults(func=list_command)
