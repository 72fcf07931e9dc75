# Fault sweep (issue 12): manager SIGKILL, broker SIGSTOP, runner SIGKILL, driver SIGKILL,
# early user error, SIGINT at 0.5 s, 1 GiB result and argument. Needs Flux (`make flux`).
# Included by the Makefile. FAULTS_ARGS: e.g. --only manager_sigkill,sigint  or  --keep
FAULTS_ARGS ?=

.PHONY: faults

faults: $(STAMP)  ## fault sweep: every future resolves, nothing left running; table in build/faults/ (~1.5 min)
	$(PY) tests/faults/sweep.py $(FAULTS_ARGS)
