"""N two-rank MPI apps through ``$PARSL_MPI_PREFIX`` (Parsl's MPI model) vs bare ``flux submit --cc=1-N -n2``.

Usage: ``FLUX_PATH=/opt/flux-dev python benchmarks/mpi_prefix_speed.py MPI_PROGRAM [N [BROKERS [REPEATS]]]``
(MPI_PROGRAM: e.g. ``mpicc -o mpi_hello tests/data/mpi_hello.c``). Bare Flux is
timed inside its own ``flux start``, excluding start-up; the executor from its
first app's submit (block already up) to its last result. The two alternate
REPEATS times (default 5) and the ratio of their medians is reported, so that
a disturbance of the machine weighs on both sides alike and one lucky run
decides nothing.
"""

import os
import statistics
import subprocess
import sys
import time

import parsl
from parsl import bash_app
from parsl.config import Config

from parsl_flux import FluxExecutor


@bash_app
def prefixed(exe, parsl_resource_specification={}):
    return f"$PARSL_MPI_PREFIX {exe} > /dev/null"


def bare(flux: str, exe: str, n: int, brokers: int) -> float:
    script = (f"t=$(date +%s.%N); flux submit --quiet --cc=1-{n} -n2 {exe} >/dev/null; "
              "flux queue drain; echo $(date +%s.%N) $t")
    end, start = subprocess.run([flux, "start", f"--test-size={brokers}", "bash", "-c", script], capture_output=True, text=True,
                                check=True).stdout.split()
    return float(end) - float(start)


def prefix_model(flux: str, exe: str, n: int, brokers: int) -> float:
    launch = (f"{{flux}} start --test-size={brokers} {{flux}} env {{python}} -m parsl_flux.allocation.manager "
              "--url {url} --block-id {block_id} --workdir {workdir}")
    parsl.load(Config(executors=[FluxExecutor(flux_path=flux, launch_cmd=launch)]))
    spec = {"num_nodes": 1, "ranks_per_node": 2}
    prefixed(exe, parsl_resource_specification=spec).result()  # the block is up
    start = time.time()
    for fut in [prefixed(exe, parsl_resource_specification=spec) for _ in range(n)]:
        fut.result()
    elapsed = time.time() - start
    parsl.dfk().cleanup()
    return elapsed


def main() -> None:
    exe, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20
    brokers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    flux = os.path.join(os.environ["FLUX_PATH"], "bin", "flux")
    bares, models = [], []
    for _ in range(repeats):
        bares.append(bare(flux, exe, n, brokers))
        models.append(prefix_model(flux, exe, n, brokers))
    print(f"{n} 2-rank apps, {brokers} broker(s): bare flux submit -n2 {' '.join(f'{t:.2f}' for t in bares)} s, "
          f"$PARSL_MPI_PREFIX {' '.join(f'{t:.2f}' for t in models)} s, "
          f"speed vs bare (ratio of medians) {statistics.median(bares) / statistics.median(models):.2f}")


if __name__ == "__main__":
    main()
