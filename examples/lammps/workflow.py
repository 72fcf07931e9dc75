"""LAMMPS' LJ melt as a 2-rank MPI app: a Parsl bash app that is one Flux job.

The bash app's command (``lmp -in in.lj``) runs once per rank; Flux's job
shell is the ranks' PMI server, so the two ``lmp`` processes form one MPI
world, across two nodes with ``--nodes 2``. Run it where the application
image is the block's image::

    parsl-flux run --site slurm --image $PWD/parsl-flux-lammps.sif --nodes 2 \\
        examples/lammps/workflow.py --nodes 2
    parsl-flux run --site local --image parsl-flux-lammps:dev --set runtime=podman \\
        examples/lammps/workflow.py --nodes 1

or inside the image, in a new single-node Flux instance::

    apptainer run parsl-flux-lammps.sif python /opt/lammps/workflow.py --nodes 1

It prints the final thermo line, the MPI world size LAMMPS saw, LAMMPS' own
loop time, and each run's time from submit to result (the difference is Flux job
start-up plus parsl-flux's own cost); ``--result FILE`` writes them as JSON.
Outputs go to ``<run_dir>/lammps/`` (``lmp-<run>.out``, ``lmp-<run>.err``).
With ``--runs 2`` the second run shows the steady cost (the first also waits
for the block to start).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import parsl
from parsl import bash_app
from parsl.config import Config
from parsl.errors import NoDataFlowKernelError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lj  # noqa: E402  (next to this script, wherever it is run from)


@bash_app
def lammps(workdir: str, stdout=None, stderr=None, parsl_resource_specification={}):
    return f"cd {shlex.quote(workdir)} && lmp -in in.lj -log none"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks (Flux tasks)")
    parser.add_argument("--nodes", type=int, default=2, help="nodes to spread them over (0: wherever they fit)")
    parser.add_argument("--runs", type=int, default=1, help="run it this many times (later runs: block already up)")
    parser.add_argument("--result", type=Path, help="write the outcome here as JSON")
    args = parser.parse_args(argv)
    try:
        return run(parsl.dfk(), args)  # loaded by `parsl-flux run --site NAME`, which cleans up
    except NoDataFlowKernelError:
        from parsl_flux import FluxExecutor

        dfk = parsl.load(Config(executors=[FluxExecutor()]))  # inside the image: attaches to its instance
        try:
            return run(dfk, args)
        finally:
            dfk.cleanup()


def run(dfk, args: argparse.Namespace) -> int:
    """Run the app once with ``args``' shape; report, and return the exit status."""
    workdir = Path(dfk.run_dir).resolve() / "lammps"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "in.lj", workdir / "in.lj")
    spec = {"num_tasks": args.ranks, **({"num_nodes": args.nodes} if args.nodes else {})}
    seconds, finals = [], []
    for run_no in range(args.runs):  # the first run also waits for the block to start
        out = workdir / f"lmp-{run_no}.out"
        started = time.monotonic()
        lammps(str(workdir), stdout=str(out), stderr=str(workdir / f"lmp-{run_no}.err"),
               parsl_resource_specification=spec).result()
        seconds.append(round(time.monotonic() - started, 3))
        output = out.read_text()
        finals.append(lj.final_thermo(output))
    outcome = {"final_thermo": finals[-1], "same_every_run": len(set(finals)) == 1, "loop": lj.loop(output),
               "app_seconds": seconds, "spec": spec, "output": str(out)}
    print(f"final thermo: {outcome['final_thermo']}")
    if outcome["loop"]:
        print(f"MPI world: {outcome['loop']['procs']} ranks; LAMMPS loop {outcome['loop']['seconds']:.2f} s; "
              f"submit to result: {', '.join(f'{s:.2f} s' for s in seconds)}")
    if args.result:
        args.result.write_text(json.dumps(outcome, indent=2))
    ok = outcome["final_thermo"] and outcome["same_every_run"] and outcome["loop"]
    return 0 if ok and outcome["loop"]["procs"] == args.ranks else 1


if __name__ == "__main__":
    sys.exit(main())
