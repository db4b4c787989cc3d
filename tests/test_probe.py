"""The per-architecture test binaries, run for real: natively, under qemu directly, and through
binfmt_misc — and the emulation check that relies on them where binfmt_misc cannot be read."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import need

from taskimage.emulation import binfmt, probe
from taskimage.errors import EmulationError
from taskimage.oci.platforms import ARCHES, normalize

ALL = [
    "linux/amd64",
    "linux/386",
    "linux/arm64",
    "linux/arm/v7",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
]


@pytest.mark.parametrize("platform", ALL)
def test_test_binary_is_right_for_its_architecture_under_qemu(tmp_path, platform):
    """Independent of binfmt_misc: qemu-<arch>-static itself runs the binary and gets 42."""
    p = normalize(platform)
    qemu = shutil.which(f"qemu-{ARCHES[p.arch].qemu}-static")
    need(qemu is not None, f"qemu-{ARCHES[p.arch].qemu}-static is not installed")
    path = tmp_path / "t"
    path.write_bytes(probe.elf(p.arch))
    path.chmod(0o755)
    assert subprocess.run([qemu, str(path)]).returncode == probe.EXIT_CODE


@pytest.mark.emulation
@pytest.mark.parametrize("platform", ALL)
def test_test_binary_runs_through_binfmt(platform):
    from conftest import emulation_ready

    ok, why = emulation_ready((platform,)) if platform not in ("linux/amd64", "linux/386") else (True, "")
    need(ok, why)
    assert probe.run(normalize(platform)) is None


@pytest.mark.emulation
def test_unreadable_binfmt_falls_back_to_the_test_binary(tmp_path, monkeypatch):
    """As in an unprivileged build container: binfmt_misc is not mounted and cannot be."""
    from conftest import emulation_ready

    ok, why = emulation_ready(("linux/arm64", "linux/s390x"))
    need(ok, why)
    monkeypatch.setenv("TASKIMAGE_BINFMT_DIR", str(tmp_path / "not-a-mount-point"))
    statuses = binfmt.preflight([normalize("linux/arm64"), normalize("linux/s390x")])
    assert [s.how for s in statuses] == ["a test binary ran (binfmt_misc is not readable here)"] * 2


@pytest.fixture
def riscv64_disabled():
    """Disable the real riscv64 handler for one test (no other test builds riscv64)."""
    entry = [h for h in binfmt.read_handlers() if h.matches(probe.elf("riscv64")[:20])] if binfmt.is_mounted() else []
    need(bool(entry) and os.geteuid() == 0, "needs root and a registered riscv64 handler")
    path = Path(binfmt.BINFMT_DIR) / entry[0].name
    path.write_text("0")
    try:
        yield entry[0].name
    finally:
        path.write_text("1")


@pytest.mark.emulation
def test_disabled_handler_is_caught_both_ways(tmp_path, monkeypatch, riscv64_disabled):
    rv = [normalize("linux/riscv64")]
    with pytest.raises(EmulationError, match=rf"linux/riscv64: binfmt_misc handler '{riscv64_disabled}' is disabled"):
        binfmt.preflight(rv)
    monkeypatch.setenv("TASKIMAGE_BINFMT_DIR", str(tmp_path / "not-a-mount-point"))
    with pytest.raises(
        EmulationError,
        match=r"linux/riscv64: a riscv64 test binary cannot run here \(Exec format error\); "
        r"binfmt_misc cannot be read here",
    ):
        binfmt.preflight(rv)
