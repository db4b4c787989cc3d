"""--evict with cross-compiling Containerfiles: a platform's eviction never removes what another
platform's unfinished build uses (its $BUILDPLATFORM builder stages are the host's platform)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import emulation_ready, have_tools, need, skopeo_raw

pytestmark = [pytest.mark.tools, pytest.mark.emulation]


def images(env: dict) -> set[str]:
    out = subprocess.run(
        [
            "buildah",
            "--root",
            env["TASKIMAGE_ROOT"],
            "--runroot",
            env["TASKIMAGE_RUNROOT"],
            "images",
            "-aq",
            "--no-trunc",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_buildplatform_builder_stages_survive_the_other_platforms_eviction(tmp_path, registry, busybox_base):
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # arm64's builder stage (amd64, the host's platform) is done before amd64 finishes, pushes and
    # evicts; arm64's final stage copies from it only afterwards
    (ctx / "Containerfile").write_text(
        f"FROM --platform=$BUILDPLATFORM {busybox_base} AS builder\n"
        "ARG TARGETARCH\n"
        "RUN echo built-for-$TARGETARCH > /out\n"
        f"FROM {busybox_base}\n"
        'RUN if [ "$(uname -m)" = aarch64 ]; then sleep 20; fi\n'
        "COPY --from=builder /out /out\n"
        "RUN uname -m > /arch\n"
    )
    env = {
        "TASKIMAGE_ROOT": str(tmp_path / "root"),
        "TASKIMAGE_RUNROOT": str(tmp_path / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
    }
    image = f"{registry.host}/evict/cross:1"
    argv = ["build", "--image", image, "--context", str(ctx), "--evict", "--jobs", "2", "linux/amd64", "linux/arm64"]
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv],
        capture_output=True,
        text=True,
        env=dict(os.environ, **env),
        timeout=900,
    )
    err = proc.stderr
    assert proc.returncode == 0, err[-4000:]
    index = skopeo_raw(image)
    assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == ["amd64", "arm64"]
    assert "WARNING" not in err, err[-4000:]  # no eviction failed half-way
    assert images(env) == set(), "--evict left images of the run in the storage"
