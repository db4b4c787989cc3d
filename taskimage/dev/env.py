"""A one-machine environment for demos and tests: a local registry and base images made from
Debian packages (no pulls from Docker Hub or Quay needed).

- :class:`LocalRegistry` runs the CNCF distribution registry (Debian's ``docker-registry``) on
  127.0.0.1 with its own storage directory.
- :func:`base_image` makes a multi-arch base image with ``mmdebstrap`` (busybox-static or a
  minbase Debian), caches the OCI layout under ``$TASKIMAGE_CACHE`` (default
  ``~/.cache/taskimage``), and pushes it with skopeo.

Exposed on the CLI as ``taskimage dev registry`` and ``taskimage dev base-image``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import ToolError, UsageError
from taskimage.oci.platforms import Platform, parse_platforms

BUSYBOX_APPLETS = [
    "sh",
    "ash",
    "cat",
    "cp",
    "echo",
    "env",
    "false",
    "grep",
    "head",
    "id",
    "ln",
    "ls",
    "mkdir",
    "mv",
    "printf",
    "pwd",
    "rm",
    "rmdir",
    "sed",
    "sh",
    "sleep",
    "sort",
    "tail",
    "tar",
    "test",
    "touch",
    "tr",
    "true",
    "uname",
    "wc",
    "which",
    "whoami",
    "date",
    "expr",
    "find",
    "xargs",
    "dirname",
    "basename",
    "chmod",
    "cut",
    "stat",
    "md5sum",
    "sha256sum",
    "gzip",
    "gunzip",
    "wget",
    "tee",
    "seq",
    "od",
    "hexdump",
    "kill",
    "ps",
    "vi",
]


def cache_dir() -> Path:
    path = Path(os.environ.get("TASKIMAGE_CACHE") or Path.home() / ".cache" / "taskimage")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """The distribution registry on 127.0.0.1:PORT (plain HTTP: clients use --tls-verify=false)."""

    def __init__(self, root: str | os.PathLike, port: int | None = None, htpasswd: str | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.htpasswd = htpasswd
        self.host = f"127.0.0.1:{self.port}"
        self._proc: tools.Spawned | None = None

    def config(self) -> dict:
        cfg = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root / "data")},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host},
        }
        if self.htpasswd:
            cfg["auth"] = {"htpasswd": {"realm": "taskimage-test", "path": self.htpasswd}}
        return cfg

    def start(self, timeout: float = 15) -> LocalRegistry:
        import yaml

        binary = tools.which("docker-registry") or tools.which("registry")
        if not binary:
            raise ToolError("docker-registry is not installed (Debian package docker-registry)")
        self.root.mkdir(parents=True, exist_ok=True)
        cfg_path = self.root / "config.yml"
        cfg_path.write_text(yaml.safe_dump(self.config()))
        self._proc = tools.spawn([binary, "serve", str(cfg_path)], str(self.root / "registry.log"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise ToolError(f"registry exited at start: {(self.root / 'registry.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return self
            except urllib.error.HTTPError:  # 401 with auth: it is up
                return self
            except OSError:
                time.sleep(0.1)
        raise ToolError(f"registry did not answer on {self.host} within {timeout} s")

    def stop(self) -> None:
        if self._proc:
            self._proc.stop()
            self._proc = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- base images --------------------------------------------------------------------------

CACHE_VERSION = 2  # bump when the way rootfs/layouts are made changes
LAYOUT_VERSION = 3  # layouts only; v3: a later platform's image config no longer nests the first one's
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OCILayout:
    """Write a minimal OCI image layout (blobs + index.json) for skopeo to push."""

    def __init__(self, path: Path):
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob(self, data: bytes) -> str:
        digest = _sha256(data)
        target = self.path / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not target.exists():
            target.write_bytes(data)
        return digest

    def image(self, config: dict, layers: list[tuple[str, bytes]], platform: dict | None = None) -> dict:
        """Write one image's config, layers ((media type, bytes) each) and manifest as blobs; the
        manifest's descriptor for :meth:`write_index`, with ``platform`` when given."""
        config_bytes = json.dumps(config, sort_keys=True).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.blob(config_bytes),
                "size": len(config_bytes),
            },
            "layers": [{"mediaType": kind, "digest": self.blob(data), "size": len(data)} for kind, data in layers],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        descriptor = {
            "mediaType": manifest["mediaType"],
            "digest": self.blob(manifest_bytes),
            "size": len(manifest_bytes),
        }
        if platform is not None:
            descriptor["platform"] = platform
        return descriptor

    def write_index(self, manifests: list[dict]) -> None:
        """index.json names one image, ``latest``: the manifest itself when there is one,
        else a nested image index listing them all (what ``skopeo copy --all`` pushes)."""
        if len(manifests) == 1:
            top = dict(manifests[0])
            top.pop("platform", None)
        else:
            nested = json.dumps(
                {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}, sort_keys=True
            ).encode()
            top = {"mediaType": INDEX_TYPE, "digest": self.blob(nested), "size": len(nested)}
        top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [top]}
        (self.path / "index.json").write_text(json.dumps(index))


def _layer_from_rootfs(rootfs_tar: Path) -> tuple[bytes, str]:
    """gzip a rootfs tar deterministically, dropping /dev (device nodes belong to the runtime)."""
    raw = io.BytesIO()
    with tarfile.open(rootfs_tar) as src, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            name = member.name.lstrip("./")
            if name == "dev" or name.startswith("dev/"):
                continue
            fileobj = src.extractfile(member) if member.isfile() else None
            dst.addfile(member, fileobj)
    data = raw.getvalue()
    diff_id = _sha256(data)
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        gz.write(data)
    return compressed.getvalue(), diff_id


def _debian_arch(p: Platform) -> str:
    return {
        "amd64": "amd64",
        "arm64": "arm64",
        "386": "i386",
        "ppc64le": "ppc64el",
        "s390x": "s390x",
        "riscv64": "riscv64",
        "mips64le": "mips64el",
    }.get(p.arch) or {"v7": "armhf", "v6": "armel", "v5": "armel"}[p.variant or "v7"]


def _host_mirror() -> str | None:
    """The Debian archive this host's apt uses (not the security archive), if it says."""
    candidates = []
    sources_d = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            for uri in fields.get("URIs", "").split():
                candidates.append(uri)
    lists = [Path("/etc/apt/sources.list")] + (sorted(sources_d.glob("*.list")) if sources_d.is_dir() else [])
    for path in lists:
        if path.is_file():
            for line in path.read_text().splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 2 and words[0] == "deb":
                    candidates.append(words[1])
    for uri in candidates:
        if "security" not in uri and uri.rstrip("/").endswith("/debian"):
            return uri
    return None


FLAVOURS = {
    # name: (mmdebstrap variant, suite, packages)
    "busybox": ("extract", "bookworm", ["busybox-static"]),
    "bookworm": ("minbase", "bookworm", []),
    "trixie": ("minbase", "trixie", []),
    "git": ("minbase", "trixie", ["git", "ca-certificates"]),  # the git-clone stand-in's image
    "git-ssh": ("minbase", "bookworm", ["git", "openssh-client"]),  # tests of RUN --mount=type=ssh
}
DEFAULT_CONFIG = {
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "Cmd": ["/bin/sh"],
}


@dataclasses.dataclass(frozen=True)
class RootfsSpec:
    """How mmdebstrap makes a rootfs: for flavours beyond :data:`FLAVOURS` (e.g. look-alikes)."""

    name: str  # the rootfs cache key (several images may share one rootfs)
    variant: str
    suite: str
    packages: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()  # extra mmdebstrap options (--extract-hook=..., --customize-hook=...)


def _rootfs(flavour: str, p: Platform, spec: RootfsSpec | None = None) -> Path:
    variant, suite, packages = (spec.variant, spec.suite, list(spec.packages)) if spec else FLAVOURS[flavour]
    arch = _debian_arch(p)
    out = cache_dir() / "rootfs" / f"{spec.name if spec else flavour}-{arch}-v{CACHE_VERSION}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.tmp.tar")  # parallel runs may share the cache
    argv = ["mmdebstrap", "--quiet", f"--variant={variant}", f"--arch={arch}"]
    if packages:
        argv.append("--include=" + ",".join(packages))
    if spec is not None:
        argv += list(spec.hooks)
    elif flavour == "busybox":
        links = " ".join(BUSYBOX_APPLETS)
        argv.append(
            "--extract-hook=for a in " + links + '; do ln -sf busybox "$1/bin/$a"; done; '
            'mkdir -p "$1/usr/bin" "$1/root"; echo "root:x:0:0:root:/root:/bin/sh" > "$1/etc/passwd"; '
            'echo "root:x:0:" > "$1/etc/group"'
        )
    else:
        # a slim image: no apt lists, docs or man pages (like the official -slim images)
        argv += [
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
        ]
    argv += [suite, str(tmp)]
    mirror = _host_mirror()
    if mirror:
        # only the main archive: the security archive's index for some foreign arches has been
        # seen failing ("File has unexpected size") and a base image for tests does not need it
        argv.append(f"deb {mirror} {suite} main")
    log.info(f"making {spec.name if spec else flavour} rootfs for {p} with mmdebstrap (cached in {out.parent})")
    for attempt in range(1, 4):  # Debian mirrors answer "Mirror sync in progress?" at times
        try:
            tools.run(argv, prefix=f"[{p}] ", stream=False, what="mmdebstrap")
            break
        except ToolError as exc:
            tmp.unlink(missing_ok=True)
            if attempt == 3:
                raise ToolError(f"{exc} (making the {flavour} rootfs for {p})", tail=exc.tail) from exc
            log.warn(f"mmdebstrap failed (attempt {attempt}), retrying in {5 * attempt} s")
            time.sleep(5 * attempt)
    tmp.rename(out)
    return out


def build_layout(
    flavour: str, platforms: Iterable[Platform], *, spec: RootfsSpec | None = None, config: dict | None = None
) -> Path:
    """An OCI layout holding a multi-arch ``flavour`` base image for ``platforms`` (cached).

    ``spec`` and ``config`` (the image config's ``config`` object) make other flavours than
    :data:`FLAVOURS`; the flavour name is then the cache key and must change with them."""
    platforms = list(platforms)
    if spec is None and flavour not in FLAVOURS:
        raise UsageError(f"--flavour: unknown base image {flavour!r}; accepted: {', '.join(FLAVOURS)}")
    key = f"{flavour}-v{LAYOUT_VERSION}-" + "_".join(p.slug for p in platforms)
    layout_dir = cache_dir() / "layouts" / key
    if (layout_dir / "index.json").exists():
        return layout_dir
    tmp_dir = Path(tempfile.mkdtemp(dir=layout_dir.parent.parent, prefix=".layout-"))
    layout = OCILayout(tmp_dir)
    manifests = []
    for p in platforms:
        layer, diff_id = _layer_from_rootfs(_rootfs(flavour, p, spec))
        image_config = {
            "created": "1970-01-01T00:00:00Z",
            "architecture": p.arch,
            "os": p.os,
            **({"variant": p.variant} if p.variant else {}),
            "config": config if config is not None else DEFAULT_CONFIG,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"mmdebstrap {flavour}"}],
        }
        platform = {"architecture": p.arch, "os": p.os, **({"variant": p.variant} if p.variant else {})}
        manifests.append(layout.image(image_config, [("application/vnd.oci.image.layer.v1.tar+gzip", layer)], platform))
    layout.write_index(manifests)
    layout_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp_dir.rename(layout_dir)
    except OSError:  # another process made the same layout meanwhile: keep theirs
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return layout_dir


def push_layout(layout_dir: Path, ref: str, *, tls_verify: bool = False) -> None:
    """Push the layout's image (or index, with every image in it) to ``ref``."""
    argv = [
        "skopeo",
        "copy",
        "--all",
        "--quiet",
        f"--dest-tls-verify={'true' if tls_verify else 'false'}",
        f"oci:{layout_dir}:latest",
        f"docker://{ref}",
    ]
    tools.run(argv, what="skopeo copy")


def base_image(flavour: str, platforms: Iterable[str | Platform], ref: str, *, tls_verify: bool = False) -> str:
    """Make (or take from the cache) and push a multi-arch base image; returns ``ref``."""
    plats = [p if isinstance(p, Platform) else parse_platforms([p], source="--platform")[0] for p in platforms]
    layout = build_layout(flavour, plats)
    push_layout(layout, ref, tls_verify=tls_verify)
    return ref


# --- the task image -----------------------------------------------------------------------

TASK_IMAGE_PLATFORMS = ("linux/amd64", "linux/arm64")
# what goes into the task image's build context (the rest is kept out by .containerignore)
_TASK_IMAGE_INPUTS = ("Containerfile", ".containerignore", "pyproject.toml", "README.md", "LICENSE")


@dataclasses.dataclass(frozen=True)
class TaskImage:
    """A task image pushed by :func:`build_task_image`."""

    ref: str  # REPO:TAG
    digest: str  # the index digest (the registry's)
    images: tuple[tuple[str, str], ...]  # (platform, REPO@DIGEST) per platform, in build order
    base: str  # the base image it was built FROM
    labels: dict  # the OCI label values passed as build args
    seconds: float  # the `taskimage build` run alone
    layer_cache: Path  # buildah storage kept between builds

    @property
    def by_digest(self) -> str:
        return self.ref.rsplit(":", 1)[0] + "@" + self.digest

    def image_for(self, platform: str) -> str:
        return dict(self.images)[platform]


def repo_root() -> Path:
    """The source tree this package was installed from (editable installs): the build context."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "Containerfile").is_file():
        raise UsageError(
            f"no Containerfile next to the taskimage package in {root}: build the task image from a source checkout"
        )
    return root


def task_image_inputs(root: Path) -> list[Path]:
    """Every file whose content ends up in the task image (the key of the layer cache)."""
    files = [root / name for name in _TASK_IMAGE_INPUTS if (root / name).is_file()]
    files += sorted(
        p
        for p in (root / "taskimage").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    return files


def _git(root: Path, *args: str) -> str:
    try:
        return tools.run(["git", "-C", str(root), *args], quiet=True, stream=False).stdout.strip()
    except ToolError:
        return ""


def task_image_labels(root: Path) -> dict[str, str]:
    """Values of the OCI labels: version from the package, revision and source from git,
    created from SOURCE_DATE_EPOCH (reproducible builds) or now."""
    from taskimage import __version__

    revision = _git(root, "rev-parse", "HEAD") or "unknown"
    if revision != "unknown" and _git(
        root, "status", "--porcelain", "--", *[str(p.relative_to(root)) for p in task_image_inputs(root)]
    ):
        revision += "-dirty"
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = time.gmtime(int(epoch)) if epoch and epoch.isdigit() else time.gmtime()
    return {
        "org.opencontainers.image.source": _git(root, "config", "--get", "remote.origin.url"),
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", when),
    }


def task_image_argv(
    root: Path,
    ref: str,
    platforms: Iterable[str],
    base: str,
    labels: dict[str, str],
    *,
    storage_root: Path,
    runroot: Path,
    results_dir: Path,
    tls_verify: bool = False,
    jobs: int = 0,
    ca_file: Path | None = None,
) -> list[str]:
    """The `taskimage build` command line that builds the task image (pure: tests check it).
    ``ca_file``: the host's CA bundle, given to the build as the optional secret the wheel
    download trusts (a TLS-intercepting proxy's CA is in it; a layer never is)."""
    short = {k.rsplit(".", 1)[1].upper(): v for k, v in labels.items()}  # SOURCE, REVISION, ...
    argv = [
        sys.executable,
        "-m",
        "taskimage",
        "build",
        "--image",
        ref,
        "--context",
        str(root),
        f"--tls-verify={'true' if tls_verify else 'false'}",
        "--root",
        str(storage_root),
        "--runroot",
        str(runroot),
        "--results-dir",
        str(results_dir),
        "--build-arg",
        f"BASE_IMAGE={base}",
        *[f"{k}={v}" for k, v in short.items()],
        # also as --label: buildah 1.28's layer cache reuses a LABEL step whose ARG values
        # changed, so the Containerfile's LABEL alone could carry an older build's values
        "--label",
        *[f"{k}={v}" for k, v in labels.items()],
        "--annotation",
        *[f"{k}={v}" for k, v in labels.items()],
    ]
    if jobs:
        argv += ["--jobs", str(jobs)]
    if ca_file is not None:
        argv += ["--secret", f"id=ca-certificates,src={ca_file}"]
    return argv + ["--platform", ",".join(platforms)]


def host_ca_file() -> Path | None:
    """The CA bundle this host's tools are told to trust ($SSL_CERT_FILE, $REQUESTS_CA_BUNDLE), if any."""
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return Path(value)
    return None


TASK_IMAGE_CACHE_LIMIT = 8 * 1024**3  # bytes of layer cache kept (a few Containerfile versions)


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _layer_cache() -> Path:
    """buildah storage kept between builds: ``--layers`` reuses the apt layer (minutes under
    emulation) whenever the Containerfile lines up to it are unchanged, whatever the source.
    Old layers of earlier Containerfiles pile up; past the limit the cache starts afresh."""
    path = cache_dir() / "task-image" / f"storage-v{CACHE_VERSION}"
    if path.is_dir() and _tree_size(path) > TASK_IMAGE_CACHE_LIMIT:
        log.info(f"the task image layer cache {path} is over {TASK_IMAGE_CACHE_LIMIT // 1024**3} GiB: starting afresh")
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_task_image(
    registry_host: str,
    ref: str | None = None,
    platforms: Iterable[str] = TASK_IMAGE_PLATFORMS,
    *,
    base: str | None = None,
    tls_verify: bool = False,
    jobs: int = 0,
    layer_cache: Path | None = None,
) -> TaskImage:
    """Build the task image from this source tree with `taskimage build` itself and push it.

    The Debian trixie base is made with mmdebstrap (cached) and pushed to ``registry_host``
    unless ``base`` names one. Layers are cached in a buildah storage under the cache dir, so a
    rebuild after a source change reruns only the small layers after the apt install
    (``layer_cache`` names another storage directory, e.g. an empty one for a cold build).
    """
    platforms = [str(p) for p in parse_platforms(list(platforms), source="--platform")]
    root = repo_root()
    ref = ref or f"{registry_host}/taskimage/taskimage:{__import__('taskimage').__version__}"
    if base is None:
        base = base_image("trixie", platforms, f"{registry_host}/base/debian:trixie", tls_verify=tls_verify)
    labels = task_image_labels(root)
    storage_root = Path(layer_cache) if layer_cache else _layer_cache()
    with tempfile.TemporaryDirectory(prefix="taskimage-task-image-") as tmp:
        runroot, results_dir = Path(tmp) / "run", Path(tmp) / "results"
        runroot.mkdir()
        results_dir.mkdir()
        argv = task_image_argv(
            root,
            ref,
            platforms,
            base,
            labels,
            storage_root=storage_root,
            runroot=runroot,
            results_dir=results_dir,
            tls_verify=tls_verify,
            jobs=jobs,
            ca_file=host_ca_file(),
        )
        log.phase(f"task image {ref} for {', '.join(platforms)}")
        started = time.monotonic()
        tools.run(argv, prefix="[task image] ", what="taskimage build of the task image")
        seconds = time.monotonic() - started
        results = {p.name: p.read_text() for p in results_dir.iterdir()}
    images = results["IMAGES"].split(",")
    if len(images) != len(platforms):
        raise ToolError(
            f"taskimage build reported {len(images)} image(s) for {len(platforms)} platform(s): {results['IMAGES']}"
        )
    return TaskImage(
        ref=results["IMAGE_URL"],
        digest=results["IMAGE_DIGEST"],
        images=tuple(zip(platforms, images, strict=True)),
        base=base,
        labels=labels,
        seconds=seconds,
        layer_cache=storage_root,
    )


# --- stand-ins for what this machine cannot reach -------------------------------------------

GIT_IMAGE = "localhost/taskimage-dev/git:trixie"
GIT_CLONE_STAND_IN = Path(__file__).with_name("git-clone.yaml")


def git_image() -> str:
    """The git-clone stand-in's image (Debian trixie minbase + git, for this host's platform), in
    podman's local storage as :data:`GIT_IMAGE` (made once, then cached)."""
    from taskimage.oci.platforms import host_platform

    layout = build_layout("git", [parse_platforms([str(host_platform())], source="--platform")[0]])
    tools.run(
        ["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"containers-storage:{GIT_IMAGE}"], what="skopeo copy"
    )
    return GIT_IMAGE


class GitServer:
    """``git daemon`` serving every repository below ``root`` read-only on 127.0.0.1:PORT
    (git://127.0.0.1:PORT/NAME), so step containers on the host network can clone them."""

    def __init__(self, root: str | os.PathLike, port: int | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self._proc: tools.Spawned | None = None

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 15) -> GitServer:
        argv = [
            "git",
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
            f"--port={self.port}",
            f"--base-path={self.root}",
            str(self.root),
        ]
        self._proc = tools.spawn(argv, str(self.root.parent / f"git-daemon-{self.port}.log"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._proc.alive():
                raise ToolError("git daemon exited at start")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise ToolError(f"git daemon did not listen on 127.0.0.1:{self.port} within {timeout} s")

    def stop(self) -> None:
        if self._proc:
            self._proc.stop()
            self._proc = None
