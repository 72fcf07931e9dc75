"""The benchmark harness: report arithmetic (pure) and a tiny real run (Flux)."""

import json

import pytest

from parsl_flux import bench


def _results():
    return {
        "machine": {"cpus": 2, "flux_core": "0.88.0", "parsl": "2026.10.26"},
        "bare_flux": {"python3 -S -c pass": {"100": 20.0}, "true": 30.0},
        "runs": {
            "parsl-flux/noop/100": {"tasks_per_s": 16.0, "latency_p50_s": 0.1, "latency_p99_s": 0.2,
                                    "startup_s": 1, "shutdown_s": 1, "driver_peak_rss_mb": 50},
            "parsl-FluxExecutor/noop/100": {"tasks_per_s": 4.0, "latency_p50_s": 1, "latency_p99_s": 2,
                                            "startup_s": 1, "shutdown_s": 1, "driver_peak_rss_mb": 50},
            "htex/noop/100": {"tasks_per_s": 800.0, "latency_p50_s": 0.01, "latency_p99_s": 0.02,
                              "startup_s": 1, "shutdown_s": 1, "driver_peak_rss_mb": 50},
            "parsl-FluxExecutor/noop/1000": {"skipped": "predicted 250s > budget 150s"},
        },
    }


def test_ratios_against_parsl_flux_htex_and_bare_flux():
    r = bench.ratios(_results())
    assert r["parsl-flux/noop/100"] == {"vs parsl-FluxExecutor": 4.0, "vs htex": 0.02,
                                        "vs bare flux python3 -S": 0.8}
    assert "parsl-FluxExecutor/noop/1000" not in r
    assert r["htex/noop/100"] == {"vs parsl-FluxExecutor": 200.0}, "no ratio of a run against itself"


def test_bare_flux_ratio_pairs_runs_of_the_same_size():
    res = _results()
    res["runs"]["parsl-flux/noop/1000"] = dict(res["runs"]["parsl-flux/noop/100"], tasks_per_s=9.0)
    res["bare_flux"]["python3 -S -c pass"]["1000"] = 12.0
    assert bench.ratios(res)["parsl-flux/noop/1000"]["vs bare flux python3 -S"] == 0.75
    res["runs"]["parsl-flux/sleep10ms/1000"] = res["runs"]["parsl-flux/noop/1000"]
    assert "vs bare flux python3 -S" not in bench.ratios(res)["parsl-flux/sleep10ms/1000"], "the reference is no-op"
    del res["bare_flux"]["python3 -S -c pass"]["1000"]
    assert "vs bare flux python3 -S" not in bench.ratios(res)["parsl-flux/noop/1000"]


def test_table_lists_every_run_and_skips():
    res = _results()
    res["ratios"] = bench.ratios(res)
    text = bench.table(res)
    assert "| parsl-flux | noop | 100 | 16.0 |" in text
    assert "skipped: predicted 250s > budget 150s" in text
    assert "vs parsl-FluxExecutor 4.00x" in text


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--executors", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "0"])


@pytest.mark.flux
def test_tiny_real_run(flux_path, tmp_path, monkeypatch):
    monkeypatch.setenv("FLUX_PATH", flux_path)
    monkeypatch.delenv("FLUX_URI", raising=False)
    out = tmp_path / "out"
    assert bench.main(["--sizes", "3", "--repeats", "1", "--workloads", "noop", "--bare-n", "3",
                       "--executors", "parsl-flux,parsl-flux-packing,threadpool", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    for kind in ("parsl-flux", "parsl-flux-packing", "threadpool"):
        assert data["runs"][f"{kind}/noop/3"]["tasks_per_s"] > 0
    assert data["bare_flux"]["true"] > 0
    assert data["bare_flux"]["python3 -S -c pass"]["3"] > 0
    assert "vs bare flux python3 -S" in data["ratios"]["parsl-flux/noop/3"]
    assert (out / "results.md").read_text().count("| noop | 3 |") == 3
