"""Registry credentials: resolve the auth file, register its secrets for redaction.

Accepted: an ``auth.json``/``config.json`` file, or a directory holding ``config.json`` or
``.dockerconfigjson`` (what a Tekton ``dockerconfig`` workspace bound to a
``kubernetes.io/dockerconfigjson`` Secret gives). ``--creds USER:PASS`` is merged into a
private temporary auth file, so credentials never appear on any command line.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import tempfile
from pathlib import Path

from taskimage import log
from taskimage.errors import UsageError

CANDIDATES = ("config.json", ".dockerconfigjson", "auth.json")


def resolve_authfile(value: str | None, source: str = "--authfile") -> Path | None:
    """The auth file ``value`` points at (validated), or None when empty."""
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        for name in CANDIDATES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise UsageError(f"{source}: directory {value!r} holds none of {', '.join(CANDIDATES)}")
    elif not path.exists():
        raise UsageError(f"{source}: {value!r} does not exist")
    load_auths(path, source)
    return path


def load_auths(path: Path, source: str = "--authfile") -> dict:
    """Parse an auth file and register every credential in it as a secret. Never echo content."""
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise UsageError(f"{source}: {path} is not a text file") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: {path} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except OSError as exc:
        raise UsageError(f"{source}: cannot read {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise UsageError(f'{source}: {path} must hold a JSON object with an "auths" map')
    auths = data.get("auths", data if "auths" not in data and all(isinstance(v, dict) for v in data.values()) else None)
    if not isinstance(auths, dict):
        raise UsageError(f'{source}: {path} must hold a JSON object with an "auths" map')
    for registry, entry in auths.items():
        if not isinstance(entry, dict):
            raise UsageError(f"{source}: {path}: the entry for {registry!r} must be an object")
        register_entry_secrets(entry)
    return auths


def register_entry_secrets(entry: dict) -> None:
    for key in ("auth", "password", "identitytoken", "registrytoken"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            log.add_secret(value)
            if key == "auth":
                try:
                    decoded = base64.b64decode(value).decode()
                    log.add_secret(decoded)
                    log.add_secret(decoded.partition(":")[2])
                except Exception:
                    pass


def split_creds(creds: str, source: str = "--creds") -> tuple[str, str]:
    user, sep, password = creds.partition(":")
    if not sep or not user or not password:
        raise UsageError(f"{source}: expected USERNAME:PASSWORD")  # never echo the value
    log.add_secret(password)
    log.add_secret(creds)
    return user, password


def merged_authfile(base: Path | None, registry: str, creds: str, source: str = "--creds") -> Path:
    """A private temp auth file: ``base``'s entries plus ``creds`` for ``registry``."""
    user, password = split_creds(creds, source)
    auths = dict(load_auths(base)) if base else {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    log.add_secret(token)
    auths[registry] = {"auth": token}
    fd, name = tempfile.mkstemp(prefix="taskimage-auth-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": auths}, f)
    os.chmod(name, 0o600)
    return Path(name)


@contextlib.contextmanager
def with_creds(registry, host: str, creds: str | None):
    """``registry`` (a :class:`taskimage.oci.registry.Access`) whose auth file also holds ``creds``
    for ``host``; the private temporary file is removed afterwards. No creds: ``registry`` as is."""
    if not creds:
        yield registry
        return
    temp = merged_authfile(Path(registry.authfile) if registry.authfile else None, host, creds)
    try:
        yield dataclasses.replace(registry, authfile=str(temp))
    finally:
        temp.unlink(missing_ok=True)
