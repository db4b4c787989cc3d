"""The build information the Go linker embeds in every Go binary, read without running it.

Go (``debug/buildinfo``) keeps it in the ELF section ``.go.buildinfo``: a 32-byte header starting
with the magic ``\\xff Go buildinf:``, a pointer size byte and a flags byte. Since Go 1.18 (flag
bit 2) the Go version and the module information follow the header as two strings, each prefixed
by its length as an unsigned varint. Older binaries hold pointers into the data segment instead;
they are recognised and reported without modules (Go 1.17 is out of support since 2023).

The module information is text: ``path``, ``mod PATH VERSION SUM``, ``dep PATH VERSION SUM``,
``=> PATH VERSION SUM`` (a replacement of the line before) and ``build KEY=VALUE`` lines,
between two 16-byte sentinels.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

MAGIC = b"\xff Go buildinf:"
SECTION = b".go.buildinfo"
MAX_SECTION = 1 << 20


@dataclasses.dataclass(frozen=True)
class Module:
    path: str
    version: str
    sum: str = ""


@dataclasses.dataclass(frozen=True)
class BuildInfo:
    go_version: str
    path: str = ""  # the main package's import path
    main: Module | None = None
    deps: tuple[Module, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise ValueError("bad varint")


def _section(f, header: bytes) -> bytes | None:
    """The bytes of the ``.go.buildinfo`` section of an open ELF file, or None."""
    if header[:4] != b"\x7fELF":
        return None
    is64 = header[4] == 2
    end = "<" if header[5] == 1 else ">"
    if is64:
        (shoff,) = struct.unpack_from(end + "Q", header, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", header, 0x3A)
    else:
        (shoff,) = struct.unpack_from(end + "I", header, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", header, 0x2E)
    if not shoff or not shnum or shstrndx >= shnum or shnum > 4096:
        return None
    f.seek(shoff)
    table = f.read(shentsize * shnum)
    if len(table) < shentsize * shnum:
        return None

    def entry(i: int) -> tuple[int, int, int]:  # name offset, file offset, size
        off = i * shentsize
        if is64:
            name, _, _, _, offset, size = struct.unpack_from(end + "IIQQQQ", table, off)
        else:
            name, _, _, _, offset, size = struct.unpack_from(end + "IIIIII", table, off)
        return name, offset, size

    _, str_off, str_size = entry(shstrndx)
    f.seek(str_off)
    names = f.read(min(str_size, MAX_SECTION))
    for i in range(shnum):
        name, offset, size = entry(i)
        if names[name : name + len(SECTION) + 1] == SECTION + b"\0":
            f.seek(offset)
            return f.read(min(size, MAX_SECTION))
    return None


def read(path: str | Path) -> BuildInfo | None:
    """The build information of the Go binary at ``path``; None for anything else."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if len(header) < 64:
                return None
            data = _section(f, header)
    except (OSError, struct.error):
        return None
    if not data:
        return None
    start = data.find(MAGIC)
    if start < 0 or len(data) < start + 32:
        return None
    flags = data[start + 15]
    if not flags & 2:
        return BuildInfo(go_version="go1.17 or older (module information not read)")
    try:
        pos = start + 32
        n, pos = _uvarint(data, pos)
        version = data[pos : pos + n].decode(errors="replace")
        pos += n
        n, pos = _uvarint(data, pos)
        modinfo = data[pos : pos + n]
    except ValueError:
        return None
    if len(modinfo) >= 33 and modinfo[-17] == ord("\n"):
        modinfo = modinfo[16:-16]
    return parse_modinfo(version, modinfo.decode(errors="replace"))


def parse_modinfo(go_version: str, text: str) -> BuildInfo:
    path = ""
    main: Module | None = None
    deps: list[Module] = []
    settings: list[tuple[str, str]] = []
    for line in text.splitlines():
        fields = line.split("\t")
        kind = fields[0]
        if kind == "path" and len(fields) > 1:
            path = fields[1]
        elif kind in ("mod", "dep", "=>") and len(fields) >= 3:
            module = Module(fields[1], fields[2], fields[3] if len(fields) > 3 else "")
            if kind == "mod":
                main = module
            elif kind == "dep":
                deps.append(module)
            elif deps:
                deps[-1] = module  # the replacement is what was built
            else:
                main = module
        elif kind == "build" and len(fields) > 1:
            key, _, value = fields[1].partition("=")
            settings.append((key, value))
    return BuildInfo(go_version, path, main, tuple(deps), tuple(settings))
