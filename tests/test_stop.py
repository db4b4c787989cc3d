"""The run's cancel token (proc.py): one stop per run, seen by every thread, clean-up still runs."""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from taskimage import proc as tools
from taskimage.emulation import probe
from taskimage.errors import Interrupted
from taskimage.oci.platforms import Platform
from taskimage.supplychain import referrers


def test_a_stop_reaches_worker_threads_and_ends_with_its_run():
    with tools.scope() as token, concurrent.futures.ThreadPoolExecutor(2) as pool:
        token.cancel("a platform failed")
        fut = tools.submit(pool, tools.run, ["true"], quiet=True)
        with pytest.raises(Interrupted, match="a platform failed"):
            fut.result()
        assert tools.run(["true"], quiet=True, cleanup=True).returncode == 0  # clean-up still runs
    with tools.scope() as later:
        assert not later.cancelled  # the next run starts clean
        assert tools.run(["true"], quiet=True).returncode == 0


def test_backoff_waits_end_when_the_run_stops():
    with tools.scope() as token:
        threading.Timer(0.2, token.cancel, args=("stop",)).start()
        t = time.monotonic()
        with pytest.raises(Interrupted):
            tools.sleep(600)
        assert time.monotonic() - t < 60


def test_a_registry_api_backoff_ends_when_the_run_stops():
    """The referrers client (SBOM/provenance attach, gc) retries a 503 after a delay: a stop of the
    run ends that wait (it was a plain time.sleep: a SIGTERM waited out up to 600 s here)."""
    import http.server

    seen = threading.Event()

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            seen.set()
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = referrers.Client(f"127.0.0.1:{server.server_address[1]}", tls_verify=False, retry=3, retry_delay=600)
        with tools.scope() as token:
            threading.Thread(target=lambda: seen.wait(60) and token.cancel("SIGTERM"), daemon=True).start()
            t = time.monotonic()
            with pytest.raises(Interrupted):
                client.get_manifest("app", "latest")
            assert seen.is_set() and time.monotonic() - t < 60
    finally:
        server.shutdown()


def test_a_stopping_run_is_not_taken_for_a_failed_probe():
    """Preflight's probe catches the errors of running a foreign binary; a stop is not one of them
    (it used to be, and SIGTERM during preflight exited 3 instead of 143)."""
    with tools.scope() as token:
        token.cancel("received SIGTERM, stopping")
        with pytest.raises(Interrupted):
            probe.run(Platform("linux", "arm64"))


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace():
    with tools.scope(grace=1.0) as token, concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = tools.submit(pool, tools.run, ["sh", "-c", "trap '' TERM; echo ready; sleep 600"], quiet=True)
        deadline = time.monotonic() + 60
        while not token.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        [child] = token.running()
        token.cancel("stop")
        with pytest.raises(Interrupted):
            fut.result(timeout=60)
        assert not child.is_alive()


def _with_marker(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"sleep {marker}" in cmdline and "trap" not in cmdline:
                found.append(int(entry))
    return found


@pytest.mark.parametrize(
    "handler",
    ["sleep {m}1 &", "sleep {m}1 & exit 0"],
    ids=["its-parent-stays", "its-parent-exits"],
)
def test_processes_started_during_the_grace_are_killed_with_the_rest(handler):
    """A step that survives SIGTERM and starts processes afterwards (here its TERM trap starts
    one and its script the next, in a session of their own as buildah's RUN steps are; under load a step that ignores SIGTERM can be between two forks):
    at the end of the grace everything below the run is killed, not only what existed when the
    stop began (the tree was read once: those processes outlived the run), also when their parent
    has exited and they were re-parented out of the run's tree (they stay in its session)."""
    marker = str(random.randint(10_000_000, 99_999_999))
    trap = handler.format(m=marker)
    script = f"trap '{trap}' TERM; sleep {marker}0 & wait; sleep {marker}2; echo survived"
    try:
        with tools.scope(grace=2.0) as token, concurrent.futures.ThreadPoolExecutor(1) as pool:
            # in a session of its own, as buildah runs a RUN step: outside the runner's process group
            fut = tools.submit(pool, tools.run, ["setsid", "-w", "sh", "-c", script], quiet=True)
            deadline = time.monotonic() + 60
            while not _with_marker(marker + "0") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _with_marker(marker + "0"), "the script did not start"
            token.cancel("stop")
            with pytest.raises(Interrupted):
                fut.result(timeout=60)
            token.finish()
        assert _with_marker(marker) == []
    finally:
        for pid in _with_marker(marker):
            os.kill(pid, signal.SIGKILL)
