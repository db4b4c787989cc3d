"""A TaskRun's ServiceAccount credentials, set up as Tekton's creds-init sets them up.

Tekton reads the Secrets of the TaskRun's ServiceAccount that carry ``tekton.dev/git-*`` or
``tekton.dev/docker-*`` annotations and writes, under ``/tekton/creds``, what git, ssh and
registry clients read from ``$HOME``; each step's entrypoint then copies that into the step's
``$HOME``. Only the credentials the ServiceAccount provides appear:

- ``kubernetes.io/ssh-auth`` + ``tekton.dev/git-N: HOST[:PORT]``: ``.ssh/id_<secret>``, an
  ``.ssh/config`` entry for the host, ``.ssh/known_hosts`` when the Secret has one;
- ``kubernetes.io/basic-auth`` + ``tekton.dev/git-N: URL``: ``.gitconfig`` (store helper) and
  ``.git-credentials``;
- ``kubernetes.io/basic-auth`` + ``tekton.dev/docker-N: URL``, ``kubernetes.io/dockerconfigjson``
  and ``kubernetes.io/dockercfg``: ``.docker/config.json``.

Here the ServiceAccount and its Secrets come from the TaskRun's file (see :mod:`.kubeobjects`); a
ServiceAccount that is not there gets a warning (no credentials), a Secret it names that is not
there is an error before anything runs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton.localrun.kubeobjects import KubeObjects, Secret


def _annotated(secret: Secret, kind: str) -> list[str]:
    prefix = f"tekton.dev/{kind}-"
    return [str(v) for k, v in sorted(secret.annotations.items()) if k.startswith(prefix)]


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def credential_files(service_account: str, objects: KubeObjects, warnings: list[str]) -> dict[str, bytes]:
    """Files (relative to ``$HOME``) for the ServiceAccount's credentials; {} when it has none."""
    if not service_account:
        return {}
    if service_account not in objects.service_accounts:
        if service_account != "default":
            warnings.append(
                f"ServiceAccount {service_account} is not in the file: no credentials are set up for the steps"
            )
        return {}
    files: dict[str, bytes] = {}
    ssh_config: list[str] = []
    known_hosts: list[bytes] = []
    git_credentials: list[str] = []
    gitconfig: list[str] = []
    docker: dict[str, Any] = {}
    for name in objects.service_accounts[service_account]:
        secret = objects.secrets.get(name)
        if secret is None:
            raise UsageError(
                f"ServiceAccount {service_account} names Secret {name}, which is not in the file: "
                "not supported (put the Secret in the TaskRun's file)"
            )
        data = secret.data
        if secret.type == "kubernetes.io/ssh-auth":
            for entry in _annotated(secret, "git"):
                host, _, port = entry.partition(":")
                files[f".ssh/id_{name}"] = data.get("ssh-privatekey", b"")
                ssh_config += [f"Host {host}", f"    HostName {host}", f"    IdentityFile ~/.ssh/id_{name}"]
                if port:
                    ssh_config.append(f"    Port {port}")
                if "known_hosts" in data:
                    known_hosts.append(data["known_hosts"])
        elif secret.type == "kubernetes.io/basic-auth":
            user, password = (data.get(k, b"").decode() for k in ("username", "password"))
            for url in _annotated(secret, "git"):
                scheme = url.split("://", 1)[0] if "://" in url else "https"
                git_credentials.append(f"{scheme}://{user}:{password}@{_host(url)}")
                gitconfig += [f'[credential "{url}"]', f"    username = {user}"]
            for url in _annotated(secret, "docker"):
                auth = base64.b64encode(f"{user}:{password}".encode()).decode()
                docker[url] = {"username": user, "password": password, "auth": auth}
        elif secret.type == "kubernetes.io/dockerconfigjson":
            docker.update(json.loads(data.get(".dockerconfigjson", b"{}")).get("auths") or {})
        elif secret.type == "kubernetes.io/dockercfg":
            docker.update(json.loads(data.get(".dockercfg", b"{}")))
    if ssh_config:
        files[".ssh/config"] = ("\n".join(ssh_config) + "\n").encode()
    if known_hosts:
        files[".ssh/known_hosts"] = b"\n".join(h.rstrip(b"\n") for h in known_hosts) + b"\n"
    if git_credentials:
        files[".git-credentials"] = ("\n".join(git_credentials) + "\n").encode()
        files[".gitconfig"] = ("\n".join(["[credential]", "    helper = store", *gitconfig]) + "\n").encode()
    if docker:
        files[".docker/config.json"] = json.dumps({"auths": docker}, indent=2).encode()
    return files


def step_home(env: Mapping[str, str], security_context: Mapping[str, Any]) -> str:
    """The ``$HOME`` a step's credentials are copied to: its env's HOME, else root's home when it
    runs as root (the images Tekton's examples use), else ``/``."""
    if env.get("HOME"):
        return env["HOME"]
    return "/root" if security_context.get("runAsUser") in (None, 0) else "/"
