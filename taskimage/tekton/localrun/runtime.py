"""What a Kubernetes container runtime gives a container by default, so a step gets the same here.

A container without ``securityContext.capabilities`` gets its runtime's default set, which is not
podman's: containerd adds MKNOD, NET_RAW and AUDIT_WRITE to podman's, CRI-O (OpenShift) has
neither MKNOD nor NET_RAW nor SETFCAP. A step starts from the chosen runtime's set (``podman run
--cap-drop all --cap-add …``); then its ``securityContext.capabilities`` apply in containerd's CRI
order: ``add: [ALL]`` gives every capability, ``drop: [ALL]`` removes them all, then the named
``add`` entries, then the named ``drop`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskimage.errors import UsageError

DEFAULT_CAPABILITIES: Mapping[str, frozenset[str]] = {
    # containerd's oci.defaultUnixCaps (what its CRI gives a container)
    "containerd": frozenset(
        [
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "MKNOD",
            "NET_RAW",
            "SETGID",
            "SETUID",
            "SETFCAP",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "KILL",
            "AUDIT_WRITE",
        ]
    ),
    # CRI-O's default_capabilities (crio.conf), as on OpenShift
    "crio": frozenset(
        [
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "KILL",
        ]
    ),
}
RUNTIMES = tuple(DEFAULT_CAPABILITIES)


def _names(values: Sequence[Any] | None) -> list[str]:
    out = []
    for v in values or []:
        name = str(v).upper()
        out.append(name[4:] if name.startswith("CAP_") else name)
    return out


def capabilities(runtime: str, sc: Mapping[str, Any]) -> tuple[frozenset[str], bool]:
    """The step's capability set under ``runtime`` and whether it is every capability (add ALL)."""
    if runtime not in DEFAULT_CAPABILITIES:
        raise UsageError(f"--runtime-defaults {runtime}: accepted: {', '.join(RUNTIMES)}")
    caps = sc.get("capabilities") or {}
    add, drop = _names(caps.get("add")), _names(caps.get("drop"))
    every = "ALL" in add
    current = set(DEFAULT_CAPABILITIES[runtime])
    if "ALL" in drop:
        current, every = set(), False
    current |= {c for c in add if c != "ALL"}
    current -= {c for c in drop if c != "ALL"}
    return frozenset(current), every


def capability_flags(runtime: str, sc: Mapping[str, Any]) -> list[str]:
    """podman flags giving a container exactly the capabilities a Pod's would have."""
    if sc.get("privileged"):
        return []  # --privileged gives them all
    caps, every = capabilities(runtime, sc)
    if every:
        dropped = {c for c in _names((sc.get("capabilities") or {}).get("drop")) if c != "ALL"}
        return ["--cap-add", "all", *[f for c in sorted(dropped) for f in ("--cap-drop", c)]]
    return ["--cap-drop", "all", *[f for c in sorted(caps) for f in ("--cap-add", c)]]


def missing_hint(runtime: str, sc: Mapping[str, Any], output: str) -> str | None:
    """A hint for a step that failed with "operation not permitted" while lacking capabilities
    that containerd's default set has (e.g. MKNOD under CRI-O)."""
    if "operation not permitted" not in output.lower() or sc.get("privileged"):
        return None
    caps, every = capabilities(runtime, sc)
    lacking = sorted(DEFAULT_CAPABILITIES["containerd"] - caps) if not every else []
    if not lacking:
        return None
    return (
        f"the step's output says 'operation not permitted' and it runs without capabilities "
        f"{', '.join(lacking)} (--runtime-defaults {runtime}); a layer with device nodes needs MKNOD: "
        "add them to the step's securityContext.capabilities.add"
    )
