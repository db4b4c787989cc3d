"""What SBOM + provenance cost on a cold build of the samba example (issue 16: at most 10%).

Each round builds examples/samba for linux/amd64 + linux/arm64 twice, cold (fresh storage, no layer
cache, apt downloads every time): once as by default (``--sbom spdx --provenance true``) and once
with ``--sbom none --provenance false``; the order alternates between rounds. On a shared machine
two whole builds differ by more than the cost being measured, so the supply-chain step is also
timed from inside: the seconds each "attached ... in X s" log line reports (per platform: mount,
scan, SBOM, provenance, pushes) plus the index's, against the same run's total.

    .venv/bin/python bench/supplychain.py --rounds 1      # ~10 min per round on 2 cores
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from taskimage.dev import env as devenv  # noqa: E402

PLATFORMS = ["linux/amd64", "linux/arm64"]
VARIANTS = {"supplychain": [], "none": ["--sbom", "none", "--provenance", "false"]}
ATTACHED = re.compile(r"attached .* in ([0-9.]+) s")
TOTAL = re.compile(r"total ([0-9.]+) s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--logs", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-supplychain-"))
    logs = args.logs or work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        with devenv.LocalRegistry(work / "registry") as reg:
            base = devenv.base_image("bookworm", PLATFORMS, f"{reg.host}/base/debian:bookworm")
            print(f"registry {reg.host}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}", flush=True)
            print(f"{'round':5} {'variant':12} {'wall s':>8} {'attach s':>9} {'share':>7}  load", flush=True)
            for r in range(1, args.rounds + 1):
                order = list(VARIANTS) if r % 2 else list(reversed(VARIANTS))
                for kind in order:
                    d = work / f"{kind}-{r}"
                    argv = [
                        sys.executable, "-m", "taskimage", "build",
                        "--image", f"{reg.host}/bench/{kind}-{r}:v1",
                        "--context", str(REPO / "examples" / "samba"),
                        "--build-arg", f"BASE_IMAGE={base}",
                        "--tls-verify=false", "--evict",
                        "--root", str(d / "root"), "--runroot", str(d / "run"),
                        *VARIANTS[kind], *PLATFORMS,
                    ]  # fmt: skip
                    t = time.monotonic()
                    proc = subprocess.run(argv, capture_output=True, text=True)
                    wall = time.monotonic() - t
                    (logs / f"{kind}-{r}.log").write_text(proc.stderr)
                    if proc.returncode:
                        sys.exit(f"{kind} round {r} failed (exit {proc.returncode}); log in {logs}")
                    attach = sum(float(x) for x in ATTACHED.findall(proc.stderr))
                    share = attach / wall
                    rows.append((kind, wall, attach))
                    print(
                        f"{r:5} {kind:12} {wall:8.1f} {attach:9.1f} {share:7.1%}  {os.getloadavg()[0]:.1f}", flush=True
                    )
                    subprocess.run(["buildah", "--root", str(d / "root"), "--runroot", str(d / "run"), "rmi", "-af"],
                                   capture_output=True)  # fmt: skip
                    shutil.rmtree(d, ignore_errors=True)
    finally:
        shutil.rmtree(work / "registry", ignore_errors=True)
    with_sc = [w for k, w, _ in rows if k == "supplychain"]
    without = [w for k, w, _ in rows if k == "none"]
    inside = [a / w for k, w, a in rows if k == "supplychain"]
    print()
    print(f"wall: with {sum(with_sc) / len(with_sc):.1f} s, without {sum(without) / len(without):.1f} s "
          f"({sum(with_sc) / sum(without) - 1:+.1%}); supply-chain step inside the run: "
          f"{sum(inside) / len(inside):.1%} of its wall time (target <= 10%); logs in {logs}")  # fmt: skip


if __name__ == "__main__":
    main()
