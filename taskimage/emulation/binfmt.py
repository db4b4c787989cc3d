"""qemu emulation through binfmt_misc: check it before a build, register it where we may.

binfmt_misc is kernel-global: a handler registered from one privileged container serves the
whole node. Only handlers with the F ("fix binary") flag work for builds: the kernel opens the
interpreter at registration, so it runs inside any container or chroot. Without F the kernel
looks the interpreter path up inside the build's root file system, where it does not exist.

Handlers are matched to architectures by their magic/mask against the ELF header of that
architecture, not by name, so handlers registered by other tools (tonistiigi/binfmt,
multiarch/qemu-user-static, systemd-binfmt) count too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from taskimage import proc as tools
from taskimage.errors import EmulationError, TaskimageError, ToolError
from taskimage.oci.platforms import ARCHES, Platform, elf_header, host_platform, runs_natively

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def _dir() -> Path:
    """binfmt_misc's mount point; TASKIMAGE_BINFMT_DIR overrides it (other mount points, tests)."""
    return Path(os.environ.get("TASKIMAGE_BINFMT_DIR") or BINFMT_DIR)


CONF_DIRS = (Path("/usr/lib/binfmt.d"), Path("/etc/binfmt.d"), Path("/usr/share/binfmts"))
FIX_HINT = (
    "on a cluster, install the qemu binfmt DaemonSet (kubectl apply -f tekton/binfmt-daemonset.yaml); "
    "on a machine you control, run: taskimage binfmt install"
)


@dataclasses.dataclass(frozen=True)
class Handler:
    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes

    def matches(self, header: bytes) -> bool:
        data = header[self.offset : self.offset + len(self.magic)]
        if len(data) < len(self.magic):
            return False
        mask = self.mask or b"\xff" * len(self.magic)
        return all((d & m) == (g & m) for d, m, g in zip(data, mask, self.magic, strict=False))


@dataclasses.dataclass(frozen=True)
class Status:
    platform: Platform
    native: bool
    handler: Handler | None
    problem: str | None  # None: this platform's binaries can run here
    how: str = ""  # how we know: "native", the handler, or the test binary that ran

    def describe(self) -> str:
        return self.problem or self.how

    @property
    def ok(self) -> bool:
        return self.problem is None


def parse_handler(name: str, text: str) -> Handler | None:
    """Parse a /proc/sys/fs/binfmt_misc/<name> file; None for extension (E) handlers."""
    fields: dict[str, str] = {}
    enabled = False
    for line in text.splitlines():
        line = line.strip()
        if line == "enabled":
            enabled = True
        elif line == "disabled":
            enabled = False
        elif " " in line:
            key, value = line.split(" ", 1)
            fields[key] = value.strip()
    if "magic" not in fields:
        return None
    return Handler(
        name=name,
        enabled=enabled,
        interpreter=fields.get("interpreter", ""),
        flags=fields.get("flags:", fields.get("flags", "")).replace("flags:", "").strip(),
        offset=int(fields.get("offset", "0")),
        magic=bytes.fromhex(fields["magic"]),
        mask=bytes.fromhex(fields.get("mask", "")),
    )


def _flags(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("flags:"):
            return line.split(":", 1)[1].strip()
    return ""


def read_handlers(directory: Path = BINFMT_DIR) -> list[Handler]:
    handlers = []
    for entry in sorted(directory.iterdir()):
        if entry.name in ("register", "status"):
            continue
        try:
            text = entry.read_text()
        except OSError:
            continue
        handler = parse_handler(entry.name, text)
        if handler:
            handlers.append(dataclasses.replace(handler, flags=_flags(text)))
    return handlers


def is_mounted(directory: Path = BINFMT_DIR) -> bool:
    return (directory / "register").exists()


def mount(directory: Path = BINFMT_DIR) -> None:
    """Mount binfmt_misc (needs CAP_SYS_ADMIN: root on a host, a privileged container)."""
    if is_mounted(directory):
        return
    try:
        tools.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(directory)],
            what="mount binfmt_misc",
            quiet=True,
            stream=False,
        )
    except ToolError as exc:
        raise EmulationError(
            f"binfmt_misc is not mounted at {directory} and mounting it failed "
            f"({'; '.join(exc.tail[-1:]) or exc}): this needs root or a privileged container"
        ) from exc


def check(platforms: Iterable[Platform], directory: Path | None = None, host: Platform | None = None) -> list[Status]:
    """How each platform's binaries would run here: natively, through a handler, or not.

    Where binfmt_misc can be read, its handlers explain what is missing (no handler, disabled,
    no F flag). Every foreign platform is also proven by running a tiny test binary of that
    architecture (:mod:`taskimage.emulation.probe`); where binfmt_misc cannot be read (an unprivileged
    container may not mount it), that test alone decides.
    """
    from taskimage.emulation import probe

    directory = directory or _dir()
    host = host or host_platform()
    platforms = list(platforms)
    foreign = [p for p in platforms if not runs_natively(p, host)]
    handlers: list[Handler] = []
    unreadable = None
    if foreign:
        if not is_mounted(directory):
            try:
                mount(directory)
            except EmulationError as exc:
                unreadable = str(exc)
        if not unreadable:
            handlers = read_handlers(directory)
    statuses = []
    for p in platforms:
        if runs_natively(p, host):
            statuses.append(Status(p, True, None, None, "native"))
            continue
        if unreadable:
            failed = probe.run(p)
            if failed:
                statuses.append(
                    Status(
                        p,
                        False,
                        None,
                        f"{failed}; binfmt_misc cannot be read here to say why "
                        f"(not mounted, and mounting it needs CAP_SYS_ADMIN)",
                    )
                )
            else:
                statuses.append(Status(p, False, None, None, "a test binary ran (binfmt_misc is not readable here)"))
            continue
        header = elf_header(p.arch)
        candidates = [h for h in handlers if h.matches(header)]
        good = [h for h in candidates if h.enabled and "F" in h.flags]
        if good:
            h = good[0]
            failed = probe.run(p)
            if failed:
                statuses.append(Status(p, False, h, f"binfmt_misc handler {h.name!r} is registered but {failed}"))
            else:
                statuses.append(Status(p, False, h, None, f"emulated by {h.interpreter} ({h.name}, flags {h.flags})"))
        elif not candidates:
            statuses.append(Status(p, False, None, f"no binfmt_misc handler for {ARCHES[p.arch].qemu} binaries"))
        else:
            h = candidates[0]
            if not h.enabled:
                problem = f"binfmt_misc handler {h.name!r} is disabled"
            else:
                problem = (
                    f"binfmt_misc handler {h.name!r} lacks the F flag, so {h.interpreter} is not "
                    f"visible inside build containers (re-register with: taskimage binfmt install --reset)"
                )
            statuses.append(Status(p, False, h, problem))
    return statuses


def missing_emulation(platforms: Iterable[Platform], directory: Path | None = None) -> list[Status]:
    return [s for s in check(platforms, directory) if not s.ok]


def preflight(platforms: Iterable[Platform], directory: Path | None = None) -> list[Status]:
    """Raise :class:`EmulationError` naming every platform that cannot run here, and the fix."""
    statuses = check(platforms, directory)
    bad = [s for s in statuses if not s.ok]
    if bad:
        details = "; ".join(f"{s.platform}: {s.problem}" for s in bad)
        raise EmulationError(f"emulation missing for {len(bad)} platform(s): {details}. Fix: {FIX_HINT}")
    return statuses


# --- registration -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Registration:
    """One line of a binfmt.d file: ``:name:type:offset:magic:mask:interpreter:flags``."""

    name: str
    kind: str
    offset: str
    magic: bytes
    mask: bytes
    interpreter: str
    flags: str

    def line(self) -> str:
        def esc(data: bytes) -> str:
            return "".join(f"\\x{b:02x}" for b in data)

        return (
            f":{self.name}:{self.kind}:{self.offset}:{esc(self.magic)}:{esc(self.mask)}:{self.interpreter}:{self.flags}"
        )

    def as_handler(self) -> Handler:
        return Handler(self.name, True, self.interpreter, self.flags, int(self.offset or 0), self.magic, self.mask)


def _unescape(text: str) -> bytes:
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")


def parse_registration(line: str) -> Registration:
    line = line.strip()
    sep = line[0]
    parts = line[1:].split(sep)
    if len(parts) < 7:
        raise ValueError(f"not a binfmt_misc registration: {line!r}")
    name, kind, offset, magic, mask, interpreter, flags = parts[:7]
    return Registration(name, kind, offset, _unescape(magic), _unescape(mask), interpreter, flags)


def find_registration(p: Platform, conf_dirs: Iterable[Path] = CONF_DIRS) -> Registration | None:
    """The qemu registration for ``p`` that the installed qemu-user-static ships."""
    qemu = ARCHES[p.arch].qemu
    for directory in conf_dirs:
        conf = directory / f"qemu-{qemu}.conf"
        if conf.is_file():
            for line in conf.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    reg = parse_registration(line)
                    flags = reg.flags if "F" in reg.flags else reg.flags + "F"
                    return dataclasses.replace(reg, flags=flags)
    for candidate in (f"/usr/bin/qemu-{qemu}-static", f"/usr/bin/qemu-{qemu}"):
        if os.path.exists(candidate):
            # no binfmt.d file: build the registration from the ELF header ourselves
            header = elf_header(p.arch)
            mask = bytearray(b"\xff" * 20)
            mask[7] = 0x00  # OS ABI
            mask[16] = 0xFE if header[5] == 1 else 0xFF  # e_type: ET_EXEC or ET_DYN
            mask[17] = 0xFF if header[5] == 1 else 0xFE
            return Registration(f"qemu-{qemu}", "M", "", header, bytes(mask), candidate, "OCF")
    return None


@dataclasses.dataclass(frozen=True)
class InstallResult:
    platform: Platform
    name: str
    action: str  # created | unchanged | replaced | failed
    detail: str = ""


def install(
    platforms: Iterable[Platform] | None = None,
    *,
    reset: bool = False,
    directory: Path | None = None,
    conf_dirs: Iterable[Path] = CONF_DIRS,
) -> list[InstallResult]:
    """Register qemu handlers with the F flag for every foreign platform. Idempotent."""
    directory = directory or _dir()
    host = host_platform()
    if platforms is None:
        platforms = [Platform("linux", a, "v7" if a == "arm" else None) for a in ARCHES]
    wanted = [p for p in platforms if not runs_natively(p, host)]
    mount(directory)
    results: list[InstallResult] = []
    for p in wanted:
        reg = find_registration(p, conf_dirs)
        if reg is None:
            results.append(
                InstallResult(
                    p,
                    "-",
                    "failed",
                    f"no qemu interpreter for {ARCHES[p.arch].qemu} installed (Debian package qemu-user-static)",
                )
            )
            continue
        if not os.path.exists(reg.interpreter):
            results.append(InstallResult(p, reg.name, "failed", f"interpreter {reg.interpreter} does not exist"))
            continue
        header = elf_header(p.arch)
        existing = [h for h in read_handlers(directory) if h.matches(header)]
        good = [h for h in existing if h.enabled and "F" in h.flags]
        if good and not reset:
            results.append(InstallResult(p, good[0].name, "unchanged", good[0].interpreter))
            continue
        if existing and not reset:
            h = existing[0]
            results.append(
                InstallResult(
                    p,
                    h.name,
                    "failed",
                    f"handler {h.name!r} is {'disabled' if not h.enabled else 'registered without the F flag'}; run with --reset to replace it",
                )
            )
            continue
        for h in existing:
            _write(directory / h.name, "-1")
        if (directory / reg.name).exists():  # same name, other arch match (unlikely)
            _write(directory / reg.name, "-1")
        _write(directory / "register", reg.line())
        results.append(InstallResult(p, reg.name, "replaced" if existing else "created", reg.interpreter))
    return results


def _write(path: Path, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise TaskimageError(f"cannot write {path}: {exc.strerror} (needs root or a privileged container)") from exc
