"""``$PARSL_MPI_PREFIX`` in Parsl's MPI model: start the ranks on the allocation.

Run as a script (``python -S .../mpi_launch.py PROGRAM ARGS...``), never as
part of the package, so it imports nothing but ``_json`` (the C half of
``json``), ``os`` and ``sys``: not ``json`` itself, whose import of ``re`` and
``enum`` costs 8 ms of a 2-core machine's CPU per call, nor ``subprocess``,
nor Flux's Python bindings, whose import is most of what ``flux run`` costs
(0.4 s of CPU per call there). It does what ``flux run`` does for this one
case, with Flux's C commands:

1. the ranks' jobspec: the template the manager made
   (``PARSL_FLUX_RANKS_JOBSPEC``: ``-N``/``-n``/cores/GPUs, job name) with
   the command, this process's environment and working directory, and the
   allocation's R as ``system.alloc-bypass.R``, so the job runs on exactly
   the allocation's resources without asking the scheduler; the template is
   JSON text with markers where those go, filled in as text;
2. ``flux job submit`` it, unvalidated: the template is ``flux run``'s own
   jobspec, and the submitter owns the instance (as ``alloc-bypass`` needs),
   so Flux's Python validator (2 ms a job) has nothing to add;
3. exec ``flux job attach``, which relays the ranks' output and exits with
   their exit status, as ``flux run`` would.

``PARSL_FLUX_JOB_COMMAND`` names Flux's ``flux-job`` program, which the
``flux`` front end would run for ``flux job``: called directly, each of the
three ``flux job`` calls of an app skips the front end's start (3-6 ms).
"""

import _json
import os
import sys

TEMPLATE_ENV = "PARSL_FLUX_RANKS_JOBSPEC"
R_FILE_ENV = "PARSL_FLUX_ALLOCATION_R"
JOB_COMMAND_ENV = "PARSL_FLUX_JOB_COMMAND"
EXIT_USAGE = 2

COMMAND_MARK = "@command@"
ENVIRONMENT_MARK = "@environment@"
CWD_MARK = "@cwd@"
R_MARK = "@R@"
"""The template's placeholders (JSON strings in the manager's template; each replaced, quotes and all)."""

quote = _json.encode_basestring_ascii
"""A JSON string of a Python string, as ``json.dumps`` writes it."""


class _Decoding:
    """What ``_json.make_scanner`` reads from its context (``json.JSONDecoder``'s defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")


_scan = _json.make_scanner(_Decoding())


def loads(text: "str | bytes") -> object:
    """``json.loads`` for one JSON document, without importing ``json``."""
    if isinstance(text, bytes):
        text = text.decode()
    text = text.strip()
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        raise ValueError(f"not JSON: {text[:80]!r}") from None
    if end != len(text):
        raise ValueError(f"not one JSON document: {text[:80]!r}")
    return value


def job_argv(command: str) -> list:
    """How to run ``flux job``: ``flux-job`` itself, or the ``flux`` front end and ``job``."""
    return [command] if os.path.basename(command) == "flux-job" else [command, "job"]


def fill(template: str, values: dict) -> str:
    """``template`` with each marker (a key of ``values``, quoted) replaced by
    its value, in one pass over the template, so that no inserted text (the
    user's environment) is searched for markers."""
    spots = sorted((template.index(quote(mark)), mark) for mark in values)
    out, at = [], 0
    for index, mark in spots:
        out += [template[at:index], values[mark]]
        at = index + len(quote(mark))
    out.append(template[at:])
    return "".join(out)


def ranks_jobspec(template: str, argv: list, environ: dict, cwd: str, R: str) -> str:
    """The ranks' jobspec as JSON text: ``template`` completed with the command,
    environment, cwd and R (JSON text, as ``flux job info R`` prints it)."""
    return fill(template, {
        COMMAND_MARK: "[" + ",".join(map(quote, argv)) + "]",
        ENVIRONMENT_MARK: "{" + ",".join(f"{quote(k)}:{quote(v)}" for k, v in environ.items()) + "}",
        CWD_MARK: quote(cwd),
        R_MARK: R.strip(),
    })


def capture(argv: list, data: bytes = b"") -> tuple:
    """``(exit code, stdout)`` of ``argv`` fed ``data`` on stdin (``subprocess.run``
    without importing ``subprocess``). ``data`` must fit a pipe's buffer (64 KiB
    on Linux) or the child must read it all before writing much."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    # the pipe's own descriptors are close-on-exec (Python's default); the copies on 0 and 1 are not
    pid = os.posix_spawn(argv[0], argv, os.environ,
                         file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)])
    os.close(in_r)
    os.close(out_w)
    with os.fdopen(in_w, "wb") as child_in:
        child_in.write(data)
    with os.fdopen(out_r, "rb") as child_out:
        out = child_out.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), out


def main(argv: list) -> int:
    if not argv:
        print("usage: $PARSL_MPI_PREFIX PROGRAM [ARGS...]", file=sys.stderr)
        return EXIT_USAGE
    job = job_argv(os.environ[JOB_COMMAND_ENV])
    with open(os.environ[R_FILE_ENV]) as f:
        R = f.read()
    jobspec = ranks_jobspec(os.environ[TEMPLATE_ENV], argv, dict(os.environ), os.getcwd(), R)
    code, out = capture(job + ["submit", "--flags=novalidate"], jobspec.encode())
    if code != 0:
        return code
    jobid = out.decode().strip()
    os.execv(job[0], job + ["attach", jobid])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
