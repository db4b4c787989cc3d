"""``taskimage gc REPOSITORY --keep PATTERN… --older-than D [--dry-run]``: prune old per-run and
cache tags of one repository, never a manifest that a kept tag reaches (see :mod:`taskimage.oci.gc`)."""

from __future__ import annotations

import argparse
import sys

from taskimage import log
from taskimage.build import params
from taskimage.errors import UsageError
from taskimage.oci import expiry, gc
from taskimage.oci import registry as remote
from taskimage.oci.reference import parse_image

REGISTRY_PARAMS = tuple(params.BY_NAME[name] for name in ("TLSVERIFY", "AUTHFILE", "CERT_DIR"))


def _run(args: argparse.Namespace) -> int:
    raw = args.repository.strip()
    if ":" in raw.rsplit("/", 1)[-1] or "@" in raw:
        raise UsageError(f"gc REPOSITORY: {args.repository!r} names a tag or digest; give the repository only")
    repo = parse_image(raw, source="gc REPOSITORY")
    keep = [p for p in (args.keep or []) if p.strip()]
    if not keep:
        raise UsageError("--keep: at least one pattern is required (e.g. --keep 'v*' --keep main)")
    older_than = expiry.seconds(args.older_than, "--older-than")
    values = params.resolve(args, REGISTRY_PARAMS)
    registry = gc.Registry(repo, remote.checked_access(values))
    log.phase(f"gc {repo.name} (keep {', '.join(keep)}; delete what is older than {args.older_than})")
    decisions = gc.plan(registry, keep, older_than, include_undated=args.include_undated)
    rows = [
        (d.tag, d.digest[:19], d.created.strftime("%Y-%m-%dT%H:%M:%SZ") if d.created else "-", d.why) for d in decisions
    ]
    log.info(log.table(["TAG", "DIGEST", "CREATED", "ACTION"], rows))
    doomed = [d for d in decisions if d.delete]
    if not args.dry_run:
        gc.delete(registry, doomed)
    verb = "would be deleted" if args.dry_run else "deleted"
    log.info(f"{len(doomed)} tag(s) {verb}, {len(decisions) - len(doomed)} kept")
    # stdout: the tags deleted (or, with --dry-run, to delete), one per line, for scripts
    sys.stdout.write("".join(f"{d.tag}\n" for d in doomed))
    sys.stdout.flush()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gc",
        help="delete a repository's old per-run and cache tags, never what a kept tag refers to",
        description="Keeps every tag matching a --keep pattern and every manifest such a tag reaches (index "
        "entries, referrer subjects); deletes the other tags whose image is older than --older-than (age: the "
        "image config's created; an index: its newest entry). Prints the deleted tags on stdout. "
        "Exit codes: 0 ok, 1 registry failure, 2 usage.",
    )
    p.add_argument("repository", metavar="REPOSITORY", help="registry/repository, without tag")
    p.add_argument(
        "--keep",
        metavar="PATTERN",
        action="extend",
        nargs="+",
        help="tags to keep, shell globs (v*, main, release-*); repeatable; at least one",
    )
    p.add_argument("--older-than", metavar="DURATION", required=True, help="delete only what is older: 7d, 12h, 2w")
    p.add_argument(
        "--include-undated",
        action="store_true",
        help="also delete unkept tags whose manifest has no creation time (source artifacts), whatever their "
        "age: run it when no PipelineRun is using them",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    params.add_arguments(p, REGISTRY_PARAMS, positional_platforms=False)
    p.set_defaults(func=_run)
