"""resource_specification parsing and capacity checks (pure, no Flux)."""

import pytest

from parsl_flux.driver.resources import DEFAULT_SHAPE, InstanceResources, JobShape, check_fits, parse_spec
from parsl_flux.errors import InvalidResourceSpecification


def test_empty_spec_is_one_core_no_gpu():
    assert parse_spec({}) == DEFAULT_SHAPE == JobShape(1, 1, 0, 0)
    assert parse_spec(None).gpus_per_task == 0


def test_full_spec():
    shape = parse_spec({"num_tasks": 4, "cores_per_task": 2, "gpus_per_task": 1, "num_nodes": 2,
                        "exclusive": True, "walltime": 30, "env": {"A": "b"}})
    assert shape == JobShape(4, 2, 1, 2, True, 30.0, {"A": "b"})
    assert shape.to_wire()["walltime"] == 30.0
    assert not shape.packable


@pytest.mark.parametrize("spec,key", [
    ({"cores": 2}, "cores"),
    ({"num_tasks": 0}, "num_tasks"),
    ({"num_tasks": "2"}, "num_tasks"),
    ({"num_tasks": True}, "num_tasks"),
    ({"cores_per_task": 1.5}, "cores_per_task"),
    ({"gpus_per_task": -1}, "gpus_per_task"),
    ({"num_nodes": 3, "num_tasks": 2}, "num_nodes"),
    ({"exclusive": "yes", "num_nodes": 1}, "exclusive"),
    ({"exclusive": True}, "exclusive"),
    ({"walltime": 0}, "walltime"),
    ({"walltime": float("inf")}, "walltime"),
    ({"env": {"A": 1}}, "env"),
    ({"env": ["A=b"]}, "env"),
])
def test_bad_spec_names_key_and_value(spec, key):
    with pytest.raises(InvalidResourceSpecification) as info:
        parse_spec(spec)
    assert info.value.key == key
    assert key in str(info.value)
    assert repr(spec[key]) in str(info.value)


def test_packable_only_for_single_core_plain_tasks():
    assert parse_spec({}).packable
    assert parse_spec({"num_nodes": 1}).packable
    for spec in ({"num_tasks": 2}, {"cores_per_task": 2}, {"gpus_per_task": 1},
                 {"env": {"X": "1"}}, {"walltime": 5}):
        assert not parse_spec(spec).packable, spec


TWO_NODES = InstanceResources(nodes=2, cores_per_node=4, gpus_per_node=0)


@pytest.mark.parametrize("spec", [
    {}, {"num_tasks": 8}, {"num_tasks": 4, "num_nodes": 2, "cores_per_task": 2},
    {"num_nodes": 2, "num_tasks": 2, "exclusive": True}, {"cores_per_task": 4, "num_tasks": 2},
])
def test_fits(spec):
    check_fits(parse_spec(spec), TWO_NODES)


@pytest.mark.parametrize("spec,key", [
    ({"num_nodes": 3, "num_tasks": 3}, "num_nodes"),
    ({"cores_per_task": 5}, "cores_per_task"),
    ({"gpus_per_task": 1}, "gpus_per_task"),
    ({"num_tasks": 9}, "num_tasks"),
    ({"num_tasks": 3, "cores_per_task": 3}, "num_tasks"),
    ({"num_tasks": 6, "num_nodes": 1}, "num_tasks"),
])
def test_too_large_for_instance(spec, key):
    with pytest.raises(InvalidResourceSpecification) as info:
        check_fits(parse_spec(spec), TWO_NODES)
    assert info.value.key == key


def test_gpu_slots():
    res = InstanceResources(nodes=1, cores_per_node=8, gpus_per_node=2)
    check_fits(parse_spec({"num_tasks": 2, "gpus_per_task": 1}), res)
    with pytest.raises(InvalidResourceSpecification):
        check_fits(parse_spec({"num_tasks": 3, "gpus_per_task": 1}), res)
