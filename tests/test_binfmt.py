"""binfmt_misc handling. The parsing and decision logic is checked on handler files in the
kernel's own format (copied layout of /proc/sys/fs/binfmt_misc); the real kernel state is read
in the tests marked `emulation`."""

import pytest

from taskimage.emulation import binfmt
from taskimage.errors import EmulationError
from taskimage.oci.platforms import Platform, elf_header, normalize

AARCH64 = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: {flags}
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""
AMD64 = Platform("linux", "amd64")


def fake_dir(tmp_path, **handlers):
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    (d / "register").write_text("")
    (d / "status").write_text("enabled\n")
    for name, text in handlers.items():
        (d / name.replace("_", "-")).write_text(text)
    return d


def test_handler_matches_by_magic_not_name(tmp_path):
    d = fake_dir(tmp_path, some_other_name=AARCH64.format(flags="F"))
    [status] = binfmt.check([normalize("linux/arm64")], d, host=AMD64)
    assert status.ok and status.handler.name == "some-other-name"


def test_missing_handler_named_with_fix(tmp_path):
    d = fake_dir(tmp_path, qemu_aarch64=AARCH64.format(flags="F"))
    with pytest.raises(EmulationError) as err:
        binfmt.preflight([normalize(p) for p in ("linux/amd64", "linux/arm64", "linux/s390x", "linux/arm/v7")], d)
    msg = str(err.value)
    assert msg.startswith(
        "emulation missing for 2 platform(s): linux/s390x: no binfmt_misc handler for s390x binaries; "
        "linux/arm/v7: no binfmt_misc handler for arm binaries. Fix:"
    )
    assert "taskimage binfmt install" in msg and "binfmt-daemonset.yaml" in msg
    assert err.value.exit_code == 3


def test_handler_without_f_flag_is_not_enough(tmp_path):
    d = fake_dir(tmp_path, qemu_aarch64=AARCH64.format(flags="P"))
    [s] = binfmt.check([normalize("linux/arm64")], d, host=AMD64)
    assert not s.ok and "lacks the F flag" in s.problem and "--reset" in s.problem


def test_disabled_handler(tmp_path):
    d = fake_dir(tmp_path, qemu_aarch64=AARCH64.format(flags="F").replace("enabled", "disabled"))
    [s] = binfmt.check([normalize("linux/arm64")], d, host=AMD64)
    assert s.problem == "binfmt_misc handler 'qemu-aarch64' is disabled"


def test_native_platforms_need_nothing(tmp_path):
    d = fake_dir(tmp_path)
    assert all(
        s.ok and s.native for s in binfmt.check([normalize("linux/amd64"), normalize("linux/386")], d, host=AMD64)
    )


def test_registration_line_round_trip():
    line = r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OCF"
    reg = binfmt.parse_registration(line)
    assert reg.line() == line
    assert reg.as_handler().matches(elf_header("arm64"))
    assert not reg.as_handler().matches(elf_header("amd64"))


@pytest.mark.parametrize("arch", ["arm64", "arm", "s390x", "ppc64le", "riscv64"])
def test_shipped_registrations_match_their_arch(arch):
    from conftest import need

    p = Platform("linux", arch, "v7" if arch == "arm" else None)
    reg = binfmt.find_registration(p)
    need(reg is not None, "qemu-user-static is not installed")
    assert "F" in reg.flags
    assert reg.as_handler().matches(elf_header(arch))
    others = [a for a in ("amd64", "arm64", "arm", "s390x", "ppc64le", "riscv64") if a != arch]
    assert not any(reg.as_handler().matches(elf_header(o)) for o in others)


@pytest.mark.emulation
def test_real_kernel_state_after_install():
    """`taskimage binfmt install` is idempotent on the real kernel: a second run changes nothing."""
    from conftest import need

    need(binfmt.is_mounted(), "binfmt_misc is not mounted")
    results = binfmt.install([normalize("linux/arm64"), normalize("linux/s390x")])
    assert all(r.action in ("created", "unchanged") for r in results), results
    again = binfmt.install([normalize("linux/arm64"), normalize("linux/s390x")])
    assert [r.action for r in again] == ["unchanged", "unchanged"]
    assert all(s.ok for s in binfmt.check([normalize("linux/arm64"), normalize("linux/s390x")]))
