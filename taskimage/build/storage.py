"""Choosing the container storage driver: overlay where it works, vfs otherwise, with a reason.

overlay shares layers between steps and images (fast, small); vfs copies every layer (slow,
about n-times the disk) but works anywhere. overlay cannot sit on top of another overlay
(a container's own root file system), so a pod without a storage volume gets vfs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from taskimage import proc as tools
from taskimage.errors import ToolError

DEFAULT_ROOT = "/var/lib/containers/storage"


def mount_fstype(path: str) -> str:
    """The file-system type of the mount holding ``path`` (from /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    best, fstype = "", "unknown"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return fstype
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5:
            continue
        mountpoint = fields[4].replace("\\040", " ")
        if (path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")) and len(mountpoint) >= len(best):
            best, fstype = mountpoint, right.split()[0]
    return fstype


def _existing_driver(root: str) -> str | None:
    for driver in ("overlay", "vfs"):
        if (Path(root) / f"{driver}-layers").is_dir() or (Path(root) / f"{driver}-images").is_dir():
            return driver
    return None


def _overlay_probe(root: str) -> str | None:
    """Try a real overlay mount next to the storage; None on success, else the reason."""
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=base))
    try:
        for d in ("lower", "upper", "work", "merged"):
            (tmp / d).mkdir()
        opts = f"lowerdir={tmp / 'lower'},upperdir={tmp / 'upper'},workdir={tmp / 'work'}"
        try:
            tools.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(tmp / "merged")], quiet=True, stream=False)
        except ToolError as exc:
            return "a test overlay mount failed: " + (exc.tail[-1] if exc.tail else str(exc))
        tools.run(["umount", str(tmp / "merged")], quiet=True, stream=False, check=False)
        return None
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def choose(requested: str, root: str | None) -> tuple[str, str]:
    """(driver, reason). ``requested`` is auto, overlay or vfs."""
    root = root or DEFAULT_ROOT
    if requested != "auto":
        return requested, f"{requested} was requested"
    existing = _existing_driver(root)
    if existing:
        return existing, f"the storage at {root} already uses {existing}"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "vfs", "this kernel has no overlay file system"
    fstype = mount_fstype(root)
    if fstype == "overlay":
        return "vfs", f"{root} is on an overlay file system (mount a volume at /var/lib/containers for overlay)"
    reason = _overlay_probe(root)
    if reason:
        return "vfs", reason
    return "overlay", f"{root} is on {fstype} and a test overlay mount worked"
