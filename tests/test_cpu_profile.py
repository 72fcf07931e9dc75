"""The CPU profile tool's pure parts: which component a process is, the case syntax, the table."""

import argparse
from collections import Counter

import pytest

from parsl_flux.tools import cpu_profile

FLUX = "/root/.cache/parsl-flux/flux-core-0.88.0"


@pytest.mark.parametrize("cmdline, comm, component", [
    ("/work/.venv/bin/python -m parsl_flux.tools.bench --child {}", "python", "driver"),
    ("/work/.venv/bin/python -m parsl_flux.allocation.manager --url tcp://127.0.0.1:1 --block-id 0", "python", "parsl-flux manager"),
    (f"{FLUX}/libexec/flux/cmd/flux-broker {FLUX}/bin/flux env python -m parsl_flux.allocation.manager", "flux-broker-0",
     "flux-broker"),
    (f"/usr/bin/python3 {FLUX}/libexec/flux/cmd/py-runner.py {FLUX}/libexec/flux/cmd/flux-module-python-exec.py "
     f"{FLUX}/lib/flux/modules/sched-simple.py", "python3", "flux python modules"),
    (f"{FLUX}/libexec/flux/cmd/flux-broker bash -c x", "flux-broker-0", "flux-broker"),
    ("", "job-manager", "other"),
    ("", "flux-shell", "flux-shell"),
    ("", "python3", "job processes"),
    ("", "true", "job processes"),
    (f"{FLUX}/bin/flux submit --cc=1-300 python3 -S -c pass", "flux", "flux commands"),
    ("/usr/bin/python3 /x/process_worker_pool.py -a 127.0.0.1", "process_worker", "htex worker pool"),
    ("/usr/bin/python3 /x/interchange.py", "interchange.py", "htex interchange"),
    ("", "orted", "mpiexec/orted"),
    ("", "swapper", "idle"),
    ("", "perf", "profiler"),
])
def test_classify(cmdline, comm, component):
    assert cpu_profile.classify(cmdline, comm) == component


def test_by_component_uses_the_polled_command_line_first():
    samples = Counter({(10, "python"): 5, (11, "python"): 3, (12, "python3"): 2, (0, "swapper"): 7})
    cmdlines = {10: "python -m parsl_flux.tools.bench --child {}", 11: "python -m parsl_flux.allocation.manager --url x"}
    assert cpu_profile.by_component(samples, cmdlines) == {"driver": 5, "parsl-flux manager": 3, "job processes": 2,
                                                          "idle": 7}


def test_parse_case_names_the_bad_key():
    case = cpu_profile.parse_case("python-noop/parsl-flux/300")
    assert (case.group, case.executor, case.n) == ("python-noop", "parsl-flux", 300)
    for bad in ("python-noop/parsl-flux", "nope/parsl-flux/3", "python-noop/nope/3", "python-noop/htex/x"):
        with pytest.raises(argparse.ArgumentTypeError, match=bad):
            cpu_profile.parse_case(bad)


def test_table_rows_are_components_and_totals_add_up():
    profiles = [{"case": "a", "tasks_per_s": 10.0, "busy_fraction": 0.9,
                 "cpu_ms_per_task": {"flux-broker": 20.0, "job processes": 30.0}},
                {"case": "b", "tasks_per_s": 5.0, "busy_fraction": 1.0, "cpu_ms_per_task": {"driver": 4.0}}]
    text = cpu_profile.table(profiles)
    assert "| job processes | 30.00 | 0.00 |" in text
    assert "| **total** | **50.00** | **4.00** |" in text
    assert "| tasks/s (this run) | 10.0 | 5.0 |" in text


def test_count_samples_keeps_the_window_and_names_with_spaces():
    text = ("           sleep 12124 13831.118582: \n"
            "  flux-broker-0 700 13831.500000: \n"
            "  rc1 worker 701 13831.600000: \n"
            "         swapper     0 13832.900000: \n"
            "garbage line\n")
    counts = cpu_profile.count_samples(text, (13831.2, 13832.0))
    assert counts == Counter({(700, "flux-broker-0"): 1, (701, "rc1 worker"): 1})
