"""A source tree as an OCI artifact: pushed once after the clone, pulled by digest by every TaskRun.

What makes a matrix Pipeline work without a shared volume (issue 18): each TaskRun pulls the
source into its own emptyDir, by digest, so every platform builds exactly the same bytes.

The artifact is one OCI image manifest (``artifactType`` :data:`ARTIFACT_TYPE`), the empty
config ``{}`` and a single gzip tar layer. The layer is deterministic, so the same tree gives
the same digest on any machine: entries in sorted order, mtime 0, uid/gid 0 and no owner names,
permission bits kept, no ``.`` entry, a fixed gzip header (no name, mtime 0). Directories,
regular files and symlinks are kept; ``.git`` (at any depth: submodules have one too) is left out
unless asked for; hard links become separate files; a symlink that leads out of the tree,
device nodes, fifos and sockets are refused at push, before anything is sent.

Pulling refuses a reference without a digest, checks the manifest's digest, the layer's digest
and the artifact type, then checks every archive entry before it writes the first one: no
absolute path, no ``..`` leaving the directory, no symlink (or chain of them) leading out, no
hard link to anything but an earlier file, no device, no entry written through a symlink out
of the directory. Extraction then runs with tarfile's ``data`` filter as a second fence.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import TaskimageError, ToolError, UsageError
from taskimage.oci import expiry, registry
from taskimage.oci.reference import ImageReference, parse_image

ARTIFACT_TYPE = "application/vnd.taskimage.source.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TITLE = "source.tar.gz"
EXPIRES_ANNOTATION = expiry.EXPIRES_LABEL  # what Quay reads (and Konflux's trusted artifacts set)
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_MAX_LINK_HOPS = 40  # as Linux's MAXSYMLINKS


class ArchiveRefused(TaskimageError):
    """An artifact's archive would write outside the target directory (or holds a device)."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- packing --------------------------------------------------------------------------------


def _walk(root: Path, include_git: bool) -> Iterator[tuple[str, os.stat_result]]:
    """(archive name, lstat) of every entry below ``root``, depth first, children sorted by name."""

    def visit(directory: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise UsageError(f"source push: cannot read {directory}: {exc.strerror}") from None
        for name in names:
            if name == ".git" and not include_git:
                continue
            path = directory / name
            st = os.lstat(path)
            archive_name = f"{prefix}{name}"
            yield archive_name, st
            if stat.S_ISDIR(st.st_mode):
                yield from visit(path, archive_name + "/")

    yield from visit(root, "")


def _tarinfo(root: Path, name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(st.st_mode):
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(root / name)
    else:
        kind = {stat.S_IFIFO: "a fifo", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}
        raise UsageError(
            f"source push: {root / name} is {kind.get(stat.S_IFMT(st.st_mode), 'a special file')}; "
            "only directories, regular files and symlinks can be pushed"
        )
    return info


def pack(directory: Path, out_path: Path, *, include_git: bool = False) -> tuple[str, int, int]:
    """Write ``directory`` as a deterministic gzip tar to ``out_path``.

    Returns (layer digest, layer size, number of entries). Refuses (UsageError) what pull would
    refuse, so that a pushed artifact can always be pulled.
    """
    root = Path(directory)
    entries = list(_walk(root, include_git))
    infos = [_tarinfo(root, name, st) for name, st in entries]
    check_members(infos, where=f"source push {directory}", error=UsageError)
    # filename "" and mtime 0: a fixed gzip header (GzipFile writes OS byte 255 everywhere)
    with (
        open(out_path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info in infos:
            if info.isreg():
                with open(root / info.name, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    digest = hashlib.sha256()
    with open(out_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest(), out_path.stat().st_size, len(infos)


def manifest_for(layer_digest: str, layer_size: int, annotations: dict[str, str] | None = None) -> bytes:
    """The artifact's manifest bytes (compact JSON, fixed key order: the digest depends on it)."""
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(EMPTY_CONFIG),
            "size": len(EMPTY_CONFIG),
        },
        "layers": [
            {
                "mediaType": LAYER_MEDIA_TYPE,
                "digest": layer_digest,
                "size": layer_size,
                "annotations": {"org.opencontainers.image.title": LAYER_TITLE},
            }
        ],
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(manifest, separators=(",", ":")).encode()


# --- checking an archive --------------------------------------------------------------------


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _resolve(parts: list[str], links: dict[str, str]) -> list[str] | None:
    """Resolve ``parts`` inside the archive's own tree, following the archive's symlinks.

    Returns the resolved components, or None when the path leaves the root (or is absolute, or
    loops). Lexical checks alone are not enough: ``p/s -> ..`` is harmless, but a link to
    ``p/s/..`` then leads one level above the root.
    """
    stack: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        target = links.get("/".join(stack))
        if target is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return None
            stack.pop()
            todo = target.split("/") + todo
    return stack


def check_members(members: list[tarfile.TarInfo], *, where: str, error: type[TaskimageError] = ArchiveRefused) -> None:
    """Raise ``error`` naming the first entry that could write outside the target directory."""
    seen: dict[str, tarfile.TarInfo] = {}
    links: dict[str, str] = {}
    for m in members:
        if m.issym():
            links["/".join(_parts(m.name))] = m.linkname
    for m in members:
        name = m.name
        parts = name.split("/")
        if "\0" in name or not name or name.startswith("/") or ".." in parts:
            raise error(f"{where}: the entry {name!r} names a path outside the directory")
        key = "/".join(_parts(name))
        if not key:
            raise error(f"{where}: the entry {name!r} names the directory itself")
        if key in seen:
            raise error(f"{where}: the entry {name!r} appears twice")
        if not (m.isdir() or m.isreg() or m.issym() or m.islnk()):
            raise error(f"{where}: the entry {name!r} is a device, fifo or other special file")
        if _resolve(_parts(name)[:-1], links) is None:
            raise error(f"{where}: the entry {name!r} would be written through a symlink leading outside the directory")
        if m.issym():
            if m.linkname.startswith("/"):
                raise error(f"{where}: the symlink {name!r} points to the absolute path {m.linkname!r}")
            if not m.linkname or _resolve(_parts(name)[:-1] + m.linkname.split("/"), links) is None:
                raise error(f"{where}: the symlink {name!r} -> {m.linkname!r} leads outside the directory")
        if m.islnk():
            target = seen.get("/".join(_parts(m.linkname)))
            if m.linkname.startswith("/") or ".." in m.linkname.split("/") or target is None or not target.isreg():
                raise error(
                    f"{where}: the hard link {name!r} -> {m.linkname!r} is not to an earlier file of the archive"
                )
        seen[key] = m


# --- registry -------------------------------------------------------------------------------


def _write_dir_layout(path: Path, manifest: bytes, blobs: dict[str, Path | bytes]) -> None:
    """containers/image's ``dir:`` transport: manifest.json, blobs named by hex digest, version."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "version").write_text("Directory Transport Version: 1.1\n")
    for digest, data in blobs.items():
        target = path / digest.split(":", 1)[1]
        if isinstance(data, Path):
            os.replace(data, target)
        else:
            target.write_bytes(data)
    (path / "manifest.json").write_bytes(manifest)


def _run_registry(argv: list[str], what: str, image: ImageReference, retry: int, retry_delay: float):
    return registry.with_retry(
        lambda: tools.run(argv, stream=False, quiet=False, what=what),
        what=what,
        image=image,
        retry=retry,
        retry_delay=retry_delay,
    )


@dataclasses.dataclass(frozen=True)
class Pushed:
    ref: ImageReference
    digest: str
    layer_digest: str
    layer_size: int
    entries: int

    @property
    def pinned(self) -> str:
        """REPO@sha256:… — what ``source pull`` takes (the SOURCE_ARTIFACT result)."""
        return self.ref.with_digest(self.digest)


def push(
    directory: str | Path,
    ref: ImageReference,
    access: registry.Access,
    *,
    include_git: bool = False,
    annotations: dict[str, str] | None = None,
    retry: int = 3,
    retry_delay: float = 2.0,
) -> Pushed:
    """Pack ``directory``, push it to ``ref`` and read the manifest back: its digest must be ours."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"source push DIR: {str(directory)!r} is not a directory")
    with tempfile.TemporaryDirectory(prefix="taskimage-source-") as tmp:
        blob = Path(tmp) / "layer"
        layer_digest, layer_size, entries = pack(directory, blob, include_git=include_git)
        manifest = manifest_for(layer_digest, layer_size, annotations)
        layout = Path(tmp) / "layout"
        _write_dir_layout(layout, manifest, {layer_digest: blob, sha256_digest(EMPTY_CONFIG): EMPTY_CONFIG})
        argv = ["skopeo", "copy", "--quiet", "--preserve-digests", *access.flags("dest-"), f"dir:{layout}"]
        _run_registry([*argv, f"docker://{ref.url}"], "skopeo copy", ref, retry, retry_delay)
    digest = sha256_digest(manifest)
    raw = _run_registry(
        ["skopeo", "inspect", "--raw", *access.flags(""), f"docker://{ref.with_digest(digest)}"],
        "skopeo inspect",
        ref,
        retry,
        retry_delay,
    ).stdout.encode()
    if sha256_digest(raw) != digest:
        raise TaskimageError(
            f"{ref.url}: the registry returned manifest {sha256_digest(raw)} for {digest} (rewritten on the way)"
        )
    return Pushed(ref, digest, layer_digest, layer_size, entries)


def parse_pinned(value: str, source: str = "source pull REF") -> tuple[ImageReference, str]:
    """``REPO[:TAG]@sha256:HEX`` -> (reference, digest); a tag alone is a usage error."""
    name, sep, digest = (value or "").strip().removeprefix("docker://").partition("@")
    if not sep:
        raise UsageError(
            f"{source}: {value!r} names no digest; give REPO@sha256:… (the SOURCE_ARTIFACT result), a tag can be moved"
        )
    if not _DIGEST_RE.fullmatch(digest):
        raise UsageError(f"{source}: {digest!r} in {value!r} is not a sha256 digest (sha256: and 64 hex digits)")
    return parse_image(name, source=source), digest


def _prepare_target(directory: Path) -> bool:
    """DIR must be absent or empty (an emptyDir mount point is empty). True when we create it."""
    if directory.exists():
        if not directory.is_dir():
            raise UsageError(f"source pull DIR: {str(directory)!r} exists and is not a directory")
        if any(directory.iterdir()):
            raise UsageError(f"source pull DIR: {str(directory)!r} is not empty")
        return False
    parent = directory.parent
    if not parent.is_dir():
        raise UsageError(f"source pull DIR: the parent of {str(directory)!r} does not exist")
    return True


def _check_layout(pinned: str, digest: str, layout: Path) -> Path:
    """The pulled manifest is the one asked for, an artifact of ours, and its layer is intact."""
    raw = (layout / "manifest.json").read_bytes()
    if sha256_digest(raw) != digest:
        raise TaskimageError(f"{pinned}: the registry sent a manifest whose digest is {sha256_digest(raw)}")
    manifest = json.loads(raw)
    if manifest.get("artifactType") != ARTIFACT_TYPE or len(manifest.get("layers") or []) != 1:
        raise TaskimageError(
            f"{pinned}: not a source artifact (artifactType {manifest.get('artifactType')!r}, "
            f"{len(manifest.get('layers') or [])} layer(s); expected {ARTIFACT_TYPE} with one layer)"
        )
    layer = manifest["layers"][0]
    blob = layout / str(layer.get("digest", "")).split(":", 1)[-1]
    actual = hashlib.sha256()
    with open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            actual.update(chunk)
    if "sha256:" + actual.hexdigest() != layer.get("digest"):
        raise TaskimageError(f"{pinned}: the layer's content does not match its digest {layer.get('digest')}")
    return blob


def pull(
    value: str, directory: str | Path, access: registry.Access, *, retry: int = 3, retry_delay: float = 2.0
) -> tuple[str, int]:
    """Pull the artifact ``value`` (REPO@sha256:…) into ``directory``; returns (pinned ref, entries).

    Nothing is written to ``directory`` unless the manifest, the layer and every entry pass.
    """
    ref, digest = parse_pinned(value)
    directory = Path(directory)
    created = _prepare_target(directory)
    pinned = ref.with_digest(digest)
    with tempfile.TemporaryDirectory(prefix="taskimage-source-") as tmp:
        layout = Path(tmp) / "layout"
        argv = ["skopeo", "copy", "--quiet", "--preserve-digests", *access.flags("src-")]
        argv += [f"docker://{pinned}", f"dir:{layout}"]

        def copy():
            try:
                return tools.run(argv, stream=False, what="skopeo copy")
            except ToolError as exc:
                if any("did not match" in line for line in exc.tail):  # never retried: it would not heal
                    raise TaskimageError(
                        f"{pinned}: the registry's content does not match its digest (tampered or corrupt "
                        f"blob); nothing was extracted ({exc.tail[-1].strip()})"
                    ) from None
                raise

        registry.with_retry(copy, what="skopeo copy", image=ref, retry=retry, retry_delay=retry_delay)
        blob = _check_layout(pinned, digest, layout)
        try:
            with tarfile.open(blob, mode="r:gz") as tar:
                members = tar.getmembers()
                check_members(members, where=pinned)
                if created:
                    directory.mkdir()
                try:
                    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second fence
                        tar.extractall(directory, filter="data")
                    else:
                        tar.extractall(directory)  # check_members above is the fence
                except (tarfile.TarError, OSError) as exc:
                    _empty(directory, remove=created)
                    raise ArchiveRefused(f"{pinned}: extraction stopped: {exc}") from None
        except (tarfile.ReadError, EOFError, gzip.BadGzipFile) as exc:
            raise TaskimageError(f"{pinned}: the layer is not a gzip tar: {exc}") from None
    log.info(f"pulled {len(members)} entries from {pinned} into {directory}")
    return pinned, len(members)


def _empty(directory: Path, *, remove: bool) -> None:
    """Undo a partial extraction (only entries we wrote: the directory was empty before)."""
    if remove:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


__all__ = [
    "ARTIFACT_TYPE",
    "ArchiveRefused",
    "Pushed",
    "check_members",
    "manifest_for",
    "pack",
    "parse_pinned",
    "pull",
    "push",
]
