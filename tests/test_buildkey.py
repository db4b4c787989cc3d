"""The whole-build key's pure parts: which FROM images it pins, and what of the context it covers."""

from __future__ import annotations

import os

from taskimage.build import key as buildkey
from taskimage.oci.platforms import Platform

ARM64 = Platform("linux", "arm64")
AMD64 = Platform("linux", "amd64")


def test_from_images_with_args_stages_and_scratch():
    text = (
        "# comment\nARG REG=registry.example:5000\nARG TAG\nFROM --platform=$BUILDPLATFORM ${REG}/tools:${TAG:-1} AS build\n"
        "RUN make \\\n  all\nFROM build AS test\nFROM scratch\nCOPY --from=build /x /x\n"
        "FROM ${REG}/base-$TARGETARCH:2\n"
    )
    assert buildkey.external_images(text, {}, ARM64) == [
        "registry.example:5000/tools:1",
        "registry.example:5000/base-arm64:2",
    ]
    assert buildkey.external_images(text, {"TAG": "9", "REG": "q.io/x"}, AMD64) == [
        "q.io/x/tools:9",
        "q.io/x/base-amd64:2",
    ]


def test_what_cannot_be_pinned_gives_no_key():
    assert buildkey.external_images("FROM debian:bookworm\n", {}, AMD64) is None  # short name: registries.conf decides
    assert buildkey.external_images("FROM $UNDEFINED/x\n", {}, AMD64) is None
    assert buildkey.external_images("# syntax=docker/dockerfile:1\nFROM r.io/a/b\n", {}, AMD64) is None
    assert buildkey.external_images("RUN true\n", {}, AMD64) is None  # no FROM
    assert buildkey.external_images("FROM localhost/a/b\nFROM r.io/a@sha256:" + "0" * 64 + "\n", {}, AMD64) == [
        "localhost/a/b",
        "r.io/a@sha256:" + "0" * 64,
    ]


def test_context_digest_covers_content_mode_new_files_and_links(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.sh").write_text("b")
    first = buildkey.context_digest(tmp_path)
    assert buildkey.context_digest(tmp_path) == first
    seen = {first}
    (tmp_path / "a.txt").write_text("A")
    seen.add(buildkey.context_digest(tmp_path))
    os.chmod(tmp_path / "sub" / "b.sh", 0o755)
    seen.add(buildkey.context_digest(tmp_path))
    (tmp_path / "empty").mkdir()
    seen.add(buildkey.context_digest(tmp_path))
    os.symlink("a.txt", tmp_path / "link")
    seen.add(buildkey.context_digest(tmp_path))
    os.remove(tmp_path / "link")
    os.symlink("sub/b.sh", tmp_path / "link")
    seen.add(buildkey.context_digest(tmp_path))
    assert len(seen) == 6  # every change gave another digest


def test_key_changes_with_every_input():
    base = dict(
        versions="v",
        containerfile=b"FROM r.io/a\n",
        context="sha256:c",
        platform=AMD64,
        fmt="oci",
        target="",
        build_args=(("A", "1"),),
        labels=(),
        annotations=(),
        images={"r.io/a": "sha256:1"},
    )
    k = buildkey.key(**base)
    changes = dict(
        versions="w",
        containerfile=b"FROM r.io/b\n",
        context="sha256:d",
        platform=ARM64,
        fmt="docker",
        target="t",
        build_args=(("A", "2"),),
        labels=(("l", "1"),),
        annotations=(("a", "1"),),
        images={"r.io/a": "sha256:2"},
    )
    for name, value in changes.items():
        assert buildkey.key(**dict(base, **{name: value})) != k, name
    assert buildkey.tag("r.io/cache", k) == f"r.io/cache:taskimage-build-{k}" and len(k) == 64


def test_copy_from_and_mount_from_images_are_pinned_too():
    text = (
        "FROM r.io/base:1 AS build\nCOPY --from=r.io/tools:2 /bin/t /t\nCOPY --from=build /x /y\nCOPY --from=0 /x /z\n"
        "RUN --mount=type=bind,from=r.io/data:3,target=/d --mount=type=cache,target=/c make\n"
        "COPY --chown=1:1 --from=r.io/tools:2 /a /b\nRUN --mount=type=bind,target=/s true\n"
    )
    assert buildkey.external_images(text, {}, AMD64) == ["r.io/base:1", "r.io/tools:2", "r.io/data:3"]
    # one that cannot be pinned: no key at all
    assert buildkey.external_images("FROM r.io/a\nCOPY --from=busybox /bin/sh /sh\n", {}, AMD64) is None
    assert buildkey.external_images("FROM r.io/a\nRUN --mount=from=$NOPE,target=/x true\n", {}, AMD64) is None


def test_context_roots_are_what_copy_add_and_bind_mounts_can_read():
    roots = buildkey.context_roots
    assert roots("FROM r.io/a\nCOPY smb.conf /etc/samba/\nADD --chown=1:1 ./src/a b/ /x/\n") == {"smb.conf", "src", "b"}
    assert roots('FROM r.io/a\nCOPY ["dir/x y", "/z"]\nCOPY --from=build /out /out\n') == {"dir"}
    assert roots("FROM r.io/a\nADD https://example.org/f.tgz /f\nRUN --mount=type=cache,target=/c true\n") == set()
    assert roots("FROM r.io/a\nRUN --mount=type=bind,from=r.io/b,target=/b true\n") == set()
    for anything in (
        "COPY . /src",
        "COPY ./ /src",
        "COPY *.txt /",
        "COPY $DIR/x /",
        "RUN --mount=target=/src make",
        "RUN --mount=type=bind,source=.,target=/src make",
        "COPY <<EOF /x\nhi\nEOF",
    ):
        assert roots(f"FROM r.io/a\n{anything}\n") is None, anything


def test_what_no_instruction_reads_is_outside_the_key(tmp_path):
    (tmp_path / "smb.conf").write_text("a")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "index").write_text("1")
    only = frozenset({"smb.conf"})
    first = buildkey.context_digest(tmp_path, only)
    (tmp_path / ".git" / "index").write_text("2")  # a fresh clone's .git differs
    (tmp_path / "README").write_text("new")
    assert buildkey.context_digest(tmp_path, only) == first
    (tmp_path / "smb.conf").write_text("b")
    assert buildkey.context_digest(tmp_path, only) != first
