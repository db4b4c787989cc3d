"""The Pipeline's own overhead: a Pipelines-as-Code run against `taskimage build` on the same app.

    .venv/bin/python bench/pipeline_pac.py [--rounds 3] [--app tests/data/localrun/app]

Both build the same app (default tests/data/localrun/app: a busybox base and a RUN step, so the
arm64 half really runs under qemu) for linux/amd64 + linux/arm64 into fresh storage, push one
manifest list to a local registry and read it back:

- ``direct``: ``taskimage build`` on the host;
- ``pac``: ``taskimage run examples/pac/build.yaml`` as Pipelines-as-Code would run it for a push
  to main of a git repository holding the app (served by git daemon): the catalog Pipeline from a
  pipelines bundle in the local registry, the clone by the git-clone stand-in, the build in the
  task image built from this checkout for this machine's platform (made once before the rounds,
  not timed; the app is still built for both platforms inside it).

Rounds alternate the order. Prints each run's wall time and the medians; the overhead is
median(pac) - median(direct) (goal of issue 14: at most 15 s). Not a timed test: it prints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from taskimage.dev import env as devenv  # noqa: E402
from taskimage.tekton import catalog  # noqa: E402

TI = [sys.executable, "-m", "taskimage"]
PLATFORMS = ["linux/amd64", "linux/arm64"]


def sh(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)


def timed(name: str, argv: list[str], log: Path, env: dict) -> float:
    start = time.monotonic()
    with open(log, "w") as f:
        code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    seconds = time.monotonic() - start
    if code != 0:
        sys.exit(f"{name} failed (exit {code}), log: {log}")
    print(f"{name:7} {seconds:7.1f} s", flush=True)
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--app", type=Path, default=REPO / "tests/data/localrun/app")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taskimage-bench-pac-"))
    reg = devenv.LocalRegistry(work / "registry").start()
    git = None
    try:
        base = devenv.base_image("busybox", PLATFORMS, f"{reg.host}/base/busybox:bookworm")
        print("task image (not timed) ...", flush=True)
        from taskimage.oci.platforms import host_platform

        cache = devenv.cache_dir() / "task-image" / "pipeline-tests"  # the one tests/test_pipeline_catalog.py fills
        cache.mkdir(parents=True, exist_ok=True)
        builder = devenv.build_task_image(
            reg.host, f"{reg.host}/taskimage/taskimage:bench", [str(host_platform())], layer_cache=cache
        ).by_digest
        devenv.git_image()
        release = work / "release"
        catalog.release_tasks(release, builder)
        tasks = f"{reg.host}/taskimage/tasks:0.1"
        sh([*TI, "bundle", "push", tasks, str(release / "tasks.yaml"), "--tls-verify=false"])
        raw = sh(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{tasks}"]).stdout.encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        catalog.release_pipelines(REPO, release, f"{reg.host}/taskimage/tasks@{digest}", builder)
        sh(
            [
                *TI,
                "bundle",
                "push",
                f"{reg.host}/taskimage/pipelines:0.1",
                str(release / "pipelines.yaml"),
                "--tls-verify=false",
            ]
        )
        conf = work / "registries.conf"
        conf.write_text(
            f'[[registry]]\nprefix = "ghcr.io/taskimage"\nlocation = "{reg.host}/taskimage"\ninsecure = true\n'
            f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n'
        )
        repo = work / "git" / "app"
        shutil.copytree(args.app, repo)
        for cmd in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "app"]):
            sh(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@example.com", *cmd])
        git = devenv.GitServer(work / "git").start()
        sh(["git", "-C", str(repo), "remote", "add", "origin", git.url("app")])
        (work / "dockerconfig").mkdir()
        (work / "dockerconfig" / "config.json").write_text('{"auths": {}}')
        env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
        times: dict[str, list[float]] = {"direct": [], "pac": []}
        for r in range(args.rounds):
            order = ["direct", "pac"] if r % 2 == 0 else ["pac", "direct"]
            for variant in order:
                tag = f"{variant}-{r}"
                if variant == "direct":
                    storage = work / f"storage-{tag}"
                    argv = [
                        *TI,
                        "build",
                        "--image",
                        f"{reg.host}/bench/app:{tag}",
                        "--context",
                        str(repo),
                        "--build-arg",
                        f"BASE={base}",
                        "--tls-verify=false",
                        "--root",
                        str(storage),
                        *PLATFORMS,
                    ]
                else:
                    argv = [
                        *TI,
                        "run",
                        "examples/pac/build.yaml",
                        "--repo",
                        str(repo),
                        "--event",
                        "push",
                        "--branch",
                        "main",
                        "--stand-in",
                        f"fetch-source={devenv.GIT_CLONE_STAND_IN}",
                        "-p",
                        f"IMAGE={reg.host}/bench/app:{tag}",
                        "-p",
                        f"BUILD_ARGS=BASE={base}",
                        "-p",
                        "TLSVERIFY=false",
                        "-w",
                        f"dockerconfig={work / 'dockerconfig'}",
                        "--tls-verify=false",
                    ]
                times[variant].append(timed(variant, argv, work / f"{tag}.log", env))
                index = json.loads(
                    sh(
                        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{reg.host}/bench/app:{tag}"]
                    ).stdout
                )
                assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"median direct {med['direct']:.1f} s, pac {med['pac']:.1f} s, overhead {med['pac'] - med['direct']:.1f} s "
            f"(goal <= 15 s); logs in {work}"
        )
    finally:
        if git:
            git.stop()
        reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
