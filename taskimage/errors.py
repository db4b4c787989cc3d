"""Exceptions and the exit codes they map to. Only :mod:`taskimage.cli` exits."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_EMULATION = 3
EXIT_INTERRUPTED = 143  # 128 + SIGTERM, what Tekton sees when a step is stopped on timeout


class TaskimageError(Exception):
    """A failure that ends the command with a one-line message and an exit code."""

    exit_code = EXIT_FAILURE


class UsageError(TaskimageError):
    """Bad input: a flag, a param or a file the user named. Exit code 2."""

    exit_code = EXIT_USAGE


class EmulationError(TaskimageError):
    """A foreign platform was requested but this kernel cannot run its binaries."""

    exit_code = EXIT_EMULATION


class ToolError(TaskimageError):
    """An external tool (buildah, skopeo, ...) failed."""

    def __init__(self, message: str, *, tail: list[str] | None = None, returncode: int | None = None):
        super().__init__(message)
        self.tail = tail or []
        self.returncode = returncode


class RegistryAuthError(ToolError):
    """The registry refused the credentials (401/403). Never retried."""


class Interrupted(BaseException):
    """The run is stopping (a signal, or another platform's failure). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way (preflight, probes, retries)
    mistakes it for an ordinary failure and carries on. Exit code 143."""

    exit_code = EXIT_INTERRUPTED
