"""The one seam for subprocesses: the only module that imports ``sh``.

Everything else builds argv lists as pure functions and hands them to :func:`run`, which logs
the command line (secrets redacted), streams the tool's output line by line with a prefix,
keeps the last lines for error messages and tracks running children so that a stop reaches
them all.

One stop mechanism: the run's :class:`CancelToken`, held in a context variable (not a
process-wide flag, so one run's stop never leaks into the next run in the same process). The
first failure of a platform or a SIGTERM cancels it: every running child's process group gets
SIGTERM at once and SIGKILL after the grace period, nothing new starts except clean-up
(``run(..., cleanup=True)``), and waits (:func:`sleep`) end early. Worker threads see the token
when they run in a copy of the caller's context (:func:`submit`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

import sh

from taskimage import log
from taskimage.errors import Interrupted, ToolError

TAIL_LINES = 25
GRACE = 5.0  # seconds between SIGTERM and SIGKILL


class CancelToken:
    """One run's stop: set once, by the first failure or signal; read by every thread of the run."""

    def __init__(self, grace: float = GRACE):
        self.grace = grace
        self.reason = ""
        self._event = threading.Event()
        self._running: dict[int, sh.RunningCommand] = {}
        self._lock = threading.RLock()  # re-entrant: a signal handler may run while this thread holds it
        self._escalation: threading.Thread | None = None

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str, sig: int = signal.SIGTERM) -> bool:
        """Begin the stop (False if it had begun): ``sig`` to every running child's process group
        now, SIGKILL to those left after the grace period. Does not wait: safe in a signal handler."""
        with self._lock:  # finish() waits for it: the escalation exists once the stop is seen
            if self._event.is_set():
                return False
            self.reason = reason
            self._event.set()
            processes = list(self._running.values())
            tree = _begin_stop(processes, sig)
            escalation = threading.Thread(
                target=_kill_after, args=(processes, tree, self.grace, sig), name="stop", daemon=True
            )
            escalation.start()
            self._escalation = escalation
        return True

    def finish(self) -> None:
        """Wait for a begun stop to end (at most the grace period): the command does not exit
        while a child that ignores SIGTERM still waits for its SIGKILL (a daemon thread would die
        with the process, leaving that child running)."""
        with self._lock:
            escalation = self._escalation
        if escalation is not None:
            escalation.join()

    def check(self) -> None:
        """Raise :class:`Interrupted` once the run is stopping."""
        if self._event.is_set():
            raise Interrupted(self.reason or "interrupted")

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or raise :class:`Interrupted` as soon as the run is stopping."""
        if self._event.wait(max(0.0, seconds)):
            self.check()

    def _track(self, process) -> None:
        with self._lock:
            self._running[id(process)] = process

    def _untrack(self, process) -> None:
        with self._lock:
            self._running.pop(id(process), None)

    def running(self) -> list:
        with self._lock:
            return list(self._running.values())


_token: contextvars.ContextVar[CancelToken | None] = contextvars.ContextVar("taskimage_cancel", default=None)


def current() -> CancelToken:
    """The current run's token (a new one if no run scope was entered in this context)."""
    token = _token.get()
    if token is None:
        token = CancelToken()
        _token.set(token)
    return token


@contextlib.contextmanager
def scope(grace: float = GRACE) -> Iterator[CancelToken]:
    """A run: a fresh token for the code inside, the previous one back afterwards."""
    token = CancelToken(grace)
    reset = _token.set(token)
    try:
        yield token
    finally:
        _token.reset(reset)
        token.finish()


def submit(pool: concurrent.futures.Executor, fn: Callable, *args, **kwargs) -> concurrent.futures.Future:
    """``pool.submit`` in a copy of this context, so the worker sees this run's token."""
    current()
    return pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)


def sleep(seconds: float) -> None:
    """A wait the run's stop interrupts (retry backoff)."""
    current().sleep(seconds)


@dataclasses.dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def tail(self) -> list[str]:
        lines = (self.stdout + self.stderr).splitlines()
        return lines[-TAIL_LINES:]


def which(name: str) -> str | None:
    """The full path of ``name`` on PATH, or None."""
    import shutil

    return shutil.which(name)


def run(
    argv: Sequence[str],
    *,
    prefix: str = "",
    env: Mapping[str, str] | None = None,
    stdin: str | bytes | None = None,
    check: bool = True,
    quiet: bool = False,
    stream: bool = True,
    on_line: Callable[[str], None] | None = None,
    timeout: float | None = None,
    what: str | None = None,
    cleanup: bool = False,
) -> Result:
    """Run ``argv``; raise :class:`ToolError` on a non-zero exit when ``check``.

    ``quiet`` hides the command line; ``stream=False`` keeps output out of the log (it is still
    returned and shown in the error on failure). ``env`` entries are added to os.environ.
    ``cleanup``: runs (and is not stopped) while the run is stopping (``buildah rm``, ``podman rm``).
    """
    argv = [str(a) for a in argv]
    token = current()
    if not cleanup:
        token.check()
    if not quiet:
        log.command(argv, prefix)
    out: list[str] = []
    err: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    def collect(buffer: list[str]):
        def callback(line: str) -> None:
            buffer.append(line)
            tail.append(line.rstrip("\n"))
            if stream:
                log.tool_line(prefix, line)
            if on_line is not None:
                on_line(line)

        return callback

    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        command = sh.Command(argv[0])
    except sh.CommandNotFound as exc:
        raise ToolError(f"{argv[0]} is not installed (not found on PATH)") from exc
    kwargs = dict(
        _out=collect(out),
        _err=collect(err),
        _env=full_env,
        _bg=True,
        _bg_exc=False,
        _new_session=True,
        _ok_code=list(range(256)),
        _decode_errors="replace",
        _timeout=timeout,
    )
    # Always give stdin: children never read ours, and without it sh polls stdin for 0.1 s,
    # which cost ~100 ms per command (measured: 108 ms vs 6 ms for `true`).
    kwargs["_in"] = stdin if stdin is not None else ""
    process = None
    try:
        process = command(*argv[1:], **kwargs)
        if not cleanup:
            token._track(process)
            if token.cancelled:  # a stop began while it started (cancel() may have missed it)
                raise Interrupted(f"{token.reason or 'interrupted'} (while starting {os.path.basename(argv[0])})")
        process.wait()
        returncode = process.exit_code
    except sh.TimeoutException:
        returncode = 124
        tail.append(f"(timed out after {timeout} s)")
    except sh.SignalException as exc:  # killed by a signal
        returncode = -abs(getattr(exc, "exit_code", 1))
    except BaseException:
        # Interrupted (SIGTERM handler), KeyboardInterrupt, ...: the child never outlives this
        # call, or it would be orphaned (it is no longer tracked once we return).
        if process is not None:
            _stop_group(process, token.grace)
        raise
    finally:
        if process is not None:
            token._untrack(process)
    if token.cancelled and not cleanup:
        raise Interrupted(f"{token.reason or 'interrupted'} (while running {os.path.basename(argv[0])})")
    result = Result(tuple(argv), returncode, "".join(out), "".join(err))
    if check and returncode != 0:
        name = what or os.path.basename(argv[0])
        raise ToolError(f"{name} failed with exit code {returncode}", tail=list(tail), returncode=returncode)
    return result


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, start time, session id) of ``pid`` from /proc, or None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), fields[19], int(fields[3])


def _descendants(roots: set[int], sessions: Collection[int] = ()) -> dict[int, str]:
    """Every process below ``roots`` now, and every process of a session whose leader's pid is in
    ``sessions`` with what is below it (an orphan of a RUN step's session is re-parented to init
    but stays in its session). pid → start time, so a reused pid is never signalled."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    frontier = list(roots)
    sessions = set(sessions) - {os.getsid(0)}  # never this process's own session
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
                starts[int(entry)] = stat[1]
                if stat[2] in sessions and int(entry) not in roots and int(entry) != os.getpid():
                    frontier.append(int(entry))
    found: dict[int, str] = {pid: starts[pid] for pid in frontier if pid not in roots and pid in starts}
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found and child in starts:
                found[child] = starts[child]
                frontier.append(child)
    return found


def _alive(tree: dict[int, str]) -> bool:
    return any((stat := _proc_stat(pid)) is not None and stat[1] == start for pid, start in tree.items())


def _signal_tree(tree: dict[int, str], sig: int) -> None:
    for pid, start in tree.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == start:
            try:
                os.kill(pid, sig)
            except OSError:  # gone meanwhile
                pass


def _signal_groups(processes, sig: int) -> None:
    for p in processes:
        try:
            p.signal_group(sig)
        except Exception:  # already gone
            pass


def _stop_groups(processes, sig: int = signal.SIGTERM, grace: float = GRACE) -> None:
    """``sig`` to each child's process group, SIGKILL after ``grace`` seconds for those still there.

    The whole group: buildah's chroot runner and the RUN step's processes are in it. A RUN step
    that is PID 1 of its own namespace ignores SIGTERM; SIGKILL ends it.
    """
    _kill_after(processes, _begin_stop(processes, sig), grace, sig)


def _begin_stop(processes, sig: int) -> dict[int, str]:
    """``sig`` to each child's process group and to every process below it (a RUN step in a
    session of its own is outside its runner's group); returns that tree, read before anything
    dies and is re-parented."""
    tree = _descendants({p.pid for p in processes}, {p.pid for p in processes})
    _signal_groups(processes, sig)
    _signal_tree(tree, sig)
    return tree


def _kill_after(processes, tree: dict[int, str], grace: float, sig: int = signal.SIGTERM) -> None:
    """SIGKILL to whatever of ``processes`` and ``tree`` is still there after ``grace`` seconds,
    and to what they started meanwhile.

    A child may go on starting processes after ``sig`` (buildah starting a RUN step it was
    preparing; a step that ignores or traps SIGTERM forking its next command), and such a process
    can outlive its parents (re-parented to init, out of the tree). So during the grace the tree
    is read again at every poll: what is new gets ``sig`` and is remembered, with the sessions
    its members lead (an orphan stays in its session). At the end everything known is frozen
    (SIGSTOP), what is below it read until nothing new appears, and then all of it is killed."""
    known = dict(tree)

    def grow() -> dict[int, str]:
        roots = {p.pid for p in processes if p.is_alive()}
        sessions = {p.pid for p in processes} | set(known)  # each child starts a session of its own
        new = {pid: st for pid, st in _descendants(roots | set(known), sessions).items() if pid not in known}
        known.update(new)
        return new

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (any(p.is_alive() for p in processes) or _alive(known)):
        _signal_tree(grow(), sig)
        time.sleep(0.05)
    left = [p for p in processes if p.is_alive()]
    _signal_groups(left, signal.SIGSTOP)
    _signal_tree(known, signal.SIGSTOP)
    for _ in range(100):
        new = grow()
        if not new:
            break
        _signal_tree(new, signal.SIGSTOP)
    _signal_groups(left, signal.SIGKILL)
    _signal_tree(known, signal.SIGKILL)


def _stop_group(process, grace: float = GRACE) -> None:
    _stop_groups([process], grace=grace)


def signal_all(sig: int = signal.SIGTERM) -> None:
    """Begin a stop of the current run (see :meth:`CancelToken.cancel`)."""
    current().cancel("interrupted", sig)


def stop_all(sig: int = signal.SIGTERM, grace: float = GRACE) -> None:
    """Stop the current run and wait until its children are gone (SIGKILL after ``grace``)."""
    token = current()
    token.cancel(token.reason or "interrupted", sig)
    _stop_groups(token.running(), sig, grace)


class Spawned:
    """A long-running child (e.g. a local registry) with its output in a log file."""

    def __init__(self, argv: Sequence[str], log_path: str, env: Mapping[str, str] | None = None):
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (open as long as the child runs; closed by stop())
        self.process = sh.Command(self.argv[0])(
            *self.argv[1:],
            _out=self._log,
            _err=self._log,
            _bg=True,
            _bg_exc=False,
            _new_session=True,
            _env=full_env,
            _ok_code=list(range(256)),
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, grace: float = GRACE) -> None:
        if self.process.is_alive():
            _stop_group(self.process, grace)
        try:
            self.process.wait()
        except Exception:
            pass
        self._log.close()


def spawn(argv: Sequence[str], log_path: str, env: Mapping[str, str] | None = None) -> Spawned:
    return Spawned(argv, log_path, env)


def stopping() -> bool:
    """True once the current run is stopping: start nothing new."""
    return current().cancelled
