"""What an image holds, read statically from its file system: no emulation, so an arm64 or s390x
image is scanned as fast as an amd64 one.

Readers (ours: no maintained library reads these databases from a foreign root):

- dpkg: ``var/lib/dpkg/status`` (installed packages only), licences from machine-readable
  ``usr/share/doc/<package>/copyright`` files (the ``Files: *`` paragraph);
- apk: ``lib/apk/db/installed``;
- rpm: ``var/lib/rpm/rpmdb.sqlite`` (rpm >= 4.16, the default of Fedora 33+, RHEL 9, UBI 9) and
  ``usr/lib/sysimage/rpm/rpmdb.sqlite``; the older Berkeley DB ``Packages`` file is not read
  (reported as a warning);
- Python: ``*.dist-info/METADATA`` and ``*.egg-info/PKG-INFO`` anywhere;
- npm: ``package.json`` of every package under a ``node_modules`` directory;
- Go: the build information embedded in every Go executable (:mod:`.gobuildinfo`).
"""

from __future__ import annotations

import dataclasses
import email.parser
import json
import os
import sqlite3
import stat
import struct
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from taskimage.supplychain import gobuildinfo

SKIP_DIRS = {"proc", "sys", "dev"}


@dataclasses.dataclass(frozen=True)
class Package:
    type: str  # purl type: deb, apk, rpm, pypi, npm, golang
    name: str
    version: str
    arch: str = ""  # the package's own architecture as its database says (amd64, all, aarch64, noarch)
    license: str = ""  # as the metadata declares it (not necessarily an SPDX expression)
    namespace: str = ""  # purl namespace: the distribution (debian, alpine, fedora) or an npm scope
    distro: str = ""  # e.g. debian-13, for OS packages
    location: str = ""  # where in the image it was found
    epoch: str = ""  # rpm

    @property
    def purl(self) -> str:
        from packageurl import PackageURL  # lazy: the task image may lack it

        qualifiers: dict[str, str] = {}
        if self.arch:
            qualifiers["arch"] = self.arch
        if self.distro:
            qualifiers["distro"] = self.distro
        if self.epoch:
            qualifiers["epoch"] = self.epoch
        name, namespace = self.name, self.namespace or None
        if self.type == "golang":
            namespace, _, name = self.name.rpartition("/")
            namespace = namespace or None
        elif self.type == "pypi":
            name = name.lower().replace("_", "-").replace(".", "-")
        return PackageURL(
            type=self.type, namespace=namespace, name=name, version=self.version or None, qualifiers=qualifiers or None
        ).to_string()


@dataclasses.dataclass
class Scan:
    packages: list[Package]
    os_id: str = ""  # os-release ID (debian, alpine, fedora)
    os_version: str = ""  # os-release VERSION_ID
    os_name: str = ""  # PRETTY_NAME
    warnings: list[str] = dataclasses.field(default_factory=list)

    SCHEMA = 1  # of to_json(); a scan of another schema is not read back (it is made again)

    def to_json(self) -> bytes:
        """The scan as taskimage files it in a layer cache (see build/attest.py), so that an image
        reused into another repository gets its SBOM without its layers being read again."""
        doc = {"schema": self.SCHEMA, **dataclasses.asdict(self)}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Scan:
        """What :meth:`to_json` wrote; ValueError for anything else."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("schema") != cls.SCHEMA:
            raise ValueError(f"not a package scan of schema {cls.SCHEMA}")
        fields = {f.name for f in dataclasses.fields(Package)}
        try:
            found = [Package(**{k: str(v) for k, v in p.items() if k in fields}) for p in doc["packages"]]
            return cls(
                found,
                str(doc.get("os_id", "")),
                str(doc.get("os_version", "")),
                str(doc.get("os_name", "")),
                [str(w) for w in doc.get("warnings", [])],
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a package scan: {exc}") from exc


def os_release(root: Path) -> dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = _inside(root, rel)
        if path and path.is_file():
            out = {}
            for line in path.read_text(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    out[key.strip()] = value.strip().strip("'\"")
            return out
    return {}


def _inside(root: Path, relative: str) -> Path | None:
    """``root/relative``, following symlinks as the image would (absolute links stay in ``root``)."""
    current = relative.strip("/")
    for _ in range(16):
        parts = current.split("/")
        resolved = root
        for i, part in enumerate(parts):
            candidate = resolved / part
            if candidate.is_symlink():
                target = os.readlink(candidate)
                rest = "/".join(parts[i + 1 :])
                base = "" if target.startswith("/") else str(resolved.relative_to(root))
                current = os.path.normpath(os.path.join(base, target.lstrip("/"), rest)).lstrip("/")
                if current.startswith(".."):
                    return None
                break
            resolved = candidate
        else:
            return resolved
    return None


# --- OS package databases -----------------------------------------------------------------


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """Debian control / apk db paragraphs: ``Key: value`` with continuation lines."""
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, ""
        elif line[0] in " \t" and last:
            fields[last] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            last = key.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def _dep5_license(path: Path | None) -> str:
    """The licence of the ``Files: *`` paragraph of a machine-readable copyright file, or ""."""
    if path is None or not path.is_file():
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    if not text.startswith("Format:") or "copyright-format" not in text.split("\n", 1)[0]:
        return ""
    for para in _stanzas(text):
        if para.get("Files", "").split() == ["*"] and para.get("License"):
            return para["License"].split("\n", 1)[0].strip()
    return ""


def read_dpkg(root: Path, distro: str) -> list[Package]:
    path = _inside(root, "var/lib/dpkg/status")
    if path is None or not path.is_file():
        return []
    out = []
    for p in _stanzas(path.read_text(errors="replace")):
        status = p.get("Status", "").split()
        if len(status) < 3 or status[2] != "installed" or not p.get("Package"):
            continue
        name = p["Package"]
        out.append(
            Package(
                "deb",
                name,
                p.get("Version", ""),
                p.get("Architecture", ""),
                _dep5_license(_inside(root, f"usr/share/doc/{name}/copyright")),
                "debian" if not distro.startswith("ubuntu") else "ubuntu",
                distro,
                "/var/lib/dpkg/status",
            )
        )
    return out


def read_apk(root: Path, distro: str) -> list[Package]:
    path = _inside(root, "lib/apk/db/installed")
    if path is None or not path.is_file():
        return []
    out = []
    for p in _stanzas(_apk_as_stanzas(path.read_text(errors="replace"))):
        if p.get("P"):
            out.append(
                Package(
                    "apk",
                    p["P"],
                    p.get("V", ""),
                    p.get("A", ""),
                    p.get("L", ""),
                    distro.split("-")[0] or "alpine",
                    distro,
                    "/lib/apk/db/installed",
                )
            )
    return out


def _apk_as_stanzas(text: str) -> str:
    # apk's lines are "K:value" (no space) and repeat keys (F:, R:) we do not need
    return "\n".join(line if not line or line[1:2] != ":" else f"{line[0]}: {line[2:]}" for line in text.splitlines())


RPM_TAGS = {1000: "name", 1001: "version", 1002: "release", 1003: "epoch", 1014: "license", 1022: "arch"}
RPMDBS = ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite")


def rpm_header(blob: bytes) -> dict[str, str]:
    """The tags we need from one rpm header blob (as rpmdb.sqlite stores it: no lead, no magic)."""
    count, size = struct.unpack_from(">II", blob, 0)
    store = 8 + 16 * count
    out: dict[str, str] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        if tag not in RPM_TAGS or not 0 <= offset < size:
            continue
        at = store + offset
        if kind in (6, 8, 9):  # STRING, STRING_ARRAY, I18NSTRING: NUL-terminated
            out[RPM_TAGS[tag]] = blob[at : blob.index(b"\0", at)].decode(errors="replace")
        elif kind == 4 and n:  # INT32
            out[RPM_TAGS[tag]] = str(struct.unpack_from(">i", blob, at)[0])
    return out


def read_rpm(root: Path, distro: str, warnings: list[str]) -> list[Package]:
    for rel in RPMDBS:
        path = _inside(root, rel)
        if path is not None and path.is_file():
            break
    else:
        if any((_inside(root, d) or Path("/nonexistent")).joinpath("Packages").is_file() for d in ("var/lib/rpm",)):
            warnings.append(
                "an rpm Berkeley DB (var/lib/rpm/Packages, rpm < 4.16) is not read: rpm packages not listed"
            )
        return []
    out = []
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        for (blob,) in conn.execute("SELECT blob FROM Packages"):
            h = rpm_header(bytes(blob))
            if not h.get("name") or h["name"] == "gpg-pubkey":
                continue
            out.append(
                Package(
                    "rpm",
                    h["name"],
                    f"{h.get('version', '')}-{h.get('release', '')}".strip("-"),
                    h.get("arch", ""),
                    h.get("license", ""),
                    distro.split("-")[0],
                    distro,
                    "/" + rel,
                    h.get("epoch", ""),
                )
            )
    except sqlite3.Error as exc:
        warnings.append(f"/{rel}: {exc}: rpm packages not listed")
    finally:
        conn.close()
    return out


# --- language packages (one walk of the file system) ---------------------------------------


def _python(meta: Path, location: str) -> Package | None:
    try:
        msg = email.parser.HeaderParser().parsestr(meta.read_text(errors="replace"))
    except OSError:
        return None
    name, version = msg.get("Name"), msg.get("Version")
    if not name or not version:
        return None
    licence = msg.get("License-Expression") or ""
    if not licence:
        declared = (msg.get("License") or "").strip()
        if declared and "\n" not in declared and len(declared) < 100 and declared.upper() != "UNKNOWN":
            licence = declared
    if not licence:
        classifiers = [
            c.rsplit("::", 1)[-1].strip() for c in msg.get_all("Classifier") or [] if c.startswith("License ::")
        ]
        licence = " AND ".join(classifiers)
    return Package("pypi", name, version, license=licence, location=location)


def _npm(path: Path, location: str) -> Package | None:
    try:
        data = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data.get("version"):
        return None
    scope, _, name = data["name"].rpartition("/")
    licence = data.get("license", "")
    if isinstance(licence, dict):
        licence = licence.get("type", "")
    if not isinstance(licence, str):
        licence = ""
    return Package("npm", name, str(data["version"]), license=licence, namespace=scope, location=location)


def _go(path: Path, location: str) -> list[Package]:
    info = gobuildinfo.read(path)
    if info is None:
        return []
    out = []
    main = info.main or (gobuildinfo.Module(info.path, "") if info.path else None)
    if main:
        out.append(Package("golang", main.path, _go_version(main.version), location=location))
    out += [Package("golang", d.path, _go_version(d.version), location=location) for d in info.deps]
    out.append(Package("golang", "stdlib", info.go_version.removeprefix("go"), location=location))
    return out


def _go_version(v: str) -> str:
    return "" if v == "(devel)" else v


def walk(root: Path) -> Iterator[tuple[str, Package]]:
    """Language packages, found in one walk of the image's file system."""
    root_str = str(root)
    for dirpath, dirnames, filenames in os.walk(root_str):
        rel = os.path.relpath(dirpath, root_str)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        base = os.path.basename(dirpath)
        image_dir = "/" + ("" if rel == "." else rel)
        if base.endswith(".dist-info") and "METADATA" in filenames:
            pkg = _python(Path(dirpath, "METADATA"), image_dir)
            if pkg:
                yield ("python", pkg)
        elif base.endswith(".egg-info") and "PKG-INFO" in filenames:
            pkg = _python(Path(dirpath, "PKG-INFO"), image_dir)
            if pkg:
                yield ("python", pkg)
        if "package.json" in filenames:
            parent = os.path.dirname(dirpath)
            if os.path.basename(parent) == "node_modules" or (
                os.path.basename(parent).startswith("@") and os.path.basename(os.path.dirname(parent)) == "node_modules"
            ):
                pkg = _npm(Path(dirpath, "package.json"), image_dir + "/package.json")
                if pkg:
                    yield ("npm", pkg)
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111 and st.st_size > 1024:
                for pkg in _go(Path(full), os.path.join(image_dir, name)):
                    yield ("go", pkg)


def scan(root: str | os.PathLike) -> Scan:
    """Every package found in the file system at ``root`` (a mounted image)."""
    root = Path(root)
    rel = os_release(root)
    os_id = rel.get("ID", "")
    version = rel.get("VERSION_ID", "")
    distro = f"{os_id}-{version}" if os_id and version else os_id
    result = Scan([], os_id, version, rel.get("PRETTY_NAME", ""))
    result.packages += read_dpkg(root, distro)
    result.packages += read_apk(root, distro)
    result.packages += read_rpm(root, distro, result.warnings)
    result.packages += [pkg for _, pkg in walk(root)]
    return result


def purl_query(purl: str) -> dict[str, str]:
    """The qualifiers of a purl (for tests and readers of our SBOMs)."""
    return dict(urllib.parse.parse_qsl(purl.partition("?")[2]))
