"""The whole-build key: a re-run with unchanged inputs reuses the image an earlier run pushed.

buildah's layer cache (``--cache-from``) pulls and unpacks every layer of every cached step
into the storage before it knows the step is cached: on the samba bench that is 24 of a warm
run's 26 s, for a result that is already known. So a build with a layer cache also files its
result there under a key of everything the build reads, and a run with the same key copies that
image by digest instead of building (no storage, no layers moved within one registry).

The key is conservative: every file of the context buildah's COPY can read (the ignore file
applied exactly as buildah applies it, :mod:`taskimage.build.ignore`; only the top-level entries
some COPY/ADD names, all of them when one copies ``.`` or a glob), the Containerfile, build
args, labels, annotations, target, format, platform, the digest every external image (FROM,
``COPY --from=``, ``RUN --mount=...,from=``) has *now*, and the versions of taskimage and buildah. A changed input means
another key and a normal build; anything the key cannot pin (an unqualified or unresolvable FROM,
an ARG it cannot expand, a parser directive) means no key, and the build runs as usual. RUN steps
that fetch from the network (apt-get) are reused exactly as buildah's own layer cache reuses
them: a cached step is not run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from taskimage.build import ignore
from taskimage.oci.platforms import Platform

TAG_PREFIX = "taskimage-build-"
_VAR = re.compile(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))")


def logical_lines(text: str) -> list[str]:
    """Containerfile instructions: comments dropped, backslash continuations joined."""
    out, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continuation
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    if current:
        out.append(current)
    return out


def expand(value: str, args: Mapping[str, str]) -> str | None:
    """``$A``, ``${A}``, ``${A:-default}`` expanded from ``args``; None if one is undefined."""
    missing = []

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in args and args[name] != "":
            return args[name]
        if m.group(2) is not None:
            return m.group(2)
        if name in args:
            return ""
        missing.append(name)
        return ""

    out = _VAR.sub(one, value)
    return None if missing or "$" in out else out


def _arg_defaults(rest: str) -> list[tuple[str, str | None]]:
    out = []
    for word in rest.split():
        name, sep, default = word.partition("=")
        out.append((name, default.strip("\"'") if sep else None))
    return out


def _flags(rest: str) -> list[str]:
    """The leading ``--name=value`` words of an instruction."""
    out = []
    for word in rest.split():
        if not word.startswith("--"):
            break
        out.append(word)
    return out


def _from_flags(keyword: str, rest: str) -> list[str]:
    """The images a COPY (``--from=``) or RUN (``--mount=...,from=``) line reads."""
    out = []
    for flag in _flags(rest):
        name, _, value = flag[2:].partition("=")
        if keyword == "COPY" and name.lower() == "from":
            out.append(value)
        elif keyword == "RUN" and name.lower() == "mount":
            for option in value.split(","):
                k, _, v = option.partition("=")
                if k.strip().lower() == "from":
                    out.append(v.strip())
    return out


def _qualified(image: str) -> bool:
    first = image.split("/", 1)[0]
    return "/" in image and ("." in first or ":" in first or first == "localhost")


def external_images(containerfile: str, build_args: Mapping[str, str], platform: Platform) -> list[str] | None:
    """The registry images the build reads (FROM, ``COPY --from=``, ``RUN --mount=...,from=``), fully
    qualified; None if one cannot be pinned."""
    lines = logical_lines(containerfile)
    if re.match(r"#\s*(escape|syntax)\s*=", containerfile.lstrip(), re.IGNORECASE):
        return None
    args = {
        "TARGETPLATFORM": str(platform),
        "TARGETOS": platform.os,
        "TARGETARCH": platform.arch,
        "TARGETVARIANT": platform.variant or "",
    }
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False

    def add(name: str) -> bool:
        image = expand(name, args)
        if image is None or not image:
            return False
        if image.lower() in stages or image == "scratch" or image.isdigit():
            return True  # a stage (by name or index), or nothing
        if not _qualified(image):
            return False  # a short name: buildah resolves it through registries.conf, not pinned here
        if image not in images:
            images.append(image)
        return True

    for line in lines:
        word, _, rest = line.partition(" ")
        keyword = word.upper()
        if keyword == "ARG" and not seen_from:
            for name, default in _arg_defaults(rest):
                if name in build_args:
                    args[name] = build_args[name]
                elif default is not None:
                    args[name] = default
        elif keyword == "FROM":
            seen_from = True
            words = [w for w in rest.split() if not w.startswith("--")]
            if not words or not add(words[0]):
                return None
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2].lower())
        elif keyword in ("COPY", "RUN") and not all(add(name) for name in _from_flags(keyword, rest)):
            return None
    return images if seen_from else None


_GLOB = re.compile(r"[*?\[\\$]")


def context_roots(containerfile: str) -> frozenset[str] | None:
    """The top-level context entries the build can read: the first path component of every
    COPY/ADD source taken from the context (not ``--from``, not a URL). None when it could read
    any of them: a source ``.``, a glob or a variable there, a heredoc, or a ``RUN --mount``
    that binds the context. What no instruction can read is not what buildah sees, so a fresh
    clone's ``.git`` is outside the key unless a COPY could copy it."""
    roots: set[str] = set()
    for line in logical_lines(containerfile):
        word, _, rest = line.partition(" ")
        keyword = word.upper()
        flags = _flags(rest)
        if keyword == "RUN":
            for flag in flags:
                name, _, value = flag[2:].partition("=")
                if name.lower() != "mount":
                    continue
                options = dict(o.partition("=")[::2] for o in value.split(","))
                if options.get("type", "bind") == "bind" and "from" not in options:
                    return None
            continue
        if keyword not in ("COPY", "ADD") or any(f[2:].lower().startswith("from=") for f in flags):
            continue
        body = " ".join(rest.split()[len(flags) :])
        if "<<" in body:
            return None
        if body.startswith("["):
            try:
                words = [str(w) for w in json.loads(body)]
            except ValueError:
                return None
        else:
            words = body.split()
        for source in words[:-1]:
            if re.match(r"^(https?|git)://|^git@", source):
                continue  # not from the context
            cleaned = ignore.go_clean("/" + source).lstrip("/")
            first = cleaned.split("/", 1)[0]
            if not first or _GLOB.search(first):
                return None
            roots.add(first)
    return frozenset(roots)


def context_digest(context: Path, roots: frozenset[str] | None = None) -> str:
    """What buildah's COPY/ADD can read of the context (``.containerignore`` applied, see
    :mod:`taskimage.build.ignore`; only under ``roots``, see :func:`context_roots`): path, type,
    permission bits and content (or link target), plus the ignore file's text. Not mtimes or owners: two clones of one commit give the same digest.
    Raises :class:`~taskimage.build.ignore.IgnoreError` when the ignore file cannot be mirrored."""
    h = hashlib.sha256()
    found = ignore.ignore_file(context)
    h.update(f"{found.name if found else ''}\0".encode())
    if found is not None:
        h.update(found.read_bytes() + b"\0")
    for rel, st in ignore.walk(context):
        if roots is not None and rel.split("/", 1)[0] not in roots:
            continue  # no COPY, ADD or RUN --mount can read it
        path = context / rel
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        h.update(b"\0")
    return "sha256:" + h.hexdigest()


def key(
    *,
    versions: str,
    containerfile: bytes,
    context: str,
    platform: Platform,
    fmt: str,
    target: str,
    build_args: Sequence[tuple[str, str]],
    labels: Sequence[tuple[str, str]],
    annotations: Sequence[tuple[str, str]],
    images: Mapping[str, str],
) -> str:
    """The key (64 hex digits) of one platform's build."""
    doc = {
        "versions": versions,
        "containerfile": hashlib.sha256(containerfile).hexdigest(),
        "context": context,
        "platform": str(platform),
        "format": fmt,
        "target": target,
        "build_args": list(build_args),
        "labels": list(labels),
        "annotations": list(annotations),
        "images": dict(sorted(images.items())),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def tag(cache_repo: str, build_key: str) -> str:
    return f"{cache_repo}:{TAG_PREFIX}{build_key}"


def resolve_images(images: Sequence[str], digest_of: Callable[[str], str | None]) -> dict[str, str] | None:
    """{image: digest} through ``digest_of`` (None when one does not resolve)."""
    out = {}
    for image in images:
        if "@sha256:" in image:
            out[image] = image.rsplit("@", 1)[1]
            continue
        digest = digest_of(image)
        if not digest:
            return None
        out[image] = digest
    return out
