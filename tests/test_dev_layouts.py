"""The developer environment's base images: what `taskimage dev base-image` pushes for users and
tests alike. Read back from the OCI layout's own files, not through the code that wrote them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import emulation_ready, need

from taskimage.dev import env as devenv
from taskimage.oci.platforms import parse_platforms

pytestmark = [pytest.mark.tools]


def _blob(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_text())


def test_every_platform_of_a_multi_platform_base_gets_its_own_plain_config():
    """Reproduced: the second platform's config nested the whole config of the first under
    "config" (no Env, no Cmd of its own)."""
    need(shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed (see .ci/setup-host)")
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    layout = devenv.build_layout("busybox", parse_platforms(["linux/amd64", "linux/arm64"]))
    index = json.loads((layout / "index.json").read_text())
    entries = index["manifests"]
    if len(entries) == 1 and entries[0]["mediaType"].endswith("index.v1+json"):
        entries = _blob(layout, entries[0]["digest"])["manifests"]
    seen = []
    for entry in entries:
        config = _blob(layout, _blob(layout, entry["digest"])["config"]["digest"])
        seen.append(config["architecture"])
        assert config["architecture"] == entry["platform"]["architecture"]
        assert set(config["config"]) == {"Env", "Cmd"}, config["config"]
        assert any(e.startswith("PATH=") for e in config["config"]["Env"])
    assert seen == ["amd64", "arm64"]
