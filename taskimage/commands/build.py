"""``taskimage build``: build, verify and push a multi-arch manifest list."""

from __future__ import annotations

from taskimage.build import orchestrate as build
from taskimage.build import params


def register(sub) -> None:
    p = sub.add_parser(
        "build",
        help="build, verify and push a multi-arch image (manifest list)",
        description="Build every platform with buildah (foreign ones under qemu), verify each image's real "
        "architecture, push the manifest list, read it back and write Tekton results. "
        "Exit codes: 0 ok, 1 build/push failure, 2 usage, 3 missing emulation, 143 interrupted.",
    )
    params.add_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    opts = build.options_from_values(params.resolve(args))
    build.run(opts)
    return 0
