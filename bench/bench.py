"""Benchmarks of ``taskimage build`` against the seed's script (not timed tests: they print).

    .venv/bin/python bench/bench.py samba [--rounds 2]    # (a) seed vs cold, (b) warm, (d) peak disk
    .venv/bin/python bench/bench.py overhead [--runs 5]   # (c) orchestration overhead

``samba`` builds examples/samba (apt-get install samba; arm64 under qemu) for linux/amd64 and
linux/arm64 FROM a minbase Debian bookworm made locally with mmdebstrap, pushed to a local
registry. Each round runs, in fresh storage directories, interleaved (the order alternates
between rounds so that neither side always runs on a warmer page cache or a quieter machine):

- ``seed``: bench/seed/build.sh (serial buildah bud, vfs, no cache, manifest push --all);
- ``cold``: ``taskimage build`` as the catalog Task runs it (``--evict``, ``--jobs`` automatic)
  with an empty ``--cache-repo`` (it fills it);
- ``warm``: the same again in another empty storage (a new pod) with that cache repo: the
  whole-build key finds the cold run's images;
- ``warm-clone``: as warm, from a new ``git clone`` of the same commit (cold builds from a clone
  too, as the shipped Pipeline does): the key still finds the cold run's images;
- ``warm-steps``: as warm with one more build arg, read by no step: the key misses
  and buildah's per-step layer cache serves every step (layers pulled, no RUN step runs);
- ``cold-j1``: as cold with ``--jobs 1`` (one platform at a time: less disk, more time);
- ``cold-keep``: as cold without ``--evict`` (every image stays in the storage until the end).

Each run prints its wall time, the peak size of its storage directory and of its TMPDIR
(``du -sxb`` every second and once at the end) and the load average when it started; the end
prints medians and the ratios to the seed's median against the targets of issue 7.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from taskimage import proc as tools  # noqa: E402
from taskimage.dev import env as devenv  # noqa: E402

PLATFORMS = ["linux/amd64", "linux/arm64"]
DISK_TARGET = 0.6


class PeakDisk:
    """Samples ``du -sxb`` of each directory in a thread, their sum too; ``-x`` stays off the
    overlay mounts of running builds."""

    def __init__(self, directories: dict[str, Path], every: float = 1.0):
        self.directories, self.every = directories, every
        self.peak = {name: 0 for name in (*directories, "total")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        sizes = {}
        for name, directory in self.directories.items():
            r = (
                tools.run(["du", "-sxb", str(directory)], quiet=True, stream=False, check=False)
                if directory.exists()
                else None
            )
            sizes[name] = int(r.stdout.split()[0]) if r and r.stdout.split() else 0
        sizes["total"] = sum(sizes.values())
        for name, size in sizes.items():
            self.peak[name] = max(self.peak[name], size)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> PeakDisk:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _timed(
    argv, *, cwd=None, env=None, storage: Path, tmp: Path | None = None, log_path: Path
) -> tuple[float, dict, float]:
    """(seconds, peak bytes {"storage", "tmp", "total"}, load average at start); raises if the command fails.

    ``tmp`` becomes the command's TMPDIR and is measured too: buildah stages every committed layer
    there (uncompressed) and skopeo/buildah pushes stage blobs there, so it is disk the pod pays for
    as much as the storage volume.
    """
    load = os.getloadavg()[0]
    full = dict(os.environ)
    full.update(env or {})
    dirs = {"storage": storage}
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        full["TMPDIR"] = str(tmp)
        dirs["tmp"] = tmp
    with PeakDisk(dirs) as disk, open(log_path, "w") as log:
        t = time.monotonic()
        # not tools.run: it would echo everything to the terminal; the log file keeps the output,
        # each line with the seconds since the start
        proc = subprocess.Popen(
            argv, cwd=cwd, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        for line in proc.stdout:
            log.write(f"{time.monotonic() - t:7.1f} {line}")
        proc.wait()
        seconds = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with {proc.returncode}; see {log_path}")
    return seconds, disk.peak, load


def _storage_conf(directory: Path) -> Path:
    conf = directory / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{directory / "root"}"\nrunroot = "{directory / "run"}"\n')
    return conf


def _clean(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


# The runs of a round. "cold"/"warm" run `taskimage build` as the catalog Task does (--evict on,
# --jobs automatic); "cold-j1" builds one platform at a time; "cold-keep" keeps every image in the
# storage until the end (--evict off, the CLI's default), for comparison.
VARIANTS = {
    "cold": ["--evict"],
    "warm": ["--evict"],
    "warm-clone": ["--evict"],
    "warm-steps": ["--evict"],
    "cold-j1": ["--evict", "--jobs", "1"],
    "cold-keep": [],
}
# "warm": unchanged inputs, the whole-build key finds the cold run's images; "warm-clone": the
# same from a new `git clone` of the same commit (as the shipped Pipeline runs: a fresh clone per
# run; cold builds from a clone too); "warm-steps": a build arg no step reads, so the key misses
# and buildah's per-step layer cache answers: every layer is pulled and unpacked, no step runs.
WARM = ("warm", "warm-clone", "warm-steps")
TARGETS = {"cold": 0.95, "warm": 0.15, "warm-clone": 0.05, "warm-steps": 0.15, "cold-j1": 0.95}


def samba(rounds: int, workdir: Path, keep_logs: Path, variants: list[str]) -> None:
    context = REPO / "examples" / "samba"
    taskimage = [sys.executable, "-m", "taskimage"]
    source = workdir / "samba.git"  # the app's repository, as the Pipeline's git-clone sees it
    shutil.copytree(context, source)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q", str(source)], check=True)
    subprocess.run([*git, "-C", str(source), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(source), "commit", "-qm", "samba"], check=True)
    with devenv.LocalRegistry(workdir / "registry") as reg:
        base = devenv.base_image("bookworm", PLATFORMS, f"{reg.host}/base/debian:bookworm")
        print(f"registry {reg.host}; base {base}; {os.cpu_count()} CPUs; load {os.getloadavg()}", flush=True)
        print(f"{'round':5} {'run':9} {'seconds':>8} {'storage':>9} {'tmp':>9} {'both':>9}  load", flush=True)
        runs: dict[str, list[tuple[float, dict]]] = {k: [] for k in ("seed", *variants)}

        def report(r: int, kind: str, s: float, peak: dict, load: float) -> None:
            runs[kind].append((s, peak))
            print(
                f"{r:5} {kind:9} {s:8.1f} {_gb(peak['storage']):>9} {_gb(peak['tmp']):>9} {_gb(peak['total']):>9}  {load:.1f}",
                flush=True,
            )

        for r in range(1, rounds + 1):
            cache = f"{reg.host}/cache/samba-{r}"

            def seed(r: int = r) -> None:
                d = workdir / f"seed-{r}"
                d.mkdir()
                env = {
                    "IMAGE": f"{reg.host}/bench/seed-{r}",
                    "BASE_IMAGE": base,
                    "CONTAINERS_STORAGE_CONF": str(_storage_conf(d)),
                }
                s, peak, load = _timed(
                    ["bash", str(HERE / "seed" / "build.sh"), *PLATFORMS],
                    cwd=context,
                    env=env,
                    storage=d / "root",
                    tmp=d / "tmp",
                    log_path=keep_logs / f"seed-{r}.log",
                )
                report(r, "seed", s, peak, load)
                _clean(d)

            def ours(kind: str, r: int = r, cache: str = cache) -> None:
                d = workdir / f"{kind}-{r}"
                # the warm runs reuse the cache that this round's cold run filled; the other cold runs get their own
                repo = cache if kind in ("cold", *WARM) else f"{cache}-{kind}"
                ctx = context
                if kind in ("cold", "warm-clone"):  # a fresh clone per run, as in the Pipeline
                    ctx = d / "ctx"
                    subprocess.run(["git", "clone", "-q", str(source), str(ctx)], check=True)

                argv = [
                    *taskimage,
                    "build",
                    "--image",
                    f"{reg.host}/bench/{kind}-{r}:v1",
                    "--context",
                    str(ctx),
                    "--build-arg",
                    f"BASE_IMAGE={base}",
                    *(["--build-arg", "UNUSED=1"] if kind == "warm-steps" else []),
                    "--tls-verify=false",
                    "--cache-repo",
                    repo,
                    "--root",
                    str(d / "root"),
                    "--runroot",
                    str(d / "run"),
                    *VARIANTS[kind],
                    *PLATFORMS,
                ]
                s, peak, load = _timed(argv, storage=d / "root", tmp=d / "tmp", log_path=keep_logs / f"{kind}-{r}.log")
                report(r, kind, s, peak, load)
                _clean(d)

            order = ["seed", *variants] if r % 2 else [*variants, "seed"]
            for warm in WARM:  # a warm run needs this round's cold run before it
                if warm in order and "cold" in order and order.index(warm) < order.index("cold"):
                    order.remove(warm)
                    order.insert(order.index("cold") + 1, warm)
            for kind in order:
                seed() if kind == "seed" else ours(kind)

    print()
    seed_t = statistics.median(s for s, _ in runs["seed"])
    seed_disk = {k: statistics.median(p[k] for _, p in runs["seed"]) for k in ("storage", "total")}
    print(
        f"{'run':9} {'median s':>9} {'x seed':>7} {'target':>8}   {'storage':>9} {'x seed':>7}   {'storage+tmp':>11} {'x seed':>7}"
    )
    for kind, values in runs.items():
        t = statistics.median(s for s, _ in values)
        disk = {k: statistics.median(p[k] for _, p in values) for k in ("storage", "total")}
        target = f"<= {TARGETS[kind]}" if kind in TARGETS else ""
        print(
            f"{kind:9} {t:9.1f} {t / seed_t:7.2f} {target:>8}   {_gb(disk['storage']):>9} {disk['storage'] / seed_disk['storage']:7.2f}"
            f"   {_gb(disk['total']):>11} {disk['total'] / seed_disk['total']:7.2f}"
        )
    print(f"peak disk target (storage): <= {DISK_TARGET} x the seed's; logs in {keep_logs}")


TRACER = """
import json, os, sys, time
from taskimage import cli
from taskimage import proc as tools
if os.environ.get("BENCH_LAZY_CLI") == "1":  # what a cli importing only the named command would cost
    cli.COMMAND_MODULES[:] = [sys.argv[2]]
spent = []
real = tools.run
if os.environ.get("BENCH_SUBPROCESS_SEAM") == "1":  # what tools.run on plain subprocess would cost
    import collections, subprocess, threading
    from taskimage import log
    from taskimage.errors import ToolError
    def real(argv, *, prefix="", env=None, stdin=None, check=True, quiet=False, stream=True, what=None, **_):
        argv = [str(a) for a in argv]
        if not quiet:
            log.command(argv, prefix)
        full = dict(os.environ, **(env or {}))
        p = subprocess.Popen(argv, env=full, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        tail, out, err = collections.deque(maxlen=25), [], []
        def pump(f, buf):
            for line in f:
                buf.append(line); tail.append(line.rstrip("\\n"))
                if stream:
                    log.tool_line(prefix, line)
        threads = [threading.Thread(target=pump, args=(p.stdout, out)), threading.Thread(target=pump, args=(p.stderr, err))]
        for t in threads: t.start()
        if stdin is not None:
            p.stdin.write(stdin if isinstance(stdin, str) else stdin.decode()); p.stdin.close()
        rc = p.wait()
        for t in threads: t.join()
        if check and rc:
            raise ToolError(f"{what or argv[0]} failed with exit code {rc}", tail=list(tail), returncode=rc)
        return tools.Result(tuple(argv), rc, "".join(out), "".join(err))
import shutil
kept = sys.argv[1] + ".dirs"
def timed(argv, **kw):
    argv = list(map(str, argv))
    t = time.monotonic()
    try:
        return real(argv, **kw)
    finally:
        seconds = time.monotonic() - t
        # a dir: our own code wrote (the list) is gone after the run: keep a copy for the replay
        if argv[:2] == ["skopeo", "copy"] and argv[-2].startswith("dir:") and "/list" in argv[-2]:
            copy = os.path.join(kept, str(len(spent)))
            shutil.copytree(argv[-2][4:], copy)
            argv = [*argv[:-2], "dir:" + copy, argv[-1]]
        spent.append([argv, seconds])
tools.run = timed
try:
    rc = cli.main(sys.argv[2:])
finally:
    json.dump(spent, open(sys.argv[1], "w"))
sys.exit(rc)
"""


def overhead(runs: int, workdir: Path, keep_logs: Path, lazy_cli: bool = False, subprocess_seam: bool = False) -> None:
    """Wall time of ``taskimage build`` minus the time of the same tool commands run straight.

    The build (busybox base, one RUN, amd64 only) is warm in its storage so that the tools are
    quick and the difference is not lost in their noise. Every tool command is recorded (and timed)
    in-process by a wrapper around tools.run, then replayed with plain subprocess calls: "raw". The
    wall time is measured from outside, so Python's start-up, argument parsing, preflight, the
    subprocess seam and our bookkeeping all count as overhead. ``lazy_cli`` measures
    what importing only the build command (not every command module) would save.
    """
    ctx = workdir / "ctx"
    ctx.mkdir()
    with devenv.LocalRegistry(workdir / "registry") as reg:
        base = devenv.base_image("busybox", ["linux/amd64"], f"{reg.host}/base/busybox:1")
        (ctx / "Containerfile").write_text(f"FROM {base}\nRUN uname -m > /arch\n")
        tracer = workdir / "tracer.py"
        tracer.write_text(TRACER)
        store = workdir / "storage"
        results = []
        for n in range(runs + 1):  # run 0 warms the storage and is not counted
            trace = workdir / f"trace-{n}.json"
            argv = [
                sys.executable,
                str(tracer),
                str(trace),
                "build",
                "--image",
                f"{reg.host}/bench/overhead:{n}",
                "--context",
                str(ctx),
                "--tls-verify=false",
                "--root",
                str(store / "root"),
                "--runroot",
                str(store / "run"),
                "linux/amd64",
            ]
            s, _, load = _timed(
                argv,
                cwd=REPO,
                env={
                    "BENCH_LAZY_CLI": "1" if lazy_cli else "0",
                    "BENCH_SUBPROCESS_SEAM": "1" if subprocess_seam else "0",
                },
                storage=store,
                log_path=keep_logs / f"overhead-{n}.log",
            )
            spent = json.loads(trace.read_text())
            in_tools = sum(t for _, t in spent)
            if n:  # run 0 made the storage (overlay probe, pulls): not replayable, not counted
                raw = _replay([argv for argv, _ in spent])
                results.append((s, in_tools, raw))
                print(
                    f"run {n}  taskimage {s:5.2f} s  raw {len(spent)} commands {raw:5.2f} s  overhead {s - raw:5.2f} s"
                    f"  (of which inside tools.run {in_tools - raw:5.2f} s)  (load {load:.1f})",
                    flush=True,
                )
        print()
        for argv, t in spent:
            print(f"  {t:6.2f} s  {' '.join(argv)[:150]}")
        over = statistics.median(s - r for s, _, r in results)
        seam = statistics.median(t - r for _, t, r in results)
        print(
            f"\nmedian overhead {over:.2f} s per build (target <= 1 s), of which {seam:.2f} s inside tools.run "
            f"(the sh library) and {over - seam:.2f} s in Python start-up and our code; "
            f"median taskimage {statistics.median(s for s, _, _ in results):.2f} s, raw {statistics.median(r for _, _, r in results):.2f} s"
        )


def _replay(commands: list[list[str]]) -> float:
    """Run the same commands again, straight (subprocess, no logging), in the same state.

    The state allows it: the run removed its manifest list and verification container (so their
    names are free again); only the temporary directory of ``--iidfile`` has to exist again.
    """
    env = dict(os.environ, BUILDAH_ISOLATION=os.environ.get("BUILDAH_ISOLATION", "chroot"))
    for argv in commands:
        if "--iidfile" in argv:
            Path(argv[argv.index("--iidfile") + 1]).parent.mkdir(parents=True, exist_ok=True)
        for arg in argv:  # the per-platform dir: copies go into the run's (removed) work directory
            if arg.startswith("dir:"):
                Path(arg[4:]).parent.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    for argv in commands:
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    seconds = time.monotonic() - t
    for argv in commands:
        if "--iidfile" in argv:
            shutil.rmtree(Path(argv[argv.index("--iidfile") + 1]).parent, ignore_errors=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    s = sub.add_parser("samba", help="(a) seed vs cold, (b) warm, (d) peak disk")
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"which of {', '.join(VARIANTS)} to run besides the seed"
    )
    o = sub.add_parser("overhead", help="(c) orchestration overhead")
    o.add_argument("--runs", type=int, default=5)
    o.add_argument(
        "--lazy-cli", action="store_true", help="import only the build command's module (as a lazy cli.py would)"
    )
    o.add_argument(
        "--subprocess-seam",
        action="store_true",
        help="run tools through plain subprocess instead of sh (what tools.run on subprocess would cost)",
    )
    parser.add_argument("--logs", default="", help="keep each run's log here (default: a temp dir)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (buildah with chroot isolation and its own storage)")
    os.environ.setdefault("BUILDAH_ISOLATION", "chroot")
    workdir = Path(tempfile.mkdtemp(prefix="taskimage-bench-"))
    logs = Path(args.logs or tempfile.mkdtemp(prefix="taskimage-bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    try:
        if args.bench == "samba":
            samba(args.rounds, workdir, logs, [v for v in args.variants.split(",") if v])
        else:
            overhead(args.runs, workdir, logs, args.lazy_cli, args.subprocess_seam)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
