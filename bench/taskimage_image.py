"""The task image: its size per platform and how long `taskimage build` takes to make it.

    .venv/bin/python bench/taskimage_image.py            # warm: the layer cache as it is
    .venv/bin/python bench/taskimage_image.py --cold     # cold: an empty layer cache (minutes)

Builds the repository's Containerfile for linux/amd64 and linux/arm64 (arm64 under qemu) with
:func:`taskimage.dev.env.build_task_image` into a local registry of its own, then reads every
layer back from the registry and prints, per platform, the compressed size (what a node pulls)
and the uncompressed size (what it unpacks; the budget is 400 MB for amd64). The Debian base
image comes from the mmdebstrap cache (made first if missing; not part of the build time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from taskimage.dev import env as devenv  # noqa: E402

PLATFORMS = ("linux/amd64", "linux/arm64")
BUDGET_AMD64 = 400 * 1000 * 1000


def _get(url: str) -> bytes:
    req = urllib.request.Request(
        url,
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def layer_sizes(host: str, repo: str, digest: str) -> tuple[int, int, int]:
    """(layers, compressed bytes, uncompressed bytes) of one platform's image."""
    manifest = json.loads(_get(f"http://{host}/v2/{repo}/manifests/{digest}"))
    compressed = uncompressed = 0
    for layer in manifest["layers"]:
        compressed += layer["size"]
        inflate = zlib.decompressobj(wbits=31)  # gzip
        with urllib.request.urlopen(f"http://{host}/v2/{repo}/blobs/{layer['digest']}", timeout=60) as r:
            while chunk := r.read(1 << 20):
                uncompressed += len(inflate.decompress(chunk))
        uncompressed += len(inflate.flush())
    return len(manifest["layers"]), compressed, uncompressed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", action="store_true", help="build with an empty layer cache")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="taskimage-bench-") as tmp,
        devenv.LocalRegistry(Path(tmp) / "registry") as reg,
    ):
        started = time.monotonic()
        base = devenv.base_image("trixie", PLATFORMS, f"{reg.host}/base/debian:trixie")
        base_seconds = time.monotonic() - started
        cache = Path(tmp) / "layer-cache" if args.cold else None
        image = devenv.build_task_image(
            reg.host, f"{reg.host}/taskimage/taskimage:bench", PLATFORMS, base=base, layer_cache=cache
        )
        rows = []
        over = False
        for platform, ref in image.images:
            repo, digest = ref.split("/", 1)[1].split("@")
            n, packed, unpacked = layer_sizes(reg.host, repo, digest)
            rows.append((platform, str(n), f"{packed / 1e6:.1f}", f"{unpacked / 1e6:.1f}", f"{unpacked / 2**20:.1f}"))
            over |= platform == "linux/amd64" and unpacked > BUDGET_AMD64
    print(f"task image {image.ref} ({'cold' if args.cold else 'warm'} layer cache)")
    print(f"  base image (mmdebstrap cache, push): {base_seconds:.1f} s")
    print(f"  taskimage build, {len(PLATFORMS)} platforms:   {image.seconds:.1f} s")
    widths = (12, 6, 15, 17, 18)
    head = ("PLATFORM", "LAYERS", "COMPRESSED MB", "UNCOMPRESSED MB", "UNCOMPRESSED MiB")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for row in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    if over:
        print(f"  amd64 is over the {BUDGET_AMD64 / 1e6:.0f} MB budget")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
