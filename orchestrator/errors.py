"""Every error the controller reports to a user, mapped to an exit code by the CLI alone.

    OrchestratorError            exit 1 unless a subclass says otherwise
    ├── ConfigError              exit 2: bad inventory, suite or command line; carries problems
    ├── HostKeyError             unknown or changed SSH host key (fingerprint + how to trust it)
    ├── TransportError           connect/command/transfer failed on one device
    │   ├── CommandTimeout       a remote command ran past its timeout
    │   └── FileTooLarge         a remote file is over the size the caller allows (not a drop)
    ├── AgentBusy                another agent run holds the device's workdir lock
    ├── LocalWriteError          exit 2: the controller cannot write its results folder (disk full)
    ├── HistoryError             exit 2: the history database cannot be opened, read or written
    ├── SweepBusy                exit 75: the previous run of this suite into this folder is still
    │                            running (a scheduled sweep never overlaps the last one)
    └── ModelBuildError          a built-in model or variant could not be built
A bug is not an OrchestratorError: it keeps its traceback.
"""


class OrchestratorError(Exception):
    exit_code = 1


class ConfigError(OrchestratorError):
    """Bad input. `problems` is a list of 'file: field.path: message' lines, all reported at once."""

    exit_code = 2

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        OrchestratorError.__init__(self, "\n".join(self.problems))


class TransportError(OrchestratorError):
    def __init__(self, device, message):
        self.device = device
        OrchestratorError.__init__(self, "%s: %s" % (device, message))


class HostKeyError(TransportError):
    pass


class CommandTimeout(TransportError):
    pass


class FileTooLarge(TransportError):
    """A remote file is bigger than the caller's cap: the connection is fine, the file is not."""

    def __init__(self, device, path, size, max_bytes):
        self.path, self.size, self.max_bytes = path, size, max_bytes
        TransportError.__init__(self, device, "%s is %d bytes, more than the %d allowed"
                                % (path, size, max_bytes))


class AgentBusy(OrchestratorError):
    pass


class ModelBuildError(OrchestratorError):
    pass


class SweepBusy(OrchestratorError):
    """Another controller is running this suite into this results folder (or this run)."""

    exit_code = 75   # EX_TEMPFAIL: try again later


class HistoryError(OrchestratorError):
    """The history database cannot be opened, read or written (a bad URL, a server out of reach,
    a missing driver, a database of a newer benchfleet, a file that is not a database). The
    message names the database by its URL with any password masked, and the fix."""

    exit_code = 2


class LocalWriteError(OrchestratorError):
    """Writing the results folder on this machine failed (a full disk, mostly). The run stops:
    what the devices measured stays on them, where a rerun of the same job finds it."""

    exit_code = 2

    def __init__(self, path, exc):
        self.path, self.cause = str(path), exc
        OrchestratorError.__init__(self, "cannot write %s on this machine: %s"
                                   % (path, getattr(exc, "strerror", None) or exc))
