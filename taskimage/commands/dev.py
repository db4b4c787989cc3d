"""``taskimage dev``: a one-machine environment for demos and tests (no cluster, no Docker Hub).

- ``taskimage dev registry --dir DIR [--port 5000]``: run a local registry in the foreground.
- ``taskimage dev base-image FLAVOUR REF [--platform ...]``: make a base image from Debian
  packages with mmdebstrap (cached) and push it.
- ``taskimage dev task-image HOST:PORT [--platform ...]``: build the task image from this
  checkout (the Containerfile) with ``taskimage build`` and push it; prints REPO@DIGEST.
"""

from __future__ import annotations

import signal
import sys
import threading

from taskimage import log
from taskimage.dev import env as devenv
from taskimage.oci.platforms import parse_platforms


def register(sub) -> None:
    p = sub.add_parser("dev", help="local registry and base images for demos and tests")
    verbs = p.add_subparsers(dest="dev_command", metavar="registry|base-image")

    r = verbs.add_parser("registry", help="run a local registry on 127.0.0.1 in the foreground")
    r.add_argument("--dir", required=True, help="storage and config directory")
    r.add_argument("--port", type=int, default=5000)
    r.set_defaults(func=_registry)

    b = verbs.add_parser("base-image", help="make a base image from Debian packages and push it")
    b.add_argument(
        "flavour", choices=sorted(devenv.FLAVOURS), help="busybox (static busybox), bookworm or trixie (minbase)"
    )
    b.add_argument("ref", metavar="REF", help="where to push it, e.g. 127.0.0.1:5000/base/debian:bookworm")
    b.add_argument("--platform", action="append", default=[], metavar="OS/ARCH[,...]")
    b.add_argument("--tls-verify", default="false", metavar="true|false", help="default false (a local registry)")
    b.set_defaults(func=_base_image)
    t = verbs.add_parser("task-image", help="build the task image from this checkout with taskimage build and push it")
    t.add_argument("registry", metavar="HOST:PORT", help="registry to push the base and the task image to (plain HTTP)")
    t.add_argument("--ref", help="image reference (default HOST:PORT/taskimage/taskimage:VERSION)")
    t.add_argument(
        "--platform", action="append", default=[], metavar="OS/ARCH[,...]", help="default linux/amd64,linux/arm64"
    )
    t.set_defaults(func=_task_image)
    g = verbs.add_parser(
        "git-image",
        help="make the image of the git-clone stand-in (taskimage/dev/git-clone.yaml) in podman's storage",
    )
    g.set_defaults(func=_git_image)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _task_image(args) -> int:
    platforms = [str(p) for p in parse_platforms(args.platform)] or list(devenv.TASK_IMAGE_PLATFORMS)
    image = devenv.build_task_image(args.registry, args.ref, platforms)
    print(image.by_digest)
    return 0


def _git_image(args) -> int:
    print(devenv.git_image())
    log.info(f"the stand-in Task using it: {devenv.GIT_CLONE_STAND_IN}")
    return 0


def _registry(args) -> int:
    reg = devenv.LocalRegistry(args.dir, port=args.port).start()
    log.info(f"registry listening on {reg.host} (storage {args.dir}); stop with Ctrl-C or SIGTERM")
    print(reg.host, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        reg.stop()
    return 0


def _base_image(args) -> int:
    from taskimage.build.params import parse_bool

    platforms = parse_platforms(args.platform) or parse_platforms(["linux/amd64", "linux/arm64"])
    ref = devenv.base_image(args.flavour, platforms, args.ref, tls_verify=parse_bool(args.tls_verify, "--tls-verify"))
    print(ref)
    return 0
