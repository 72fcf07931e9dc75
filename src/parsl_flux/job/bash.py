"""A lean path for Parsl bash apps: their Flux jobs run without importing Parsl.

Parsl hands an executor every ``@bash_app`` call as
``wrap_error(partial(parsl.app.bash.remote_side_bash_executor, user_func))``
(see ``BashApp.__init__``), with the app's arguments, including ``stdout``,
``stderr``, ``walltime`` and ``parsl_resource_specification``, in ``kwargs``.
Run as is, every such job imports Parsl (~1 s of CPU on a small node) to run
one shell command, and ``subprocess``, which pulls in ``re``, ``enum``,
``threading``, ``locale``...

Driver side, :func:`lean_bash` recognises that function and swaps
``remote_side_bash_executor`` for :func:`run_bash`, a copy of it that imports
only C modules already loaded in a runner: the same name rule, the same
handling of the user function's return value, the same opening of
``stdout``/``stderr`` (str or ``os.PathLike`` -> mode ``a+``, ``(path, mode)``
tuple, ``parsl.data_provider.files.File`` -> mode ``w``, parent directories
created), the same ``--> executable follows <--`` header on stderr, the same
shell (``/bin/bash -c``, argv[0] ``/bin/bash``, so not in POSIX mode; current
directory and environment inherited, no descriptors closed, SIGPIPE and
SIGXFSZ reset to their default as ``subprocess`` does), the same walltime rule
(on expiry the app fails with ``AppTimeout`` and, as in Parsl, the command is
not killed) and the same outcomes. The command line is run as returned: this
Parsl does not ``str.format`` it.

Failures are raised as stand-ins defined here, with Parsl's class names,
constructor arguments, fields and messages, so a job never imports Parsl to
raise them. The driver turns them back into Parsl's own classes with
:func:`to_parsl_exception`. A ``File`` in the arguments still imports Parsl in
the job, when the payload is unpickled: it is Parsl's class.

Import cost in a runner: ``os``, ``sys``, ``time``, ``_signal`` (all already
loaded) and ``select`` (a small C module, only when a walltime is given).
"""

import _signal
import os
import sys
import time

__all__ = ["lean_bash", "run_bash", "to_parsl_exception",
           "ParslError", "AppException", "AppBadFormatting", "BashExitFailure", "AppTimeout", "BashAppNoReturn",
           "MissingOutputs", "BadStdStreamFile"]

SHELL = "/bin/bash"
SHELL_ARGV0 = SHELL  # Popen(shell=True, executable=...) puts the executable in argv[0] too: bash, not sh


# --------------------------------------------------------------- stand-ins
class ParslError(Exception):
    """Stand-in for ``parsl.errors.ParslError`` (base of the stand-ins below)."""


class AppException(ParslError):
    """Stand-in for ``parsl.app.errors.AppException``."""


class AppBadFormatting(ParslError):
    """Stand-in for ``parsl.app.errors.AppBadFormatting``."""


class BashExitFailure(AppException):
    """Stand-in for ``parsl.app.errors.BashExitFailure``: a non-zero exit code."""

    def __init__(self, app_name: str, exitcode: int) -> None:
        super().__init__(app_name, exitcode)
        self.app_name = app_name
        self.exitcode = exitcode

    def __str__(self) -> str:
        return f"bash_app {self.app_name} failed with unix exit code {self.exitcode}"


class AppTimeout(AppException):
    """Stand-in for ``parsl.app.errors.AppTimeout``: the walltime expired."""


class BashAppNoReturn(AppException):
    """Stand-in for ``parsl.app.errors.BashAppNoReturn``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MissingOutputs(ParslError):
    """Stand-in for ``parsl.app.errors.MissingOutputs``."""

    def __init__(self, reason: str, outputs: list) -> None:
        super().__init__(reason, outputs)
        self.reason = reason
        self.outputs = outputs

    def __str__(self) -> str:
        return "Missing Outputs: {0}, Reason: {1}".format(self.outputs, self.reason)


class BadStdStreamFile(ParslError):
    """Stand-in for ``parsl.app.errors.BadStdStreamFile``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self._reason = reason

    def __str__(self) -> str:
        return "Bad Stream File: {}".format(self._reason)


# stand-in class -> (module, name) of the Parsl class it stands for
_PARSL_CLASSES = {
    ParslError: ("parsl.errors", "ParslError"),
    AppException: ("parsl.app.errors", "AppException"),
    AppBadFormatting: ("parsl.app.errors", "AppBadFormatting"),
    BashExitFailure: ("parsl.app.errors", "BashExitFailure"),
    AppTimeout: ("parsl.app.errors", "AppTimeout"),
    BashAppNoReturn: ("parsl.app.errors", "BashAppNoReturn"),
    MissingOutputs: ("parsl.app.errors", "MissingOutputs"),
    BadStdStreamFile: ("parsl.app.errors", "BadStdStreamFile"),
}


class _WalltimeExpired(Exception):
    """Internal: the command outlived its walltime (``subprocess.TimeoutExpired`` in Parsl)."""


# ------------------------------------------------------------ driver side
def lean_bash(func: object, args: tuple, kwargs: dict) -> "tuple | None":
    """``(func2, args2, kwargs2)`` running the same bash app without Parsl in
    the job, if ``func`` is Parsl's bash-app function; ``None`` otherwise.

    Recognised (by identity with ``parsl.app.bash.remote_side_bash_executor``,
    never by name): ``wrap_error(partial(remote_side_bash_executor, f))`` as
    ``BashApp`` makes it, the same without ``wrap_error`` (as
    ``FluxExecutor.submit`` strips it), and ``remote_side_bash_executor``
    itself. Anything wrapped further (in-task staging, monitoring) is
    ``None``: those wrappers must run. ``func2`` is
    ``functools.partial(run_bash, ...)`` with the partial's arguments and
    attributes (``__name__``); ``args``/``kwargs`` are passed on unchanged.
    """
    parsl_bash = sys.modules.get("parsl.app.bash")
    if parsl_bash is None:  # never imported: func cannot be Parsl's (and Parsl stays unimported)
        return None
    target = getattr(parsl_bash, "remote_side_bash_executor", None)
    if target is None:
        return None
    inner = _strip_wrap_error(func)
    if inner is target:
        return run_bash, tuple(args), dict(kwargs)
    import functools

    if type(inner) is functools.partial and inner.func is target:
        replacement = functools.partial(run_bash, *inner.args, **inner.keywords)
        replacement.__dict__.update(inner.__dict__)
        return replacement, tuple(args), dict(kwargs)
    return None


def _strip_wrap_error(func: object) -> object:
    """The function inside Parsl's ``wrap_error`` wrapper (known by its code object), else ``func``."""
    errors = sys.modules.get("parsl.app.errors")
    wrap_error = getattr(errors, "wrap_error", None)
    code = getattr(func, "__code__", None)
    if wrap_error is None or code is None:
        return func
    if code is not wrap_error(_nothing).__code__ or "func" not in code.co_freevars:
        return func
    try:
        return func.__closure__[code.co_freevars.index("func")].cell_contents  # type: ignore[attr-defined]
    except (TypeError, IndexError, ValueError):
        return func


def _nothing() -> None:
    return None


def to_parsl_exception(exc: BaseException) -> BaseException:
    """Parsl's own exception for a stand-in of this module (same arguments,
    fields, traceback, cause and context); any other exception unchanged.

    Called by the driver on every exception a job sends back; imports Parsl's
    error modules only when given a stand-in."""
    return _convert(exc, {})


def _convert(exc: "BaseException | None", done: dict) -> "BaseException | None":
    if exc is None or type(exc) not in _PARSL_CLASSES:
        return exc
    if id(exc) in done:  # a cycle of causes/contexts
        return done[id(exc)]
    import importlib

    module, name = _PARSL_CLASSES[type(exc)]
    cls = getattr(importlib.import_module(module), name)
    real = cls(*exc.args)
    done[id(exc)] = real
    real.__dict__.update(vars(exc))  # the fields, and __notes__ if any
    real.__cause__ = _convert(exc.__cause__, done)
    real.__context__ = _convert(exc.__context__, done)
    real.__suppress_context__ = exc.__suppress_context__
    return real.with_traceback(exc.__traceback__)


# --------------------------------------------------------------- job side
def run_bash(func, *args, **kwargs):
    """What ``parsl.app.bash.remote_side_bash_executor`` does, without Parsl:
    call ``func(*args, **kwargs)`` for the command line, run it with bash,
    return 0 or raise (stand-ins for Parsl's errors, see the module doc)."""
    _reap_timed_out()
    if hasattr(func, '__name__'):
        func_name = func.__name__
    else:
        func_name = 'bash_app'

    executable = None

    # Try to run the func to compose the commandline
    try:
        executable = func(*args, **kwargs)

        if not isinstance(executable, str):
            raise ValueError(f"Expected a str for bash_app commandline, got {type(executable)}")

    except AttributeError as e:
        if executable is not None:
            raise AppBadFormatting("App formatting failed for app '{}' with AttributeError: {}".format(func_name, e))
        else:
            raise BashAppNoReturn("Bash app '{}' did not return a value, or returned None - with this exception: {}"
                                  .format(func_name, e))

    except IndexError as e:
        raise AppBadFormatting("App formatting failed for app '{}' with IndexError: {}".format(func_name, e))

    def open_std_fd(fdname):
        # fdname is 'stdout' or 'stderr'
        stdfspec = kwargs.get(fdname)  # spec is str name or tuple (name, mode)
        if stdfspec is None:
            return None

        if _is_parsl_file(stdfspec):
            # a File is an os.PathLike: used as is, in mode "w"
            fname = stdfspec
            mode = "w"
        else:
            fname, mode = _std_fname_mode(fdname, stdfspec)

        try:
            if os.path.dirname(fname):
                os.makedirs(os.path.dirname(fname), exist_ok=True)
            fd = open(fname, mode)
        except Exception as e:
            raise BadStdStreamFile(str(fname)) from e
        return fd

    std_out = std_err = None
    try:
        std_out = open_std_fd('stdout')
        std_err = open_std_fd('stderr')
        timeout = kwargs.get('walltime')

        if std_err is not None:
            print('--> executable follows <--\n{}\n--> end executable <--'.format(executable), file=std_err, flush=True)

        returncode = None
        try:
            returncode = _run(executable, std_out, std_err, timeout)

        except _WalltimeExpired:
            raise AppTimeout(f"App {func_name} exceeded walltime: {timeout} seconds")

        except Exception as e:
            raise AppException(f"App {func_name} caught exception", e)
    finally:
        # Parsl leaves these to the garbage collector; the command has its own descriptors
        for stream in (std_out, std_err):
            if stream is not None:
                stream.close()

    if returncode != 0:
        raise BashExitFailure(func_name, returncode)

    missing = []
    for outputfile in kwargs.get('outputs', []):
        fpath = outputfile.filepath

        if not os.path.exists(fpath):
            missing.extend([outputfile])

    if missing:
        raise MissingOutputs(f"Missing outputs from app {func_name}", missing)

    return returncode


def _is_parsl_file(obj: object) -> bool:
    """``isinstance(obj, parsl.data_provider.files.File)`` without importing
    Parsl: a File instance exists only if its module is loaded."""
    files = sys.modules.get("parsl.data_provider.files")
    cls = getattr(files, "File", None)
    return cls is not None and isinstance(obj, cls)


def _std_fname_mode(fdname, stdfspec):
    """``parsl.utils.get_std_fname_mode``, the same failures included.

    Parsl's is ``@typeguard.typechecked``: a spec outside its annotation
    (``str | PathLike | tuple[str | PathLike, str]``) fails with typeguard's
    ``TypeCheckError``. Such a spec is handed to Parsl's own function (the
    one case that imports Parsl in the job), so the error is Parsl's exactly."""
    if not _fits_std_annotation(stdfspec):
        try:
            from parsl.utils import get_std_fname_mode
        except ImportError:  # no Parsl where the job runs: the checks below, without typeguard's
            pass
        else:
            return get_std_fname_mode(fdname, stdfspec)
    if isinstance(stdfspec, (str, os.PathLike)):
        fname = stdfspec
        mode = 'a+'
    elif isinstance(stdfspec, tuple):
        if len(stdfspec) != 2:
            msg = (f"std descriptor {fdname} has incorrect tuple length "
                   f"{len(stdfspec)}")
            raise BadStdStreamFile(msg)
        fname, mode = stdfspec

    path = os.fspath(fname)  # UnboundLocalError for any other spec, as in Parsl

    if isinstance(path, str):
        return path, mode
    elif isinstance(path, bytes):
        return path.decode(), mode
    else:
        raise BadStdStreamFile(f"fname has invalid type {type(path)}")


def _fits_std_annotation(spec: object) -> bool:
    """Whether ``spec`` passes typeguard's check of ``get_std_fname_mode``'s ``stdfspec``."""
    if isinstance(spec, (str, os.PathLike)):
        return True
    return (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], (str, os.PathLike))
            and isinstance(spec[1], str))


# ------------------------------------------------------- running the shell
_timed_out: list = []  # pids left running past their walltime, reaped later (as subprocess._active)


def _run(command: str, stdout, stderr, timeout) -> int:
    """``Popen(command, stdout=stdout, stderr=stderr, shell=True,
    executable='/bin/bash', close_fds=False).wait(timeout)``'s return code,
    or :class:`_WalltimeExpired` (the command left running, as Parsl does)."""
    if not hasattr(os, "posix_spawn"):  # not on Linux or macOS: the real thing
        return _run_with_subprocess(command, stdout, stderr, timeout)
    actions = []
    if stdout is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stdout.fileno(), 1))
    if stderr is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stderr.fileno(), 2))
    pid = os.posix_spawn(SHELL, [SHELL_ARGV0, "-c", command], os.environ, file_actions=actions,
                         setsigdef=_RESTORED_SIGNALS)
    if timeout is None:
        return _wait(pid)
    try:
        deadline = time.monotonic() + timeout  # TypeError for a bad walltime, as in Popen.wait
        return _wait_until(pid, deadline)
    except BaseException:  # left running, as Parsl leaves it
        _timed_out.append(pid)
        raise


# the signals subprocess restores to SIG_DFL in the child (Python ignores them)
_RESTORED_SIGNALS = tuple(getattr(_signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(_signal, name))


def _exit_code(status: int) -> int:
    if os.WIFSTOPPED(status):
        return -os.WSTOPSIG(status)
    return os.waitstatus_to_exitcode(status)


def _try_wait(pid: int, flags: int) -> "int | None":
    """The exit code, or None if still running (WNOHANG)."""
    try:
        wpid, status = os.waitpid(pid, flags)
    except ChildProcessError:  # SIGCHLD ignored: the status is lost (subprocess says 0 too)
        return 0
    return _exit_code(status) if wpid == pid else None


def _wait(pid: int) -> int:
    while True:
        code = _try_wait(pid, 0)
        if code is not None:
            return code


def _wait_until(pid: int, deadline: float) -> int:
    """Wait for ``pid`` until ``deadline`` (``time.monotonic``): woken by a
    pidfd as soon as it exits, else polling as ``Popen.wait`` does."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, seccomp): poll
        pidfd = None
    if pidfd is not None:
        import select

        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            while True:
                code = _try_wait(pid, os.WNOHANG)
                if code is not None:
                    return code
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _WalltimeExpired()
                poller.poll(min(remaining, 3600.0) * 1000.0)
        finally:
            os.close(pidfd)
    delay = 0.0005
    while True:
        code = _try_wait(pid, os.WNOHANG)
        if code is not None:
            return code
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _WalltimeExpired()
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)


def _reap_timed_out() -> None:
    """Collect the commands that outlived their walltime and have ended since (no zombies in a packing worker)."""
    for pid in list(_timed_out):
        if _try_wait(pid, os.WNOHANG) is not None:
            _timed_out.remove(pid)


def _run_with_subprocess(command: str, stdout, stderr, timeout) -> int:
    import subprocess

    proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, shell=True, executable=SHELL, close_fds=False)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _WalltimeExpired() from None
    return proc.returncode
