"""Tekton bundles without ``tkn``: the image layout Tekton's bundles resolver reads, built in Python.

What ``tkn bundle push`` (tektoncd/cli pkg/bundle) produces, and so what this module produces:

- one image manifest (not an index), media type
  ``application/vnd.docker.distribution.manifest.v2+json``;
- the config of go-containerregistry's ``empty.Image`` after ``mutate.Append`` and
  ``mutate.CreatedAt``: empty architecture/os, one empty history entry per layer, the layers'
  diff_ids, ``created`` = 1970-01-01T00:00:00Z (or ``SOURCE_DATE_EPOCH``), ``config: {}``;
- per Tekton object one gzip tar layer holding exactly one regular file named after
  ``metadata.name``, mode 0600, whose content is the object as JSON (YAML input becomes compact
  JSON with sorted keys, as Kubernetes' YAMLToJSON does; JSON input is kept byte for byte);
- layer annotations ``dev.tekton.image.apiVersion`` (version only), ``dev.tekton.image.kind``
  (lower-case singular) and ``dev.tekton.image.name``.

Input files are ordered by the sha256 of their content before their documents are read (what
tkn does), so the same files give the same digest whatever order they are named in. The bytes
are deterministic: fixed tar header fields, a fixed gzip header (Go's, mtime 0), fixed config.
The deflate stream is zlib's, not Go's, so the digest is not the one tkn would compute for the
same input; the structure and every field are the same.

Pushing and reading go through skopeo (``dir:`` transport): skopeo copies a v2s2 manifest
from ``dir:`` unchanged, which :func:`push` checks by reading the manifest back and comparing
digests.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import struct
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskimage import proc as tools
from taskimage.errors import RegistryAuthError, TaskimageError, ToolError, UsageError
from taskimage.oci import media
from taskimage.oci import registry as remote
from taskimage.oci.reference import ImageReference, parse_image
from taskimage.tekton import yamlio

MANIFEST_MEDIA_TYPE = media.DOCKER_MANIFEST
CONFIG_MEDIA_TYPE = media.DOCKER_CONFIG
LAYER_MEDIA_TYPE = media.DOCKER_LAYER_GZIP

ANNOTATION_API_VERSION = "dev.tekton.image.apiVersion"
ANNOTATION_KIND = "dev.tekton.image.kind"
ANNOTATION_NAME = "dev.tekton.image.name"

#: Tekton Pipelines' MaximumBundleObjects (pkg/remote/oci): the resolver rejects bigger bundles.
MAX_OBJECTS = 20
TEKTON_GROUP = "tekton.dev"
TEKTON_VERSIONS = ("v1", "v1beta1", "v1alpha1")
TEKTON_KINDS = (
    "Task",
    "Pipeline",
    "StepAction",
    "ClusterTask",
    "TaskRun",
    "PipelineRun",
    "CustomRun",
    "VerificationPolicy",
)
_EPOCH_HISTORY_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as json.Marshal writes it


# --- input ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TektonObject:
    """One Tekton object of the input, with where it came from (for error messages)."""

    source: str  # the file as the user named it ("-" for stdin)
    document: int  # 1-based position of the YAML/JSON document in the file
    api_version: str  # full, e.g. "tekton.dev/v1"
    kind: str  # as written, e.g. "Task"
    name: str
    content: bytes  # the JSON that goes into the layer

    @property
    def version(self) -> str:
        """What the dev.tekton.image.apiVersion annotation holds: the version only."""
        return self.api_version.rsplit("/", 1)[-1]

    @property
    def kind_annotation(self) -> str:
        return self.kind.lower()

    @property
    def where(self) -> str:
        return f"{self.source}: document {self.document}"


def _go_float(value: float) -> str:
    """A float as Go's encoding/json writes it: shortest digits, fixed notation between 1e-6
    and 1e21 (``1`` not ``1.0``), else exponent notation with ``e-7`` not ``e-07``."""
    import decimal

    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("NaN and Infinity cannot be represented in JSON")
    shortest = repr(value)
    if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
        if "e" not in shortest:  # pragma: no cover - repr uses exponents in these ranges
            shortest = f"{value:e}"
        return re.sub(r"e-0(\d)$", r"e-\1", shortest)
    fixed = format(decimal.Decimal(shortest), "f")
    if "." in fixed:
        fixed = fixed.rstrip("0").rstrip(".")
    return fixed


def _key(value: Any) -> str:
    """Mapping keys as Kubernetes' YAMLToJSON turns them into JSON object keys."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, int):
        return str(value)
    raise ValueError(f"unsupported mapping key {value!r}")


_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        items = sorted((_key(k), v) for k, v in value.items())
        for i in range(1, len(items)):
            if items[i][0] == items[i - 1][0]:
                raise ValueError(f"key {items[i][0]!r} appears twice")
        out.append("{")
        for i, (k, v) in enumerate(items):
            if i:
                out.append(",")
            out.append(json.dumps(k, ensure_ascii=False))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    elif value is None or isinstance(value, (bool, str)):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_go_float(value))
    elif isinstance(value, (bytes, bytearray)):  # !!binary: go-yaml gives base64 text
        import base64

        out.append(json.dumps(base64.b64encode(value).decode()))
    else:
        raise ValueError(f"unsupported YAML value of type {type(value).__name__}")


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's json.Marshal writes a map (Kubernetes' YAMLToJSON): sorted keys,
    ``<``, ``>``, ``&``, U+2028, U+2029 escaped, other non-ASCII as UTF-8, Go float format."""
    out: list[str] = []
    _encode(value, out)
    text = "".join(out)
    for char, escaped in _GO_ESCAPES.items():
        if char in text:
            text = text.replace(char, escaped)
    return text.encode("utf-8")


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a YAML or JSON file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _json_documents(path: str, text: str) -> list[tuple[Any, bytes]]:
    """Successive JSON values, each with its raw bytes (tkn keeps JSON input as written)."""
    decoder = json.JSONDecoder()
    out: list[tuple[Any, bytes]] = []
    position = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position >= len(text):
            return out
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{path}: document {len(out) + 1}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        out.append((value, text[position:end].strip().encode("utf-8")))
        position = end


def _yaml_documents(path: str, text: str) -> list[tuple[Any, bytes | None]]:
    return [(doc, None) for doc in yamlio.load_all(text, path)]


def _object(path: str, number: int, doc: Any, raw: bytes | None) -> TektonObject:
    where = f"{path}: document {number}"
    if not isinstance(doc, dict):
        raise UsageError(
            f"{where}: not a Tekton object (a {type(doc).__name__}, expected a mapping with apiVersion, kind and metadata.name)"
        )
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise UsageError(f"{where}: not a Tekton object: apiVersion is missing")
    if not isinstance(kind, str) or not kind:
        raise UsageError(f"{where}: not a Tekton object: kind is missing")
    group, _, version = api_version.rpartition("/")
    if group != TEKTON_GROUP:
        raise UsageError(
            f"{where}: not a Tekton object: {kind} of apiVersion {api_version!r} (only {TEKTON_GROUP}/* objects go in a bundle)"
        )
    if version not in TEKTON_VERSIONS:
        raise UsageError(
            f"{where}: unknown Tekton apiVersion {api_version!r} (expected one of {', '.join(TEKTON_GROUP + '/' + v for v in TEKTON_VERSIONS)})"
        )
    if kind not in TEKTON_KINDS:
        raise UsageError(f"{where}: unknown Tekton kind {kind!r} (expected one of {', '.join(TEKTON_KINDS)})")
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where}: {kind} has no metadata.name (a bundle names each layer after it)")
    if "/" in name or name in (".", ".."):
        raise UsageError(f"{where}: metadata.name {name!r} cannot be a file name in the layer")
    if raw is None:
        try:
            raw = go_json(doc)
        except ValueError as exc:
            raise UsageError(f"{where}: cannot convert to JSON: {exc}") from None
    return TektonObject(path, number, api_version, kind, name, raw)


def parse_text(path: str, text: str) -> list[TektonObject]:
    """The Tekton objects of one file (empty documents skipped, as kubectl and tkn do)."""
    stripped = text.lstrip(" \t\r\n")
    if stripped.startswith("{"):
        docs: list[tuple[Any, bytes | None]] = list(_json_documents(path, text))
    else:
        docs = _yaml_documents(path, text)
    objects = []
    for number, (doc, raw) in enumerate(docs, start=1):
        if doc is None:
            continue
        objects.append(_object(path, number, doc, raw))
    return objects


def load_objects(paths: Sequence[str]) -> list[TektonObject]:
    """Read, order and check the input: every object Tekton, at most 20, triples unique.

    Files are ordered by the sha256 of their content (tkn's rule), documents keep their order
    inside a file.
    """
    if not paths:
        raise UsageError("bundle push: name at least one FILE with Tekton objects")
    texts = [(path, _read(path)) for path in paths]
    texts.sort(key=lambda item: hashlib.sha256(item[1].encode("utf-8")).digest())
    objects: list[TektonObject] = []
    for path, text in texts:
        objects.extend(parse_text(path, text))
    if not objects:
        raise UsageError(f"{', '.join(paths)}: no Tekton objects found")
    if len(objects) > MAX_OBJECTS:
        extra = objects[MAX_OBJECTS]
        raise UsageError(
            f"{extra.where}: {len(objects)} objects, a bundle holds at most {MAX_OBJECTS} (Tekton's resolver rejects more)"
        )
    seen: dict[tuple[str, str, str], TektonObject] = {}
    for obj in objects:
        triple = (obj.api_version, obj.kind_annotation, obj.name)
        if triple in seen:
            first = seen[triple]
            raise UsageError(
                f"{obj.where}: duplicate {obj.api_version} {obj.kind} {obj.name!r} (also in {first.where})"
            )
        seen[triple] = obj
    return objects


# --- image ----------------------------------------------------------------------------------


sha256_digest = media.digest


def layer_tar(name: str, content: bytes) -> bytes:
    """A tar with one regular file, as Go's archive/tar writes tkn's header: USTAR, mode 0600,
    uid/gid 0, no user/group names, mtime 0, ended by two zero blocks (no 10 KiB record padding)."""
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o600
    info.mtime = 0
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    try:
        header = info.tobuf(format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="strict")
    except ValueError:  # a name that fits no USTAR header: Go falls back to PAX as well
        header = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")
    padding = (-len(content)) % tarfile.BLOCKSIZE
    return header + content + b"\0" * padding + b"\0" * (2 * tarfile.BLOCKSIZE)


def gzip_bytes(data: bytes) -> bytes:
    """gzip with Go's header (no name, mtime 0, XFL 4 for BestSpeed, OS 255): the same bytes
    on every machine with the same zlib, unlike gzip.compress(mtime=0), whose OS byte is zlib's."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY)
    body = compressor.compress(data) + compressor.flush()
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x04\xff"
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


def created_time(environ: dict[str, str] | None = None) -> str:
    """tkn's default created time: 1970-01-01T00:00:00Z, or SOURCE_DATE_EPOCH when set."""
    env = os.environ if environ is None else environ
    raw = env.get("SOURCE_DATE_EPOCH", "")
    seconds = 0
    if raw:
        try:
            seconds = int(raw)
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH: {raw!r} is not a number of seconds") from None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Layer:
    obj: TektonObject
    tar: bytes
    blob: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    @property
    def diff_id(self) -> str:
        return sha256_digest(self.tar)

    @property
    def annotations(self) -> dict[str, str]:
        return {
            ANNOTATION_API_VERSION: self.obj.version,
            ANNOTATION_KIND: self.obj.kind_annotation,
            ANNOTATION_NAME: self.obj.name,
        }


@dataclasses.dataclass(frozen=True)
class Bundle:
    """The bytes of a bundle image: manifest, config and layer blobs."""

    manifest: bytes
    config: bytes
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    def blobs(self) -> dict[str, bytes]:
        out = {sha256_digest(self.config): self.config}
        for layer in self.layers:
            out[layer.digest] = layer.blob
        return out


def _compact(value: Any) -> bytes:
    """Compact JSON keeping insertion order (Go struct field order)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def build_bundle(objects: Sequence[TektonObject], *, created: str | None = None) -> Bundle:
    """The image for ``objects`` in this order (see :func:`load_objects` for the order)."""
    created = created or created_time()
    layers = tuple(Layer(obj, tar, gzip_bytes(tar)) for obj in objects for tar in [layer_tar(obj.name, obj.content)])
    # Field order of go-containerregistry's v1.ConfigFile; empty strings that have no omitempty.
    config = _compact(
        {
            "architecture": "",
            "created": created,
            "history": [{"created": _EPOCH_HISTORY_TIME} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "config": {},
        }
    )
    manifest = _compact(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "size": len(config), "digest": sha256_digest(config)},
            "layers": [
                {
                    "mediaType": LAYER_MEDIA_TYPE,
                    "size": len(layer.blob),
                    "digest": layer.digest,
                    "annotations": dict(sorted(layer.annotations.items())),
                }
                for layer in layers
            ],
        }
    )
    return Bundle(manifest, config, layers)


def write_dir_layout(bundle: Bundle, path: Path) -> Path:
    """containers/image's ``dir:`` transport: manifest.json, blobs named by hex digest, version."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "version").write_text("Directory Transport Version: 1.1\n")
    for digest, data in bundle.blobs().items():
        (path / digest.split(":", 1)[1]).write_bytes(data)
    (path / "manifest.json").write_bytes(bundle.manifest)
    return path


# --- registry -------------------------------------------------------------------------------


def resolve_authfile(value: str | None, *, source: str = "--authfile") -> str | None:
    """A file, or a directory holding ``config.json`` or ``.dockerconfigjson`` (a Tekton
    ``dockerconfig`` workspace); the same rules as ``build`` (:mod:`taskimage.oci.auth`), which also
    registers the credentials in it so that no log line shows them."""
    from taskimage.oci import auth

    path = auth.resolve_authfile(value, source)
    return str(path) if path else None


def skopeo_push_argv(layout: Path, ref: ImageReference, options: remote.Access) -> list[str]:
    # --preserve-digests: skopeo fails instead of rewriting the manifest (which would change
    # the digest and could drop the layer annotations).
    return [
        "skopeo",
        "copy",
        "--quiet",
        "--preserve-digests",
        *options.flags("dest-"),
        f"dir:{layout}",
        f"docker://{ref.url}",
    ]


def _registries_conf() -> list[str]:
    """``--registries-conf`` from $CONTAINERS_REGISTRIES_CONF: podman reads the variable, skopeo
    1.9 (Debian bookworm) does not, so a redirect (mirror, look-alike) would reach podman only."""
    path = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    return ["--registries-conf", path] if path else []


def skopeo_inspect_raw_argv(ref: str, options: remote.Access) -> list[str]:
    return ["skopeo", *_registries_conf(), "inspect", "--raw", *options.flags(""), f"docker://{ref}"]


def skopeo_pull_argv(ref: str, layout: Path, options: remote.Access) -> list[str]:
    return [
        "skopeo",
        *_registries_conf(),
        "copy",
        "--quiet",
        "--preserve-digests",
        *options.flags("src-"),
        f"docker://{ref}",
        f"dir:{layout}",
    ]


PUSH_RETRY, PUSH_RETRY_DELAY = 3, 1.0  # as build and index: transient registry errors retried with backoff


def _auth_error(exc: ToolError, repository: str, options: remote.Access) -> ToolError:
    """A refused login becomes RegistryAuthError with a message that says what to check."""
    if not remote.auth_refused(exc.tail):
        return exc
    given = f"--authfile {options.authfile}" if options.authfile else "no --authfile"
    return RegistryAuthError(
        f"{repository}: the registry refused access ({given}); check the credentials for this registry",
        tail=exc.tail,
        returncode=exc.returncode,
    )


def read_manifest(ref: str, options: remote.Access) -> bytes:
    try:
        result = tools.run(skopeo_inspect_raw_argv(ref, options), stream=False, quiet=True, what="skopeo inspect")
    except ToolError as exc:
        raise _auth_error(exc, ref, options) from None
    return result.stdout.encode("utf-8")


def push(bundle: Bundle, ref: ImageReference, options: remote.Access) -> str:
    """Push with ``skopeo copy dir:…``, then read the manifest back: its digest must be ours."""
    with tempfile.TemporaryDirectory(prefix="taskimage-bundle-") as tmp:
        layout = write_dir_layout(bundle, Path(tmp) / "bundle")
        argv = skopeo_push_argv(layout, ref, options)
        try:
            remote.with_retry(
                lambda: tools.run(argv, what="skopeo copy"),
                what=f"pushing {ref.url}",
                image=ref,
                retry=PUSH_RETRY,
                retry_delay=PUSH_RETRY_DELAY,
            )
        except ToolError as exc:
            raise _auth_error(exc, ref.name, options) from None
    pushed = read_manifest(ref.url, options)
    if sha256_digest(pushed) != bundle.digest:
        raise TaskimageError(
            f"{ref.url}: the registry holds manifest {sha256_digest(pushed)}, not the pushed {bundle.digest} "
            "(rewritten on the way, or the tag was moved meanwhile)"
        )
    return bundle.digest


# --- reading a bundle -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One layer of a pushed bundle, as its annotations describe it."""

    kind: str
    api_version: str
    name: str
    digest: str
    media_type: str


def parse_manifest(ref: str, raw: bytes) -> list[Entry]:
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise TaskimageError(f"{ref}: the manifest is not JSON") from None
    media_type = manifest.get("mediaType", "")
    if "manifests" in manifest:
        raise TaskimageError(f"{ref}: is an image index ({media_type}), not a Tekton bundle")
    entries = []
    for number, layer in enumerate(manifest.get("layers") or [], start=1):
        annotations = layer.get("annotations") or {}
        missing = [k for k in (ANNOTATION_API_VERSION, ANNOTATION_KIND, ANNOTATION_NAME) if k not in annotations]
        if missing:
            raise TaskimageError(f"{ref}: layer {number} lacks the annotation {missing[0]}: not a Tekton bundle")
        entries.append(
            Entry(
                annotations[ANNOTATION_KIND],
                annotations[ANNOTATION_API_VERSION],
                annotations[ANNOTATION_NAME],
                layer.get("digest", ""),
                layer.get("mediaType", ""),
            )
        )
    return entries


def _ref_arg(ref: str) -> str:
    return ref[len("docker://") :] if ref.startswith("docker://") else ref


def list_entries(ref: str, options: remote.Access) -> list[Entry]:
    ref = _ref_arg(ref)
    return parse_manifest(ref, read_manifest(ref, options))


def read_layer_object(ref: str, blob: bytes) -> tuple[str, bytes]:
    """The first (only) entry of a gzip tar layer: its name and content, as Tekton reads it."""
    import gzip
    import io

    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise TaskimageError(f"{ref}: a layer holds no regular file")
            data = tar.extractfile(member)
            assert data is not None
            return member.name, data.read()
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise TaskimageError(f"{ref}: a layer is not a gzip tar: {exc}") from None


def fetch_object(
    ref: str, name: str, kind: str = "task", *, tls_verify: bool = True, authfile: str | None = None
) -> dict:
    """The object ``kind``/``name`` of the bundle ``ref``, parsed (what the bundles resolver
    returns to Tekton). ``kind`` is matched lower-case, like the dev.tekton.image.kind annotation."""
    ref = _ref_arg(ref)
    options = remote.Access(tls_verify=tls_verify, authfile=resolve_authfile(authfile))
    raw = read_manifest(ref, options)
    entries = parse_manifest(ref, raw)
    wanted = kind.lower()
    matches = [e for e in entries if e.kind == wanted and e.name == name]
    if not matches:
        have = ", ".join(f"{e.kind}/{e.name}" for e in entries) or "nothing"
        raise TaskimageError(f"{ref}: no {wanted} named {name!r} in the bundle (it holds {have})")
    repository = parse_image(ref, source="bundle", allow_digest=True).name
    pinned = f"{repository}@{sha256_digest(raw)}"
    with tempfile.TemporaryDirectory(prefix="taskimage-bundle-") as tmp:
        layout = Path(tmp) / "pulled"
        try:
            tools.run(skopeo_pull_argv(pinned, layout, options), stream=False, quiet=True, what="skopeo copy")
        except ToolError as exc:
            raise _auth_error(exc, repository, options) from None
        blob = (layout / matches[0].digest.split(":", 1)[1]).read_bytes()
    _, content = read_layer_object(ref, blob)
    try:  # JSON is what bundles hold; Tekton's decoder takes YAML too
        text = content.decode("utf-8")
        try:
            obj = json.loads(text)
        except ValueError:
            obj = yamlio.load_one(text, "the layer's file")
    except (UnicodeDecodeError, yamlio.YamlError) as exc:
        raise TaskimageError(f"{ref}: {wanted}/{name} is not JSON or YAML: {exc}") from None
    if not isinstance(obj, dict):
        raise TaskimageError(f"{ref}: {wanted}/{name} is not an object")
    return obj


__all__ = [
    "Bundle",
    "Entry",
    "Layer",
    "MAX_OBJECTS",
    "TektonObject",
    "build_bundle",
    "fetch_object",
    "go_json",
    "gzip_bytes",
    "layer_tar",
    "list_entries",
    "load_objects",
    "parse_text",
    "push",
    "resolve_authfile",
    "write_dir_layout",
]
