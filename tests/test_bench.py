"""The benchmark harness: suites, report arithmetic and log parsing (pure), and a tiny real run (Flux)."""

import dis
import json

import pytest

from parsl_flux.tools import bench


def _run(rate, p50=0.1, p99=0.2, first=1.0, peak=50.0, **kw):
    return {"tasks_per_s": rate, "latency_p50_s": p50, "latency_p99_s": p99, "first_result_s": first,
            "first_result_all_s": [first], "shutdown_s": 0.5, "driver_peak_rss_mb": peak, **kw}


def _results():
    cases = [bench.Case("python-noop", "bare-flux", 100), bench.Case("python-noop", "parsl-flux", 100),
             bench.Case("python-noop", "parsl-FluxExecutor", 10), bench.Case("python-noop", "htex", 100),
             bench.Case("python-noop", "parsl-FluxExecutor", 1000),
             bench.Case("mpi-hello", "parsl-flux", 10), bench.Case("mpi-hello", "mpi-executor", 10),
             bench.Case("multi-node", "parsl-flux", 50, mode="4 brokers x 2 blocks, fluxion"),
             bench.Case("python-noop", "parsl-flux-packing", 1000),
             bench.Case("python-noop", "parsl-flux-packing", 10000)]
    runs = [{"tasks_per_s": 20.0, "first_result_s": 0.4, "first_result_all_s": [0.4]}, _run(16.0), _run(4.0),
            _run(800.0), {"skipped": "predicted 250s > budget 150s"}, _run(3.0), _run(2.0), _run(25.0),
            _run(2000.0, peak=70.0), _run(2000.0, peak=70.0 + 9000 * 6000 / 2 ** 20)]
    return {"machine": {"cpus": 2, "flux_core": "0.88.0", "parsl": "2026.10.26"}, "suite": "quick", "repeats": 1,
            "cases": {c.key: bench.asdict(c) for c in cases},
            "runs": {c.key: r for c, r in zip(cases, runs)}}


def test_ratios_pair_baselines_in_the_same_group_and_say_a_different_n():
    r = bench.ratios(_results())
    assert r["python-noop/parsl-flux/default/100"] == {"vs bare-flux": 0.8, "vs parsl-FluxExecutor (N=10)": 4.0,
                                                        "vs htex": 0.02}
    assert r["mpi-hello/parsl-flux/default/10"] == {"vs mpi-executor": 1.5}
    assert r["multi-node/parsl-flux/4 brokers x 2 blocks, fluxion/50"] == {"vs 1 block (N=100)": 25.0 / 16.0}
    assert r["python-noop/parsl-FluxExecutor/default/10"] == {"vs bare-flux (N=100)": 0.2}
    assert "python-noop/parsl-FluxExecutor/default/1000" not in r, "skipped"
    assert "python-noop/htex/default/100" not in r, "a baseline is not divided by the others"
    assert r["python-noop/parsl-flux-packing/default/10000"] == {"vs parsl-FluxExecutor (N=10)": 500.0,
                                                                "vs htex (N=100)": 2.5}


def test_data_cases_pair_at_the_same_array_size_and_not_with_threadpool():
    cases = [bench.Case("data", "parsl-flux", 20, mib=20), bench.Case("data", "htex", 20, mib=20),
             bench.Case("data", "htex", 10, mib=50), bench.Case("data", "threadpool", 20, mib=20),
             bench.Case("open-loop", "parsl-flux", 300), bench.Case("open-loop", "htex", 300)]
    runs = [_run(2.0), _run(1.0), _run(0.5), _run(90.0), _run(10.0), _run(20.0)]
    res = {"cases": {c.key: bench.asdict(c) for c in cases}, "runs": {c.key: r for c, r in zip(cases, runs)}}
    r = bench.ratios(res)
    assert r["data/parsl-flux/default/20/20MiB"] == {"vs htex": 2.0}
    assert "open-loop/parsl-flux/default/300" not in r, "an open loop's rate is its pace, not a result"


def test_cost_growth_gives_bytes_per_task():
    rows = bench.cost_growth(_results())
    assert [row["n"] for row in rows] == [1000, 10000]
    assert "bytes_per_task" not in rows[0]
    assert rows[1]["bytes_per_task"] == pytest.approx(6000)


def test_table_lists_every_case_skips_and_cost():
    res = _results()
    res["ratios"] = bench.ratios(res)
    text = bench.table(res)
    assert "| python-noop | parsl-flux | default | 100 | 16.0 |" in text
    assert "skipped: predicted 250s > budget 150s" in text
    assert "vs parsl-FluxExecutor (N=10) 4.00x" in text
    assert "| 10000 | 2000 |" in text and "| 6000 |" in text


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    res = _results()
    res["runs"]["python-noop/parsl-flux/default/100"].update(block_startup_s=1.2, block_startup_all_s=[1.1, 1.3],
                                                             latency_quantiles_s=[0.01 * i for i in range(101)])
    names = {p.name for p in bench.plot(res, tmp_path)}
    assert names == {"throughput.png", "first_result.png", "block_startup.png", "latency_cdf.png"}
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)


def test_block_startup_from_the_executor_log():
    log = ("2026-11-26 20:51:29,288 INFO MainThread bench listening on tcp://127.0.0.1:54348\n"
           "2026-11-26 20:51:29,300 DEBUG MainThread something else\n"
           "2026-11-26 20:51:30,561 INFO bench-io block 0 registered from vm (manager pid 1, local:///x): ...\n"
           "2026-11-26 20:51:31,788 INFO bench-io block 1 registered from vm (manager pid 2, local:///y): ...\n"
           "2026-11-26 20:51:32,142 INFO bench-io block 0 closed: scaled in; failing 0 task(s)\n")
    assert bench.block_startup(log) == pytest.approx([1.273, 2.5])
    assert bench.block_startup("no timestamps here\n") == []


def test_quantiles():
    q = bench.quantiles([3.0, 1.0, 2.0])
    assert len(q) == 101 and q[0] == 1.0 and q[50] == 2.0 and q[100] == 3.0
    assert bench.quantiles([]) == []


def test_suites_quick_is_small_full_has_100k_and_every_group():
    quick, full = bench.suite_cases("quick"), bench.suite_cases("full")
    assert {c.group for c in full} == set(bench.GROUPS)
    assert {c.group for c in quick} == set(bench.GROUPS) - {"python-sleep10ms", "open-loop", "parsl-perf"}
    data = {(c.executor, c.mib, c.n) for c in full if c.group == "data"}
    assert {("parsl-flux", 20, 20), ("parsl-flux-packing", 50, 10), ("htex", 1, 200)} <= data, "the issue's sizes"
    assert max(c.n for c in quick) <= 10000
    assert [c.n for c in full if (c.group, c.executor, c.mode) == ("python-noop", "parsl-flux-packing", "default")
            ][-3:] == [1000, 10000, 100000], "the cost growth series"
    assert len({c.key for c in full}) == len(full), "keys are unique"
    for ex in ("bare-flux", "parsl-flux"):  # the per-job target's sizes, paired
        assert {300, 3000} <= {c.n for c in full if (c.group, c.executor, c.mode) == ("python-noop", ex, "default")}
    for suite in (quick, full):
        fluxion = [c for c in suite if c.scheduler == "fluxion"]
        assert fluxion and all(c.test_size == 4 and c.blocks == 2 for c in fluxion)
    tuned = [c for c in full if c.mode != "default"]
    assert all("tuned" in c.mode or "brokers" in c.mode for c in tuned), "a non-default mode says what it is"
    assert {c.group for c in bench.suite_cases("quick", ["mpi-hello"])} == {"mpi-hello"}


def test_apps_need_nothing_from_the_harness():
    """Sent by value, an app carries the globals it names: these name none."""
    for app in (bench.noop_app, bench.true_app, bench.mpi_flux_app, bench.mpi_prefix_app, bench._sched_modules):
        named = {i.argval for i in dis.get_instructions(app) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
        assert not named & set(vars(bench)), app.__name__


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--executors", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--groups", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--n", "0"])


@pytest.mark.flux
def test_tiny_real_run(flux_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FLUX_PATH", flux_path)
    monkeypatch.delenv("FLUX_URI", raising=False)
    out = tmp_path / "out"
    assert bench.main(["--suite", "quick", "--groups", "python-noop,bash-noop", "--n", "3", "--repeats", "1",
                       "--executors", "bare-flux,parsl-flux,parsl-flux-packing,threadpool", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    for key in ("python-noop/parsl-flux/default/3", "python-noop/parsl-flux-packing/default/3",
                "python-noop/threadpool/default/3", "python-noop/bare-flux/default/3",
                "bash-noop/parsl-flux/default/3", "bash-noop/bare-flux/default/3"):
        assert data["runs"][key]["tasks_per_s"] > 0, key
    run = data["runs"]["python-noop/parsl-flux/default/3"]
    assert run["app_module"] == "__main__", "the apps travel by value, as a workflow script's"
    assert 0 < run["block_startup_s"] < run["first_result_s"]
    assert "vs bare-flux" in data["ratios"]["python-noop/parsl-flux/default/3"]
    assert (out / "results.md").read_text().count("| default | 3 |") == 6
