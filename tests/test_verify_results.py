import os

from taskimage.build import results, verify
from taskimage.oci.platforms import elf_header


def rootfs(tmp_path, files):
    root = tmp_path / "root"
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("->"):
            os.symlink(content[2:], path)
        else:
            path.write_bytes(content)
    return root


def test_bin_sh_decides_following_absolute_symlinks(tmp_path):
    root = rootfs(
        tmp_path,
        {
            "bin/busybox": elf_header("arm64") + bytes(100),
            "bin/sh": "->/bin/busybox",
            "usr/bin/a": elf_header("amd64") + bytes(10),
            "usr/bin/b": elf_header("amd64") + bytes(10),
        },
    )
    v = verify.elf_arch(root)
    assert (v.arch, v.evidence) == ("arm64", "bin/sh")


def test_majority_without_shell(tmp_path):
    root = rootfs(
        tmp_path,
        {
            "app": elf_header("s390x") + bytes(10),
            "usr/local/bin/x": elf_header("s390x") + bytes(5),
            "usr/local/bin/y": elf_header("amd64") + bytes(5),
            "data.txt": b"hello",
        },
    )
    assert verify.elf_arch(root).arch == "s390x"


def test_no_elf(tmp_path):
    root = rootfs(tmp_path, {"index.html": b"<html>"})
    assert verify.elf_arch(root).arch is None


def test_symlink_escaping_root_is_ignored(tmp_path):
    root = rootfs(tmp_path, {"bin/sh": "->../../../../etc/passwd", "bin/x": elf_header("ppc64le") + bytes(4)})
    assert verify.elf_arch(root).arch == "ppc64le"


def test_results_written_atomically_without_newline(tmp_path):
    results.write(tmp_path, {"IMAGE_DIGEST": "sha256:abc\n", "IMAGE_URL": "r/a:1"})
    assert (tmp_path / "IMAGE_DIGEST").read_text() == "sha256:abc"
    assert (tmp_path / "IMAGE_URL").read_text() == "r/a:1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMAGE_DIGEST", "IMAGE_URL"]  # no temp files left


def test_results_budget():
    assert results.size({"IMAGES": "x" * 5000}) > results.BUDGET
