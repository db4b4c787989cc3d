import os
import subprocess
import sys

import pytest
from conftest import emulation_ready, have_tools, need

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


def test_a_directory_link_is_followed_inside_the_image_never_on_the_host(tmp_path):
    """/bin -> /usr/bin (absolute, merged-usr): a lookup that let the OS follow it read the host's
    /usr/bin/sh (this machine's amd64) instead of the image's arm64 shell."""
    root = rootfs(
        tmp_path,
        {"bin": "->/usr/bin", "usr/bin/busybox": elf_header("arm64") + bytes(100), "usr/bin/sh": "->busybox"},
    )
    assert os.path.exists("/usr/bin/sh") or os.path.exists("/bin/sh")  # the host file the old lookup read
    v = verify.elf_arch(root)
    assert (v.arch, v.evidence) == ("arm64", "bin/sh")


def test_every_component_resolves_inside_the_root(tmp_path):
    root = rootfs(
        tmp_path,
        {
            "usr/lib/x/real": elf_header("s390x"),
            "lib": "->usr/lib",  # relative
            "usr/bin/up": "->../../../../../lib/x/real",  # ".." clamps at the image's root
            "opt/abs": "->/lib/x/../x/real",
            "loop/a": "->/loop/b",
            "loop/b": "->/loop/a",
            "escape": "->/etc",  # the host's /etc exists; the image's does not
        },
    )
    assert verify.resolve(root, "lib/x/real") == root / "usr/lib/x/real"
    assert verify.resolve(root, "usr/bin/up") == root / "usr/lib/x/real"
    assert verify.resolve(root, "opt/abs") == root / "usr/lib/x/real"
    assert verify.resolve(root, "/../../lib/x/real") == root / "usr/lib/x/real"
    assert verify.resolve(root, "loop/a") is None  # a loop ends at the link limit
    assert verify.resolve(root, "escape/passwd") is None
    assert verify.resolve(root, "usr/lib/x/real/more") is None  # a file is no directory


def test_results_written_atomically_without_newline(tmp_path):
    results.write(tmp_path, {"IMAGE_DIGEST": "sha256:abc\n", "IMAGE_URL": "r/a:1"})
    assert (tmp_path / "IMAGE_DIGEST").read_text() == "sha256:abc"
    assert (tmp_path / "IMAGE_URL").read_text() == "r/a:1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMAGE_DIGEST", "IMAGE_URL"]  # no temp files left


def test_results_budget():
    assert results.size({"IMAGES": "x" * 5000}) > results.BUDGET


@pytest.mark.emulation
def test_arm64_image_with_bin_linked_absolutely_to_usr_bin_passes_the_check(tmp_path, registry, busybox_base):
    """A real arm64 build whose /bin is `-> /usr/bin`: the check reads the image's arm64 busybox."""
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM {busybox_base}\n"
        "RUN mkdir -p /usr/bin && cp -a /bin/. /usr/bin/ && /usr/bin/busybox rm -rf /bin && /usr/bin/busybox ln -s /usr/bin /bin\n"
    )
    env = dict(
        os.environ,
        TASKIMAGE_ROOT=str(tmp_path / "root"),
        TASKIMAGE_RUNROOT=str(tmp_path / "run"),
        TASKIMAGE_TLSVERIFY="false",
    )
    image = f"{registry.host}/verify/merged-usr:1"
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", "build", "--image", image, "--context", str(ctx), "linux/arm64"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "executables are arm64: bin/sh" in proc.stderr
    link = subprocess.run(
        ["skopeo", "inspect", "--override-arch", "arm64", "--tls-verify=false", "--config", f"docker://{image}"],
        capture_output=True,
        text=True,
    )
    assert '"architecture": "arm64"' in link.stdout
