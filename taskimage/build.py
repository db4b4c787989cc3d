"""``taskimage build``: preflight, build every platform, verify, push one manifest list, results.

Order matters for users: every check of their input happens before anything runs, emulation is
checked before any build, every image is verified before anything is pushed, the per-platform
images are pushed by digest before the list, and the tag moves last (one manifest PUT).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import random
import re
import string
import tempfile
import time
from pathlib import Path
from typing import Sequence

from taskimage import auth, binfmt, buildah, log, results, storage, tools, verify
from taskimage.errors import RegistryAuthError, TaskimageError, ToolError, UsageError
from taskimage.platforms import Platform, host_platform, parse_platforms
from taskimage.reference import ImageReference, parse_image

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
AUTH_MARKERS = ("unauthorized", "authentication required", "denied", "401", "403", "forbidden")
# As words, never inside a digest: a bare "401" matched the hex of sha256 digests in buildah's
# output and turned a 503 into "credentials refused" (seen through tests/faultproxy.py).
_AUTH_RE = re.compile(r"unauthorized|authentication required|\bdenied\b|\bforbidden\b|(?<![0-9a-f:])40[13](?![0-9a-f])",
                      re.IGNORECASE)


def auth_refused(lines: Sequence[str]) -> bool:
    """Does a registry tool's output say the credentials were refused (401/403)?"""
    return any(_AUTH_RE.search(line) for line in lines)
PERMANENT_MARKERS = ("manifest invalid", "name invalid", "invalid reference", "blob unknown to registry",
                     "name unknown", "unsupported", "no such host")
NOT_FOUND_MARKERS = ("manifest unknown", "not found", "name unknown")


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    image: ImageReference
    platforms: tuple[Platform, ...]
    spec: buildah.BuildSpec
    registry: buildah.Registry
    storage_driver: str = "auto"
    root: str | None = None
    runroot: str | None = None
    skip_push: bool = False
    retry: int = 3
    retry_delay: float = 2.0
    jobs: int = 0
    results_dir: Path | None = None
    creds: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class PlatformBuild:
    platform: Platform
    image_id: str
    seconds: float
    elf: str  # what the ELF check found


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
        raise UsageError(f"{src['IMAGE']}: an image to push is required (e.g. --image registry.example.com/team/app:1.0)")
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

    spec = buildah.BuildSpec(
        context=context,
        containerfile=containerfile,
        build_args=_pairs(v["BUILD_ARGS"], src["BUILD_ARGS"]),
        labels=_pairs(v["LABELS"], src["LABELS"]),
        annotations=_pairs(v["ANNOTATIONS"], src["ANNOTATIONS"]),
        target=v["TARGET"],
        format=v["FORMAT"],
        cache_repo=_cache_repo(v["CACHE_REPO"], src["CACHE_REPO"]),
        ulimits=buildah.run_limits(),
    )
    registry, creds = registry_access(v, src)
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
        results_dir=results.check_dir(v["RESULTS_DIR"], src["RESULTS_DIR"]),
        creds=creds,
    )


def registry_access(v: dict, src: dict) -> tuple[buildah.Registry, str | None]:
    """TLSVERIFY, AUTHFILE, CERT_DIR and CREDS checked (as build and index take them)."""
    authfile = auth.resolve_authfile(v["AUTHFILE"], src["AUTHFILE"])
    creds = v["CREDS"] or None
    if creds:
        auth.split_creds(creds, src["CREDS"])
    cert_dir = v["CERT_DIR"] or None
    if cert_dir and not Path(cert_dir).is_dir():
        raise UsageError(f"{src['CERT_DIR']}: {cert_dir!r} is not a directory")
    return buildah.Registry(v["TLSVERIFY"], str(authfile) if authfile else None, cert_dir), creds


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


def cache_problem(registry: buildah.Registry, repo: str) -> str | None:
    """Why the layer cache ``repo`` cannot be used (unreachable, refused), or None.

    Checked once before the builds: buildah retries every cache pull of every step (3 x 2 s) and
    fails the build when a cache push fails, so an unreachable cache would cost minutes. A
    repository that does not exist yet is fine (a cold cache: the first run fills it).
    """
    try:
        tools.run(["skopeo", "list-tags", *registry.skopeo_args(), f"docker://{repo}"], quiet=True, stream=False,
                  timeout=30, what="skopeo list-tags")
        return None
    except ToolError as exc:
        text = " ".join(exc.tail).lower()
        if "404" in text or any(m in text for m in NOT_FOUND_MARKERS):
            return None
        return exc.tail[-1] if exc.tail else str(exc)


def _run_id() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


PULL_RACE_ATTEMPTS = 3


def _buildah_build(argv: list[str], prefix: str, env: dict, p: Platform) -> None:
    """``buildah build``, again when a parallel build of another platform won the pull race.

    Platforms built at once share one storage; each pulls the same base image name for its own
    platform and tags it, so one build can lose the tag it just pulled ("locating pulled image
    ... image not known", seen here in about one of four runs of two platforms on a warm storage).
    Building again finds its image and goes on; any other failure is the user's.
    """
    for attempt in range(1, PULL_RACE_ATTEMPTS + 1):
        try:
            tools.run(argv, prefix=prefix, env=env, what=f"buildah build for {p}")
            return
        except ToolError as exc:
            lost = any("locating pulled image" in line and "image not known" in line for line in exc.tail)
            if not lost or attempt == PULL_RACE_ATTEMPTS:
                raise
            log.warn(f"{prefix}a parallel build re-tagged the base image this build had just pulled "
                     f"(buildah's pull race in shared storage); building again ({attempt + 1} of {PULL_RACE_ATTEMPTS})")


def build_platform(opts: BuildOptions, store: buildah.Storage, registry: buildah.Registry, p: Platform, workdir: str) -> PlatformBuild:
    prefix = f"[{p}] "
    log.phase(f"build {p}")
    timer = log.Timer()
    iidfile = os.path.join(workdir, f"iid-{p.slug}")
    argv = buildah.build(store, registry, opts.spec, p, iidfile)
    env = {"BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot")}
    try:
        _buildah_build(argv, prefix, env, p)
    except ToolError as exc:
        if opts.spec.cache_repo and any("cache" in line.lower() for line in exc.tail):
            log.warn(f"{prefix}the build failed with the layer cache {opts.spec.cache_repo}; retrying without it")
            argv = buildah.build(store, registry, dataclasses.replace(opts.spec, cache_repo=""), p, iidfile)
            _buildah_build(argv, prefix, env, p)
        else:
            raise
    image_id = Path(iidfile).read_text().strip()
    try:
        elf = verify_image(store, p, image_id, prefix)
    except PlatformMismatch as exc:
        # buildah < 1.42 does not check the platform of cache candidates (buildah#6269): a step
        # whose inputs are the same for every platform (FROM scratch + COPY) reuses the layer,
        # and the config, that another platform built. Without --layers no cache is consulted.
        log.warn(f"{prefix}{exc}: a cached layer of another platform was reused (buildah matches cache "
                 "entries without their platform); rebuilding without the layer cache")
        argv = buildah.build(store, registry, dataclasses.replace(opts.spec, cache_repo=""), p, iidfile, layers=False)
        tools.run(argv, prefix=prefix, env=env, what=f"buildah build for {p}")
        image_id = Path(iidfile).read_text().strip()
        elf = verify_image(store, p, image_id, prefix)
    seconds = timer.seconds
    log.info(f"{prefix}built {image_id[:19]} in {seconds:.1f} s ({elf})")
    return PlatformBuild(p, image_id, seconds, elf)


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
        tools.run(buildah.remove_container(store, name), quiet=True, stream=False, check=False)
    if verdict.arch is None:
        return "no ELF executables to check; config says " + str(p)
    if verdict.arch != p.arch:
        raise TaskimageError(
            f"{p}: the built image's executables are {verdict.arch} ({verdict.evidence}), not {p.arch}: "
            f"the base image probably has no {p} variant; use a multi-arch base image"
        )
    return f"executables are {verdict.arch}: {verdict.evidence}"


def registry_retry(action, *, what: str, image: ImageReference, retry: int, retry_delay: float):
    """Run ``action()`` (a registry write), retrying transient errors with backoff.

    Authentication errors are never retried (a wrong password stays wrong, and retrying may lock
    the account); errors that cannot heal (invalid manifest, unknown name) end at once. Shared by
    ``build`` and ``index``, which both move a tag with one manifest PUT.
    """
    attempts = retry + 1
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except ToolError as exc:
            text = " ".join(exc.tail).lower()
            if auth_refused(exc.tail):
                raise RegistryAuthError(
                    f"the registry {image.registry} refused the credentials for {image.name} "
                    f"(check --authfile / the dockerconfig workspace); not retried", tail=exc.tail) from exc
            if any(m in text for m in PERMANENT_MARKERS) or attempt == attempts:
                raise ToolError(f"{what} failed after {attempt} attempt(s): "
                                f"{exc.tail[-1] if exc.tail else exc}", tail=exc.tail) from exc
            delay = retry_delay * (2 ** (attempt - 1))
            log.warn(f"{what}: attempt {attempt} of {attempts} failed ({exc.tail[-1] if exc.tail else exc}); retrying in {delay:g} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def push_with_retry(opts: BuildOptions, store: buildah.Storage, registry: buildah.Registry, list_name: str) -> None:
    """Push the list (images by digest first, then the list to the tag, which moves last).

    No local digest is trusted: :func:`read_back` takes the digest from the registry.
    """
    argv = buildah.manifest_push(store, registry, list_name, opts.image.url, opts.spec.format)

    def push() -> None:
        tools.run(argv, what="buildah manifest push")

    registry_retry(push, what=f"pushing {opts.image.url}", image=opts.image, retry=opts.retry, retry_delay=opts.retry_delay)


def inspect_raw(registry: buildah.Registry, ref: str, retry: int, delay: float, *, config: bool = False,
                retry_not_found: bool = True) -> str:
    """``skopeo inspect --raw`` (or the config) of ``ref``, retried; auth errors are not.

    "Not found" is retried by default (a registry on eventually consistent storage may not show a
    fresh push at once); callers checking user input pass ``retry_not_found=False``.
    """
    for attempt in range(1, retry + 2):
        try:
            return tools.run(buildah.skopeo_inspect_raw(registry, ref, config=config), quiet=True, stream=False,
                             what="skopeo inspect").stdout
        except ToolError as exc:
            text = " ".join(exc.tail).lower()
            not_found = not retry_not_found and any(m in text for m in NOT_FOUND_MARKERS)
            if auth_refused(exc.tail) or not_found or attempt > retry:
                raise
            time.sleep(delay * (2 ** (attempt - 1)))
    raise AssertionError("unreachable")


def results_for(image: ImageReference, digest: str, images) -> dict[str, str]:
    """The four Tekton results of a pushed list (build and index write the same)."""
    return {
        "IMAGE_DIGEST": digest,
        "IMAGE_URL": image.url,
        "IMAGE_REF": image.with_digest(digest),
        "IMAGES": ",".join(image.with_digest(d) for _, d in images),
    }


def read_back(opts: BuildOptions, registry: buildah.Registry) -> tuple[str, tuple[tuple[Platform, str], ...]]:
    """Take the digest from the registry and check the pushed index lists every platform."""
    return read_back_index(registry, opts.image, opts.platforms, "", opts.retry, opts.retry_delay)


def read_back_index(registry: buildah.Registry, image: ImageReference, platforms: Sequence[Platform], pushed_digest: str,
                    retry: int, retry_delay: float) -> tuple[str, tuple[tuple[Platform, str], ...]]:
    """Read the index at ``image``'s tag from the registry; check every platform's entry and config.

    ``pushed_digest`` is what we believe we pushed (may be empty: then the tag's digest is taken).
    Returns the index digest and each platform's manifest digest, in ``platforms`` order.
    """
    raw_by_tag = inspect_raw(registry, image.url, retry, retry_delay)
    tag_digest = "sha256:" + hashlib.sha256(raw_by_tag.encode()).hexdigest()
    digest = pushed_digest if pushed_digest.startswith("sha256:") else tag_digest
    if digest != tag_digest:
        log.warn(f"the tag {image.url} now points at {tag_digest}, not at what we pushed ({digest}): "
                 "another push raced ours; results name what we pushed")
        raw = inspect_raw(registry, image.with_digest(digest), retry, retry_delay)
    else:
        raw = raw_by_tag
    index = json.loads(raw)
    if index.get("mediaType") not in INDEX_TYPES and "manifests" not in index:
        raise TaskimageError(f"the registry returned a {index.get('mediaType')} for {image.url}, not a manifest list")
    listed: dict[Platform, str] = {}
    for entry in index.get("manifests", []):
        plat = entry.get("platform") or {}
        for p in platforms:
            if p.matches_config(plat.get("os"), plat.get("architecture"), plat.get("variant")):
                listed[p] = entry["digest"]
    missing = [str(p) for p in platforms if p not in listed]
    if missing:
        raise TaskimageError(f"the pushed index {image.with_digest(digest)} lacks {', '.join(missing)}")
    for p, entry_digest in listed.items():
        cfg = json.loads(inspect_raw(registry, image.with_digest(entry_digest), retry, retry_delay, config=True))
        if not p.matches_config(cfg.get("os"), cfg.get("architecture"), cfg.get("variant")):
            raise TaskimageError(f"the pushed image for {p} ({entry_digest}) has a config for {cfg.get('architecture')}")
    return digest, tuple((p, listed[p]) for p in platforms)


def run(opts: BuildOptions) -> Outcome:
    total = log.Timer()
    log.phase("preflight")
    log.info(f"image {opts.image.url}; platforms {', '.join(map(str, opts.platforms))}")
    statuses = binfmt.preflight(opts.platforms)
    for s in statuses:
        log.info(f"  {s.platform}: {s.describe()}")
    driver, why = storage.choose(opts.storage_driver, opts.root)
    log.info(f"storage driver {driver}: {why}")
    store = buildah.Storage(driver, opts.root, opts.runroot)
    jobs = opts.jobs or default_jobs(len(opts.platforms))
    jobs = min(jobs, len(opts.platforms))
    order = build_order(opts.platforms, [s.platform for s in statuses if s.native])
    log.info(f"building {len(opts.platforms)} platform(s), {jobs} at a time"
             + (f", emulated first: {', '.join(map(str, order))}" if len(order) > 1 else ""))

    workdir = tempfile.mkdtemp(prefix="taskimage-")
    list_name = f"localhost/taskimage-list-{_run_id()}"
    list_created = False
    try:
        with auth.with_creds(opts.registry, opts.image.registry, opts.creds) as registry:
            if opts.spec.cache_repo:
                problem = cache_problem(registry, opts.spec.cache_repo)
                if problem:
                    log.warn(f"layer cache {opts.spec.cache_repo} not used: {problem}")
                    opts = dataclasses.replace(opts, spec=dataclasses.replace(opts.spec, cache_repo=""))
                else:
                    log.info(f"layer cache {opts.spec.cache_repo}: reachable")
            builds = _build_all(opts, store, registry, workdir, jobs, order)
            if opts.skip_push:
                log.phase("push skipped (--skip-push)")
                out = {"IMAGE_URL": opts.image.url, "IMAGE_DIGEST": "", "IMAGE_REF": "", "IMAGES": ""}
                outcome = Outcome(opts.image, "", (), builds, out)
            else:
                log.phase("manifest list")
                tools.run(buildah.manifest_create(store, list_name), stream=False)
                list_created = True
                for b in builds:
                    tools.run(buildah.manifest_add(store, list_name, b.image_id), stream=False)
                log.phase(f"push {opts.image.url}")
                push_with_retry(opts, store, registry, list_name)
                log.phase("verify pushed index")
                digest, images = read_back(opts, registry)
                out = results_for(opts.image, digest, images)
                outcome = Outcome(opts.image, digest, images, builds, out)
            if opts.results_dir:
                results.write(opts.results_dir, outcome.results)
                log.info(f"results written to {opts.results_dir}")
            _summary(outcome, total.seconds)
            return outcome
    finally:
        if list_created:
            tools.run(buildah.manifest_rm(store, list_name), quiet=True, stream=False, check=False) if not tools.stopping() else None
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def _build_all(opts: BuildOptions, store, registry, workdir: str, jobs: int,
               order: Sequence[Platform] | None = None) -> tuple[PlatformBuild, ...]:
    order = list(order or opts.platforms)
    done: dict[Platform, PlatformBuild] = {}
    if jobs == 1:
        for p in order:
            done[p] = build_platform(opts, store, registry, p, workdir)
        return tuple(done[p] for p in opts.platforms)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="build") as pool:
        futures = {pool.submit(build_platform, opts, store, registry, p, workdir): p for p in order}
        try:
            for fut in concurrent.futures.as_completed(futures):
                done[futures[fut]] = fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return tuple(done[p] for p in opts.platforms)


def _summary(outcome: Outcome, seconds: float) -> None:
    log.phase("summary")
    digests = dict(outcome.images)
    rows = [(str(b.platform), digests.get(b.platform, "(not pushed)"), f"{b.seconds:.1f}") for b in outcome.builds]
    log.info(log.table(("PLATFORM", "DIGEST", "SECONDS"), rows))
    if outcome.digest:
        log.info(f"pushed {outcome.image.url} = {outcome.image.with_digest(outcome.digest)}")
    log.info(f"total {seconds:.1f} s")
