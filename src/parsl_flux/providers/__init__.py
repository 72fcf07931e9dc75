"""Providers that current Parsl lacks for the sites parsl-flux targets.

Parsl removed ``CobaltProvider`` in 2024.11; Theta-like systems still run
Cobalt, so :class:`CobaltProvider` lives here. :class:`SlurmProvider` is
Parsl's, made to report failed blocks where Slurm has no accounting.
"""

from parsl_flux.providers.cobalt import CobaltProvider
from parsl_flux.providers.slurm import SlurmProvider

__all__ = ["CobaltProvider", "SlurmProvider"]
