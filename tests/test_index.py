"""`taskimage index`: per-platform images joined into a pushed, read-back manifest list.

The real tests take the per-platform images of the multi-arch busybox base (already in the
registry by digest) as the "built" images, so they need skopeo and the registry but no build.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import registry_snapshot, skopeo_raw, skopeo_raw_bytes, tag_exists
from faultproxy import Fault, FaultProxy

from taskimage.build import buildah, index
from taskimage.build.params import resolve
from taskimage.errors import UsageError
from taskimage.oci import registry as remote
from taskimage.oci.platforms import Platform

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def taskimage(argv, env=None, timeout=300):
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "taskimage", *argv], capture_output=True, text=True, env=full, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr


# --- input, without a registry ------------------------------------------------------------------


def _values(**kw):
    import argparse

    ns = argparse.Namespace(**{p.dest: None for p in index.PARAMS})
    for k, v in kw.items():
        setattr(ns, k, v)
    return resolve(ns, params=index.PARAMS, env={})


def test_refs_from_flags_positionals_and_comma_lists():
    opts = index.options_from_values(
        _values(image="reg.example/a/b:v1", refs=[f"reg.example/a/b@{D1},reg.example/a/c@{D2}", ""])
    )
    assert [r.pinned for r in opts.refs] == [f"reg.example/a/b@{D1}", f"reg.example/a/c@{D2}"]
    assert opts.image.url == "reg.example/a/b:v1"


@pytest.mark.parametrize(
    "refs, message",
    [
        ([], "--ref: no per-platform images given"),
        (["reg.example/a/b:v1"], "is not a digest reference"),
        (["reg.example/a/b@sha256:abc"], "has an invalid digest"),
        ([f"reg.example/a/b@{D1}", f"docker://reg.example/a/b@{D1}"], "is given twice"),
        ([f"other.example/a/b@{D1}"], "is on other.example, not on reg.example"),
        ([f"reg.example/A/b@{D1}"], "lower-case"),
    ],
)
def test_bad_refs_are_one_line_usage_errors(refs, message):
    with pytest.raises(UsageError) as exc:
        index.options_from_values(_values(image="reg.example/a/b:v1", refs=refs))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_image_is_required_and_may_not_be_a_digest():
    with pytest.raises(UsageError, match="--image: the list's destination is required"):
        index.options_from_values(_values(refs=[f"reg.example/a/b@{D1}"]))
    with pytest.raises(UsageError, match="digest reference"):
        index.options_from_values(_values(image=f"reg.example/a/b@{D1}", refs=[f"reg.example/a/b@{D1}"]))


def test_tags_and_index_annotations_parse_as_build_parses_them():
    opts = index.options_from_values(
        _values(
            image="reg.example/a/b:v1",
            refs=[f"reg.example/a/b@{D1}"],
            additional_tags=["1.2", "", "reg.example/a/c:x", "1.2", "v1"],
            annotations=["index:org.opencontainers.image.source=https://git.example/a.git", "", "index:k=a:b"],
        )
    )
    assert [t.url for t in opts.tags] == ["reg.example/a/b:1.2", "reg.example/a/c:x"]  # IMAGE's own tag dropped
    assert opts.annotations == (("org.opencontainers.image.source", "https://git.example/a.git"), ("k", "a:b"))


@pytest.mark.parametrize(
    "field, value, source, message",
    [
        ("annotations", "manifest:k=v", "--annotation (ANNOTATIONS)", "only index:KEY=VALUE"),
        ("annotations", "manifest[linux/amd64]:k=v", "--annotation (ANNOTATIONS)", "only index:KEY=VALUE"),
        ("annotations", "com.example.k=v", "--annotation (ANNOTATIONS)", "only index:KEY=VALUE"),
        ("annotations", "index[linux/amd64]:k=v", "--annotation (ANNOTATIONS)", "takes no platforms"),
        ("annotations", "index:novalue", "--annotation (ANNOTATIONS)", "is not [TYPE[PLATFORMS]:]KEY=VALUE"),
        ("additional_tags", "other.example/a/b:1", "--tag (ADDITIONAL_TAGS)", "is on other.example"),
        ("additional_tags", "-x", "--tag (ADDITIONAL_TAGS)", "invalid tag"),
    ],
)
def test_bad_tags_and_annotations_are_one_line_usage_errors(field, value, source, message):
    with pytest.raises(UsageError) as exc:
        index.options_from_values(
            _values(image="reg.example/a/b:v1", refs=[f"reg.example/a/b@{D1}"], **{field: [value]})
        )
    text = str(exc.value)
    assert text.startswith(f"{source}: ") and repr(value) in text, text
    assert message in text and "\n" not in text


def test_index_annotations_with_format_docker_are_refused():
    with pytest.raises(UsageError, match=r"^--annotation \(ANNOTATIONS\): index: annotations need an OCI index"):
        index.options_from_values(
            _values(
                image="reg.example/a/b:v1", refs=[f"reg.example/a/b@{D1}"], annotations=["index:k=v"], format="docker"
            )
        )


def test_the_index_task_args_parse_into_refs_tags_and_annotations():
    """The catalog Task passes the refs first, then each array after its flag (an empty array: a bare flag)."""
    from taskimage import cli
    from taskimage.tekton import catalog

    task = next(t for t in catalog.task_defs() if t.name == "buildah-multiarch-index")
    arrays = {
        "$(params.IMAGE_REFS[*])": [f"reg.example/a/b@{D1}", f"reg.example/a/b@{D2}"],
        "$(params.ADDITIONAL_TAGS[*])": ["1", "latest"],
        "$(params.ANNOTATIONS[*])": ["index:k=v"],
    }
    for empty in (False, True):
        argv = []
        for arg in task.args:
            argv += (arrays[arg] if not empty or "IMAGE_REFS" in arg else []) if arg in arrays else [arg]
        args = cli._parse(cli.build_parser("index"), argv)
        assert args.positional_refs == arrays["$(params.IMAGE_REFS[*])"]
        assert (args.additional_tags, args.annotations) == (([], []) if empty else (["1", "latest"], ["index:k=v"]))


def _instance(digest, media_type, platform):
    ref = index.parse_ref(f"reg.example/a/b@{digest}", "--ref")
    return index.Instance(ref, platform, media_type, b"{}" * 10, b"{}")


def test_list_type_follows_the_images_and_format_decides_a_mix():
    amd, arm = Platform("linux", "amd64"), Platform("linux", "arm64")
    oci = [_instance(D1, index.OCI_MANIFEST, amd), _instance(D2, index.OCI_MANIFEST, arm)]
    docker = [_instance(D1, index.DOCKER_MANIFEST, amd), _instance(D2, index.DOCKER_MANIFEST, arm)]
    mixed = [oci[0], docker[1]]
    assert index.list_media_type(oci, "docker") == index.OCI_INDEX
    assert index.list_media_type(docker, "oci") == index.DOCKER_LIST
    assert index.list_media_type(mixed, "docker") == index.OCI_INDEX
    doc = json.loads(index.index_document(oci, index.OCI_INDEX))
    assert doc["manifests"] == [
        {
            "mediaType": index.OCI_MANIFEST,
            "digest": D1,
            "size": 20,
            "platform": {"architecture": "amd64", "os": "linux"},
        },
        {
            "mediaType": index.OCI_MANIFEST,
            "digest": D2,
            "size": 20,
            "platform": {"architecture": "arm64", "os": "linux"},
        },
    ]


def test_platform_of_config_normalizes_and_refuses_configs_without_arch():
    assert index.platform_of({"os": "linux", "architecture": "arm", "variant": "v7"}, "x") == Platform(
        "linux", "arm", "v7"
    )
    assert index.platform_of({"os": "linux", "architecture": "arm64", "variant": "v8"}, "x") == Platform(
        "linux", "arm64"
    )
    with pytest.raises(UsageError, match="names no os/architecture"):
        index.platform_of({"os": "linux"}, "x")


def test_skopeo_argv():
    reg = remote.Access(tls_verify=False, authfile="/a.json", cert_dir="/certs")
    assert buildah.skopeo_push_list_dir(reg, Path("/l"), "r/x:1") == [
        "skopeo",
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-cert-dir",
        "/certs",
        "--authfile",
        "/a.json",
        "dir:/l",
        "docker://r/x:1",
    ]
    assert buildah.skopeo_push_list_dir(reg, Path("/l"), "r/x:1", "docker")[5:7] == ["--format", "v2s2"]
    assert buildah.skopeo_push_list_dir(reg, Path("/l"), "r/x:1", "oci")[5:7] == ["--format", "oci"]
    assert buildah.skopeo_copy_image(remote.Access(), f"r/a@{D1}", f"r/b@{D1}") == [
        "skopeo",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--src-tls-verify=true",
        "--dest-tls-verify=true",
        f"docker://r/a@{D1}",
        f"docker://r/b@{D1}",
    ]
    # build's per-platform push: a compressed dir: copy, pushed unchanged to REPOSITORY@DIGEST
    store = buildah.Storage("overlay", "/s/root", "/s/run")
    assert buildah.push_dir(store, "abc", "/w/push", "docker") == [
        "buildah",
        "--storage-driver",
        "overlay",
        "--root",
        "/s/root",
        "--runroot",
        "/s/run",
        "push",
        "--quiet",
        "--format",
        "v2s2",
        "abc",
        "dir:/w/push",
    ]
    assert buildah.push_dir(store, "abc", "/w/push", "oci")[-4:] == ["--format", "oci", "abc", "dir:/w/push"]
    assert buildah.skopeo_push_dir(reg, "/w/push", f"r/x@{D1}") == [
        "skopeo",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-cert-dir",
        "/certs",
        "--authfile",
        "/a.json",
        "dir:/w/push",
        f"docker://r/x@{D1}",
    ]


# --- for real: skopeo and a registry -------------------------------------------------------------


@pytest.fixture(scope="module")
def entries(busybox_base):
    """{platform string: repo@digest} of the base image's per-platform images."""
    repo = busybox_base.rsplit(":", 1)[0]
    out = {}
    for m in skopeo_raw(busybox_base)["manifests"]:
        p = m["platform"]
        out["/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)] = f"{repo}@{m['digest']}"
    return out


@pytest.mark.tools
def test_index_same_repository_pushes_the_given_images_unchanged(tmp_path, registry, busybox_base, entries):
    repo = busybox_base.rsplit(":", 1)[0]
    image = f"{repo}:joined"
    wanted = ["linux/arm64", "linux/amd64", "linux/arm/v7"]
    results = tmp_path / "results"
    results.mkdir()
    rc, out, err = taskimage(
        [
            "index",
            "--image",
            image,
            "--tls-verify=false",
            "--results-dir",
            str(results),
            entries["linux/arm64"],
            "",
            "--ref",
            f"{entries['linux/amd64']},{entries['linux/arm/v7']}",
        ]
    )
    assert rc == 0, err[-3000:]
    raw = skopeo_raw_bytes(image)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    listed = json.loads(raw)
    assert listed["mediaType"] == "application/vnd.oci.image.index.v1+json"
    got = {
        "/".join(x for x in (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant")) if x): m[
            "digest"
        ]
        for m in listed["manifests"]
    }
    assert got == {p: entries[p].split("@")[1] for p in wanted}  # exact images, no conversion
    assert (results / "IMAGE_DIGEST").read_text() == digest
    assert (results / "IMAGE_URL").read_text() == image
    assert (results / "IMAGE_REF").read_text() == f"{repo}@{digest}"
    # --ref values first, then positional ones; each entry in the list's repository
    assert (results / "IMAGES").read_text() == ",".join(
        entries[p] for p in ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    )


@pytest.mark.tools
def test_index_copies_images_from_another_repository_by_digest(tmp_path, registry, entries):
    image = f"{registry.host}/joined/app:v1"
    rc, out, err = taskimage(
        ["index", "--image", image, "--tls-verify=false", entries["linux/s390x"], entries["linux/ppc64le"]],
        {"TASKIMAGE_RESULTS_DIR": str(tmp_path)},
    )
    assert rc == 0, err[-3000:]
    for p in ("linux/s390x", "linux/ppc64le"):
        digest = entries[p].split("@")[1]
        config = skopeo_raw(f"{registry.host}/joined/app@{digest}", config=True)
        assert config["architecture"] == p.split("/")[1]
    assert (tmp_path / "IMAGES").read_text() == ",".join(
        f"{registry.host}/joined/app@{entries[p].split('@')[1]}" for p in ("linux/s390x", "linux/ppc64le")
    )


@pytest.mark.tools
def test_index_of_docker_images_is_a_docker_list_with_the_images_unchanged(tmp_path, registry, entries):
    """Docker v2s2 images make a docker manifest list (an OCI layout could not carry one to skopeo)."""
    repo = f"{registry.host}/joined/docker"
    refs = []
    for p in ("linux/amd64", "linux/arm64"):
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--format",
                "v2s2",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{entries[p]}",
                f"docker://{repo}:src-{p.replace('/', '-')}",
            ],
            check=True,
        )
        raw = skopeo_raw_bytes(f"{repo}:src-{p.replace('/', '-')}")
        assert json.loads(raw)["mediaType"] == index.DOCKER_MANIFEST
        refs.append(f"{repo}@sha256:{hashlib.sha256(raw).hexdigest()}")
    # an index: annotation cannot go on a docker list: refused before anything is pushed
    before = registry_snapshot(registry.host)
    rc, out, err = taskimage(
        ["index", "--image", f"{repo}:v1", "--tls-verify=false", *refs, "--annotation", "index:k=v"]
    )
    assert rc == 2, err[-2000:]
    assert "--annotation (ANNOTATIONS): index: annotations need an OCI index" in err.strip().splitlines()[-1]
    assert registry_snapshot(registry.host) == before
    rc, out, err = taskimage(
        ["index", "--image", f"{repo}:v1", "--tls-verify=false", *refs], {"TASKIMAGE_RESULTS_DIR": str(tmp_path)}
    )
    assert rc == 0, err[-3000:]
    listed = json.loads(skopeo_raw_bytes(f"{repo}:v1"))
    assert listed["mediaType"] == index.DOCKER_LIST
    assert [m["digest"] for m in listed["manifests"]] == [r.split("@")[1] for r in refs]
    assert [m["platform"]["architecture"] for m in listed["manifests"]] == ["amd64", "arm64"]


@pytest.mark.tools
def test_bad_refs_exit_2_and_push_nothing(tmp_path, registry, busybox_base, busybox_amd64_only, entries):
    repo = busybox_base.rsplit(":", 1)[0]
    amd64_only = skopeo_raw_bytes(busybox_amd64_only)
    other_amd64 = f"{busybox_amd64_only.rsplit(':', 1)[0]}@sha256:{hashlib.sha256(amd64_only).hexdigest()}"
    index_digest = "sha256:" + hashlib.sha256(skopeo_raw_bytes(busybox_base)).hexdigest()
    cases = [
        ([f"{repo}:bookworm"], "--ref: '" + f"{repo}:bookworm' is not a digest reference"),
        ([entries["linux/amd64"], other_amd64], "are both linux/amd64"),
        ([f"{repo}@{index_digest}"], "is a manifest list, not one platform's image"),
        ([f"{repo}@sha256:{'0' * 64}"], "does not exist in the registry"),
    ]
    for n, (refs, message) in enumerate(cases):
        image = f"{registry.host}/refused/app:case{n}"
        rc, out, err = taskimage(["index", "--image", image, "--tls-verify=false", "--retry-delay", "0", *refs])
        assert rc == 2, (refs, err[-2000:])
        last = err.strip().splitlines()[-1]
        assert message in last, (refs, last)
        assert not tag_exists(image)


# --- extra tags and index annotations, for real ----------------------------------------------------


def digest_at(ref: str) -> str:
    return "sha256:" + hashlib.sha256(skopeo_raw_bytes(ref)).hexdigest()


def _index_with_tags(host: str, repo: str, refs, results: Path, *extra: str):
    """`taskimage index` as the catalog Task calls it: the refs first, then --tag and --annotation."""
    results.mkdir()
    return taskimage(
        [
            "index",
            "--image",
            f"{host}/{repo}:1.2.3",
            "--tls-verify=false",
            "--retry",
            "0",
            "--retry-delay",
            "0",
            "--results-dir",
            str(results),
            *refs,
            "--tag",
            "1.2",
            f"{host}/{repo}:latest",  # a bare tag and a full one
            *extra,
        ]
    )


@pytest.mark.tools
def test_index_tags_all_name_the_pushed_list_with_its_annotation_and_none_moves_when_the_list_push_fails(
    tmp_path, registry, entries
):
    repo = "joined/tagged"
    tags = ["1.2.3", "1.2", "latest"]
    source = "index:org.opencontainers.image.source=https://git.example/team/app.git"
    refs = [entries["linux/amd64"], entries["linux/arm64"]]
    rc, _, err = _index_with_tags(registry.host, repo, refs, tmp_path / "r1", "--annotation", source)
    assert rc == 0, err[-3000:]
    first = (tmp_path / "r1" / "IMAGE_DIGEST").read_text()
    assert {t: digest_at(f"{registry.host}/{repo}:{t}") for t in tags} == dict.fromkeys(tags, first)
    assert (tmp_path / "r1" / "IMAGE_TAGS").read_text() == ",".join(f"{registry.host}/{repo}:{t}" for t in tags)
    listed = skopeo_raw(f"{registry.host}/{repo}:latest")
    assert listed["mediaType"] == index.OCI_INDEX
    assert listed["annotations"] == {"org.opencontainers.image.source": "https://git.example/team/app.git"}
    assert [m["digest"] for m in listed["manifests"]] == [r.split("@")[1] for r in refs]
    assert err.index("==> verify pushed index") < err.index("==> move tags")  # tags move after the read-back

    # another list (one more platform), whose PUT to IMAGE's tag fails: no tag may move
    fault = Fault("503", ("PUT",), rf"^/v2/{repo}/manifests/1\.2\.3$")
    with FaultProxy(registry.host, [fault]) as proxy:
        through = [r.replace(registry.host, proxy.host, 1) for r in [*refs, entries["linux/s390x"]]]
        rc, _, err = _index_with_tags(proxy.host, repo, through, tmp_path / "r2")
        assert rc == 1, err[-3000:]
        assert fault.fired >= 1
        moved = [r.path for r in proxy.log if r.method == "PUT" and re.search(r"/manifests/(?!sha256:)", r.path)]
    assert moved and [m.rsplit("/", 1)[1] for m in moved] == ["1.2.3"] * len(moved)  # only the failed list PUT(s)
    assert {t: digest_at(f"{registry.host}/{repo}:{t}") for t in tags} == dict.fromkeys(tags, first)
    assert not (tmp_path / "r2" / "IMAGE_TAGS").exists()
    assert not (tmp_path / "r2" / "IMAGE_DIGEST").exists()


@pytest.mark.tools
def test_non_index_annotations_exit_2_naming_the_value_and_push_nothing(tmp_path, registry, entries):
    digest = entries["linux/amd64"].split("@")[1]
    image = f"{registry.host}/joined/refused-annotation:v1"  # another repository: a run would copy by digest
    before = registry_snapshot(registry.host)
    for argv, env, named in [
        (["--annotation", "manifest:com.example.k=v"], {}, "--annotation (ANNOTATIONS): 'manifest:com.example.k=v'"),
        (["--annotation", "index:a=b", "com.example.k=v"], {}, "--annotation (ANNOTATIONS): 'com.example.k=v'"),
        (
            [],
            {"TASKIMAGE_ANNOTATIONS": "manifest[linux/amd64]:k=v"},
            "TASKIMAGE_ANNOTATIONS: 'manifest[linux/amd64]:k=v'",
        ),
    ]:
        rc, out, err = taskimage(
            ["index", "--image", image, "--tls-verify=false", entries["linux/amd64"], "--tag", "extra", *argv], env
        )
        assert rc == 2, err[-2000:]
        last = err.strip().splitlines()[-1]
        assert named in last and "only index:KEY=VALUE" in last, last
    assert registry_snapshot(registry.host) == before
    assert not tag_exists(f"{registry.host}/joined/refused-annotation@{digest}")
