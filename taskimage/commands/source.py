"""``taskimage source push DIR REF`` and ``taskimage source pull REF@DIGEST DIR``: a source tree
carried between TaskRuns as an OCI artifact, by digest (see :mod:`taskimage.oci.artifact`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taskimage import log
from taskimage.build import params, results
from taskimage.errors import UsageError
from taskimage.oci import artifact, expiry
from taskimage.oci import registry as remote
from taskimage.oci.reference import parse_image

REGISTRY_PARAMS = tuple(params.BY_NAME[name] for name in ("TLSVERIFY", "AUTHFILE", "CERT_DIR", "RETRY"))
RESULT = "SOURCE_ARTIFACT"


def _access(args: argparse.Namespace) -> tuple[remote.Access, int]:
    values = params.resolve(args, REGISTRY_PARAMS)
    return remote.checked_access(values), int(values["RETRY"][0])


def push_command(args: argparse.Namespace) -> int:
    ref = parse_image(args.ref, source="source push REF")
    if args.source_root:
        root, target = Path(args.source_root).resolve(), Path(args.dir).resolve()
        if target != root and root not in target.parents:
            raise UsageError(f"source push DIR: {args.dir!r} is outside --source-root {args.source_root!r}")
    access, retry = _access(args)
    results_dir = results.check_dir(args.results_dir)
    annotations = {}
    if args.expires_after:
        annotations[artifact.EXPIRES_ANNOTATION] = expiry.check_duration(args.expires_after, "--expires-after")
    log.phase(f"source push {args.dir} -> {ref.url}")
    pushed = artifact.push(
        args.dir, ref, access, include_git=args.include_git, annotations=annotations or None, retry=retry
    )
    log.info(f"pushed {pushed.entries} entries ({pushed.layer_size} bytes compressed) as {pushed.pinned}")
    if args.digestfile:
        results.write_digestfile(args.digestfile, pushed.digest)
    if results_dir is not None:
        results.write(results_dir, {RESULT: pushed.pinned})
    sys.stdout.write(pushed.pinned + "\n")
    sys.stdout.flush()
    return 0


def pull_command(args: argparse.Namespace) -> int:
    access, retry = _access(args)
    log.phase(f"source pull {args.ref} -> {args.dir}")
    artifact.pull(args.ref, Path(args.dir), access, retry=retry)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "source",
        help="push a source tree as an OCI artifact and pull it by digest",
        description="Carry a cloned source tree between TaskRuns through the registry instead of a shared "
        "volume. Exit codes: 0 ok, 1 registry or archive failure, 2 usage.",
    )
    commands = parser.add_subparsers(dest="source_command", metavar="SUBCOMMAND", parser_class=type(parser))
    parser.set_defaults(func=lambda args: parser.error("a subcommand is required: push or pull"))

    push = commands.add_parser(
        "push",
        help="push DIR as a single-layer OCI artifact; prints REF@sha256:…",
        description="Deterministic: the same tree gives the same digest (sorted entries, mtime 0, uid/gid 0, "
        "permission bits kept). .git is left out unless --include-git. Prints REPO@sha256:… and writes it "
        f"as the Tekton result {RESULT}.",
    )
    push.add_argument("dir", metavar="DIR", help="the directory to push")
    push.add_argument("ref", metavar="REF", help="where to push: registry/repository[:tag]")
    push.add_argument(
        "--source-root",
        metavar="ROOT",
        help="refuse a DIR that resolves outside ROOT (the Task passes its checkout, DIR comes from a param)",
    )
    push.add_argument("--include-git", action="store_true", help="keep .git directories (left out by default)")
    push.add_argument(
        "--expires-after",
        metavar="DURATION",
        default="",
        help="annotation quay.expires-after (e.g. 5d): registries that honour it delete the tag then",
    )
    push.add_argument("--digestfile", metavar="PATH", help="also write the manifest digest to PATH")
    push.add_argument(
        "--results-dir",
        metavar="DIR",
        help=f"write the Tekton result {RESULT} (REPO@sha256:…) there; default /tekton/results when it exists",
    )
    params.add_arguments(push, REGISTRY_PARAMS, positional_platforms=False)
    push.set_defaults(func=push_command)

    pull = commands.add_parser(
        "pull",
        help="pull REF@sha256:… into DIR (absent or empty), verified",
        description="Refuses a reference without a digest, a content that does not match its digest and any "
        "archive entry that would land outside DIR (../, absolute or escaping symlinks, devices); nothing "
        "is written unless every check passes.",
    )
    pull.add_argument("ref", metavar="REF", help="the artifact: registry/repository@sha256:…")
    pull.add_argument("dir", metavar="DIR", help="where to unpack: must be absent or empty")
    params.add_arguments(pull, REGISTRY_PARAMS, positional_platforms=False)
    pull.set_defaults(func=pull_command)
