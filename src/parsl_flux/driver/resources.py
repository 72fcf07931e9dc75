"""``resource_specification`` -> validated Flux job shape.

Pure code (no Flux, no I/O) so every rule here is unit-tested. The executor
calls :func:`parse_spec` in ``submit`` and :func:`check_fits` once it knows the
shape of a block's Flux instance; the manager turns a :class:`JobShape` into a
Flux jobspec.

Keys (all optional):

=================  =====  =======  ==============================================
key                type   default  meaning
=================  =====  =======  ==============================================
num_tasks          int    1        tasks (MPI ranks) of the Flux job
cores_per_task     int    1        cores bound to each task
gpus_per_task      int    0        GPUs per task (Parsl's page says 1; 0 here so
                                   machines without GPUs work by default)
num_nodes          int    0        if > 0, spread the tasks evenly over this many
                                   nodes (not exclusive unless ``exclusive``)
exclusive          bool   False    allocate whole nodes (needs ``num_nodes``)
walltime           number none     time limit of the Flux job, seconds
env                dict   {}       environment variables added for the job
=================  =====  =======  ==============================================

Parsl's MPI model (``MPIExecutor``'s keys) is the other way to ask for ranks:
``ranks_per_node``, ``num_ranks`` and ``launcher_options``, with ``num_nodes``.
The app then runs once, in a Flux allocation of ``num_nodes`` x
``ranks_per_node`` slots (``cores_per_task``/``gpus_per_task`` size each
rank), and starts its ranks itself through ``$PARSL_MPI_PREFIX``
(:mod:`parsl_flux.allocation.mpi_allocation`). The two models do not mix: ``num_tasks``
with any of Parsl's keys is refused, naming both.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

from parsl_flux.errors import InvalidResourceSpecification
from parsl_flux.wire.shape import DEFAULT_SHAPE, InstanceResources, JobShape, block_window  # noqa: F401 (the driver's names)

_INT_KEYS = {"num_tasks": 1, "cores_per_task": 1, "gpus_per_task": 0, "num_nodes": 0}
PARSL_MPI_KEYS = frozenset({"ranks_per_node", "num_ranks", "launcher_options"})
"""Keys only Parsl's MPI model has; any of them selects that model."""
KNOWN_KEYS = frozenset(_INT_KEYS) | {"exclusive", "walltime", "env"} | PARSL_MPI_KEYS


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidResourceSpecification(key, value, f"must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise InvalidResourceSpecification(key, value, f"must be >= {minimum}")
    return value


def parse_spec(spec: Optional[Mapping[str, Any]]) -> JobShape:
    """Validate a Parsl ``resource_specification`` and return its :class:`JobShape`.

    Raises
    ------
    InvalidResourceSpecification
        Naming the first offending key and value.
    """
    if not spec:
        return DEFAULT_SHAPE
    if not isinstance(spec, Mapping):
        raise InvalidResourceSpecification("<resource_specification>", spec, "must be a dict")
    for key in spec:
        if key not in KNOWN_KEYS:
            raise InvalidResourceSpecification(
                key, spec[key], f"unknown key; supported keys are {sorted(KNOWN_KEYS)}")
    parsl_keys = sorted(PARSL_MPI_KEYS.intersection(spec))
    if parsl_keys and "num_tasks" in spec:
        raise InvalidResourceSpecification(
            parsl_keys[0], spec[parsl_keys[0]],
            f"Parsl's MPI key {parsl_keys[0]!r} cannot be combined with this executor's 'num_tasks' "
            f"(num_tasks={spec['num_tasks']!r}): use num_tasks (every rank runs the app) or "
            "num_nodes/ranks_per_node/num_ranks (the app runs once and launches its ranks with $PARSL_MPI_PREFIX)")
    ints = {k: _int(k, spec.get(k, default), 1 if default == 1 else 0) for k, default in _INT_KEYS.items()}
    mpi: Dict[str, Any] = {}
    if parsl_keys:
        ints["num_nodes"], ints["num_tasks"], mpi["ranks_per_node"] = _parsl_ranks(spec)
        mpi["launcher_options"] = _launcher_options(spec.get("launcher_options", ""))
    if ints["num_nodes"] > ints["num_tasks"]:
        raise InvalidResourceSpecification(
            "num_nodes", ints["num_nodes"], f"cannot exceed num_tasks={ints['num_tasks']}")
    exclusive = spec.get("exclusive", False)
    if not isinstance(exclusive, bool):
        raise InvalidResourceSpecification("exclusive", exclusive, "must be True or False")
    if exclusive and ints["num_nodes"] == 0:
        raise InvalidResourceSpecification("exclusive", exclusive, "requires num_nodes > 0")
    walltime = spec.get("walltime")
    if walltime is not None:
        if isinstance(walltime, bool) or not isinstance(walltime, (int, float)) \
                or not math.isfinite(walltime) or walltime <= 0:
            raise InvalidResourceSpecification("walltime", walltime, "must be a positive number of seconds")
        walltime = float(walltime)
    env = spec.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise InvalidResourceSpecification("env", env, "must be a dict of str to str")
    return JobShape(exclusive=exclusive, walltime=walltime, env=dict(env), **ints, **mpi)


def _parsl_ranks(spec: Mapping[str, Any]) -> Tuple[int, int, int]:
    """``(num_nodes, num_ranks, ranks_per_node)`` of Parsl's MPI model.

    Derived as Parsl's ``validate_resource_spec`` derives them: ``num_ranks``
    from ``num_nodes * ranks_per_node``, ``ranks_per_node`` from ``num_ranks /
    num_nodes``. Where Parsl would go on with an inconsistent triple or a
    fractional ``ranks_per_node`` ("2.5", which no launcher takes), this
    refuses it. Without ``num_nodes`` the ranks share one node, as no node
    list exists to spread them over (Parsl then composes no prefix at all).
    """
    given = {k: _int(k, spec[k], 1) for k in ("num_nodes", "ranks_per_node", "num_ranks") if k in spec}
    nodes = given.get("num_nodes", 1)
    if "ranks_per_node" in given:
        per_node = given["ranks_per_node"]
        ranks = nodes * per_node
        if given.get("num_ranks", ranks) != ranks:
            raise InvalidResourceSpecification(
                "num_ranks", given["num_ranks"],
                f"must equal num_nodes * ranks_per_node = {nodes} * {per_node} = {ranks}")
    elif "num_ranks" in given:
        ranks = given["num_ranks"]
        if ranks % nodes:
            raise InvalidResourceSpecification(
                "num_ranks", ranks, f"must be a multiple of num_nodes={nodes} (ranks_per_node is derived from them)")
        per_node = ranks // nodes
    else:  # launcher_options without a rank count (Parsl accepts it): one rank per node
        per_node, ranks = 1, nodes
    return nodes, ranks, per_node


def _launcher_options(value: Any) -> str:
    if not isinstance(value, str) or "\n" in value:
        raise InvalidResourceSpecification(
            "launcher_options", value, "must be a one-line string of `flux run` options")
    return value.strip()


def check_fits(shape: JobShape, res: InstanceResources) -> None:
    """Raise if ``shape`` can never run on an instance with resources ``res``.

    A job that merely has to wait for busy resources fits; only requests larger
    than the whole instance are refused, naming the key that is too large.
    """
    if shape.num_nodes > res.nodes:
        raise InvalidResourceSpecification(
            "num_nodes", shape.num_nodes, f"the Flux instance has only {res.nodes} node(s)")
    if shape.cores_per_task > res.cores_per_node:
        raise InvalidResourceSpecification(
            "cores_per_task", shape.cores_per_task,
            f"a task must fit one node and nodes have {res.cores_per_node} cores")
    if shape.gpus_per_task > res.gpus_per_node:
        raise InvalidResourceSpecification(
            "gpus_per_task", shape.gpus_per_task, f"nodes of the Flux instance have {res.gpus_per_node} GPU(s)")
    nodes = shape.num_nodes or res.nodes
    tasks_per_node = math.ceil(shape.num_tasks / nodes) if shape.num_nodes else None
    if tasks_per_node is not None:
        if tasks_per_node * shape.cores_per_task > res.cores_per_node:
            raise InvalidResourceSpecification(
                "num_tasks", shape.num_tasks,
                f"{tasks_per_node} tasks x {shape.cores_per_task} cores per node exceed the "
                f"{res.cores_per_node} cores of a node")
        if tasks_per_node * shape.gpus_per_task > res.gpus_per_node:
            raise InvalidResourceSpecification(
                "num_tasks", shape.num_tasks,
                f"{tasks_per_node} tasks x {shape.gpus_per_task} GPUs per node exceed the "
                f"{res.gpus_per_node} GPUs of a node")
    else:
        slots_per_node = res.cores_per_node // shape.cores_per_task
        if shape.gpus_per_task:
            slots_per_node = min(slots_per_node, res.gpus_per_node // shape.gpus_per_task)
        if shape.num_tasks > slots_per_node * res.nodes:
            raise InvalidResourceSpecification(
                "num_tasks", shape.num_tasks,
                f"the Flux instance has room for {slots_per_node * res.nodes} such tasks "
                f"({res.nodes} node(s) x {res.cores_per_node} cores, {res.gpus_per_node} GPUs per node)")
