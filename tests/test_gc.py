"""``taskimage gc``: a registry holding five matrix-like runs, a fresh run, a release and a referrer.

The images are small but real (layer, config with ``created``, OCI manifest) and pushed with
skopeo; the release index is made by ``taskimage index``, the source artifact by ``taskimage
source push``. What is left afterwards is read back with skopeo: kept tags and every platform
manifest they list answer, deleted ones do not.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import pytest
from conftest import skopeo_raw, tag_exists

from taskimage import cli

pytestmark = pytest.mark.tools
NOW = datetime.datetime.now(datetime.UTC)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(tmp: Path, ref: str, arch: str, created: datetime.datetime, marker: str) -> str:
    """A one-layer OCI image for linux/<arch> built at ``created``, pushed to ``ref``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("marker")
        info.size = len(marker.encode())
        tar.addfile(info, io.BytesIO(marker.encode()))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(raw.getvalue())]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return push_layout(tmp, ref, manifest, {sha256(layer): layer, sha256(config): config})


def push_layout(tmp: Path, ref: str, manifest: bytes, blobs: dict[str, bytes]) -> str:
    layout = tmp / f"layout-{sha256(manifest)[7:19]}"
    layout.mkdir(exist_ok=True)
    (layout / "version").write_text("Directory Transport Version: 1.1\n")
    for digest, data in blobs.items():
        (layout / digest[7:]).write_bytes(data)
    (layout / "manifest.json").write_bytes(manifest)
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"dir:{layout}",
            f"docker://{ref}",
        ],
        check=True,
    )
    return sha256(manifest)


def copy(src: str, dest: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{src}",
            f"docker://{dest}",
        ],
        check=True,
    )


def put(url: str, data: bytes, content_type: str) -> None:
    req = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": content_type})
    urllib.request.urlopen(req, timeout=60).close()


def attach_by_fallback_tag(registry, repo: str, subject: str) -> tuple[str, str]:
    """An SBOM-like artifact whose subject is ``subject``, listed under the OCI 1.1 fallback tag
    sha256-<hex> as a registry without the referrers API holds it (plain distribution API calls)."""
    base = f"http://{registry.host}/v2/{repo}"
    content = json.dumps({"subject": subject}).encode()
    for blob in (b"{}", content):
        with urllib.request.urlopen(urllib.request.Request(f"{base}/blobs/uploads/", method="POST"), timeout=60) as r:
            location = r.headers["Location"]
        location = location if location.startswith("http") else f"http://{registry.host}{location}"
        sep = "&" if "?" in location else "?"
        put(f"{location}{sep}digest={sha256(blob)}", blob, "application/octet-stream")
    artifact = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/spdx+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/spdx+json", "digest": sha256(content), "size": len(content)}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 1},
        }
    ).encode()
    put(f"{base}/manifests/{sha256(artifact)}", artifact, "application/vnd.oci.image.manifest.v1+json")
    tag = "sha256-" + subject.split(":")[1]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(artifact),
                "size": len(artifact),
                "artifactType": "application/spdx+json",
            }
        ],
    }
    put(f"{base}/manifests/{tag}", json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json")
    return tag, sha256(json.dumps(index).encode())


def gc(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["gc", "--tls-verify=false", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def populated(registry, tmp_path_factory):
    """Five old matrix runs (per-run tag and cache tag per platform), run 5 released as v1.0 and
    main, a fresh run 6, a kept attestation whose subject is run 2's amd64 image, a source artifact."""
    tmp = tmp_path_factory.mktemp("gc")
    repo = f"{registry.host}/gc/app"
    images: dict[tuple[int, str], str] = {}
    tags_of: dict[str, str] = {}
    for run in range(1, 7):
        created = NOW - datetime.timedelta(days=20 - run) if run <= 5 else NOW
        for n, arch in enumerate(("amd64", "arm64")):
            per_run = f"app-run-{run}-build-{n}"
            digest = push_image(tmp, f"{repo}:{per_run}", arch, created, f"run {run} {arch}")
            cache = "taskimage-build-" + hashlib.sha256(f"{run}{arch}".encode()).hexdigest()
            copy(f"{repo}@{digest}", f"{repo}:{cache}")
            images[(run, arch)] = digest
            tags_of[per_run] = tags_of[cache] = digest
    code = cli.main(
        [
            "index",
            "--tls-verify=false",
            "--image",
            f"{repo}:v1.0",
            f"{repo}@{images[(5, 'amd64')]}",
            f"{repo}@{images[(5, 'arm64')]}",
        ]
    )
    assert code == 0
    copy(f"{repo}:v1.0", f"{repo}:main")
    empty = b"{}"
    attestation = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.attestation",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2}],
            "subject": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": images[(2, "amd64")],
                "size": len(
                    subprocess.run(
                        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{repo}@{images[(2, 'amd64')]}"],
                        capture_output=True,
                        check=True,
                    ).stdout
                ),
            },
        }
    ).encode()
    push_layout(tmp, f"{repo}:attest-run2", attestation, {sha256(empty): empty})
    src = tmp / "src"
    src.mkdir()
    (src / "f").write_text("source\n")
    assert cli.main(["source", "push", "--tls-verify=false", str(src), f"{repo}:source-abc"]) == 0
    referrers = {
        "old": attach_by_fallback_tag(registry, "gc/app", images[(1, "amd64")]),  # its subject goes
        "released": attach_by_fallback_tag(registry, "gc/app", images[(5, "arm64")]),  # its subject stays
        "orphan": attach_by_fallback_tag(registry, "gc/app", sha256(b"a manifest this repository never had")),
    }
    return {
        "repo": repo,
        "images": images,
        "tags_of": tags_of,
        "referrers": {name: tag for name, (tag, _) in referrers.items()},
        "referrer_digests": dict(referrers.values()),
    }


def expected_deleted(populated) -> set[str]:
    doomed = set()
    for tag, digest in populated["tags_of"].items():
        run = next(r for (r, _), d in populated["images"].items() if d == digest)
        if run in (5, 6) or digest == populated["images"][(2, "amd64")]:
            continue  # released, fresh, or the subject of a kept referrer
        doomed.add(tag)
    return doomed | {populated["referrers"]["old"], populated["referrers"]["orphan"]}


def test_dry_run_lists_exactly_the_old_unreferenced_per_run_and_cache_tags(populated, capsys):
    code, out, err = gc(
        capsys, populated["repo"], "--keep", "v*", "main", "attest-*", "--older-than", "7d", "--dry-run"
    )
    assert code == 0, err
    listed = set(out.split())
    assert listed == expected_deleted(populated)
    assert len(listed) == 16  # runs 1, 3, 4 both platforms and run 2 arm64, each per-run + cache; 2 referrers tags
    assert "delete (referrers of a deleted manifest)" in err and "delete (referrers of a manifest that is gone)" in err
    assert "kept: referrers of a kept manifest" in err
    assert "kept: main refers to it" in err and "kept: attest-run2 refers to it" in err  # main, v1.0: one index
    assert "kept: no creation time" in err  # the source artifact
    for tag in populated["tags_of"]:
        assert tag_exists(f"{populated['repo']}:{tag}")  # a dry run deletes nothing


def test_bad_input_is_a_usage_error(populated, capsys):
    assert gc(capsys, populated["repo"], "--keep", "v*", "--older-than", "7 days")[0] == 2
    code, _, err = gc(capsys, f"{populated['repo']}:v1.0", "--keep", "v*", "--older-than", "7d")
    assert code == 2 and "names a tag or digest" in err
    code, _, err = gc(capsys, populated["repo"], "--older-than", "7d")
    assert code == 2 and "--keep" in err


def test_gc_deletes_them_and_keeps_every_kept_tag_and_what_it_lists(populated, capsys):
    repo = populated["repo"]
    doomed = expected_deleted(populated)
    code, out, err = gc(capsys, repo, "--keep", "v*", "main", "attest-*", "--older-than", "7d")
    assert code == 0, err
    assert set(out.split()) == doomed
    for tag in doomed:
        assert not tag_exists(f"{repo}:{tag}"), tag
        digest = populated["tags_of"].get(tag) or populated["referrer_digests"][tag]
        assert not tag_exists(f"{repo}@{digest}"), tag  # the manifest itself is gone
    for tag in ("v1.0", "main", "attest-run2", "source-abc", populated["referrers"]["released"]):
        assert tag_exists(f"{repo}:{tag}"), tag
    for entry in skopeo_raw(f"{repo}:v1.0")["manifests"]:
        assert tag_exists(f"{repo}@{entry['digest']}")
    for tag in populated["tags_of"]:
        if tag not in doomed:
            assert tag_exists(f"{repo}:{tag}"), tag
    # a second run finds nothing more to delete
    code, out, _ = gc(capsys, repo, "--keep", "v*", "main", "attest-*", "--older-than", "7d")
    assert code == 0 and out == ""
    # source artifacts have no creation time: only --include-undated takes them (kept referrers stay)
    code, out, err = gc(capsys, repo, "--keep", "v*", "main", "attest-*", "--older-than", "7d", "--include-undated")
    assert code == 0 and out.split() == ["source-abc"], err
    assert not tag_exists(f"{repo}:source-abc") and tag_exists(f"{repo}:attest-run2") and tag_exists(f"{repo}:v1.0")
