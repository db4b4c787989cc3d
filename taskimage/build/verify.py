"""Is a built image really of the architecture it claims?

buildah happily builds ``--platform linux/arm64`` FROM an amd64-only base image and labels the
result arm64 although every binary in it is x86_64. The image config cannot tell; the ELF
headers of its executables can. We read them from the mounted image.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path

from taskimage.oci.platforms import arch_of_elf

SEARCH_DIRS = ("bin", "usr/bin", "sbin", "usr/sbin", "usr/local/bin", "")
PREFERRED = ("bin/sh", "usr/bin/env", "bin/busybox", "usr/bin/python3")
MAX_FILES = 300


@dataclasses.dataclass(frozen=True)
class ElfVerdict:
    arch: str | None  # the architecture the image's executables are built for; None: no ELF found
    evidence: str  # which file(s) decided
    counts: dict


def _resolve(root: Path, relative: str, hops: int = 16) -> Path | None:
    """Follow symlinks inside ``root`` (absolute links are relative to the image's root)."""
    current = relative.strip("/")
    for _ in range(hops):
        path = root / current
        if path.is_symlink():
            target = os.readlink(path)
            current = (
                target.lstrip("/")
                if target.startswith("/")
                else os.path.normpath(os.path.join(os.path.dirname(current), target))
            )
            if current.startswith(".."):
                return None
            continue
        return path if path.is_file() else None
    return None


def _header(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(20)
    except OSError:
        return b""


def elf_arch(root: str | os.PathLike) -> ElfVerdict:
    """Decide the architecture of a root file system from its executables."""
    root = Path(root)
    for candidate in PREFERRED:
        path = _resolve(root, candidate)
        if path is not None:
            arch = arch_of_elf(_header(path))
            if arch:
                return ElfVerdict(arch, candidate, {arch: 1})
    counts: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    seen = 0
    for directory in SEARCH_DIRS:
        base = root / directory
        if not base.is_dir() or base.is_symlink():
            continue
        for entry in sorted(base.iterdir()):
            if seen >= MAX_FILES:
                break
            if entry.is_symlink() or not entry.is_file():
                continue
            seen += 1
            arch = arch_of_elf(_header(entry))
            if arch:
                counts[arch] += 1
                examples.setdefault(arch, str(entry.relative_to(root)))
    if not counts:
        return ElfVerdict(None, "no ELF executables found", {})
    arch, _ = counts.most_common(1)[0]
    return ElfVerdict(arch, examples[arch], dict(counts))
