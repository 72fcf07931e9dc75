"""The job side: the tiny programs each Flux job runs.

The runner (Python apps), the lean bash path, and Parsl's MPI model (the
allocation's first program and ``$PARSL_MPI_PREFIX``). Their start-up is paid
once per job, so they import only the standard library and the wire format:
no Parsl, pyzmq, cloudpickle or Flux (``tests/test_import_boundaries.py``).
"""
