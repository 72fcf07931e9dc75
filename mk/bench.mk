# Benchmarks (issue: speed). Need Flux (flux on PATH, FLUX_PATH, or `make flux`).
# The multi-node Fluxion cases need Fluxion in a separate prefix (they are
# reported as skipped without it):
#   FLUX_PREFIX=$HOME/.cache/parsl-flux/flux-fluxion-0.88.0 WITH_FLUXION=1 bash mk/build-flux.sh
# The MPI cases need mpicc/mpiexec (`make flux` installs Debian's OpenMPI).
BENCH_ARGS ?=

.PHONY: bench bench-quick

bench: $(STAMP)  ## full benchmark (70-90 min on 2 cores; ~23 min with BENCH_ARGS="--repeats 1 --budget 90"): every case, N up to 100k; writes benchmarks/results/
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m parsl_flux.tools.bench --suite full --out benchmarks/results $(BENCH_ARGS)

bench-quick: $(STAMP)  ## the same cases at small N, for reviewers (< 5 min on 2 cores); writes benchmarks/results-quick/
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m parsl_flux.tools.bench --suite quick --out benchmarks/results-quick $(BENCH_ARGS)
