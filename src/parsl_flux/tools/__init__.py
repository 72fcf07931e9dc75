"""Developer tools: the container recipes (``tools.images``) and the benchmarks (``tools.bench``).

They sit apart from the three programs (the driver in ``executor``/``driver``,
the allocation side in ``manager``/``runner``, the wire format in
``protocol``): nothing there imports them. Both need a source checkout for
some commands (the Dockerfile, the MPI test program); :mod:`.checkout` finds
it or says why it cannot.
"""
