"""``taskimage build``: build, verify and push a multi-arch manifest list."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from taskimage import log
from taskimage.build import orchestrate as build
from taskimage.build import params
from taskimage.errors import UsageError


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
    values = params.resolve(args)
    with _source_artifact(values) as values:
        opts = build.options_from_values(values)
        build.run(opts)
    return 0


@contextlib.contextmanager
def _source_artifact(values: dict) -> Iterator[dict]:
    """With SOURCE_ARTIFACT, pull it (verified) into a temporary directory that becomes the
    SOURCE_ROOT for the build, and remove it afterwards; without, ``values`` unchanged."""
    ref, source = values["SOURCE_ARTIFACT"]
    if not ref:
        yield values
        return
    from taskimage.oci import artifact, auth
    from taskimage.oci import registry as remote

    host = artifact.parse_pinned(ref, source)[0].registry  # a bad reference fails before any download
    if values["SOURCE_ROOT"][0]:
        raise UsageError(
            f"{source} and {values['SOURCE_ROOT'][1]}: give one source, the artifact or the workspace, not both"
        )
    authfile, auth_source = values["AUTHFILE"]
    path = auth.resolve_authfile(authfile, auth_source)
    cert_dir = values["CERT_DIR"][0] or None
    if cert_dir and not Path(cert_dir).is_dir():
        raise UsageError(f"{values['CERT_DIR'][1]}: {cert_dir!r} is not a directory")
    access = remote.Access(values["TLSVERIFY"][0], str(path) if path else None, cert_dir)
    tmp = Path(tempfile.mkdtemp(prefix="taskimage-source-"))
    try:
        log.phase(f"source {ref}")
        with auth.with_creds(access, host, values["CREDS"][0] or None) as pull_access:
            artifact.pull(ref, tmp / "source", pull_access, retry=values["RETRY"][0])
        yield {**values, "SOURCE_ROOT": (str(tmp / "source"), source)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
