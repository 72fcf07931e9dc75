# The 2-node virtual Slurm cluster for tests/test_cluster.py (network
# namespaces on this machine; .ci/cluster/). Included by the Makefile. Root only.

.PHONY: cluster-up cluster-down cluster-test

cluster-up:  ## start the 2-node virtual Slurm cluster (netns pfnode1/pfnode2, slurmctld, 2 slurmds, munge); idempotent
	bash .ci/cluster/up.sh

cluster-down:  ## stop the virtual cluster and remove its namespaces
	bash .ci/cluster/down.sh

cluster-test: $(STAMP)  ## tests/test_cluster.py against the virtual cluster with $(SIF) (make sif, make cluster-up first)
	SLURM_CONF=$${PARSL_FLUX_CLUSTER_DIR:-/var/lib/parsl-flux-cluster}/slurm.conf PARSL_FLUX_CLUSTER_SIF=$(abspath $(SIF)) \
	    $(PY) -m pytest tests/test_cluster.py $(PYTEST_ARGS)
