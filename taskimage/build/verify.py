"""Is a built image really of the architecture it claims?

buildah happily builds ``--platform linux/arm64`` FROM an amd64-only base image and labels the
result arm64 although every binary in it is x86_64. The image config cannot tell; the ELF
headers of its executables can. We read them from the mounted image.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import stat
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


MAX_LINKS = 40  # Linux's limit on symlinks followed in one lookup


def resolve(root: Path, relative: str, max_links: int = MAX_LINKS) -> Path | None:
    """``relative`` looked up as a process chrooted to ``root`` would: every component's symlink
    followed inside ``root`` (absolute targets from ``root``, ``..`` never above it), nothing on
    the host ever read. None if a component is missing or there are more than ``max_links`` links."""
    todo = [p for p in relative.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        try:
            st = os.lstat(candidate)  # every earlier component is a real directory under root
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            return None
        done.append(part)
    return root.joinpath(*done)


def _regular_file(root: Path, relative: str) -> Path | None:
    path = resolve(root, relative)
    return path if path is not None and stat.S_ISREG(os.lstat(path).st_mode) else None


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
        path = _regular_file(root, candidate)
        if path is not None:
            arch = arch_of_elf(_header(path))
            if arch:
                return ElfVerdict(arch, candidate, {arch: 1})
    counts: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    seen = 0
    walked: set[Path] = set()
    for directory in SEARCH_DIRS:
        base = resolve(root, directory) if directory else root
        if base is None or base in walked or not stat.S_ISDIR(os.lstat(base).st_mode):
            continue  # missing, or a link to a directory already counted (/bin -> /usr/bin)
        walked.add(base)
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if seen >= MAX_FILES:
                break
            if not entry.is_file(follow_symlinks=False):
                continue
            seen += 1
            arch = arch_of_elf(_header(Path(entry.path)))
            if arch:
                counts[arch] += 1
                examples.setdefault(arch, os.path.relpath(entry.path, root))
    if not counts:
        return ElfVerdict(None, "no ELF executables found", {})
    arch, _ = counts.most_common(1)[0]
    return ElfVerdict(arch, examples[arch], dict(counts))
