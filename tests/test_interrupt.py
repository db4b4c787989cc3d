"""SIGTERM (what Tekton sends on timeout or cancel) stops `taskimage build` and everything it started.

Checked for real: the process tree of the run is recorded before the signal and must be gone
after it (buildah, its chroot runner, the RUN step's own processes, under qemu too); the exit code
is 143 within Tekton's grace period (30 s before the kubelet's SIGKILL: a generous limit, not a
speed target); and nothing is pushed, also when the signal arrives in the middle of the push (the
tag never points at a partial list). No sleeps: each wait polls for the evidence it needs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import emulation_ready, have_tools, need, tag_exists
from faultproxy import Fault, FaultProxy

pytestmark = [pytest.mark.tools]

DIGEST_PUT = r"^/v2/.+/manifests/sha256:"


@pytest.fixture
def storage_env(tmp_path):
    need(have_tools("buildah", "skopeo"), "buildah and skopeo are not installed (see .ci/run)")
    need(os.geteuid() == 0, "buildah builds here run as root")
    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    return {
        "TASKIMAGE_ROOT": str(tmp_path / "root"),
        "TASKIMAGE_RUNROOT": str(tmp_path / "run"),
        "TASKIMAGE_TLSVERIFY": "false",
        "TASKIMAGE_STORAGE_DRIVER": "vfs",
    }


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> dict[int, str]:
    """Every live process below ``root`` (by parent pid), with its command line."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = cmdline(child)
                frontier.append(child)
    return found


def alive(pid: int, was: str) -> bool:
    """Still running (not a zombie) with the same command line (pids are not reused that fast)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and cmdline(pid) == was


def matching(text: str) -> list[str]:
    return [c for c in (cmdline(int(p)) for p in os.listdir("/proc") if p.isdigit()) if text in c]


def start(argv, env, log_path: Path) -> subprocess.Popen:
    full = dict(os.environ)
    full.update(env)
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "taskimage", *argv], stdout=subprocess.DEVNULL, stderr=log, env=full
        )


def wait_for(predicate, timeout: float, what: str, log_path: Path, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}; {detail()}; log:\n{log_path.read_text()[-3000:]}")


def terminate(proc: subprocess.Popen) -> int:
    """SIGTERM, then the exit code; failing past the 30 s a pod gets before the kubelet's SIGKILL."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("taskimage did not exit within 30 s of SIGTERM (Tekton's grace period)")


def end(proc: subprocess.Popen) -> None:
    """A test that failed before its SIGTERM still stops the run the way it stops (a SIGKILL
    would leave the build's children running into the next tests), SIGKILL only as a last resort."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def none_left(tree: dict[int, str], log_path: Path) -> None:
    """Every process of ``tree`` goes (the kernel reaps them a moment after the parent exits)."""
    left = lambda: {pid: c for pid, c in tree.items() if alive(pid, c)}  # noqa: E731
    wait_for(
        lambda: not left(),
        30,
        f"the run's processes to end (of {len(tree)})",
        log_path,
        lambda: f"still running: {left()}",
    )


@pytest.mark.emulation
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_during_a_run_step_stops_every_child_and_pushes_nothing(
    tmp_path, registry, busybox_base, storage_env, jobs
):
    marker = str(random.randint(10_000_000, 99_999_999))  # `sleep <marker>`: findable in /proc
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nRUN sleep {marker}\n")
    image = f"{registry.host}/interrupt/build-{jobs}:1"
    log_path = tmp_path / "stderr"
    proc = start(
        ["build", "--image", image, "--context", str(ctx), "--jobs", jobs, "linux/amd64", "linux/arm64"],
        storage_env,
        log_path,
    )
    try:
        # with --jobs 2 both platforms sleep (arm64 under qemu); with --jobs 1 the first one does
        wait_for(lambda: len(matching(f"sleep {marker}")) >= int(jobs), 120, "the RUN steps to start", log_path)

        # one read of /proc can catch a process between fork and exec (an empty command line)
        def whole_tree() -> dict[int, str] | None:
            t = descendants(proc.pid)
            commands = list(t.values())
            return (
                t if any("buildah" in c for c in commands) and any(f"sleep {marker}" in c for c in commands) else None
            )

        tree = wait_for(
            whole_tree,
            60,
            "the run's tree to show buildah and the RUN step",
            log_path,
        )
        rc = terminate(proc)
    finally:
        end(proc)
    err = log_path.read_text()
    assert rc == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "ERROR: received SIGTERM, stopping"
    none_left(tree, log_path)
    assert matching(f"sleep {marker}") == []
    assert not tag_exists(image)


def test_sigterm_during_the_push_leaves_no_tag(tmp_path, registry, busybox_base, storage_env):
    """The registry stalls on the second platform's manifest; SIGTERM then: the tag never appears
    (not even after the stalled request is let through), and no buildah or skopeo process remains."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nCOPY Containerfile /c\n")
    stall = Fault("stall", ("PUT",), DIGEST_PUT, nth=(2,))
    with FaultProxy(registry.host, [stall]) as proxy:
        image = f"{proxy.host}/interrupt/push:1"
        log_path = tmp_path / "stderr"
        proc = start(
            ["build", "--image", image, "--context", str(ctx), "linux/amd64", "linux/arm64"], storage_env, log_path
        )
        try:
            wait_for(lambda: stall.fired, 120, "the push to reach the stalled manifest", log_path)
            tree = descendants(proc.pid)
            assert any("skopeo copy" in c and "@sha256:" in c for c in tree.values()), tree  # a platform's push
            rc = terminate(proc)
        finally:
            end(proc)
        proxy.release()  # the stalled PUT reaches the registry now: still no tag
        wait_for(
            lambda: [r for r in proxy.requests("PUT", DIGEST_PUT) if r.fault in ("stall", "upstream-error")],
            60,
            "the released manifest PUT to be forwarded to the registry",
            log_path,
        )
        tag_puts = proxy.requests("PUT", r"/manifests/1$")
    err = log_path.read_text()
    assert rc == 143, err[-2000:]
    assert tag_puts == []
    assert not tag_exists(f"{registry.host}/interrupt/push:1")
    none_left(tree, log_path)


@pytest.mark.emulation
def test_a_stop_ends_only_the_command_it_interrupted(capsys):
    """`cli.main` after a stop in the same process (a program embedding it, this test suite) runs
    its children: here the arm64 probe binary that `binfmt status` executes under qemu."""
    from taskimage import cli, proc
    from taskimage.errors import Interrupted

    ok, why = emulation_ready(("linux/arm64",))
    need(ok, why)
    with proc.scope():  # the stopped run's context; the test's own stays clean for later tests
        proc.stop_all()  # what the SIGTERM handler's unwinding does
        with pytest.raises(Interrupted):
            proc.run(["true"])  # the stop is in force: no child starts
        code = cli.main(["binfmt", "status", "linux/arm64"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.splitlines()[2].split()[:3] == ["linux/arm64", "ok", "qemu-aarch64"], out


@pytest.mark.emulation
def test_a_failing_platform_stops_a_slow_emulated_sibling(tmp_path, registry, busybox_base, storage_env):
    """amd64 fails while arm64 (under qemu) is in a long RUN: the run exits 1 with amd64's error
    at once; the log shows arm64 was stopped mid-step (it never finished), and nothing is left."""
    marker = str(random.randint(10_000_000, 99_999_999))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(
        f"FROM {busybox_base}\n"
        f'RUN if [ "$(uname -m)" = x86_64 ]; then sleep 20; echo amd64-fails; exit 7; fi; '
        f"echo arm64-started; sleep {marker}; echo arm64-finished\n"
    )
    image = f"{registry.host}/interrupt/fail-fast:1"
    log_path = tmp_path / "stderr"
    proc = start(
        ["build", "--image", image, "--context", str(ctx), "--jobs", "2", "linux/amd64", "linux/arm64"],
        storage_env,
        log_path,
    )
    try:
        rc = proc.wait(timeout=300)
    finally:
        end(proc)
    err = log_path.read_text()
    assert rc == 1, err[-3000:]
    assert err.strip().splitlines()[-1] == "ERROR: buildah build for linux/amd64 failed with exit code 7"
    lines = err.splitlines()
    assert "[linux/arm64] arm64-started" in lines and "[linux/arm64] arm64-finished" not in lines  # killed mid-step
    assert "[linux/arm64] stopped: linux/amd64 failed" in err
    wait_for(lambda: matching(f"sleep {marker}") == [], 30, "the stopped arm64 step to end", log_path)
    assert not tag_exists(image)


@pytest.mark.emulation
def test_a_run_step_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, registry, busybox_base, storage_env):
    """Two platforms whose RUN steps ignore SIGTERM: SIGKILL follows within the grace period."""
    marker = str(random.randint(10_000_000, 99_999_999))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Containerfile").write_text(f"FROM {busybox_base}\nRUN trap '' TERM; sleep {marker}; echo survived\n")
    image = f"{registry.host}/interrupt/trap:1"
    log_path = tmp_path / "stderr"
    proc = start(
        ["build", "--image", image, "--context", str(ctx), "--jobs", "2", "linux/amd64", "linux/arm64"],
        storage_env,
        log_path,
    )
    try:
        wait_for(lambda: len(matching(f"sleep {marker}")) >= 2, 120, "both RUN steps to start", log_path)
        tree = descendants(proc.pid)
        rc = terminate(proc)  # fails past Tekton's 30 s grace: SIGKILL followed our own 5 s grace
    finally:
        end(proc)
    err = log_path.read_text()
    assert rc == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "ERROR: received SIGTERM, stopping"
    assert not [line for line in err.splitlines() if line.endswith("] survived")]
    none_left(tree, log_path)
    assert matching(f"sleep {marker}") == []
    assert not tag_exists(image)


@pytest.mark.podman
def test_sigterm_during_taskimage_run_leaves_no_container(tmp_path, busybox_base):
    """`taskimage run` stopped mid-step: exit 143, and the step's container is removed (clean-up
    runs while the run is stopping), although the step ignores SIGTERM."""
    need(have_tools("podman", "runc"), "podman and runc are not installed (see .ci/run)")
    task = Path(__file__).parent / "data" / "localrun" / "sleeping-task.yaml"
    log_path = tmp_path / "stderr"
    proc = start(["run", str(task), "-p", f"IMAGE={busybox_base}", "--tls-verify=false"], {}, log_path)

    def containers() -> list[str]:
        out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True).stdout
        return [n for n in out.split() if n.startswith("sleeping-run-")]

    try:
        wait_for(lambda: "[sleep] sleeping" in log_path.read_text() and containers(), 180, "the step to run", log_path)
        rc = terminate(proc)
    finally:
        end(proc)
    err = log_path.read_text()
    assert rc == 143, err[-2000:]
    assert containers() == [], err[-2000:]
