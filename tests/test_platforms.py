import pytest

from taskimage.errors import UsageError
from taskimage.oci.platforms import ARCHES, Platform, arch_of_elf, elf_header, normalize, parse_platforms, runs_natively


@pytest.mark.parametrize(
    "given, expected",
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/x86-64", "linux/amd64"),
        ("x86_64", "linux/amd64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("LINUX/ARM64", "linux/arm64"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/v7", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("linux/386", "linux/386"),
        ("linux/ppc64le", "linux/ppc64le"),
        ("linux/s390x", "linux/s390x"),
        ("linux/riscv64", "linux/riscv64"),
        (" linux/arm64 ", "linux/arm64"),
    ],
)
def test_normalize(given, expected):
    assert str(normalize(given)) == expected


@pytest.mark.parametrize(
    "given, message",
    [
        ("linux/sparc", "--platform: unknown platform 'linux/sparc'; accepted: linux/amd64"),
        ("windows/amd64", "--platform: unsupported platform 'windows/amd64': only linux images can be built"),
        ("linux/arm/v9", "--platform: invalid variant in platform 'linux/arm/v9'"),
        ("linux//arm64", "--platform: invalid platform 'linux//arm64': expected OS/ARCH[/VARIANT]"),
        ("linux/arm64/v8/x", "--platform: invalid platform 'linux/arm64/v8/x'"),
        ("linux/armhf/v6", "--platform: invalid platform 'linux/armhf/v6': armhf means arm/v7"),
    ],
)
def test_normalize_rejects(given, message):
    with pytest.raises(UsageError) as err:
        normalize(given)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_parse_platforms_flattens_commas_positional_and_ignores_empty_tekton_element():
    got = parse_platforms(["linux/amd64,linux/arm64", "", "linux/s390x", " "])
    assert [str(p) for p in got] == ["linux/amd64", "linux/arm64", "linux/s390x"]


def test_duplicates_after_normalization_are_an_error():
    with pytest.raises(
        UsageError, match=r"duplicate platform 'linux/x86_64' \(same as 'linux/amd64', both mean linux/amd64\)"
    ):
        parse_platforms(["linux/amd64", "linux/x86_64"])
    with pytest.raises(UsageError, match="duplicate platform 'linux/arm64/v8'"):
        parse_platforms(["linux/arm64", "linux/arm64/v8"], source="PLATFORMS")


def test_source_named_in_errors():
    with pytest.raises(UsageError, match=r"^PLATFORMS: unknown platform 'linux/foo'"):
        parse_platforms(["linux/foo"], source="PLATFORMS")


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_elf_header_round_trip(arch):
    assert arch_of_elf(elf_header(arch)) == arch


def test_arch_of_elf_rejects_non_elf():
    assert arch_of_elf(b"#!/bin/sh\n" + bytes(20)) is None
    assert arch_of_elf(b"\x7fELF") is None


def test_runs_natively():
    amd64 = Platform("linux", "amd64")
    assert runs_natively(Platform("linux", "amd64"), amd64)
    assert runs_natively(Platform("linux", "386"), amd64)
    assert not runs_natively(Platform("linux", "arm64"), amd64)
    assert not runs_natively(Platform("linux", "arm", "v7"), amd64)


def test_matches_config_normalizes():
    p = normalize("linux/arm64")
    assert p.matches_config("linux", "arm64", "v8")
    assert p.matches_config("linux", "aarch64", None)
    assert not p.matches_config("linux", "amd64", None)
    assert normalize("linux/arm/v7").matches_config("linux", "arm", None)
    assert not normalize("linux/arm/v6").matches_config("linux", "arm", "v7")
