"""Command line: ``taskimage <command> ...``. The only place that turns errors into exit codes.

Each command lives in ``taskimage/commands/<name>.py`` and provides
``register(subparsers) -> None``, which adds one or more sub-parsers whose ``func(args) -> int``
runs the command. Exit codes: 0 ok, 1 failure, 2 usage, 3 missing emulation, 143 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
from collections.abc import Sequence

from taskimage import __version__, log
from taskimage import proc as tools
from taskimage.build import params
from taskimage.errors import EXIT_INTERRUPTED, EXIT_USAGE, Interrupted, TaskimageError, ToolError

COMMAND_MODULES = ["build", "index", "sbom", "binfmt", "bundle", "lint", "run", "cluster", "dev", "source", "gc"]
# optional dependencies (pyproject extras) and the extra that brings each
OPTIONAL_MODULES = {
    "kubernetes": "cluster",
    "urllib3": "cluster",
    "jsonschema": "lint",
    "kubernetes_validate": "lint",
    "packageurl": "supplychain",
    "spdx_tools": "supplychain",
    "cyclonedx": "supplychain",
}
# commands registered by a module of another name
COMMAND_OWNER = {"pipeline": "cluster", "logs": "cluster", "provenance": "sbom"}


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors get our one-line format."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


from taskimage.errors import UsageError  # noqa: E402  (after _Parser for readability)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's module is imported (start-up time:
    each module imports what it needs, and a build should not pay for the kubernetes client)."""
    parser = _Parser(
        prog="taskimage",
        description="Multi-architecture container image builds for Tekton, with buildah and qemu.",
    )
    parser.add_argument("--version", action="version", version=f"taskimage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    owner = COMMAND_OWNER.get(command or "", command)
    names = [owner] if owner in COMMAND_MODULES else COMMAND_MODULES
    for name in names:
        if importlib.util.find_spec(f"taskimage.commands.{name}") is None:
            continue  # left out of this installation: the task image has no `dev` (.containerignore)
        importlib.import_module(f"taskimage.commands.{name}").register(sub)
    return parser


def _on_signal(signum, frame):  # Tekton sends SIGTERM on timeout / cancel
    """Cancel the run (every child is signalled; worker threads wait on them), then unwind the
    main thread. A second signal during the unwinding is ignored, so the clean-up is not cut short.
    """
    reason = f"received {signal.Signals(signum).name}, stopping"
    if not tools.current().cancel(reason):
        return
    raise Interrupted(reason)


def main(argv: Sequence[str] | None = None) -> int:
    with tools.scope(), log.secrets_scope():  # one cancel token and one set of secrets per command
        return _main(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else None)
    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, _on_signal)
            except ValueError:  # not the main thread (tests)
                pass
        args = _parse(parser, argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except Interrupted as exc:
        tools.stop_all()
        log.error(str(exc))
        return EXIT_INTERRUPTED
    except ToolError as exc:
        for line in exc.tail:
            log.info(f"  | {line}")
        log.error(str(exc))
        return exc.exit_code
    except TaskimageError as exc:
        log.error(str(exc))
        return exc.exit_code
    except ModuleNotFoundError as exc:
        extra = OPTIONAL_MODULES.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        log.error(f"taskimage {argv[0] if argv else ''} needs {exc.name}: pip install 'taskimage[{extra}]'")
        return 1
    except KeyboardInterrupt:
        tools.stop_all()
        log.error("interrupted")
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


INTERMIXED = {"build", "index", "bundle", "source"}


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`build`, `index` and `bundle push` take positional args mixed with options (Tekton array
    params, file lists), which argparse handles only on the leaf sub-parser itself."""
    if not argv or argv[0] not in INTERMIXED:
        return parser.parse_args(argv)
    chosen: dict[str, str] = {}
    current, rest = parser, list(argv)
    while rest and (action := _subparsers(current)) is not None and rest[0] in action.choices:
        chosen[action.dest] = rest[0]
        current, rest = action.choices[rest[0]], rest[1:]
    if _subparsers(current) is not None:  # stopped above a leaf (e.g. `bundle` alone): plain parse
        return parser.parse_args(argv)
    args = current.parse_intermixed_args(_bare_bools(current, rest))
    for dest, value in chosen.items():
        setattr(args, dest, value)
    return args


def _bare_bools(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """A bare boolean flag means true and takes the next word only if it is a boolean:
    `--evict linux/amd64` is --evict=true and a platform (as in buildah), `--tls-verify false`
    and `--tls-verify=false` are both false."""
    flags = {s for a in parser._actions if a.nargs == "?" and a.const == "true" for s in a.option_strings}
    out: list[str] = []
    words = iter(enumerate(argv))
    for n, arg in words:
        if arg == "--":
            return out + argv[n:]
        if arg in flags:
            value = argv[n + 1] if n + 1 < len(argv) else ""
            if value.lower() in params.TRUE | params.FALSE:
                next(words)
            else:
                value = "true"
            arg = f"{arg}={value}"
        out.append(arg)
    return out


def console_main() -> None:
    sys.exit(main())
