"""The manager writes the bytecode its jobs import, so no job compiles the runner from source."""

import os
import subprocess
import sys
from pathlib import Path

from parsl_flux.allocation import bytecode


def _compiled_from_source(env):
    """The parsl_flux modules a fresh ``python -S`` compiled instead of loading from __pycache__."""
    src = str(Path(bytecode.__file__).resolve().parents[2])  # src/, above parsl_flux/allocation/
    done = subprocess.run([sys.executable, "-S", "-v", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                           "import parsl_flux.job.runner, parsl_flux.job.bash", src],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    names = (line.split()[-1].strip("'") for line in done.stderr.splitlines() if line.startswith("# code object from"))
    return sorted(Path(n).name for n in names if "parsl_flux" in n and n.endswith(".py"))


def test_jobs_load_the_runner_from_bytecode_even_with_dontwritebytecode():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPYCACHEPREFIX", None)
    assert bytecode.write_job_bytecode(sys.executable) == []
    assert _compiled_from_source(env) == []
    # Stale after an edit (a newer source): written again.
    runner = Path(bytecode.__file__).parents[1] / "job" / "runner.py"
    stat = runner.stat()
    os.utime(runner, (stat.st_atime, stat.st_mtime + 5))
    try:
        assert _compiled_from_source(env) == ["runner.py"]
        assert bytecode.write_job_bytecode(sys.executable) == []
        assert _compiled_from_source(env) == []
    finally:
        os.utime(runner, (stat.st_atime, stat.st_mtime))
        bytecode.write_job_bytecode(sys.executable)


def test_another_interpreter_is_left_alone(tmp_path):
    assert bytecode.write_job_bytecode("/bin/sh") == []
