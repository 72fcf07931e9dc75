"""parsl-flux: a Parsl executor that runs every app as a Flux job.

The package root imports nothing heavy: ``parsl_flux.job.runner`` runs in every
Flux job and must not pay for importing Parsl. ``FluxExecutor`` and
``Container`` are loaded on first access.
"""

__version__ = "0.1.0"
__all__ = ["FluxExecutor", "Container", "__version__"]


def __getattr__(name: str) -> object:
    if name == "FluxExecutor":
        from parsl_flux.driver.executor import FluxExecutor

        return FluxExecutor
    if name == "Container":
        from parsl_flux.container import Container

        return Container
    raise AttributeError(f"module 'parsl_flux' has no attribute {name!r}")
