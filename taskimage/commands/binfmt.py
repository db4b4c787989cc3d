"""``taskimage binfmt status|install [--reset]``: report or register qemu handlers (F flag)."""

from __future__ import annotations

import sys
import time

from taskimage import log
from taskimage.emulation import binfmt
from taskimage.errors import EXIT_EMULATION, EXIT_FAILURE
from taskimage.oci.platforms import ARCHES, Platform, parse_platforms


def register(sub) -> None:
    p = sub.add_parser("binfmt", help="check or register qemu emulation (binfmt_misc)")
    verbs = p.add_subparsers(dest="binfmt_command", metavar="status|install")
    for verb in ("status", "install"):
        v = verbs.add_parser(verb, help=f"{verb} qemu handlers")
        v.add_argument(
            "--platform",
            action="append",
            default=[],
            metavar="OS/ARCH[,...]",
            help="platforms to check or register (default: every supported foreign platform)",
        )
        v.add_argument("platforms", nargs="*", metavar="PLATFORM", help="platforms, as for --platform")
        if verb == "install":
            v.add_argument("--reset", action="store_true", help="replace existing handlers for these arches")
            v.add_argument(
                "--keep-running",
                action="store_true",
                help="stay in the foreground and re-register every minute if a handler disappears "
                "(what the cluster DaemonSet runs)",
            )
        v.set_defaults(func=_status if verb == "status" else _install)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def _platforms(args) -> list[Platform] | None:
    plats = parse_platforms(list(args.platform) + list(args.platforms))
    return plats or None


def _all() -> list[Platform]:
    return [Platform("linux", a, "v7" if a == "arm" else None) for a in ARCHES]


def _status(args) -> int:
    statuses = binfmt.check(_platforms(args) or _all())
    rows = []
    for s in statuses:
        how = "native" if s.native else (s.handler.name if s.handler else ("test binary" if s.ok else "-"))
        flags = s.handler.flags if s.handler else ""
        interp = s.handler.interpreter if s.handler else ""
        rows.append((str(s.platform), "ok" if s.ok else "MISSING", how, flags, interp, s.problem or ""))
    print(log.table(("PLATFORM", "STATE", "HANDLER", "FLAGS", "INTERPRETER", "PROBLEM"), rows))
    return 0 if all(s.ok for s in statuses) else EXIT_EMULATION


def _install(args) -> int:
    platforms = _platforms(args)
    while True:
        results = binfmt.install(platforms, reset=args.reset)
        changed = [r for r in results if r.action in ("created", "replaced", "failed")]
        if not args.keep_running or changed:
            print(
                log.table(
                    ("PLATFORM", "HANDLER", "ACTION", "DETAIL"),
                    [(str(r.platform), r.name, r.action, r.detail) for r in results],
                ),
                flush=True,
            )
        if any(r.action == "failed" for r in results):
            return EXIT_FAILURE
        if not args.keep_running:
            return 0
        args.reset = False  # reset only once
        time.sleep(60)
