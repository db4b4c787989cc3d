"""Platform strings: parsing and normalization the way containerd does it.

``linux/x86_64`` → ``linux/amd64``, ``aarch64`` → ``arm64`` (``arm64/v8`` accepted and shown as
``linux/arm64``), ``armhf`` → ``arm/v7``, ``armel`` → ``arm/v6``, ``i386`` → ``386``.
"""

from __future__ import annotations

import dataclasses
import platform as _platform
from collections.abc import Iterable
from typing import Literal

from taskimage.errors import UsageError


@dataclasses.dataclass(frozen=True)
class ArchInfo:
    """How an architecture's ELF binaries look, and what qemu calls it."""

    elf_class: int  # 1 = 32-bit, 2 = 64-bit
    elf_data: int  # 1 = little endian, 2 = big endian
    elf_machine: int  # e_machine
    qemu: str  # qemu-user target name (qemu-<name>-static)
    uname: str  # what `uname -m` prints under it


ARCHES: dict[str, ArchInfo] = {
    "amd64": ArchInfo(2, 1, 62, "x86_64", "x86_64"),
    "arm64": ArchInfo(2, 1, 183, "aarch64", "aarch64"),
    "arm": ArchInfo(1, 1, 40, "arm", "armv7l"),
    "386": ArchInfo(1, 1, 3, "i386", "i686"),
    "ppc64le": ArchInfo(2, 1, 21, "ppc64le", "ppc64le"),
    "s390x": ArchInfo(2, 2, 22, "s390x", "s390x"),
    "riscv64": ArchInfo(2, 1, 243, "riscv64", "riscv64"),
    "mips64le": ArchInfo(2, 1, 8, "mips64el", "mips64"),
}

# Accepted spellings of an architecture (lower-cased) → (arch, variant or None for "default").
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "amd64": ("amd64", None),
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "arm64": ("arm64", None),
    "aarch64": ("arm64", None),
    "arm": ("arm", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "386": ("386", None),
    "i386": ("386", None),
    "i686": ("386", None),
    "x86": ("386", None),
    "ppc64le": ("ppc64le", None),
    "ppc64el": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "mips64le": ("mips64le", None),
    "mips64el": ("mips64le", None),
}

# Variants each architecture accepts, and the default (containerd's normalization).
_VARIANTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "arm64": (("v8", "v9"), None),  # arm64/v8 is the default and is shown without variant
    "arm": (("v5", "v6", "v7", "v8"), "v7"),
    "amd64": (("v1", "v2", "v3", "v4"), None),
}

ACCEPTED = (
    "linux/amd64 (x86_64), linux/arm64 (aarch64, arm64/v8), linux/arm/v7 (armhf), "
    "linux/arm/v6 (armel), linux/386 (i386), linux/ppc64le, linux/s390x, linux/riscv64, "
    "linux/mips64le"
)


@dataclasses.dataclass(frozen=True, order=True)
class Platform:
    os: str
    arch: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.arch, self.variant) if p)

    @property
    def info(self) -> ArchInfo:
        return ARCHES[self.arch]

    @property
    def slug(self) -> str:
        """A tag- and file-name-safe form: ``linux-arm-v7``."""
        return str(self).replace("/", "-")

    def matches_config(self, os_: str | None, arch: str | None, variant: str | None) -> bool:
        """Does an image config's os/architecture/variant describe this platform?"""
        if (os_ or "") != self.os:
            return False
        try:
            other = normalize(f"{os_}/{arch}" + (f"/{variant}" if variant else ""), source="config")
        except UsageError:
            return False
        return other == self


def normalize(value: str, *, source: str = "--platform") -> Platform:
    """Parse one platform string; raise :class:`UsageError` naming ``source`` and the value."""
    raw = value
    value = value.strip().lower()
    parts = value.split("/")
    if not value or len(parts) > 3 or any(not p for p in parts):
        raise UsageError(f"{source}: invalid platform {raw!r}: expected OS/ARCH[/VARIANT]; accepted: {ACCEPTED}")
    if len(parts) == 1:  # a bare architecture, e.g. "arm64"
        parts = ["linux", parts[0]]
    os_, arch_word = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else None
    if os_ != "linux":
        raise UsageError(
            f"{source}: unsupported platform {raw!r}: only linux images can be built; accepted: {ACCEPTED}"
        )
    if arch_word not in _ARCH_ALIASES:
        raise UsageError(f"{source}: unknown platform {raw!r}; accepted: {ACCEPTED}")
    arch, implied_variant = _ARCH_ALIASES[arch_word]
    if variant and implied_variant and variant != implied_variant:
        raise UsageError(f"{source}: invalid platform {raw!r}: {arch_word} means {arch}/{implied_variant}")
    variant = variant or implied_variant
    allowed, default = _VARIANTS.get(arch, ((), None))
    if variant is not None and variant not in allowed:
        raise UsageError(f"{source}: invalid variant in platform {raw!r}; accepted: {ACCEPTED}")
    if arch == "arm64" and variant == "v8":
        variant = None
    if arch == "amd64" and variant == "v1":
        variant = None
    if variant is None:
        variant = default
    return Platform(os_, arch, variant)


def split_values(values: Iterable[str]) -> list[str]:
    """Flatten repeated flags, comma lists and positional args; drop empty items.

    Tekton hands an array param over as separate args; an array default of ``[""]`` gives one
    empty arg, which is ignored.
    """
    items: list[str] = []
    for value in values:
        for item in (value or "").replace("\n", ",").split(","):
            item = item.strip()
            if item:
                items.append(item)
    return items


def parse_platforms(values: Iterable[str], *, source: str = "--platform") -> list[Platform]:
    """Parse a list of platform values; duplicates after normalization are an error."""
    result: list[Platform] = []
    seen: dict[Platform, str] = {}
    for item in split_values(values):
        p = normalize(item, source=source)
        if p in seen:
            raise UsageError(f"{source}: duplicate platform {item!r} (same as {seen[p]!r}, both mean {p})")
        seen[p] = item
        result.append(p)
    return result


def host_platform() -> Platform:
    machine = _platform.machine().lower()
    if machine.startswith("armv7") or machine.startswith("armv8l"):
        return Platform("linux", "arm", "v7")
    if machine.startswith("armv6"):
        return Platform("linux", "arm", "v6")
    return normalize(machine, source="host")


def runs_natively(p: Platform, host: Platform | None = None) -> bool:
    """Can this host run ``p``'s binaries without emulation?"""
    host = host or host_platform()
    if p.arch == host.arch:
        return True
    return (host.arch, p.arch) in {("amd64", "386")}


def elf_header(arch: str) -> bytes:
    """The first 20 bytes of an ELF executable for ``arch`` (what binfmt_misc matches)."""
    info = ARCHES[arch]
    order: Literal["little", "big"] = "little" if info.elf_data == 1 else "big"
    ident = b"\x7fELF" + bytes([info.elf_class, info.elf_data, 1, 0]) + bytes(8)
    return ident + (2).to_bytes(2, order) + info.elf_machine.to_bytes(2, order)


def arch_of_elf(header: bytes) -> str | None:
    """The architecture an ELF header belongs to, or None if it is not ELF / not known."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    elf_class, elf_data = header[4], header[5]
    order: Literal["little", "big"] = "little" if elf_data == 1 else "big"
    machine = int.from_bytes(header[18:20], order)
    for arch, info in ARCHES.items():
        if (info.elf_class, info.elf_data, info.elf_machine) == (elf_class, elf_data, machine):
            return arch
    return f"unknown(e_machine={machine})"
