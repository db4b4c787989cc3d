"""Sidecars: containers that live alongside a TaskRun's steps, as in the TaskRun's Pod.

They start before the first step, share the steps' network (every container here uses the host
network, as the Pod's containers share one), volumes and workspaces they mount, and are stopped
after the last step. Steps start only once every sidecar is ready, as Tekton waits for them:
running and, with an exec ``readinessProbe`` (or ``startupProbe``), its command succeeding; a
sidecar that has already exited counts as ready (its work is done). A sidecar's exit code does not
decide the TaskRun's outcome. Their logs are shown, prefixed, when they stop.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from taskimage import log
from taskimage import proc as tools
from taskimage.errors import TaskimageError

READY_TIMEOUT = 300.0  # seconds a sidecar has to become ready
POLL = 0.25


def _state(name: str) -> tuple[bool, int | None]:
    """(running, exit code when it has exited)."""
    out = tools.run(
        ["podman", "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}} {{.State.Status}}", name],
        check=False,
        quiet=True,
        stream=False,
    )
    words = out.stdout.split()
    if out.returncode != 0 or len(words) < 3:
        return False, None
    running = words[0] == "true"
    return running, (None if running or words[2] not in ("exited", "stopped") else int(words[1]))


def wait_ready(name: str, sidecar: str, readiness: Sequence[str] | None, timeout: float = READY_TIMEOUT) -> None:
    """Return once the sidecar is ready; raise when it cannot become ready."""
    deadline = time.monotonic() + timeout
    while True:
        running, exit_code = _state(name)
        if exit_code is not None:
            if exit_code != 0:
                log.warn(f"sidecar {sidecar} exited with {exit_code} before the steps started")
            return
        if running:
            if not readiness:
                return
            probe = tools.run(["podman", "exec", name, *readiness], check=False, quiet=True, stream=False)
            if probe.returncode == 0:
                return
        if time.monotonic() > deadline:
            raise TaskimageError(f"sidecar {sidecar} did not become ready within {timeout:.0f} s")
        time.sleep(POLL)


def stop(name: str, sidecar: str) -> None:
    """Show the sidecar's log, then remove it (stopping it first when still running)."""
    logs = tools.run(["podman", "logs", name], check=False, quiet=True, stream=False)
    for line in (logs.stdout + logs.stderr).splitlines():
        log.tool_line(f"[sidecar {sidecar}] ", line)
    remove(name)


def remove(name: str) -> None:
    """Remove our sidecar container, also while the run is being stopped (SIGINT/SIGTERM)."""
    tools.run(
        ["podman", "rm", "--force", "--ignore", "--time", "1", name],
        check=False,
        quiet=True,
        stream=False,
        cleanup=True,
    )
