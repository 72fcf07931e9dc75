"""Lean bash apps (pure, no Flux): :mod:`parsl_flux.job.bash` against Parsl's own
``remote_side_bash_executor``, run side by side on the same inputs.

Each case runs the wrapped function Parsl hands an executor (failures come back
as ``RemoteExceptionWrapper``, as from HTEX) and the lean replacement (failures
encoded by the runner, unpickled and converted as the driver does), each in
its own empty directory, and compares the outcome (value, or exception type,
message, fields, cause) and every file the run left, with the directory's path
and object addresses blanked. ``test_comparison_catches_*`` break the lean
path on purpose to show the comparisons fail when behaviour differs.
"""

import copy
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from functools import partial, wraps

import cloudpickle
import pytest
from parsl.app import errors as pe
from parsl.app.bash import BashApp, remote_side_bash_executor
from parsl.app.python import PythonApp
from parsl.data_provider.files import File
from typeguard import TypeCheckError

from parsl_flux.job import bash, runner
from parsl_flux.wire import payload


ROOT = pathlib.Path("/nonexistent-root")

# ------------------------------------------------------------------ helpers
def _through_driver(exc: BaseException) -> BaseException:
    """What the driver makes of an exception a job raised: the runner's encoding, unpickled, converted."""
    res = runner.outcome_of(exc)
    assert res["exception"] is not None, res["traceback"]
    return bash.to_parsl_exception(cloudpickle.loads(res["exception"]))


def _normal(text: str, root: pathlib.Path) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x?", text.replace(str(root), "<ROOT>"))


def _describe(outcome: tuple, root: pathlib.Path) -> tuple:
    kind, value = outcome
    if kind == "value":
        return kind, value
    fields = {name: _normal(repr(getattr(value, name)), root)
              for name in ("app_name", "exitcode", "reason", "_reason", "outputs") if hasattr(value, name)}
    cause = value.__cause__
    return (kind, type(value), _normal(str(value), root), _normal(repr(value.args), root), fields,
            None if cause is None else (type(cause), _normal(str(cause), root)))


def _snapshot(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): _normal(p.read_text(), root) if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


def _run_parsl(app: BashApp, args: tuple, kwargs: dict) -> tuple:
    result = app.wrapped_remote_function(*args, **kwargs)
    if isinstance(result, pe.RemoteExceptionWrapper):
        return "raised", result.get_exception()
    return "value", result


def _run_lean(app: BashApp, args: tuple, kwargs: dict) -> tuple:
    lean = bash.lean_bash(app.wrapped_remote_function, args, kwargs)
    assert lean is not None
    func, args, kwargs = lean
    try:
        return "value", func(*args, **kwargs)
    except Exception as exc:
        return "raised", _through_driver(exc)


def side_by_side(tmp_path, monkeypatch, user_func, args=(), kwargs=None, setup=None, settle=0.0) -> dict:
    """``{"parsl": (outcome, files), "lean": (outcome, files)}``, each run in its own directory."""
    app = BashApp(user_func)
    results = {}
    for name, run in (("parsl", _run_parsl), ("lean", _run_lean)):
        root = tmp_path / name
        root.mkdir(parents=True)
        monkeypatch.chdir(root)
        if setup is not None:
            setup(root)
        outcome = run(app, tuple(args), copy.deepcopy(kwargs or {}))
        time.sleep(settle)
        results[name] = (_describe(outcome, root), _snapshot(root))
    return results


def assert_same(results: dict) -> tuple:
    assert results["lean"][0] == results["parsl"][0]
    assert results["lean"][1] == results["parsl"][1]
    return results["parsl"]


def _write(**files):
    def setup(root):
        for name, text in files.items():
            (root / name).write_text(text)
    return setup


# -------------------------------------------------------------- user apps
def echo_app(stdout=None, stderr=None):
    return "echo out; echo err >&2"


def exit_app(code, stdout=None, stderr=None):
    return f"echo before; exit {code}"


def cmd_app(cmd, stdout=None, stderr=None, walltime=None, outputs=()):
    return cmd


def kwargs_app(x, y=2, stdout=None, stderr=None, walltime=None, parsl_resource_specification=None):
    return f"echo '{{x}}' {x} {y} walltime={walltime} spec={parsl_resource_specification}"


def returns_app(value, stdout=None, stderr=None):
    return value


def raises_app(exc, stdout=None, stderr=None):
    raise exc


def no_kwargs_app():
    return "echo never"


# ------------------------------------------------------------ recognition
def test_lean_bash_recognises_what_parsl_hands_an_executor():
    app = BashApp(echo_app)
    args, kwargs = (1, 2), {"stdout": "x", "walltime": 3, "parsl_resource_specification": {"cores": 2}}
    for func in (app.wrapped_remote_function, app.wrapped_remote_function.__wrapped__):  # with and without wrap_error
        func2, args2, kwargs2 = bash.lean_bash(func, args, kwargs)
        assert func2.func is bash.run_bash and func2.args == (echo_app,) and func2.keywords == {}
        assert func2.__name__ == "echo_app"
        assert args2 == args and kwargs2 == kwargs
    assert bash.lean_bash(remote_side_bash_executor, (echo_app,), {}) == (bash.run_bash, (echo_app,), {})


def test_lean_bash_declines_everything_else():
    app = BashApp(echo_app)
    inner = app.wrapped_remote_function.__wrapped__

    @wraps(inner)
    def staging_wrapper(*args, **kwargs):  # like Parsl's in-task staging: must run, so no lean path
        return inner(*args, **kwargs)

    class MyPartial(partial):
        pass

    for func in (PythonApp(echo_app).func, echo_app, lambda: "echo", partial(print, echo_app), pe.wrap_error(echo_app),
                 pe.wrap_error(staging_wrapper), staging_wrapper, MyPartial(remote_side_bash_executor, echo_app),
                 None, 42):
        assert bash.lean_bash(func, (), {}) is None, func


def test_lean_bash_without_parsl_loaded_imports_nothing():
    code = ("import sys, parsl_flux.job.bash as b; print(b.lean_bash(lambda: 1, (), {}), "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('parsl', 'subprocess')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None []"


# ------------------------------------------------------- side by side
def test_success_with_nested_stream_paths_appends(tmp_path, monkeypatch):
    # str paths: mode a+, parent directories created, the header on stderr
    outcome, files = assert_same(side_by_side(
        tmp_path, monkeypatch, echo_app, kwargs={"stdout": "logs/a/out.txt", "stderr": "logs/b/err.txt"},
        setup=lambda root: ((root / "logs/a").mkdir(parents=True), (root / "logs/a/out.txt").write_text("old\n"))))
    assert outcome == ("value", 0)
    assert files["logs/a/out.txt"] == "old\nout\n"
    assert files["logs/b/err.txt"] == "--> executable follows <--\necho out; echo err >&2\n--> end executable <--\nerr\n"


@pytest.mark.parametrize("stdout, stderr", [
    (("out.txt", "w"), ("err.txt", "w")),
    (("out.txt", "a"), ("err.txt", "a")),
    (("out.txt", "w"), "err.txt"),
    (pathlib.Path("out.txt"), pathlib.Path("err.txt")),
    (("out.txt", "w"), (pathlib.Path("err.txt"), "a+")),
    ("same.txt", "same.txt"),
])
def test_stream_specs_and_modes(tmp_path, monkeypatch, stdout, stderr):
    outcome, files = assert_same(side_by_side(
        tmp_path, monkeypatch, echo_app, kwargs={"stdout": stdout, "stderr": stderr},
        setup=_write(**{"out.txt": "old out\n", "err.txt": "old err\n", "same.txt": "old same\n"})))
    assert outcome == ("value", 0)
    assert files != {"out.txt": "old out\n", "err.txt": "old err\n", "same.txt": "old same\n"}


def test_parsl_files_as_streams_are_truncated(tmp_path, monkeypatch):
    outcome, files = assert_same(side_by_side(
        tmp_path, monkeypatch, echo_app, kwargs={"stdout": File("f/out.txt"), "stderr": File("err.txt")},
        setup=lambda root: ((root / "f").mkdir(), _write(**{"f/out.txt": "old\n", "err.txt": "old\n"})(root))))
    assert outcome == ("value", 0) and files["f/out.txt"] == "out\n" and files["err.txt"].startswith("--> executable")


@pytest.mark.parametrize("code, exitcode", [(0, 0), (1, 1), (3, 3), (255, 255)])
def test_exit_codes(tmp_path, monkeypatch, code, exitcode):
    outcome, files = assert_same(side_by_side(tmp_path, monkeypatch, exit_app, args=(code,),
                                              kwargs={"stdout": "out.txt"}))
    if exitcode == 0:
        assert outcome == ("value", 0)
    else:
        assert outcome[1] is pe.BashExitFailure
        assert outcome[2] == f"bash_app exit_app failed with unix exit code {exitcode}"
        assert outcome[4] == {"app_name": "'exit_app'", "exitcode": repr(exitcode)}
    assert files == {"out.txt": "before\n"}


@pytest.mark.parametrize("cmd, exitcode", [
    ("./not-executable.sh", 126),
    ("no-such-command-parsl-flux", 127),
    ("kill -9 $$", -9),
])
def test_not_executable_not_found_and_signals(tmp_path, monkeypatch, cmd, exitcode):
    outcome, files = assert_same(side_by_side(
        tmp_path, monkeypatch, cmd_app, args=(cmd,), kwargs={"stderr": "err.txt"},
        setup=_write(**{"not-executable.sh": "echo hi\n"})))
    assert outcome[1] is pe.BashExitFailure and outcome[4]["exitcode"] == repr(exitcode)


@pytest.mark.parametrize("func, args, exc_type", [
    (returns_app, (42,), ValueError),
    (returns_app, (None,), ValueError),
    (returns_app, (b"echo bytes",), ValueError),
    (raises_app, (AttributeError("no attr"),), pe.BashAppNoReturn),
    (raises_app, (IndexError("tuple index out of range"),), pe.AppBadFormatting),
    (raises_app, (KeyError("k"),), KeyError),
    (no_kwargs_app, (), TypeError),  # stdout= passed to a function without it
])
def test_user_function_failures(tmp_path, monkeypatch, func, args, exc_type):
    outcome, files = assert_same(side_by_side(tmp_path, monkeypatch, func, args=args, kwargs={"stdout": "out.txt"}))
    assert outcome[0] == "raised" and outcome[1] is exc_type
    assert files == {}  # nothing opened: the command line comes first


def test_command_is_not_formatted_and_gets_every_kwarg(tmp_path, monkeypatch):
    kwargs = {"y": 5, "stdout": "out.txt", "walltime": 30, "parsl_resource_specification": {"cores": 1}}
    outcome, files = assert_same(side_by_side(tmp_path, monkeypatch, kwargs_app, args=("x1",), kwargs=kwargs))
    assert outcome == ("value", 0)
    assert files["out.txt"] == "{x} x1 5 walltime=30 spec={cores: 1}\n"  # the shell ate the quotes


def test_shell_environment_cwd_and_signals(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAN_BASH_VAR", "from the environment")
    inheritable, private = os.pipe()
    os.set_inheritable(inheritable, True)  # close_fds=False: the command gets it; not the non-inheritable one
    try:
        cmd = ('echo "$0|$PWD|$LEAN_BASH_VAR|$BASH_VERSION" | sed "s/|[0-9].*/|bash/"; shopt -qo posix && echo posix; '
               f"yes | head -n 1; for fd in {inheritable} {private}; do [ -e /proc/$$/fd/$fd ] && echo fd-$fd; done; "
               "trap -p; umask")
        outcome, files = assert_same(side_by_side(tmp_path, monkeypatch, cmd_app, args=(cmd,),
                                                  kwargs={"stdout": "out.txt", "stderr": "err.txt"}))
    finally:
        os.close(inheritable)
        os.close(private)
    assert outcome == ("value", 0)
    out = files["out.txt"].splitlines()
    assert out[:3] == ["/bin/bash|<ROOT>|from the environment|bash", "y", f"fd-{inheritable}"]  # not in POSIX mode
    assert files["err.txt"].endswith("--> end executable <--\n")  # SIGPIPE killed `yes` quietly


def test_stdout_and_stderr_none_inherit_the_process_streams(tmp_path, monkeypatch, capfd):
    captured = {}
    app = BashApp(echo_app)
    for name, run in (("parsl", _run_parsl), ("lean", _run_lean)):
        monkeypatch.chdir(tmp_path)
        assert run(app, (), {}) == ("value", 0)
        captured[name] = capfd.readouterr()
    assert captured["lean"] == captured["parsl"] and captured["parsl"].out == "out\n" and captured["parsl"].err == "err\n"


@pytest.mark.parametrize("stdout, exc_type", [
    (("out.txt", "w", "extra"), TypeCheckError),  # Parsl's get_std_fname_mode is typechecked
    ((b"out.txt", "w"), TypeCheckError),
    (("out.txt", 5), TypeCheckError),
    (17, TypeCheckError),
    ((17, "w"), TypeCheckError),
    ("a-directory", pe.BadStdStreamFile),
    ("a-file/below", pe.BadStdStreamFile),
    (("out.txt", "x"), pe.BadStdStreamFile),  # exists: FileExistsError as the cause
    (("out.txt", "rw"), pe.BadStdStreamFile),
])
def test_bad_stream_specs(tmp_path, monkeypatch, stdout, exc_type):
    def setup(root):
        (root / "a-directory").mkdir()
        _write(**{"a-file": "", "out.txt": "kept\n"})(root)

    outcome, files = assert_same(side_by_side(tmp_path, monkeypatch, echo_app, kwargs={"stdout": stdout}, setup=setup))
    assert outcome[0] == "raised" and outcome[1] is exc_type
    assert files["out.txt"] == "kept\n"


def test_unwritable_stderr_mode(tmp_path, monkeypatch):
    outcome, files = assert_same(side_by_side(tmp_path, monkeypatch, echo_app, kwargs={"stderr": ("err.txt", "r")},
                                              setup=_write(**{"err.txt": "old\n"})))
    assert outcome[1] is io.UnsupportedOperation


def test_read_only_stdout_fails_the_command(tmp_path, monkeypatch):
    outcome, files = assert_same(side_by_side(
        tmp_path, monkeypatch, echo_app, kwargs={"stdout": ("out.txt", "r"), "stderr": "err.txt"},
        setup=_write(**{"out.txt": "old\n"})))
    assert outcome == ("value", 0)  # the last command's status: echo to stderr worked
    assert "echo: write error: Bad file descriptor" in files["err.txt"] and files["out.txt"] == "old\n"


def test_missing_and_present_outputs(tmp_path, monkeypatch):
    kwargs = {"outputs": [File("made.txt"), File("sub/missing.txt")], "stdout": "out.txt"}
    outcome, files = assert_same(side_by_side(tmp_path, monkeypatch, cmd_app, args=("touch made.txt",), kwargs=kwargs))
    assert outcome[1] is pe.MissingOutputs and "sub/missing.txt" in outcome[4]["outputs"]
    assert "made.txt" not in outcome[4]["outputs"].replace("sub/missing.txt", "")
    kwargs = {"outputs": [File("made.txt")]}
    outcome, files = assert_same(side_by_side(tmp_path / "all", monkeypatch, cmd_app, args=("touch made.txt",),
                                              kwargs=kwargs))
    assert outcome == ("value", 0) and "made.txt" in files


def test_walltime_expiry_is_an_app_timeout_and_the_command_keeps_running(tmp_path, monkeypatch):
    # as in Parsl, the command is not killed: "late" still reaches the file
    started = time.monotonic()
    outcome, files = assert_same(side_by_side(
        tmp_path, monkeypatch, cmd_app, args=("echo early; sleep 0.8; echo late",),
        kwargs={"walltime": 0.3, "stdout": "out.txt", "stderr": "err.txt"}, settle=1.2))
    assert outcome[1] is pe.AppTimeout and outcome[2] == "App cmd_app exceeded walltime: 0.3 seconds"
    assert files["out.txt"] == "early\nlate\n"
    assert time.monotonic() - started < 10


def test_walltime_not_reached_and_bad_walltime(tmp_path, monkeypatch):
    outcome, files = assert_same(side_by_side(tmp_path / "ok", monkeypatch, cmd_app, args=("sleep 0.1; exit 4",),
                                              kwargs={"walltime": 5, "stdout": "out.txt"}))
    assert outcome[1] is pe.BashExitFailure and outcome[4]["exitcode"] == "4"
    outcome, files = assert_same(side_by_side(tmp_path / "bad", monkeypatch, cmd_app, args=("true",),
                                              kwargs={"walltime": "soon"}))
    assert outcome[1] is pe.AppException and "TypeError" in outcome[3]


def test_lean_wait_wakes_at_exit():
    """With a walltime the lean path returns as soon as the command ends (pidfd), not on a polling tick."""
    func, args, kwargs = bash.lean_bash(BashApp(cmd_app).wrapped_remote_function, ("true",), {"walltime": 60})
    started = time.monotonic()
    assert func(*args, **kwargs) == 0
    assert time.monotonic() - started < 1.0


# --------------------------------------------------------- exceptions
@pytest.mark.parametrize("stand_in, args", [
    (bash.ParslError, ("p",)),
    (bash.AppException, ("App f caught exception", OSError(2, "gone"))),
    (bash.AppBadFormatting, ("bad",)),
    (bash.BashExitFailure, ("f", 2)),
    (bash.AppTimeout, ("App f exceeded walltime: 1 seconds",)),
    (bash.BashAppNoReturn, ("no return",)),
    (bash.MissingOutputs, ("Missing outputs from app f", [File("a.txt")])),
    (bash.BadStdStreamFile, ("x/y",)),
])
def test_stand_ins_become_parsl_exceptions(stand_in, args):
    import parsl.errors

    parsl_cls = getattr(pe, stand_in.__name__, None) or getattr(parsl.errors, stand_in.__name__)
    try:
        try:
            raise OSError("the cause")
        except OSError as cause:
            raise stand_in(*args) from cause
    except stand_in as exc:
        raised = exc
    converted = _through_driver(raised)
    expected = parsl_cls(*args)
    assert type(converted) is parsl_cls and type(raised).__module__ == "parsl_flux.job.bash"
    assert _normal(str(converted), ROOT) == _normal(str(expected), ROOT) == _normal(str(raised), ROOT)
    assert _normal(repr(converted.args), ROOT) == _normal(repr(expected.args), ROOT)
    assert ({k: _normal(repr(v), ROOT) for k, v in vars(converted).items()}
            == {k: _normal(repr(v), ROOT) for k, v in vars(expected).items()})
    assert type(converted.__cause__) is OSError and str(converted.__cause__) == "the cause"
    assert converted.__traceback__ is not None  # the job's frames
    assert isinstance(converted, pe.AppException) == issubclass(stand_in, bash.AppException)


def test_other_exceptions_pass_unchanged():
    exc = ValueError("x")
    assert bash.to_parsl_exception(exc) is exc
    real = pe.BashExitFailure("f", 1)
    assert bash.to_parsl_exception(real) is real


# ------------------------------------------------------------ in a job
def _task_payload(lean: tuple) -> list:
    func, args, kwargs = lean
    return payload.dumps_task(payload.dump_function(func), args, kwargs)


def _in_fresh_runner(blob: list, tmp_path: pathlib.Path) -> dict:
    """Load a payload in a ``python -S`` interpreter as a runner does, run it, report what got imported."""
    assert len(blob) == 1  # a bash app's payload has no out-of-band buffers: the stream is all
    script = (
        "import sys\nfrom parsl_flux.wire.payload import loads_task\n"
        "func, args, kwargs = loads_task([sys.stdin.buffer.read()])\n"
        "try:\n    out = {'value': func(*args, **kwargs)}\n"
        "except Exception as exc:\n    out = {'raised': type(exc).__module__ + '.' + str(type(exc).__name__), 'str': str(exc)}\n"
        "heavy = {'parsl', 'subprocess', 're', 'typing', 'logging', 'enum', 'threading', 'locale', 'cloudpickle',"
        " 'zmq', 'signal', 'selectors', 'tblib'}\n"
        "out['heavy'] = sorted(heavy & set(sys.modules))\nimport json\nprint(json.dumps(out))\n")  # json loads re
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-S", "-c", script], input=blob[0], capture_output=True, env=env,
                          cwd=tmp_path, check=True)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("walltime", [None, 30])
def test_job_side_imports_no_parsl(tmp_path, walltime):
    def job_app(word, stdout=None, stderr=None, walltime=None):  # local: pickled by value, as from __main__
        return f"echo {word}; echo to-stderr >&2"

    kwargs = {"stdout": ("logs/out.txt", "w"), "stderr": "logs/err.txt", "walltime": walltime}
    lean = bash.lean_bash(BashApp(job_app).wrapped_remote_function, ("hello",), kwargs)
    assert _in_fresh_runner(_task_payload(lean), tmp_path) == {"value": 0, "heavy": []}
    assert (tmp_path / "logs/out.txt").read_text() == "hello\n"
    assert (tmp_path / "logs/err.txt").read_text().endswith("--> end executable <--\nto-stderr\n")

    def failing_app(code, walltime=None):
        return f"exit {code}"

    lean = bash.lean_bash(BashApp(failing_app).wrapped_remote_function, (7,), {"walltime": walltime})
    assert _in_fresh_runner(_task_payload(lean), tmp_path) == {
        "raised": "parsl_flux.job.bash.BashExitFailure", "str": "bash_app failing_app failed with unix exit code 7",
        "heavy": []}


# ------------------------------------------ the comparisons can fail
@pytest.mark.parametrize("mutation", ["argv0", "sigpipe", "no_conversion", "mode", "no_walltime", "exit_code"])
def test_comparison_catches_a_broken_lean_path(tmp_path, monkeypatch, mutation):
    cases = {
        "argv0": (cmd_app, ('echo "$0"; shopt -qo posix && echo posix',), {"stdout": "out.txt"}),
        "sigpipe": (cmd_app, ("yes | head -n 1",), {"stderr": "err.txt"}),
        "no_conversion": (exit_app, (1,), {}),
        "mode": (echo_app, (), {"stdout": "out.txt"}),
        "no_walltime": (cmd_app, ("sleep 0.5",), {"walltime": 0.1}),
        "exit_code": (exit_app, (2,), {}),
    }
    if mutation == "argv0":
        monkeypatch.setattr(bash, "SHELL_ARGV0", "/bin/sh")
    elif mutation == "sigpipe":
        monkeypatch.setattr(bash, "_RESTORED_SIGNALS", ())
    elif mutation == "no_conversion":
        monkeypatch.setattr(bash, "to_parsl_exception", lambda exc: exc)
    elif mutation == "mode":
        original = bash._std_fname_mode
        monkeypatch.setattr(bash, "_std_fname_mode", lambda fdname, spec: (original(fdname, spec)[0], "w"))
    elif mutation == "no_walltime":
        monkeypatch.setattr(bash, "_wait_until", lambda pid, deadline: bash._wait(pid))
    elif mutation == "exit_code":
        monkeypatch.setattr(bash, "_exit_code", lambda status: os.waitstatus_to_exitcode(status) + 1)
    func, args, kwargs = cases[mutation]
    results = side_by_side(tmp_path, monkeypatch, func, args=args, kwargs=kwargs,
                           setup=_write(**{"out.txt": "old\n"}) if mutation == "mode" else None)
    with pytest.raises(AssertionError):
        assert_same(results)


# --------------------------------------------- what the DFK hands executors
def test_dfk_bash_apps_take_the_lean_path_with_every_kwarg(tmp_path, monkeypatch):
    """A real DataFlowKernel: the function it submits for a bash app (AUTO_LOGNAME
    stdout, tuple stderr, walltime, a resource specification, File outputs) is
    recognised, the kwargs reach the replacement, and failures are Parsl's."""
    import parsl
    from parsl.config import Config
    from parsl.executors import ThreadPoolExecutor

    seen = []

    class LeanThreads(ThreadPoolExecutor):
        def submit(self, func, resource_specification, *args, **kwargs):
            lean = bash.lean_bash(func, args, kwargs)
            seen.append((lean is not None, resource_specification, dict(kwargs)))
            if lean is None:
                return self.executor.submit(func, *args, **kwargs)
            func2, args2, kwargs2 = lean

            def job():
                try:
                    return func2(*args2, **kwargs2)
                except Exception as exc:
                    raise _through_driver(exc)

            return self.executor.submit(job)

    @parsl.bash_app
    def hello(word, stdout=None, stderr=None, walltime=None, parsl_resource_specification=None, outputs=()):
        return f"echo {word} > {outputs[0]}; echo {word}" if outputs else f"echo {word}"

    monkeypatch.chdir(tmp_path)
    dfk = parsl.load(Config(executors=[LeanThreads(label="lean")], run_dir=str(tmp_path / "runinfo")))
    try:
        ok = hello("hi", stdout=parsl.AUTO_LOGNAME, stderr=("err.txt", "w"), walltime=30,
                   parsl_resource_specification={"cores": 2}, outputs=[File("o.txt")])
        assert ok.result(timeout=60) == 0
        with pytest.raises(pe.BashExitFailure, match="failed with unix exit code 3"):
            hello("x; exit 3").result(timeout=60)
        with pytest.raises(pe.AppTimeout, match="exceeded walltime: 0.2 seconds"):
            hello("x; sleep 1", walltime=0.2).result(timeout=60)
    finally:
        dfk.cleanup()
        parsl.clear()
    assert [recognised for recognised, _, _ in seen] == [True, True, True]
    _, spec, kwargs = seen[0]
    assert spec == {"cores": 2} and kwargs["parsl_resource_specification"] == {"cores": 2}
    assert kwargs["walltime"] == 30 and kwargs["stderr"] == ("err.txt", "w")
    assert isinstance(kwargs["stdout"], str) and kwargs["stdout"].startswith(str(tmp_path / "runinfo"))
    assert pathlib.Path(kwargs["stdout"]).read_text() == "hi\n" and (tmp_path / "o.txt").read_text() == "hi\n"
    assert (tmp_path / "err.txt").read_text().startswith("--> executable follows <--")
