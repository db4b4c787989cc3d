"""Build inputs beyond the context: build secrets, extra tags, scoped annotations, SOURCE_DATE_EPOCH.

Pure parsing and validation (no tool runs): every problem is a :class:`UsageError` naming the
flag (and the Task param) and the value, raised before anything is built.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from taskimage.errors import UsageError
from taskimage.oci.platforms import Platform, normalize
from taskimage.oci.reference import ImageReference, parse_image

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _named(source: str, param: str) -> str:
    """``--secret (SECRETS)``: the flag for CLI users, the Task param for Task users."""
    return source if param in source else f"{source} ({param})"


# --- build secrets ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Secret:
    """One ``--secret``: its id and where buildah reads it (a file or an environment variable).

    Only the id and the file's path or the variable's name are ever held or logged; the bytes are
    read by buildah alone, into a tmpfs mount of the RUN step that asks for them.
    """

    id: str
    src: str = ""  # absolute path of a regular file
    env: str = ""  # or the name of an environment variable

    def arg(self) -> str:
        return f"id={self.id},env={self.env}" if self.env else f"id={self.id},src={self.src}"


def parse_secrets(
    values: Sequence[str], source: str, root: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[Secret, ...]:
    """``id=ID[,src=PATH]``, ``id=ID,env=VAR`` (buildah's and buildx's spelling; ``type=file|env``
    and ``source=`` accepted too) or a bare ``ID`` (the file ``ID``). A relative PATH is taken in
    ``root`` (the Task's build-secrets workspace) when it is given, and may not leave it."""
    environ = os.environ if environ is None else environ
    named = _named(source, "SECRETS")
    out: list[Secret] = []
    seen: set[str] = set()
    for value in values:
        if not value.strip():
            continue  # an empty array element from Tekton
        fields: dict[str, str] = {}
        if "=" not in value:
            fields = {"id": value.strip()}
        else:
            for part in value.split(","):
                key, sep, val = part.partition("=")
                key = key.strip().lower()
                if not sep or key not in ("id", "src", "source", "env", "type") or key in fields:
                    raise UsageError(
                        f"{named}: {value!r} is not id=ID[,src=PATH] or id=ID,env=VAR "
                        f"(unknown or repeated field {part.strip()!r})"
                    )
                fields["src" if key == "source" else key] = val.strip()
        sid = fields.get("id", "")
        if not _ID_RE.match(sid):
            raise UsageError(f"{named}: {value!r}: the secret id {sid!r} must be letters, digits, '.', '_' or '-'")
        if sid in seen:
            raise UsageError(f"{named}: secret {sid!r} is given twice")
        seen.add(sid)
        kind = fields.get("type", "")
        if kind not in ("", "file", "env"):
            raise UsageError(f"{named}: secret {sid!r}: type {kind!r}: use file or env")
        if "env" in fields or kind == "env":
            if "src" in fields:
                raise UsageError(f"{named}: secret {sid!r}: give src= or env=, not both")
            var = fields.get("env") or sid
            if not _ENV_RE.match(var):
                raise UsageError(f"{named}: secret {sid!r}: {var!r} is not an environment variable name")
            if var not in environ:
                raise UsageError(f"{named}: secret {sid!r}: the environment variable {var} is not set")
            out.append(Secret(sid, env=var))
            continue
        out.append(Secret(sid, src=str(_secret_file(fields.get("src") or sid, sid, named, root))))
    return tuple(out)


def _workspace_file(value: str, shown: str, what: str, root: Path | None, workspace: str) -> Path:
    """``value`` as an existing path: relative to ``root`` (the ``workspace`` workspace) and never
    outside it after symlinks, or, without ``root``, relative to the working directory. Errors
    start with ``what`` and quote ``shown`` (the value as given)."""
    path = Path(value)
    if not path.is_absolute():
        path = (root if root is not None else Path.cwd()) / path
    if root is not None:
        try:
            # Kubernetes Secret volumes hold symlinks into ..data/: resolve, then check.
            path.resolve().relative_to(root.resolve())
        except ValueError:
            raise UsageError(f"{what}: {shown!r} is outside the {workspace} workspace") from None
    if not path.exists():
        where = f"the {workspace} workspace" if root is not None else "the working directory"
        raise UsageError(f"{what}: no file {shown!r} in {where}")
    return path


def _secret_file(src: str, sid: str, named: str, root: Path | None) -> Path:
    path = _workspace_file(src, src, f"{named}: secret {sid!r}", root, "build-secrets")
    if not path.resolve().is_file():
        raise UsageError(f"{named}: secret {sid!r}: {src!r} is not a regular file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{named}: secret {sid!r}: {src!r} is not readable")
    return path.resolve()


_MOUNT_RE = re.compile(r"--mount=(\S+)")


def secret_mounts(containerfile: str, kind: str = "secret") -> dict[str, bool]:
    """The ids the Containerfile's ``RUN --mount=type=secret`` (or ``type=ssh``) name, each with
    whether it may be missing (``required=false`` given explicitly). buildkit's default id is the
    target's basename for a secret, ``default`` for ssh."""
    found: dict[str, bool] = {}
    for match in _MOUNT_RE.finditer(containerfile):
        opts: dict[str, str] = {}
        for part in match.group(1).strip("'\"").split(","):
            key, sep, val = part.partition("=")
            opts[key.strip().lower()] = val.strip() if sep else "true"
        if opts.get("type") != kind:
            continue
        target = opts.get("target") or opts.get("dst") or opts.get("destination") or ""
        sid = opts.get("id") or (os.path.basename(target) if kind == "secret" else "default")
        if sid:
            optional = opts.get("required", "").lower() in ("false", "0", "no")
            found[sid] = found.get(sid, True) and optional
    return found


def check_secret_mounts(containerfile: str, secrets: Sequence[Secret], source: str) -> list[str]:
    """Refuse a secret the Containerfile mounts but nobody gave (buildah would run the step
    without it and fail somewhere inside it, or worse, succeed without); return the ids given
    but never mounted (a typo on either side, worth a warning)."""
    named = _named(source, "SECRETS")
    mounts = secret_mounts(containerfile)
    given = {s.id for s in secrets}
    for sid, optional in mounts.items():
        if sid not in given and not optional:
            raise UsageError(
                f"{named}: the Containerfile mounts secret {sid!r}, which is not given: pass "
                f"--secret id={sid},src=PATH (Task: SECRETS with the file in the build-secrets workspace), "
                "or mark the mount required=false"
            )
    return sorted(given - set(mounts))


# --- extra tags ---------------------------------------------------------------------------------

_TAG_ONLY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def parse_tags(values: Sequence[str], source: str, image: ImageReference) -> tuple[ImageReference, ...]:
    """Each ``--tag``: a bare tag (``1.2``, in IMAGE's repository) or a full REPOSITORY:TAG on
    IMAGE's registry (the one set of credentials the build has). IMAGE's own tag and repeats are
    dropped, in order."""
    named = _named(source, "ADDITIONAL_TAGS")
    out: list[ImageReference] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        if "/" not in text and ":" not in text:
            if not _TAG_ONLY_RE.match(text):
                raise UsageError(f"{named}: invalid tag {value!r} (letters, digits, '_', '.', '-'; at most 128)")
            ref = image.with_tag(text)
        else:
            ref = parse_image(text, source=named)
            if ref.registry != image.registry:
                raise UsageError(
                    f"{named}: {value!r} is on {ref.registry}, not on {image.registry} where {image.url} goes"
                )
        if ref.url != image.url and ref not in out:
            out.append(ref)
    return tuple(out)


# --- annotations ----------------------------------------------------------------------------------

_SCOPED_RE = re.compile(r"^(?P<type>[a-z-]+)(?:\[(?P<platforms>[^\]]*)\])?:(?P<rest>.*)$", re.DOTALL)
_BUILDX_TYPES = ("index", "manifest", "index-descriptor", "manifest-descriptor")


@dataclasses.dataclass(frozen=True)
class Annotations:
    """ANNOTATIONS sorted by where they go, in buildx's syntax: ``KEY=VALUE`` and
    ``manifest:KEY=VALUE`` on every platform's image manifest, ``manifest[linux/arm64,...]:KEY=VALUE``
    on those platforms' only, ``index:KEY=VALUE`` on the manifest list."""

    manifest: tuple[tuple[str, str], ...] = ()
    platform: tuple[tuple[Platform, str, str], ...] = ()
    index: tuple[tuple[str, str], ...] = ()

    def for_platform(self, p: Platform) -> tuple[tuple[str, str], ...]:
        return self.manifest + tuple((k, v) for q, k, v in self.platform if q == p)


def _scope(value: str) -> tuple[str, str | None, str]:
    """An annotation's buildx type (``manifest`` when none is given), its ``[platforms]`` text or
    None, and the ``KEY=VALUE`` rest. A key may hold colons: only a buildx type is a scope."""
    head = value.partition("=")[0]
    m = _SCOPED_RE.match(value) if ":" in head else None
    if m and m.group("type") in _BUILDX_TYPES:
        return m.group("type"), m.group("platforms"), m.group("rest")
    return "manifest", None, value


def parse_annotations(values: Sequence[str], source: str, platforms: Sequence[Platform]) -> Annotations:
    named = _named(source, "ANNOTATIONS")
    manifest: list[tuple[str, str]] = []
    per_platform: list[tuple[Platform, str, str]] = []
    index: list[tuple[str, str]] = []
    for value in values:
        if not value.strip():
            continue  # an empty array element from Tekton
        kind, selected, rest = _scope(value)
        key, sep, val = rest.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{named}: {value!r} is not [TYPE[PLATFORMS]:]KEY=VALUE")
        key = key.strip()
        if kind.endswith("-descriptor"):
            raise UsageError(f"{named}: {value!r}: {kind} annotations are not supported; use index: or manifest:")
        if kind == "index":
            if selected is not None:
                raise UsageError(f"{named}: {value!r}: an index annotation takes no platforms")
            index.append((key, val))
        elif selected is None:
            manifest.append((key, val))
        else:
            wanted = [normalize(x.strip(), source=named) for x in selected.split(",") if x.strip()]
            if not wanted:
                raise UsageError(f"{named}: {value!r}: no platform between the brackets")
            for p in wanted:
                if p not in platforms:
                    raise UsageError(
                        f"{named}: {value!r}: {p} is not built (platforms: {', '.join(map(str, platforms))})"
                    )
                per_platform.append((p, key, val))
    return Annotations(tuple(manifest), tuple(per_platform), tuple(index))


def check_index_format(annotations: Annotations, fmt: str, source: str) -> None:
    """index: annotations need an OCI index: refuse them with ``--format docker``."""
    if annotations.index and fmt == "docker":
        raise UsageError(
            f"{_named(source, 'ANNOTATIONS')}: index: annotations need an OCI index; a docker manifest list "
            "has no annotations (--format docker)"
        )


def parse_index_annotations(values: Sequence[str], source: str, fmt: str) -> tuple[tuple[str, str], ...]:
    """ANNOTATIONS of ``taskimage index``: ``index:KEY=VALUE`` only. The images it joins are pushed
    already (their manifests, so their digests, are fixed), so a ``manifest:`` (or bare ``KEY=VALUE``)
    form, which buildx puts on each image manifest, is refused rather than dropped."""
    named = _named(source, "ANNOTATIONS")
    for value in values:
        if value.strip() and _scope(value)[0] != "index":
            raise UsageError(
                f"{named}: {value!r}: only index:KEY=VALUE applies to a list of images already pushed "
                "(their manifests cannot change)"
            )
    annotations = parse_annotations(values, source, ())
    check_index_format(annotations, fmt, source)
    return annotations.index


# --- SOURCE_DATE_EPOCH ----------------------------------------------------------------------------


def parse_epoch(value: str, source: str) -> int | None:
    """Whole seconds since 1970-01-01 UTC, or None when empty."""
    text = value.strip()
    if not text:
        return None
    named = _named(source, "SOURCE_DATE_EPOCH")
    if not text.isdigit():
        raise UsageError(
            f"{named}: {value!r} is not a number of seconds since 1970-01-01 (e.g. git log -1 --format=%ct)"
        )
    seconds = int(text)
    if seconds > 253402300799:  # 9999-12-31T23:59:59Z: past that, RFC 3339 times (image configs) end
        raise UsageError(f"{named}: {value!r} is after the year 9999")
    return seconds


# --- SSH ------------------------------------------------------------------------------------------


def parse_ssh(
    values: Sequence[str], source: str, root: Path | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """``--ssh`` values as buildah takes them: ``default`` or ``ID`` (the agent at $SSH_AUTH_SOCK)
    or ``ID=PATH[,PATH...]`` (private keys, or an agent socket). A relative PATH is taken in ``root``
    (the Task's ssh-directory workspace) and may not leave it. Only paths are held or logged."""
    environ = os.environ if environ is None else environ
    named = _named(source, "SSH")
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        if not value.strip():
            continue
        sid, sep, paths = value.strip().partition("=")
        if not _ID_RE.match(sid):
            raise UsageError(f"{named}: {value!r}: the ssh id {sid!r} must be letters, digits, '.', '_' or '-'")
        if sid in seen:
            raise UsageError(f"{named}: ssh id {sid!r} is given twice")
        seen.add(sid)
        if not sep:
            sock = environ.get("SSH_AUTH_SOCK", "")
            if not sock or not Path(sock).exists():
                raise UsageError(
                    f"{named}: ssh {sid!r}: no SSH agent (SSH_AUTH_SOCK is "
                    f"{'unset' if not sock else repr(sock) + ', which does not exist'}); give {sid}=KEYFILE"
                )
            out.append(sid)
            continue
        files = []
        for item in paths.split(","):
            if not item.strip():
                raise UsageError(f"{named}: {value!r}: an empty key path")
            path = _workspace_file(item.strip(), item, f"{named}: ssh {sid!r}", root, "ssh-directory")
            files.append(str(path.resolve()))
        out.append(f"{sid}={','.join(files)}")
    return tuple(out)


def check_ssh_mounts(containerfile: str, ssh: Sequence[str], source: str) -> None:
    """Refuse an ssh id the Containerfile mounts but nobody gave (buildah would run the step
    without an agent, and git would fail with "Permission denied (publickey)" deep in the log)."""
    named = _named(source, "SSH")
    given = {value.partition("=")[0] for value in ssh}
    for sid, optional in secret_mounts(containerfile, "ssh").items():
        if sid not in given and not optional:
            raise UsageError(
                f"{named}: the Containerfile mounts ssh {sid!r}, which is not given: pass --ssh {sid}=KEYFILE "
                "(Task: SSH with the key in the ssh-directory workspace), or mark the mount required=false"
            )
