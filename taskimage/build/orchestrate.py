"""``taskimage build``: preflight, build every platform, verify, push one manifest list, results.

Order matters for users: every check of their input happens before anything runs, emulation is
checked before any build, each image is verified before it is pushed, each platform is pushed by
digest (no tag) as soon as it is verified, while the others still build, and the tag moves last,
in one manifest PUT of the list that joins them, once every platform is in. A failed run never
moves the tag. With ``--evict`` each pushed platform also leaves the storage at once, so the
storage holds about one finished platform at a time instead of all of them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import string
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from taskimage import __version__, log
from taskimage import proc as tools
from taskimage.build import attest, buildah, index, inputs, results, storage, verify
from taskimage.build import key as buildkey
from taskimage.build.ignore import IgnoreError
from taskimage.emulation import binfmt
from taskimage.errors import Interrupted, TaskimageError, ToolError, UsageError
from taskimage.oci import auth, expiry
from taskimage.oci import registry as remote
from taskimage.oci.platforms import Platform, host_platform, parse_platforms
from taskimage.oci.reference import ImageReference, parse_image
from taskimage.supplychain.provenance import BuildFacts


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    image: ImageReference
    platforms: tuple[Platform, ...]
    spec: buildah.BuildSpec
    registry: remote.Access
    storage_driver: str = "auto"
    root: str | None = None
    runroot: str | None = None
    skip_push: bool = False
    retry: int = 3
    retry_delay: float = 2.0
    jobs: int = 0
    evict: bool = False
    results_dir: Path | None = None
    creds: str | None = dataclasses.field(default=None, repr=False)
    tags: tuple[ImageReference, ...] = ()  # ADDITIONAL_TAGS: moved after the list is read back
    index_annotations: tuple[tuple[str, str], ...] = ()  # ANNOTATIONS index:KEY=VALUE
    sbom: str = "spdx"  # spdx | cyclonedx | none
    provenance: bool = True
    build_facts: BuildFacts | None = None  # what provenance records; filled by run()


@dataclasses.dataclass(frozen=True)
class PlatformBuild:
    platform: Platform
    image_id: str
    seconds: float
    elf: str  # what the ELF check found
    pushed: index.Instance | None = None  # the image as pushed by digest (None with --skip-push)
    cached: str = ""  # the layer cache's copy of the final step, if the build pushed or pulled one
    reused: bool = False  # not built: an earlier build with the same inputs (buildkey) was copied
    attached: tuple[attest.Attached, ...] = ()  # SBOM / provenance referrers of the pushed image


@dataclasses.dataclass(frozen=True)
class Outcome:
    image: ImageReference
    digest: str  # index digest ("" with --skip-push)
    images: tuple[tuple[Platform, str], ...]  # per-platform manifest digest in the pushed index
    builds: tuple[PlatformBuild, ...]
    results: dict


# --- input --------------------------------------------------------------------------------


def _pairs(values: Sequence[str], source: str) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        if not value:
            continue  # an empty array element from Tekton
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{source}: {value!r} is not KEY=VALUE")
        out.append((key.strip(), val))
    return tuple(out)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def options_from_values(values: dict) -> BuildOptions:
    """Validate every input; raise :class:`UsageError` naming the flag/param and the value."""
    v = {k: val for k, (val, _) in values.items()}
    src = {k: s for k, (_, s) in values.items()}
    if not v["IMAGE"]:
        raise UsageError(
            f"{src['IMAGE']}: an image to push is required (e.g. --image registry.example.com/team/app:1.0)"
        )
    image = parse_image(v["IMAGE"], source=src["IMAGE"])
    platforms = tuple(parse_platforms(v["PLATFORMS"], source=src["PLATFORMS"])) or (host_platform(),)

    source_root = Path(v["SOURCE_ROOT"]) if v["SOURCE_ROOT"] else None
    if source_root is not None and not source_root.is_dir():
        raise UsageError(f"{src['SOURCE_ROOT']}: {v['SOURCE_ROOT']!r} is not a directory")
    context = Path(v["CONTEXT"] or ".")
    if source_root is not None and not context.is_absolute():
        context = source_root / context
    if source_root is not None and not _inside(context, source_root):
        raise UsageError(f"{src['CONTEXT']}: {v['CONTEXT']!r} is outside the source workspace {source_root}")
    if not context.is_dir():
        raise UsageError(f"{src['CONTEXT']}: build context {v['CONTEXT']!r} is not a directory")
    context = context.resolve()

    if v["DOCKERFILE"]:
        containerfile = Path(v["DOCKERFILE"])
        if not containerfile.is_absolute():
            containerfile = context / containerfile
        if not containerfile.is_file():
            raise UsageError(f"{src['DOCKERFILE']}: {v['DOCKERFILE']!r} not found in the context {context}")
        if source_root is not None and not _inside(containerfile, source_root):
            raise UsageError(f"{src['DOCKERFILE']}: {v['DOCKERFILE']!r} is outside the source workspace {source_root}")
    else:
        for name in ("Containerfile", "Dockerfile"):
            if (context / name).is_file():
                containerfile = context / name
                break
        else:
            raise UsageError(f"{src['DOCKERFILE']}: no Containerfile or Dockerfile in the context {context}")

    secrets_root = Path(v["SECRETS_ROOT"]) if v["SECRETS_ROOT"] else None
    if secrets_root is not None and not secrets_root.is_dir():
        raise UsageError(f"{src['SECRETS_ROOT']}: {v['SECRETS_ROOT']!r} is not a directory")
    secrets = inputs.parse_secrets(v["SECRETS"], src["SECRETS"], secrets_root)
    try:
        unused = inputs.check_secret_mounts(containerfile.read_text(errors="replace"), secrets, src["SECRETS"])
    except OSError as exc:
        raise UsageError(f"{src['DOCKERFILE']}: cannot read {containerfile}: {exc.strerror}") from None
    for sid in unused:
        log.warn(f"secret {sid!r} is given but the Containerfile mounts no secret of that id")
    ssh_root = Path(v["SSH_ROOT"]) if v["SSH_ROOT"] else None
    if ssh_root is not None and not ssh_root.is_dir():
        raise UsageError(f"{src['SSH_ROOT']}: {v['SSH_ROOT']!r} is not a directory")
    ssh = inputs.parse_ssh(v["SSH"], src["SSH"], ssh_root)
    inputs.check_ssh_mounts(containerfile.read_text(errors="replace"), ssh, src["SSH"])

    build_args = _pairs(v["BUILD_ARGS"], src["BUILD_ARGS"])
    epoch = inputs.parse_epoch(v["SOURCE_DATE_EPOCH"], src["SOURCE_DATE_EPOCH"])
    if epoch is not None and "SOURCE_DATE_EPOCH" not in dict(build_args):
        build_args += (("SOURCE_DATE_EPOCH", str(epoch)),)  # as buildx does; also in the whole-build key
    annotations = inputs.parse_annotations(v["ANNOTATIONS"], src["ANNOTATIONS"], platforms)
    inputs.check_index_format(annotations, v["FORMAT"], src["ANNOTATIONS"])

    spec = buildah.BuildSpec(
        context=context,
        containerfile=containerfile,
        build_args=build_args,
        timestamp=epoch,
        labels=_pairs(v["LABELS"], src["LABELS"]) + _expiry(v["EXPIRES_AFTER"], src["EXPIRES_AFTER"]),
        annotations=annotations.manifest,
        platform_annotations=annotations.platform,
        target=v["TARGET"],
        format=v["FORMAT"],
        cache_repo=_cache_repo(v["CACHE_REPO"], src["CACHE_REPO"]),
        ulimits=buildah.run_limits(),
        secrets=tuple(s.arg() for s in secrets),
        ssh=ssh,
    )
    registry, creds = remote.access(v, src)
    return BuildOptions(
        image=image,
        platforms=platforms,
        spec=spec,
        registry=registry,
        storage_driver=v["STORAGE_DRIVER"],
        root=v["ROOT"] or None,
        runroot=v["RUNROOT"] or None,
        skip_push=v["SKIP_PUSH"],
        retry=v["RETRY"],
        retry_delay=float(v["RETRY_DELAY"]),
        jobs=v["JOBS"],
        evict=v["EVICT"],
        results_dir=results.check_dir(v["RESULTS_DIR"], src["RESULTS_DIR"]),
        creds=creds,
        tags=inputs.parse_tags(v["ADDITIONAL_TAGS"], src["ADDITIONAL_TAGS"], image),
        index_annotations=annotations.index,
        sbom=v["SBOM"],
        provenance=v["PROVENANCE"],
    )


def _expiry(value: str, source: str) -> tuple[tuple[str, str], ...]:
    """EXPIRES_AFTER as the label Quay reads (issue 17); empty: no label."""
    if not value:
        return ()
    return ((expiry.EXPIRES_LABEL, expiry.check_duration(value, source)),)


def _cache_repo(value: str, source: str) -> str:
    if not value:
        return ""
    ref = parse_image(value, source=source)
    if ref.tag != "latest" and ":" in value.rsplit("/", 1)[-1]:
        raise UsageError(f"{source}: {value!r}: a cache repository takes no tag")
    return ref.name


# --- the build ----------------------------------------------------------------------------


def default_jobs(n_platforms: int, cpus: int | None = None) -> int:
    """One build per CPU, at most one per platform.

    A build is mostly one busy process (apt, a compiler, qemu emulating one), so more builds than
    CPUs only share the same cores; fewer leave a core idle while the emulated platform, the
    critical path, runs. :func:`build_order` starts the emulated platforms first.
    """
    if cpus is None:
        cpus = available_cpus()
    return max(1, min(n_platforms, cpus or 1))


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a pod's CPU limit).

    In a Tekton pod the affinity is the node's CPUs; the limit is only in the cgroup
    (v2 ``cpu.max`` "QUOTA PERIOD", v1 ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = period = None
    try:
        if (cgroup / "cpu.max").is_file():
            fields = (cgroup / "cpu.max").read_text().split()
            quota = None if fields[0] == "max" else int(fields[0])
            period = int(fields[1]) if len(fields) > 1 else 100000
        elif (cgroup / "cpu" / "cpu.cfs_quota_us").is_file():
            q = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            quota, period = (q if q > 0 else None), int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        quota = None
    if quota and period:
        cpus = min(cpus, max(1, -(-quota // period)))
    return cpus


def build_order(platforms: Sequence[Platform], native: Sequence[Platform]) -> list[Platform]:
    """Emulated platforms first (they take several times longer: longest job first), native last."""
    return sorted(platforms, key=lambda p: p in native)


class PlatformMismatch(TaskimageError):
    """The built image's config names another platform than the one requested."""


def cache_problem(registry: remote.Access, repo: str) -> str | None:
    """Why the layer cache ``repo`` cannot be used (unreachable, refused), or None.

    Checked once before the builds: buildah retries every cache pull of every step (3 x 2 s) and
    fails the build when a cache push fails, so an unreachable cache would cost minutes. A
    repository that does not exist yet is fine (a cold cache: the first run fills it).
    """
    try:
        tools.run(
            ["skopeo", "list-tags", *registry.skopeo_args(), f"docker://{repo}"],
            quiet=True,
            stream=False,
            timeout=30,
            what="skopeo list-tags",
        )
        return None
    except ToolError as exc:
        if repository_missing(exc.tail):
            return None
        return exc.tail[-1] if exc.tail else str(exc)


def repository_missing(lines: Sequence[str]) -> bool:
    """Does a registry tool's output say the repository (or tag) does not exist? (By status or
    error code, never by digits: a port holding "404" once made an unreachable cache look empty.)"""
    return remote.not_found(lines)


def _run_id() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


PULL_RACE_ATTEMPTS = 3


def _buildah_build(argv: list[str], prefix: str, env: dict, p: Platform) -> tools.Result:
    """``buildah build``, again when a parallel build of another platform won the pull race.

    Platforms built at once share one storage; each pulls the same base image name for its own
    platform and tags it, so one build can lose the tag it just pulled ("locating pulled image
    ... image not known", seen here in about one of four runs of two platforms on a warm storage).
    Building again finds its image and goes on; any other failure is the user's.
    """
    for attempt in range(1, PULL_RACE_ATTEMPTS + 1):
        try:
            return tools.run(argv, prefix=prefix, env=env, what=f"buildah build for {p}")
        except ToolError as exc:
            lost = any("locating pulled image" in line and "image not known" in line for line in exc.tail)
            if not lost or attempt == PULL_RACE_ATTEMPTS:
                raise
            log.warn(
                f"{prefix}a parallel build re-tagged the base image this build had just pulled "
                f"(buildah's pull race in shared storage); building again ({attempt + 1} of {PULL_RACE_ATTEMPTS})"
            )
    raise AssertionError("unreachable")


_CACHE_LINE = re.compile(r"--> (?:Pushing cache|Cache pulled from remote) (\S+)")


def last_cache_ref(output: str) -> str:
    """The layer-cache reference of a build's last step: buildah pushes (cold) or pulls (warm) one
    per step, the final image's last; "" when the build used no cache."""
    refs = _CACHE_LINE.findall(output)
    return refs[-1] if refs else ""


# buildah's own errors about the layer cache (buildah 1.28: imagebuildah, define): the build
# failed in reaching the cache, not in a step. A step that fails is "building at STEP ...: exit status N".
_CACHE_ERRORS = (
    "failed pushing cache to",
    "failed while pushing cache to",
    "failed while pulling cache from",
    "failed pulling cache from all available sources",
    "to --cache-to:",
    "to --cache-from:",
)
_STEP_FAILED = re.compile(r'^Error: building at STEP ".*": exit status \d+$')


def cache_failure(tail: Sequence[str]) -> bool:
    """Whether buildah's final error is about the layer cache (then a retry without it may work);
    not any line that mentions a cache (buildah's "--> Using cache", apt's /var/cache, npm's _cacache)."""
    errors = [line.strip() for line in tail if line.strip().startswith("Error:")]
    if not errors or _STEP_FAILED.match(errors[-1]):
        return False
    return any(marker in errors[-1] for marker in _CACHE_ERRORS)


def build_platform(
    opts: BuildOptions,
    store: buildah.Storage,
    registry: remote.Access,
    p: Platform,
    workdir: str,
    keys: dict | None = None,
) -> PlatformBuild:
    """Build ``p`` and verify it (its push is :func:`push_built`'s), or reuse an earlier build's
    image when the whole-build key ``keys[p]`` finds one."""
    prefix = f"[{p}] "
    log.phase(f"build {p}")
    timer = log.Timer()
    if keys and p in keys:
        instance = reuse_built(opts, registry, p, keys[p])
        if instance:
            digest = json.loads(instance.manifest)["config"]["digest"]
            return PlatformBuild(p, digest, timer.seconds, "reused", pushed=instance, reused=True)
    iidfile = os.path.join(workdir, f"iid-{p.slug}")
    argv = buildah.build(store, registry, opts.spec, p, iidfile)
    env = {"BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot")}
    try:
        result = _buildah_build(argv, prefix, env, p)
    except ToolError as exc:
        if opts.spec.cache_repo and cache_failure(exc.tail):
            log.warn(f"{prefix}the build failed with the layer cache {opts.spec.cache_repo}; retrying without it")
            argv = buildah.build(store, registry, dataclasses.replace(opts.spec, cache_repo=""), p, iidfile)
            result = _buildah_build(argv, prefix, env, p)
        else:
            raise
    cached = last_cache_ref(result.stdout + "\n" + result.stderr)
    image_id = Path(iidfile).read_text().strip()
    try:
        elf = verify_image(store, p, image_id, prefix)
    except PlatformMismatch as exc:
        # buildah < 1.42 does not check the platform of cache candidates (buildah#6269): a step
        # whose inputs are the same for every platform (FROM scratch + COPY) reuses the layer,
        # and the config, that another platform built. Without --layers no cache is consulted.
        log.warn(
            f"{prefix}{exc}: a cached layer of another platform was reused (buildah matches cache "
            "entries without their platform); rebuilding without the layer cache"
        )
        argv = buildah.build(store, registry, dataclasses.replace(opts.spec, cache_repo=""), p, iidfile, layers=False)
        tools.run(argv, prefix=prefix, env=env, what=f"buildah build for {p}")
        cached = ""
        image_id = Path(iidfile).read_text().strip()
        elf = verify_image(store, p, image_id, prefix)
    seconds = timer.seconds
    log.info(f"{prefix}built {image_id[:19]} in {seconds:.1f} s ({elf})")
    return PlatformBuild(p, image_id, seconds, elf, cached=cached)


def push_built(
    opts: BuildOptions,
    store: buildah.Storage,
    registry: remote.Access,
    b: PlatformBuild,
    workdir: str,
    before: frozenset[str],
    keys: dict | None = None,
) -> PlatformBuild:
    """Push a verified platform by digest, file it under its whole-build key and, with --evict,
    remove it from the storage. A reused image is pushed already."""
    if b.reused:
        return attach_built(opts, registry, b, filed=True)
    pushed = push_platform(opts, store, registry, b.platform, b.image_id, workdir, b.cached)
    filed = bool(keys and b.platform in keys and record_built(opts, registry, b.platform, pushed, keys[b.platform]))
    b = attach_built(opts, registry, dataclasses.replace(b, pushed=pushed), store, filed)  # before --evict removes it
    if opts.evict:
        evict(store, b.platform, b.image_id, before, f"[{b.platform}] ")
    return b


def attach_built(
    opts: BuildOptions,
    registry: remote.Access,
    b: PlatformBuild,
    store: buildah.Storage | None = None,
    filed: bool = False,
) -> PlatformBuild:
    """Attach the pushed image's SBOM (read from the storage, or for a reused image from the scan
    filed with it in the layer cache, else from the registry) and provenance as referrers
    (taskimage/build/attest.py). ``filed``: the image is in the layer cache under its key."""
    if b.pushed is None or (opts.sbom == "none" and not opts.provenance):
        return b
    i = b.pushed
    attached = attest.attach_platform(
        opts.image,
        registry,
        b.platform,
        i.ref.digest,
        i.manifest,
        i.media_type,
        opts.sbom,
        opts.build_facts if opts.provenance else None,
        store,
        b.image_id if store is not None else "",
        (opts.retry, opts.retry_delay),
        opts.spec.cache_repo if filed else "",
    )
    return dataclasses.replace(b, attached=attached)


# --- the whole-build key (taskimage/build/key.py) -------------------------------------------------


def build_keys(opts: BuildOptions, registry: remote.Access) -> dict[Platform, str]:
    """Each platform's whole-build key, for builds with a layer cache (where results are filed)."""
    timer = log.Timer()
    try:
        containerfile = opts.spec.containerfile.read_bytes()
        text = containerfile.decode()
    except (OSError, UnicodeDecodeError):
        return {}
    digests: dict[str, str | None] = {}

    def digest_of(image: str) -> str | None:
        if image not in digests:
            try:
                raw = remote.inspect_raw(registry, image, 0, 0, retry_not_found=False)
                digests[image] = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
            except ToolError:
                digests[image] = None
        return digests[image]

    found = tools.run(["buildah", "--version"], quiet=True, stream=False, check=False).stdout.strip()
    versions = f"taskimage {__version__}; {found}; on {host_platform()}"  # $BUILDPLATFORM stages depend on the host
    try:
        context = buildkey.context_digest(opts.spec.context, buildkey.context_roots(text))
    except IgnoreError as exc:
        log.info(
            f"no whole-build key: the context's ignore file cannot be mirrored ({exc}); buildah's layer cache only"
        )
        return {}
    keys = {}
    for p in opts.platforms:
        images = buildkey.external_images(text, dict(opts.spec.build_args), p)
        resolved = buildkey.resolve_images(images, digest_of) if images is not None else None
        if resolved is None:
            log.info(
                f"[{p}] no whole-build key (a FROM image that cannot be pinned to a digest, or a "
                "Containerfile parser directive): buildah's layer cache only"
            )
            continue
        keys[p] = buildkey.key(
            versions=versions,
            containerfile=containerfile,
            context=context,
            platform=p,
            fmt=opts.spec.format,
            target=opts.spec.target,
            build_args=opts.spec.build_args,
            labels=opts.spec.labels,
            annotations=opts.spec.annotations
            + tuple((k, val) for q, k, val in opts.spec.platform_annotations if q == p),
            images=resolved,
        )
    log.info(f"whole-build keys for {len(keys)} of {len(opts.platforms)} platform(s) in {timer.seconds:.1f} s")
    return keys


def reuse_built(opts: BuildOptions, registry: remote.Access, p: Platform, build_key: str) -> index.Instance | None:
    """The image an earlier run built and verified from the same inputs, copied by digest; or None."""
    prefix = f"[{p}] "
    ref = buildkey.tag(opts.spec.cache_repo, build_key)
    try:
        manifest = remote.inspect_raw(registry, ref, 0, 0, retry_not_found=False).encode()
        doc = json.loads(manifest)
        media_type = doc.get("mediaType") or index.OCI_MANIFEST
        config = remote.inspect_raw(registry, ref, 0, 0, config=True).encode()
        cfg = json.loads(config)
    except ToolError as exc:
        if not remote.not_found(exc.tail):
            log.info(f"{prefix}the layer cache's {ref} could not be read ({exc}); building")
        return None
    except ValueError:
        return None
    if index.FAMILY.get(media_type) != opts.spec.format or not p.matches_config(
        cfg.get("os"), cfg.get("architecture"), cfg.get("variant")
    ):
        log.warn(f"{prefix}{ref} is not a {opts.spec.format} image for {p}; building")
        return None
    source = f"{opts.spec.cache_repo}@sha256:{hashlib.sha256(manifest).hexdigest()}"
    log.info(f"{prefix}nothing the build reads has changed since {ref}: reused that image")
    return _push_by_digest(
        opts,
        registry,
        p,
        manifest,
        config,
        lambda target: buildah.skopeo_copy_image(registry, source, target),
        " (reused)",
    )


def record_built(
    opts: BuildOptions, registry: remote.Access, p: Platform, pushed: index.Instance, build_key: str
) -> bool:
    """File the pushed image under its whole-build key in the layer cache (never fatal: False
    when it could not be)."""
    ref = buildkey.tag(opts.spec.cache_repo, build_key)
    try:
        tools.run(
            buildah.skopeo_copy_image(registry, pushed.ref.pinned, ref),
            prefix=f"[{p}] ",
            stream=False,
            what="skopeo copy",
        )
    except ToolError as exc:
        log.warn(f"[{p}] the build could not be filed in the layer cache as {ref}: {exc}; the next run builds again")
        return False
    return True


def verify_image(store: buildah.Storage, p: Platform, image_id: str, prefix: str) -> str:
    """The image config says ``p`` and its executables really are ``p``'s, or raise."""
    data = json.loads(tools.run(buildah.inspect_image(store, image_id), quiet=True, stream=False).stdout)
    cfg = data.get("OCIv1") or {}
    if not p.matches_config(cfg.get("os"), cfg.get("architecture"), cfg.get("variant")):
        got = "/".join(x for x in (cfg.get("os"), cfg.get("architecture"), cfg.get("variant")) if x)
        raise PlatformMismatch(f"{p}: the built image's config says {got}, not {p}")
    name = f"taskimage-verify-{_run_id()}"
    tools.run(buildah.from_image(store, image_id, name), quiet=True, stream=False)
    try:
        mountpoint = tools.run(buildah.mount(store, name), quiet=True, stream=False).stdout.strip()
        verdict = verify.elf_arch(mountpoint)
    finally:
        tools.run(buildah.remove_container(store, name), quiet=True, stream=False, check=False, cleanup=True)
    if verdict.arch is None:
        return "no ELF executables to check; config says " + str(p)
    if verdict.arch != p.arch:
        raise TaskimageError(
            f"{p}: the built image's executables are {verdict.arch} ({verdict.evidence}), not {p.arch}: "
            f"the base image probably has no {p} variant; use a multi-arch base image"
        )
    return f"executables are {verdict.arch}: {verdict.evidence}"


def _push_by_digest(
    opts: BuildOptions,
    registry: remote.Access,
    p: Platform,
    manifest: bytes,
    config: bytes,
    argv_for: Callable[[str], list[str]],
    how: str = "",
) -> index.Instance:
    """Push one image whose manifest bytes are known to IMAGE@<their digest> with ``argv_for(target)``
    (retried), and describe it for the list."""
    prefix = f"[{p}] "
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    target = opts.image.with_digest(digest)
    argv = argv_for(target)
    remote.with_retry(
        lambda: tools.run(argv, prefix=prefix, what="skopeo copy"),
        what=f"pushing {p} to {target}",
        image=opts.image,
        retry=opts.retry,
        retry_delay=opts.retry_delay,
    )
    log.info(f"{prefix}pushed {target}{how}")
    media_type = json.loads(manifest).get("mediaType") or index.OCI_MANIFEST
    return index.Instance(index.SourceRef(target, opts.image, digest), p, media_type, manifest, config)


def push_platform(
    opts: BuildOptions,
    store: buildah.Storage,
    registry: remote.Access,
    p: Platform,
    image_id: str,
    workdir: str,
    cached: str = "",
) -> index.Instance:
    """Push one verified platform into IMAGE's repository by digest, no tag, while others still build.

    buildah pushes only to a tag, and an image's digest is known only once its layers are
    compressed; so the image is written compressed to a ``dir:`` copy first, whose manifest gives
    the digest, and skopeo pushes that copy unchanged to REPOSITORY@DIGEST (removed afterwards).
    Nobody reads an untagged manifest by name: until the list moves the tag, nothing has changed.
    """
    prefix = f"[{p}] "
    if cached:
        instance = push_from_cache(opts, registry, p, image_id, cached)
        if instance:
            return instance
    directory = os.path.join(workdir, f"push-{p.slug}")
    try:
        tools.run(
            buildah.push_dir(store, image_id, directory, opts.spec.format),
            prefix=prefix,
            stream=False,
            what=f"buildah push for {p}",
        )
        manifest = Path(directory, "manifest.json").read_bytes()
        config = Path(directory, json.loads(manifest)["config"]["digest"].partition(":")[2]).read_bytes()
        return _push_by_digest(
            opts, registry, p, manifest, config, lambda target: buildah.skopeo_push_dir(registry, directory, target)
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def push_from_cache(
    opts: BuildOptions, registry: remote.Access, p: Platform, image_id: str, cached: str
) -> index.Instance | None:
    """Copy the final image from the layer cache, where the build just put it (or found it), by digest.

    With --cache-to buildah pushes every step, the last one included, already compressed; a copy
    of it saves compressing the whole image again (seconds of CPU on the critical path, on a warm
    run most of the push), and within one registry the layers are only mounted. Used only when the
    cache's manifest names exactly our image (its config digest is the image ID) in the requested
    format; else (None) the image is pushed from the storage.
    """
    prefix = f"[{p}] "
    try:
        manifest = remote.inspect_raw(registry, cached, 0, 0).encode()
        doc = json.loads(manifest)
        media_type = doc.get("mediaType") or index.OCI_MANIFEST
        config_digest = (
            image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
        )  # the iidfile has the prefix
        if doc.get("config", {}).get("digest") != config_digest or index.FAMILY.get(media_type) != opts.spec.format:
            log.info(
                f"{prefix}the layer cache's {cached} is not this image in {opts.spec.format} form; pushing from the storage"
            )
            return None
        config = remote.inspect_raw(registry, cached, 0, 0, config=True).encode()
    except (ToolError, ValueError) as exc:
        log.info(f"{prefix}the layer cache's {cached} could not be read ({exc}); pushing from the storage")
        return None
    source = f"{cached.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(manifest).hexdigest()}"
    return _push_by_digest(
        opts,
        registry,
        p,
        manifest,
        config,
        lambda target: buildah.skopeo_copy_image(registry, source, target),
        " (copied from the layer cache)",
    )


def evict(store: buildah.Storage, p: Platform, image_id: str, before: frozenset[str], prefix: str) -> None:
    """Remove from the storage what this run added for ``p``, once it is pushed: its image, the
    intermediate images ``--layers`` kept, and the base images pulled for it.

    Images that were there before the run are kept (a local storage may hold the user's own), and
    so is everything of other platforms, which may still be building. Never fatal: a failure here
    costs disk, not the build.
    """
    failures: list[str] = []

    def remove(images: list[str]) -> int:
        r = tools.run(buildah.remove_images(store, images), quiet=True, stream=False, check=False)
        if r.returncode:
            failures.append((r.stderr.strip().splitlines() or [f"buildah rmi exited {r.returncode}"])[-1])
        return len(
            re.findall(r"^[0-9a-f]{64}$", r.stdout, re.MULTILINE)
        )  # one ID per removed image ("untagged: ..." aside)

    gone = remove([image_id])
    listed = tools.run(buildah.image_ids(store), quiet=True, stream=False, check=False).stdout.split()
    bases = []
    for image in (i for i in listed if i not in before):
        data = tools.run(buildah.inspect_image(store, image), quiet=True, stream=False, check=False)
        try:
            cfg = json.loads(data.stdout).get("OCIv1") or {}
        except json.JSONDecodeError:
            continue  # removed meanwhile
        if p.matches_config(cfg.get("os"), cfg.get("architecture"), cfg.get("variant")):
            bases.append(image)
    if bases:
        gone += remove(bases)
    if failures:
        log.warn(f"{prefix}--evict: could not remove every image of {p} from the storage: {failures[-1]}")
    log.info(f"{prefix}removed {gone} image(s) of {p} from the storage (--evict)")


def run(opts: BuildOptions) -> Outcome:
    total = log.Timer()
    started = attest.now()
    log.phase("preflight")
    log.info(f"image {opts.image.url}; platforms {', '.join(map(str, opts.platforms))}")
    statuses = binfmt.preflight(opts.platforms)
    for s in statuses:
        log.info(f"  {s.platform}: {s.describe()}")
    driver, why = storage.choose(opts.storage_driver, opts.root)
    log.info(f"storage driver {driver}: {why}")
    store = buildah.Storage(driver, opts.root, opts.runroot)
    jobs = opts.jobs or default_jobs(len(opts.platforms))
    if opts.spec.timestamp is not None and len(opts.platforms) > 1:
        # Builds at once in one storage race for the base image's name (each platform pulls it and
        # moves the tag): the loser records its base by ID, which changes its history comments and
        # base-image annotations, so the digest. One at a time, every cold build writes the same.
        if opts.jobs > 1:
            log.warn(
                f"--jobs {opts.jobs} with --source-date-epoch: parallel builds in one storage may record "
                "their base image differently, so digests may differ between runs; --jobs 1 avoids it"
            )
        else:
            jobs = 1
            log.info("--source-date-epoch: one platform at a time, so that every run records its base images alike")
    jobs = min(jobs, len(opts.platforms))
    order = build_order(opts.platforms, [s.platform for s in statuses if s.native])
    log.info(
        f"building {len(opts.platforms)} platform(s), {jobs} at a time"
        + (f", emulated first: {', '.join(map(str, order))}" if len(order) > 1 else "")
    )
    if opts.evict and opts.skip_push:
        log.info("--evict has no effect with --skip-push: the images stay in the storage")

    workdir = tempfile.mkdtemp(prefix="taskimage-")
    try:
        with auth.with_creds(opts.registry, opts.image.registry, opts.creds) as registry:
            if opts.spec.cache_repo:
                problem = cache_problem(registry, opts.spec.cache_repo)
                if problem:
                    log.warn(f"layer cache {opts.spec.cache_repo} not used: {problem}")
                    opts = dataclasses.replace(opts, spec=dataclasses.replace(opts.spec, cache_repo=""))
                else:
                    log.info(f"layer cache {opts.spec.cache_repo}: reachable")
            before: frozenset[str] = frozenset()
            if opts.evict and not opts.skip_push:
                before = frozenset(tools.run(buildah.image_ids(store), quiet=True, stream=False).stdout.split())
            keys = build_keys(opts, registry) if opts.spec.cache_repo and not opts.skip_push else {}
            if opts.provenance and not opts.skip_push:
                opts = dataclasses.replace(
                    opts, build_facts=attest.facts(opts.spec, registry, opts.platforms, started, keys)
                )
            builds = _build_all(opts, store, registry, workdir, jobs, order, before, keys)
            if opts.skip_push:
                log.phase("push skipped (--skip-push)")
                out = {"IMAGE_URL": opts.image.url, "IMAGE_DIGEST": "", "IMAGE_REF": "", "IMAGES": "", "IMAGE_TAGS": ""}
                out.update(attest.results_for(opts.image, ()))
                outcome = Outcome(opts.image, "", (), builds, out)
            else:
                digest, images = index.push_list(
                    registry,
                    opts.image,
                    _pushed(builds),
                    opts.spec.format,
                    Path(workdir),
                    opts.retry,
                    opts.retry_delay,
                    annotations=opts.index_annotations,
                )
                index.move_tags(registry, opts.image, opts.tags, digest, opts.retry, opts.retry_delay)
                out = remote.results_for(opts.image, digest, images, opts.tags)
                out.update(attest.results_for(opts.image, attach_index(opts, registry, digest, images, builds)))
                outcome = Outcome(opts.image, digest, images, builds, out)
            if opts.results_dir:
                results.write(opts.results_dir, outcome.results)
                log.info(f"results written to {opts.results_dir}")
            _summary(outcome, total.seconds)
            return outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _pushed(builds: Sequence[PlatformBuild]) -> list[index.Instance]:
    """Every platform's pushed image, for the list; a platform without one is a bug, not a short list."""
    out = []
    for b in builds:
        if b.pushed is None:
            raise AssertionError(f"{b.platform} was built but not pushed")
        out.append(b.pushed)
    return out


def attach_index(
    opts: BuildOptions, registry: remote.Access, digest: str, images, builds: Sequence[PlatformBuild]
) -> tuple[attest.Attached, ...]:
    """Everything attached: each platform's referrers and the index's. The tag has moved already,
    so a failure here is a warning (the results list only what was attached), not a failed build."""
    attached = tuple(a for b in builds for a in b.attached)
    if opts.sbom == "none" and not opts.provenance:
        return attached
    per_platform = opts.build_facts.platform_bases if opts.build_facts else {}
    bases = [base for p in opts.platforms for base in per_platform.get(str(p), ())]
    try:
        return attached + attest.attach_index(
            opts.image,
            registry,
            digest,
            images,
            opts.sbom,
            opts.build_facts if opts.provenance else None,
            bases,
            (opts.retry, opts.retry_delay),
        )
    except TaskimageError as exc:
        log.warn(f"the index's SBOM/provenance could not be attached: {exc}")
        return attached


def _build_all(
    opts: BuildOptions,
    store,
    registry,
    workdir: str,
    jobs: int,
    order: Sequence[Platform] | None = None,
    before: frozenset[str] = frozenset(),
    keys: dict | None = None,
) -> tuple[PlatformBuild, ...]:
    """Build ``jobs`` platforms at a time in ``order``; push each one as soon as it is verified.

    Pushes (and evictions) run beside the builds, so a build slot is free again the moment its
    platform is verified: with ``--jobs 1`` the next platform builds while the previous one is
    compressed and pushed, and the storage holds at most one platform being built and one being
    pushed.
    """
    order = list(order or opts.platforms)
    done: dict[Platform, PlatformBuild] = {}
    if len(order) == 1:  # nothing to overlap
        b = build_platform(opts, store, registry, order[0], workdir, keys)
        return (b if opts.skip_push else push_built(opts, store, registry, b, workdir, before, keys),)
    wait, first = concurrent.futures.wait, concurrent.futures.FIRST_COMPLETED
    token = tools.current()
    failures: list[tuple[Platform, BaseException]] = []
    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="build") as builds,
        concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="push") as pushes,
    ):
        building = {tools.submit(builds, build_platform, opts, store, registry, p, workdir, keys): p for p in order}
        pushing: dict[concurrent.futures.Future, Platform] = {}
        try:
            while building or pushing:
                finished, _ = wait([*building, *pushing], return_when=first)
                for fut in finished:
                    was_build = fut in building
                    p = building.pop(fut) if was_build else pushing.pop(fut)
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if isinstance(exc, Interrupted) and token.cancelled:
                        log.info(f"[{p}] stopped: {token.reason}")
                        continue
                    if exc is not None:
                        if failures:
                            log.error(f"{p} also failed: {exc}")
                        failures.append((p, exc))
                        if token.cancel(f"{p} failed"):
                            log.warn(f"{p} failed: stopping the other platforms")
                        for f in (*building, *pushing):
                            f.cancel()  # not started yet
                        continue
                    if token.cancelled:
                        continue
                    b = fut.result()
                    if was_build and not opts.skip_push:
                        pushing[tools.submit(pushes, push_built, opts, store, registry, b, workdir, before, keys)] = p
                    else:
                        done[p] = b
        except BaseException:
            token.cancel(token.reason or "interrupted")
            for f in (*building, *pushing):
                f.cancel()
            raise
    if failures:
        raise failures[0][1]
    token.check()
    return tuple(done[p] for p in opts.platforms)


def _summary(outcome: Outcome, seconds: float) -> None:
    log.phase("summary")
    digests = dict(outcome.images)
    rows = [(str(b.platform), digests.get(b.platform, "(not pushed)"), f"{b.seconds:.1f}") for b in outcome.builds]
    log.info(log.table(("PLATFORM", "DIGEST", "SECONDS"), rows))
    if outcome.digest:
        log.info(f"pushed {outcome.image.url} = {outcome.image.with_digest(outcome.digest)}")
    log.info(f"total {seconds:.1f} s")
