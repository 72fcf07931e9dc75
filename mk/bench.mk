# Benchmarks (issue: speed). Needs Flux (flux on PATH or FLUX_PATH).
BENCH_ARGS ?=

.PHONY: bench

bench: $(STAMP)  ## benchmark parsl-flux vs Parsl's FluxExecutor and HTEX; writes benchmarks/results/
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m parsl_flux.bench --out benchmarks/results $(BENCH_ARGS)
