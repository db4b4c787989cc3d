"""Tiny static ELF executables, one per architecture, that only ``exit(42)``.

Running one proves that this kernel can execute that architecture's binaries here — natively or
through a binfmt_misc handler with the F flag — even where binfmt_misc itself cannot be read (an
unprivileged build container, where mounting it is denied). The machine code is a few
instructions per architecture, assembled by hand; the ELF header and one PT_LOAD program header
are built here.
"""

from __future__ import annotations

import os
import struct
import tempfile

from taskimage import proc as tools
from taskimage.oci.platforms import ARCHES, Platform

EXIT_CODE = 42
BASE = 0x400000

# (machine code, e_flags). Each sets the exit status to 42 and calls exit.
_CODE: dict[str, tuple[bytes, int]] = {
    # mov edi,42; mov eax,60 (exit); syscall
    "amd64": (bytes.fromhex("bf2a000000b83c0000000f05"), 0),
    # mov ebx,42; mov eax,1 (exit); int 0x80
    "386": (bytes.fromhex("bb2a000000b801000000cd80"), 0),
    # movz x0,#42; movz x8,#93 (exit); svc #0
    "arm64": (struct.pack("<3I", 0xD2800540, 0xD2800BA8, 0xD4000001), 0),
    # mov r0,#42; mov r7,#1 (exit); svc #0 — EABI version 5
    "arm": (struct.pack("<3I", 0xE3A0002A, 0xE3A07001, 0xEF000000), 0x05000000),
    # li r3,42; li r0,1 (exit); sc — ELFv2 ABI
    "ppc64le": (struct.pack("<3I", 0x3860002A, 0x38000001, 0x44000002), 2),
    # lghi %r2,42; svc 1 (exit)
    "s390x": (bytes.fromhex("a729002a0a01"), 0),
    # li a0,42; li a7,93 (exit); ecall
    "riscv64": (struct.pack("<3I", 0x02A00513, 0x05D00893, 0x00000073), 0),
    # li a0,42; li v0,5058 (n64 exit); syscall
    "mips64le": (struct.pack("<3I", 0x2404002A, 0x240213C2, 0x0000000C), 0x80000007),
}


def elf(arch: str) -> bytes:
    """A complete static executable for ``arch`` that exits with status 42."""
    info = ARCHES[arch]
    code, flags = _CODE[arch]
    e = "<" if info.elf_data == 1 else ">"
    ident = b"\x7fELF" + bytes([info.elf_class, info.elf_data, 1, 0]) + bytes(8)
    if info.elf_class == 2:
        ehsize, phsize = 64, 56
        offset = ehsize + phsize
        total = offset + len(code)
        header = ident + struct.pack(
            e + "HHIQQQIHHHHHH", 2, info.elf_machine, 1, BASE + offset, ehsize, 0, flags, ehsize, phsize, 1, 0, 0, 0
        )
        phdr = struct.pack(e + "IIQQQQQQ", 1, 5, 0, BASE, BASE, total, total, 0x1000)
    else:
        ehsize, phsize = 52, 32
        offset = ehsize + phsize
        total = offset + len(code)
        header = ident + struct.pack(
            e + "HHIIIIIHHHHHH", 2, info.elf_machine, 1, BASE + offset, ehsize, 0, flags, ehsize, phsize, 1, 0, 0, 0
        )
        phdr = struct.pack(e + "IIIIIIII", 1, 0, BASE, BASE, total, total, 5, 0x1000)
    return header + phdr + code


def run(p: Platform, directory: str | None = None) -> str | None:
    """Execute ``p``'s test binary here; None when it ran (exit 42), else why not."""
    fd, path = tempfile.mkstemp(prefix=f"taskimage-probe-{p.arch}-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(elf(p.arch))
        os.chmod(path, 0o755)
        try:
            result = tools.run([path], quiet=True, stream=False, check=False, timeout=20, what=f"{p.arch} test binary")
        except Exception as exc:  # ENOEXEC and friends surface from the spawn itself
            return f"a {p.arch} test binary cannot run here ({_reason(exc)})"
        if result.returncode == EXIT_CODE:
            return None
        detail = (result.stdout + result.stderr).strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        return f"a {p.arch} test binary did not run here ({detail[0]})"
    finally:
        os.unlink(path)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    for line in text:
        if "format error" in line.lower():
            return "Exec format error"
    return text[-1] if text else type(exc).__name__
