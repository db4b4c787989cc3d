"""``taskimage index``: join per-platform images (repo@digest) into one pushed, verified manifest list."""

from __future__ import annotations

from taskimage.build import index, params


def register(sub) -> None:
    p = sub.add_parser(
        "index",
        help="push a manifest list made of per-platform images already pushed by digest",
        description="Read each REPO@sha256:... image's manifest and config from the registry, check that "
        "each platform appears once, push one manifest list naming them to --image (skopeo only: no "
        "storage, no privileges), read it back and write the same Tekton results as build. "
        "Exit codes: 0 ok, 1 registry failure, 2 usage, 143 interrupted.",
    )
    params.add_arguments(p, params=index.PARAMS, positional_platforms=False)
    p.add_argument(
        "positional_refs",
        nargs="*",
        metavar="REF",
        help="per-platform images, REPO@sha256:... (how Tekton passes an array param); empty values are ignored",
    )
    p.set_defaults(func=_run)


def _run(args) -> int:
    args.refs = list(args.refs or []) + [r for r in (args.positional_refs or []) if r]
    opts = index.options_from_values(params.resolve(args, params=index.PARAMS))
    index.run(opts)
    return 0
