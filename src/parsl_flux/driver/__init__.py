"""The driver side: what runs in the user's Parsl process.

:class:`~parsl_flux.driver.executor.FluxExecutor` (Parsl's interface, blocks,
scaling) beside :class:`~parsl_flux.driver.io_loop.Driver` (one thread that
owns the socket, the blocks' sessions and the pending queue), with what they
need on the way: resource specifications checked before anything is sent,
block health, relaunch back-off, the executor's log file and monitoring.
Imports Parsl; nothing on the allocation side imports this package.
"""
