"""``$PARSL_MPI_PREFIX`` in Parsl's MPI model: start the ranks on the allocation.

Run as a script (``python -S .../mpi_launch.py PROGRAM ARGS...``), never as
part of the package, so it imports nothing but ``json``, ``os`` and ``sys``
(not even ``subprocess``): no Parsl, and not Flux's Python bindings, whose import is
most of what ``flux run`` costs (0.4 s of CPU per call on a 2-core machine).
It does what ``flux run`` does for this one case, with Flux's C commands:

1. the ranks' jobspec: the template the manager made
   (``PARSL_FLUX_RANKS_JOBSPEC``: ``-N``/``-n``/cores/GPUs, job name) with
   the command, this process's environment and working directory, and the
   allocation's R as ``system.alloc-bypass.R``, so the job runs on exactly
   the allocation's resources without asking the scheduler;
2. ``flux job submit`` it;
3. exec ``flux job attach``, which relays the ranks' output and exits with
   their exit status, as ``flux run`` would.
"""

import json
import os
import sys

TEMPLATE_ENV = "PARSL_FLUX_RANKS_JOBSPEC"
R_FILE_ENV = "PARSL_FLUX_ALLOCATION_R"
FLUX_ENV = "PARSL_FLUX_COMMAND"
EXIT_USAGE = 2


def ranks_jobspec(template: dict, argv: list, environ: dict, cwd: str, R: dict) -> dict:
    """The ranks' jobspec: ``template`` completed with the command, environment, cwd and R."""
    jobspec = json.loads(json.dumps(template))
    jobspec["tasks"][0]["command"] = list(argv)
    system = jobspec["attributes"]["system"]
    system["environment"] = dict(environ)
    system["cwd"] = cwd
    system["alloc-bypass"] = {"R": R}
    return jobspec


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
    flux = os.environ[FLUX_ENV]
    with open(os.environ[R_FILE_ENV], "rb") as f:
        R = json.load(f)
    jobspec = ranks_jobspec(json.loads(os.environ[TEMPLATE_ENV]), argv, dict(os.environ), os.getcwd(), R)
    code, out = capture([flux, "job", "submit"], json.dumps(jobspec).encode())
    if code != 0:
        return code
    jobid = out.decode().strip()
    os.execv(flux, [flux, "job", "attach", jobid])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
