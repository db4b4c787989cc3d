"""``podman run`` command lines for Task steps, as pure functions.

A step runs as a Pod's container would: ``command`` (``--entrypoint`` as a JSON array, which also
drops the image's CMD, like Kubernetes; a step without one gets the image's Entrypoint, else its
Cmd, by Tekton's entrypoint lookup, see :func:`lookup_command`), ``args`` after the image, the
runtime's default capabilities (containerd's unless told, see :mod:`.runtime`), the step's env and workingDir, and the pod-shared directories bind-mounted:
``/workspace`` (an emptyDir), each workspace, ``/tekton/results``, ``/tekton/home``,
``/tekton/steps``, ``/tekton/creds`` and ``/tekton/scripts`` (read-only).

All steps use the host network: in a Pod the steps share one network namespace, and on one machine
that is what lets a step reach a registry on 127.0.0.1.

On this kind of machine runc needs explicit rlimits: ``--ulimit nofile``/``nproc`` are set to
values at or below the host's hard limits (see :func:`ulimit_flags`).
"""

from __future__ import annotations

import json
import resource
from collections.abc import Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError
from taskimage.tekton.localrun import runtime

WANTED_ULIMIT = 10000


def ulimit_flags(
    hard_nofile: int | None = None, hard_nproc: int | None = None, wanted: int = WANTED_ULIMIT
) -> list[str]:
    """``--ulimit nofile=N:N --ulimit nproc=M:M`` with N, M no higher than the host's hard limits."""
    if hard_nofile is None:
        hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard_nproc is None:
        hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]

    def cap(hard: int) -> int:
        return wanted if hard == resource.RLIM_INFINITY or hard < 0 else min(wanted, hard)

    n, p = cap(hard_nofile), cap(hard_nproc)
    return ["--ulimit", f"nofile={n}:{n}", "--ulimit", f"nproc={p}:{p}"]


def security_flags(sc: Mapping[str, Any], runtime_defaults: str = "containerd") -> tuple[list[str], list[str]]:
    """podman flags for a Kubernetes container securityContext, and warnings for what is ignored.

    Capabilities start from ``runtime_defaults``' default set (see :mod:`.runtime`), not podman's."""
    flags: list[str] = []
    warnings: list[str] = []
    if sc.get("privileged"):
        flags.append("--privileged")
    flags += runtime.capability_flags(runtime_defaults, sc)
    if sc.get("runAsUser") is not None:
        user = str(int(sc["runAsUser"]))
        if sc.get("runAsGroup") is not None:
            user += f":{int(sc['runAsGroup'])}"
        flags += ["--user", user]
    elif sc.get("runAsGroup") is not None:
        warnings.append("runAsGroup without runAsUser is not applied")
    if sc.get("runAsNonRoot") and sc.get("runAsUser") is None:
        warnings.append("runAsNonRoot is not checked against the image's user")
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    elif seccomp == "Localhost":
        warnings.append("seccompProfile Localhost is not applied")
    if sc.get("procMount") == "Unmasked":
        flags += ["--security-opt", "unmask=ALL"]
    return flags, warnings


def volume_flag(host: str, target: str, read_only: bool) -> list[str]:
    for path, what in ((host, "host path"), (target, "mount path")):
        if ":" in path or "," in path:
            raise UsageError(f"{what} {path!r}: ':' and ',' cannot be bind-mounted by podman -v")
    return ["-v", f"{host}:{target}{':ro' if read_only else ''}"]


def run_argv(
    *,
    name: str,
    image: str,
    command: Sequence[str] | None,
    args: Sequence[str],
    env: Sequence[tuple[str, str]],
    working_dir: str,
    mounts: Sequence[tuple[str, str, bool]],
    security: Sequence[str],
    pull: str,
    tls_verify: bool | None,
    authfile: str | None = None,
    keep: bool = False,
    runtime: str = "runc",
    hostname: str | None = None,
    ulimits: Sequence[str] | None = None,
    env_file: str | None = None,
    detach: bool = False,
) -> list[str]:
    argv = ["podman", "run", "--name", name]
    if detach:  # a sidecar: removed by the runner once its log is shown
        argv.append("--detach")
    elif not keep:
        argv.append("--rm")
    argv += ["--runtime", runtime, *(ulimits if ulimits is not None else ulimit_flags())]
    argv += ["--network", "host", "--pull", pull]
    if tls_verify is not None:  # else registries.conf decides per registry, as on a node
        argv.append(f"--tls-verify={'true' if tls_verify else 'false'}")
    if hostname:
        argv += ["--hostname", hostname]
    if authfile:
        argv += ["--authfile", authfile]
    argv += list(security)
    for host, target, ro in mounts:
        argv += volume_flag(host, target, ro)
    if env_file:  # before --env: the step's own env entries win, as later ones do in a Pod
        argv += ["--env-file", env_file]
    for key, value in env:
        argv += ["--env", f"{key}={value}"]
    if working_dir:
        argv += ["--workdir", working_dir]
    if command is not None:
        argv += ["--entrypoint", json.dumps(list(command))]
    argv.append(image)
    argv += list(args)
    return argv


def pull_argv(image: str, tls_verify: bool | None, authfile: str | None) -> list[str]:
    argv = ["podman", "pull", "--quiet"]
    if tls_verify is not None:
        argv.append(f"--tls-verify={'true' if tls_verify else 'false'}")
    if authfile:
        argv += ["--authfile", authfile]
    return [*argv, image]


def inspect_argv(image: str) -> list[str]:
    return ["podman", "image", "inspect", "--format", "{{json .Config}}", image]


def lookup_command(config: Mapping[str, Any] | None) -> list[str] | None:
    """The command Tekton's entrypoint lookup gives a step without ``command``: the image's
    Entrypoint, else its Cmd (the step's ``args`` then follow it); None when the image has neither."""
    config = config or {}
    return list(config.get("Entrypoint") or []) or list(config.get("Cmd") or []) or None
